//! Stream adapters for client connections: an idle timeout that only runs while no request is
//! in flight (a slow LLM answer is not idleness), and a rewind for sniffed bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::listen::h2_resets::ResetWatch;

/// Fails reads and writes with `TimedOut` after `idle` without progress in either direction,
/// unless `busy` says a request is in flight.
#[derive(Debug)]
pub struct Idle<IO> {
    io: IO,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    busy: Option<Arc<AtomicUsize>>,
    read: u64,
    /// HTTP/2 stream resets to report (client connections).
    resets: Option<ResetWatch>,
}

impl<IO> Idle<IO> {
    /// Wraps `io`.
    pub fn new(io: IO, idle: Duration, busy: Option<Arc<AtomicUsize>>) -> Self {
        let last = Instant::now();
        Idle {
            io,
            idle,
            last,
            timer: Box::pin(tokio::time::sleep_until(last + idle)),
            busy,
            read: 0,
            resets: None,
        }
    }

    /// Reports the HTTP/2 streams reset for the client's fault in what is written.
    pub fn watch_resets(mut self, watch: ResetWatch) -> Self {
        self.resets = Some(watch);
        self
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Ready(error) once the connection has been idle too long.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let now = Instant::now();
            let busy = self
                .busy
                .as_ref()
                .is_some_and(|b| b.load(Ordering::Relaxed) > 0);
            let next = if busy {
                now + self.idle
            } else {
                self.last + self.idle
            };
            if next <= now {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection idle"));
            }
            self.timer.as_mut().reset(next);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Idle<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    self.last = Instant::now();
                    if self.read == 0
                        && let Some(w) = &mut self.resets
                    {
                        w.read(&buf.filled()[before..]);
                    }
                    self.read += n as u64;
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_expired(cx).map(Err),
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Idle<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if let Ok(n) = r
                    && n > 0
                {
                    self.last = Instant::now();
                    if let Some(w) = &mut self.resets {
                        w.written(&buf[..n]);
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_expired(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if let Ok(n) = r
                    && n > 0
                {
                    self.last = Instant::now();
                    if let Some(w) = &mut self.resets {
                        let mut left = n;
                        for b in bufs {
                            let take = left.min(b.len());
                            w.written(&b[..take]);
                            left -= take;
                            if left == 0 {
                                break;
                            }
                        }
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_expired(cx).map(Err),
        }
    }

    /// Vectored when the connection under it is: hyper then queues a response's head and body
    /// as they are instead of copying them into one buffer, and TLS records leave in one
    /// `writev`.
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Replays bytes already read (a sniffed first byte) before reading on.
#[derive(Debug)]
pub struct Rewind<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Rewind<IO> {
    /// `prefix` is returned by the first reads.
    pub fn new(prefix: Bytes, io: IO) -> Self {
        Rewind { prefix, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_connection_times_out_but_not_while_busy() {
        let (a, mut b) = tokio::io::duplex(64);
        let busy = Arc::new(AtomicUsize::new(1));
        let mut idle = Idle::new(a, Duration::from_secs(10), Some(busy.clone()));
        let mut buf = [0u8; 4];
        // Busy: 30 s of silence is fine.
        assert!(
            tokio::time::timeout(Duration::from_secs(30), idle.read(&mut buf))
                .await
                .is_err()
        );
        busy.store(0, Ordering::Relaxed);
        let err = idle.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        b.write_all(b"x").await.unwrap();
    }

    #[tokio::test]
    async fn rewind_replays_the_prefix() {
        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(b"bc").await.unwrap();
        drop(b);
        let mut r = Rewind::new(Bytes::from_static(b"a"), a);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "abc");
    }
}
