//! The request body on its way upstream, counted as it streams.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A request body on its way upstream: the client's stream, or bytes the gateway buffered
/// (to transform or sign them) or made itself (token requests). Counts the bytes it carries.
#[derive(Debug)]
pub struct CountedBody {
    inner: Inner,
    count: Arc<AtomicU64>,
}

#[derive(Debug)]
enum Inner {
    Stream(Incoming),
    Bytes(Option<Bytes>),
}

impl CountedBody {
    /// Wraps `inner`, adding every data byte to `count`.
    pub fn new(inner: Incoming, count: Arc<AtomicU64>) -> Self {
        CountedBody {
            inner: Inner::Stream(inner),
            count,
        }
    }

    /// A body of known bytes.
    pub fn bytes(bytes: Bytes, count: Arc<AtomicU64>) -> Self {
        CountedBody {
            inner: Inner::Bytes((!bytes.is_empty()).then_some(bytes)),
            count,
        }
    }
}

/// The client's request body failed while it streamed upstream (bad chunk framing, a cut-off
/// stream). The client is at fault, so the exchange is a 400, not an upstream failure.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read")]
pub struct ClientBodyError(#[source] hyper::Error);

impl Body for CountedBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let polled = match &mut self.inner {
            Inner::Stream(s) => Pin::new(s).poll_frame(cx).map_err(ClientBodyError),
            Inner::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Stream(s) => s.is_end_stream(),
            Inner::Bytes(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Stream(s) => s.size_hint(),
            Inner::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
