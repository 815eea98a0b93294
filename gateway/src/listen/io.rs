//! Stream adapters for client connections: an idle timeout that only runs while no request is
//! in flight (a slow LLM answer is not idleness), a deadline for each HTTP/1 request head, and
//! a rewind for sniffed bytes.

use std::error::Error;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::listen::h2_resets::{Preface, ResetWatch};

/// Fails reads and writes with `TimedOut` after `idle` without progress in either direction,
/// unless `busy` says a request is in flight; and, with [`Idle::head_timeout`], when an
/// HTTP/1 request head takes longer than that to arrive.
#[derive(Debug)]
pub struct Idle<IO> {
    io: IO,
    idle: Duration,
    last: Instant,
    /// One timer for both deadlines, re-armed only when it fires (not on every read).
    timer: Pin<Box<Sleep>>,
    busy: Option<Arc<AtomicUsize>>,
    read: u64,
    /// Whether the client speaks HTTP/2, until its first bytes have said.
    preface: Preface,
    head: Option<Head>,
    /// HTTP/2 stream resets to report (client connections).
    resets: Option<ResetWatch>,
}

/// The deadline of the HTTP/1 request head being received.
///
/// A head is pending from the connection's start, and again from the first byte read after a
/// response while no request is in flight; it is complete once the server writes (HTTP/1 only
/// writes responses). hyper's own `header_read_timeout` starts with the wait for the next
/// head, so it also cut quiet keep-alive connections after this timeout rather than after
/// `idle`, and it costs a timer armed and dropped per request; this one is checked when the
/// shared timer fires, at least once per `timeout`. A CONNECT tunnel is a request in flight
/// until it closes, so what it carries is never timed as a head.
#[derive(Debug)]
struct Head {
    timeout: Duration,
    since: Option<Instant>,
}

/// The error a connection fails with when a request head did not arrive in time (inside an
/// `io::Error` of kind `TimedOut`).
#[derive(Debug)]
pub struct HeadTimeout;

impl fmt::Display for HeadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request head not received in time")
    }
}

impl Error for HeadTimeout {}

impl HeadTimeout {
    /// Whether `e`, or an error it wraps, is a [`HeadTimeout`].
    pub fn caused(e: &(dyn Error + 'static)) -> bool {
        let mut next = Some(e);
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<io::Error>()
                && io.get_ref().is_some_and(|inner| inner.is::<HeadTimeout>())
            {
                return true;
            }
            next = e.source();
        }
        false
    }
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
            preface: Preface::default(),
            head: None,
            resets: None,
        }
    }

    /// Gives each HTTP/1 request head `timeout` to arrive, the first from now. A connection
    /// that opens with the HTTP/2 preface has no heads to time.
    pub fn head_timeout(mut self, timeout: Duration) -> Self {
        self.head = Some(Head {
            timeout,
            since: Some(self.last),
        });
        let first = self.last + timeout.min(self.idle);
        self.timer.as_mut().reset(first);
        self
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

    fn busy(&self) -> bool {
        self.busy
            .as_ref()
            .is_some_and(|b| b.load(Ordering::Relaxed) > 0)
    }

    /// Notes `bytes` read now.
    fn on_read(&mut self, bytes: &[u8]) {
        let now = Instant::now();
        self.last = now;
        if let Some(http2) = self.preface.decide(bytes) {
            if let Some(w) = &mut self.resets {
                w.speaks_http2(http2);
            }
            if http2 {
                self.head = None;
            }
        }
        self.read += bytes.len() as u64;
        let between_heads = self.head.as_ref().is_some_and(|h| h.since.is_none());
        if between_heads
            && !self.busy()
            && let Some(h) = &mut self.head
        {
            h.since = Some(now);
        }
    }

    /// Notes bytes written now: the head being waited for, if any, has been answered.
    fn on_written(&mut self) {
        self.last = Instant::now();
        if let Some(h) = &mut self.head {
            h.since = None;
        }
    }

    /// Ready(error) once the connection has been idle too long, or a request head has taken
    /// too long.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let now = Instant::now();
            let busy = self.busy();
            let mut next = match busy {
                true => now + self.idle,
                false => self.last + self.idle,
            };
            if next <= now {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection idle"));
            }
            if let Some(h) = &self.head {
                if let Some(since) = h.since
                    && !busy
                {
                    let due = since + h.timeout;
                    if due <= now {
                        return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, HeadTimeout));
                    }
                    next = next.min(due);
                }
                // A head may start at any moment: look again within one timeout.
                next = next.min(now + h.timeout);
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
                if buf.filled().len() > before {
                    self.on_read(&buf.filled()[before..]);
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
                    self.on_written();
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
                    self.on_written();
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

    /// Reads from `idle` for `wait` (paused time): None if nothing happened, else the result.
    async fn read_for<IO: AsyncRead + Unpin>(
        idle: &mut Idle<IO>,
        wait: Duration,
    ) -> Option<io::Result<usize>> {
        let mut buf = [0u8; 64];
        tokio::time::timeout(wait, idle.read(&mut buf)).await.ok()
    }

    fn is_head_timeout(r: Option<io::Result<usize>>) -> bool {
        matches!(r, Some(Err(e)) if HeadTimeout::caused(&e))
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_must_arrive_in_time_but_a_kept_alive_connection_may_rest() {
        let (a, mut b) = tokio::io::duplex(1024);
        let busy = Arc::new(AtomicUsize::new(0));
        let ten = Duration::from_secs(10);
        let mut idle = Idle::new(a, Duration::from_secs(90), Some(busy.clone())).head_timeout(ten);
        // The first head starts with the connection: half of it, then silence.
        b.write_all(b"GET / HT").await.unwrap();
        assert_eq!(read_for(&mut idle, ten).await.unwrap().unwrap(), 8);
        assert!(is_head_timeout(read_for(&mut idle, ten).await));

        let (a, mut b) = tokio::io::duplex(1024);
        let mut idle = Idle::new(a, Duration::from_secs(90), Some(busy.clone())).head_timeout(ten);
        b.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(read_for(&mut idle, ten).await.is_some());
        // In flight for a minute: no head is due, the upload's bytes start none.
        busy.store(1, Ordering::Relaxed);
        b.write_all(b"body").await.unwrap();
        assert!(read_for(&mut idle, ten).await.is_some());
        assert!(read_for(&mut idle, Duration::from_secs(60)).await.is_none());
        idle.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        busy.store(0, Ordering::Relaxed);
        // Answered: 80 s of rest is idleness, not a late head.
        assert!(read_for(&mut idle, Duration::from_secs(80)).await.is_none());
        // The next head's first byte starts its clock.
        b.write_all(b"G").await.unwrap();
        assert!(read_for(&mut idle, ten).await.is_some());
        let started = Instant::now();
        assert!(is_head_timeout(read_for(&mut idle, ten * 2).await));
        assert_eq!(started.elapsed(), ten);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_have_no_head_deadline_and_idle_ones_still_close() {
        let (a, mut b) = tokio::io::duplex(1024);
        let ten = Duration::from_secs(10);
        let mut idle =
            Idle::new(a, Duration::from_secs(90), Some(Arc::default())).head_timeout(ten);
        b.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        assert!(read_for(&mut idle, ten).await.is_some());
        // A PING every 5 s is traffic, not a head.
        for _ in 0..6 {
            b.write_all(b"ping").await.unwrap();
            assert!(read_for(&mut idle, Duration::from_secs(5)).await.is_some());
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let r = read_for(&mut idle, Duration::from_secs(100)).await;
        assert!(
            matches!(&r, Some(Err(e)) if e.kind() == io::ErrorKind::TimedOut && !HeadTimeout::caused(e))
        );
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
