//! The response body the client receives: upstream frames streamed untouched (or scrubbed),
//! counted, and the exchange's audit record written when the body ends (or is abandoned).

use std::future::Future;
use std::pin::Pin;

use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use audit::Durable;

use crate::exchange::Exchange;
use crate::transform::scrub::Scrubber;

/// A response body from upstream, scrubbed when secrets were used. When it ends the exchange
/// is recorded; when it fails the record says so; when the client goes away first, the
/// exchange's `Drop` records a cancellation. With `strict` audit, the frame that completes the
/// response is held until the record is on disk.
#[derive(Debug)]
pub struct AuditedBody {
    inner: Incoming,
    exchange: Option<Exchange>,
    scrub: Option<Scrubber>,
    /// Trailers held back while the scrubber's tail is sent.
    pending: Option<Frame<Bytes>>,
    inner_done: bool,
    /// `strict` audit: the record being made durable, and the last frame waiting for it.
    gate: Option<(Durable, Option<Frame<Bytes>>)>,
}

/// The error a body ends with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl AuditedBody {
    /// Wraps an upstream body; `exchange` is finished when the body is. An empty body is
    /// finished at once, and its record's [`Durable`] (in `strict` mode) is returned.
    pub fn new(
        inner: Incoming,
        exchange: Exchange,
        scrub: Option<Scrubber>,
    ) -> (Self, Option<Durable>) {
        let mut body = AuditedBody {
            inner,
            exchange: Some(exchange),
            scrub,
            pending: None,
            inner_done: false,
            gate: None,
        };
        let durable = match body.scrub.is_none() && body.inner.is_end_stream() {
            true => body.finish(true),
            false => None,
        };
        (body, durable)
    }

    fn finish(&mut self, ok: bool) -> Option<Durable> {
        let mut ex = self.exchange.take()?;
        if let Some(s) = self.scrub.as_ref().filter(|s| s.hits > 0) {
            ex.record().response_transforms.push(audit::Transform {
                name: "scrub",
                action: "allow",
                rule: None,
                annotations: Some(audit::Annotations::Scrubbed { scrubbed: s.hits }),
            });
        }
        if ok {
            ex.finish_ok()
        } else {
            ex.finish_body_error()
        }
    }

    fn sent(
        &mut self,
        frame: Frame<Bytes>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let (Some(d), Some(ex)) = (frame.data_ref(), self.exchange.as_mut()) {
            ex.add_bytes_out(d.len() as u64);
        }
        // hyper stops polling once the body says it has ended: record now.
        if self.is_end_stream()
            && let Some(durable) = self.finish(true)
        {
            self.gate = Some((durable, Some(frame)));
            return self.poll_gate(cx);
        }
        Poll::Ready(Some(Ok(frame)))
    }

    /// Waits for the record to be durable, then releases the held frame (or the end).
    fn poll_gate(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some((durable, _)) = self.gate.as_mut() else {
            return Poll::Ready(None);
        };
        let ok = std::task::ready!(Pin::new(durable).poll(cx));
        let held = self.gate.take().and_then(|(_, f)| f);
        if !ok {
            let e = std::io::Error::other("the audit record could not be written");
            return Poll::Ready(Some(Err(e.into())));
        }
        Poll::Ready(held.map(Ok))
    }
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.gate.is_some() {
            return this.poll_gate(cx);
        }
        if let Some(f) = this.pending.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        loop {
            if this.inner_done {
                if let Some(durable) = this.finish(true) {
                    this.gate = Some((durable, None));
                    return this.poll_gate(cx);
                }
                return Poll::Ready(None);
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Some(s) = this.scrub.as_mut() else {
                        return this.sent(frame, cx);
                    };
                    let out = match frame.into_data() {
                        Ok(data) => s.push(data),
                        Err(trailers) => {
                            let tail = s.finish();
                            if tail.is_empty() {
                                return this.sent(trailers, cx);
                            }
                            this.pending = Some(trailers);
                            tail
                        }
                    };
                    if !out.is_empty() {
                        return this.sent(Frame::data(out), cx);
                    }
                }
                None => {
                    this.inner_done = true;
                    let tail = this
                        .scrub
                        .as_mut()
                        .map(Scrubber::finish)
                        .unwrap_or_default();
                    if !tail.is_empty() {
                        return this.sent(Frame::data(tail), cx);
                    }
                }
                Some(Err(e)) => {
                    // The response is broken anyway: nothing to hold back.
                    drop(this.finish(false));
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.gate.is_none()
            && self.pending.is_none()
            && (self.inner_done || (self.scrub.is_none() && self.inner.is_end_stream()))
    }

    fn size_hint(&self) -> SizeHint {
        match self.scrub {
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

/// What the gateway sends back: an upstream body, or a short body of its own.
pub type ProxyBody = Either<AuditedBody, Full<Bytes>>;

/// A body of the gateway's own.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Either::Right(Full::new(bytes.into()))
}
