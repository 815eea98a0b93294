//! Body wrappers: they stream frames untouched, count bytes, and let the exchange's audit
//! record be written when the response body ends (or is abandoned).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::context::Exchange;

/// A request body on its way upstream; counts the bytes it carries.
#[derive(Debug)]
pub struct CountedBody {
    inner: Incoming,
    count: Arc<AtomicU64>,
}

impl CountedBody {
    /// Wraps `inner`, adding every data byte to `count`.
    pub fn new(inner: Incoming, count: Arc<AtomicU64>) -> Self {
        CountedBody { inner, count }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body from upstream. When it ends the exchange is recorded as finished; when it
/// fails the record says so; when the client goes away first, `Drop` records a cancellation.
#[derive(Debug)]
pub struct AuditedBody {
    inner: Incoming,
    exchange: Option<Exchange>,
}

impl AuditedBody {
    /// Wraps an upstream body; `exchange` is finished when the body is.
    pub fn new(inner: Incoming, exchange: Exchange) -> Self {
        let mut body = AuditedBody {
            inner,
            exchange: Some(exchange),
        };
        if body.inner.is_end_stream()
            && let Some(ex) = body.exchange.take()
        {
            ex.finish_ok();
        }
        body
    }
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(ex)) = (frame.data_ref(), self.exchange.as_mut()) {
                    ex.add_bytes_out(data.len() as u64);
                }
                if self.inner.is_end_stream()
                    && let Some(ex) = self.exchange.take()
                {
                    ex.finish_ok();
                }
            }
            Poll::Ready(None) => {
                if let Some(ex) = self.exchange.take() {
                    ex.finish_ok();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(ex) = self.exchange.take() {
                    ex.finish_body_error();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the gateway sends back: an upstream body, or a short body of its own.
pub type ProxyBody = Either<AuditedBody, Full<Bytes>>;

/// A body of the gateway's own.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Either::Right(Full::new(bytes.into()))
}
