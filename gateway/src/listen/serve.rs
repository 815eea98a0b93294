//! Serving HTTP on a client connection, and recording a connection refused before any
//! request was served.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use policy::Reason;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::exchange::body::ProxyBody;
use crate::exchange::failure::Failure;
use crate::exchange::{ConnMeta, Exchange, proxy};
use crate::listen::h2_resets::{self, OnReset, ResetWatch};
use crate::listen::io::{HeadTimeout, Idle};
use crate::shared::Shared;

/// Serves HTTP/1.1 or HTTP/2 on a client connection; every request takes the proxy path (a
/// CONNECT there is refused with 405: only the tunnel listener opens tunnels).
pub async fn serve_http<IO>(shared: Arc<Shared>, meta: Arc<ConnMeta>, io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (s, m) = (shared.clone(), meta.clone());
    let svc =
        hyper::service::service_fn(move |req| proxy::serve_request(s.clone(), m.clone(), req));
    serve_connection(shared, meta, io, svc).await;
}

/// Serves one client connection with `svc`, closing it when idle, and audits a protocol error
/// that ends it.
pub async fn serve_connection<IO, S>(shared: Arc<Shared>, meta: Arc<ConnMeta>, io: IO, svc: S)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let timeouts = &shared.config.proxy.timeouts;
    let io = Idle::new(io, timeouts.idle, Some(meta.inflight.clone()))
        .head_timeout(timeouts.client_header)
        .watch_resets(ResetWatch::new(stream_reset_recorder(&shared, &meta)));
    if let Err(e) = shared
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await
    {
        protocol_error(&shared, &meta, &*e).await;
    }
}

/// Records each HTTP/2 stream the h2 library reset for the client's fault (a malformed
/// request never reaches the gateway as a request, so this is its only record).
fn stream_reset_recorder(shared: &Arc<Shared>, meta: &Arc<ConnMeta>) -> OnReset {
    let (shared, meta) = (shared.clone(), meta.clone());
    Arc::new(move |stream, code| {
        let Some(name) = h2_resets::client_fault(code) else {
            return;
        };
        let (shared, meta) = (shared.clone(), meta.clone());
        tokio::spawn(async move {
            let mut ex = Exchange::begin(&shared, &meta).await;
            let r = ex.record();
            r.host = meta
                .tls
                .as_ref()
                .map(|t| t.sni.to_string())
                .unwrap_or_default();
            r.error = Some(format!("stream {stream} reset: {name}"));
            let f = Failure::Refused {
                status: StatusCode::BAD_REQUEST,
                reason: Reason::Http2StreamReset,
                message: "HTTP/2 stream reset",
            };
            drop(ex.finish_failure(&f, None));
        });
    })
}

/// Audits a connection that ended in a protocol error hyper already answered (400/431), or
/// that a request head did not arrive on in time (closed without a response).
async fn protocol_error(
    shared: &Arc<Shared>,
    meta: &ConnMeta,
    e: &(dyn std::error::Error + Send + Sync + 'static),
) {
    let refusal = match HeadTimeout::caused(e) {
        true => Some((
            StatusCode::REQUEST_TIMEOUT,
            Reason::ClientHeaderTimeout,
            "request head not received in time",
        )),
        false => e.downcast_ref::<hyper::Error>().and_then(hyper_refusal),
    };
    let Some((status, reason, message)) = refusal else {
        return;
    };
    // hyper answers parse errors itself; a timed-out head gets no response.
    let sent = (status != StatusCode::REQUEST_TIMEOUT).then_some(status.as_u16());
    refuse_conn(
        shared,
        meta,
        None,
        &Failure::Refused {
            status,
            reason,
            message,
        },
        sent,
    )
    .await;
}

/// The status hyper answered a client's protocol error with, and its audit reason.
fn hyper_refusal(h: &hyper::Error) -> Option<(StatusCode, Reason, &'static str)> {
    if h.is_parse_too_large() {
        Some((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reason::HttpHeadersTooLarge,
            "request head too large",
        ))
    } else if h.is_parse() || h.is_parse_status() {
        Some((
            StatusCode::BAD_REQUEST,
            Reason::HttpMalformed,
            "malformed HTTP request",
        ))
    } else if is_h2_protocol_error(h) {
        Some((
            StatusCode::BAD_REQUEST,
            Reason::Http2ProtocolError,
            "malformed HTTP/2 frames",
        ))
    } else {
        tracing::debug!(error = %h, "client connection ended");
        None
    }
}

/// Whether hyper's error is an HTTP/2 connection error the client caused (the h2 library
/// sent GOAWAY with PROTOCOL_ERROR, COMPRESSION_ERROR or FRAME_SIZE_ERROR). Malformed
/// single streams are reset by the library without reaching the gateway; `h2_resets` records
/// those.
fn is_h2_protocol_error(h: &hyper::Error) -> bool {
    let mut cur = std::error::Error::source(h);
    while let Some(e) = cur {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away()
                && h2.is_library()
                && matches!(
                    h2.reason(),
                    Some(
                        h2::Reason::PROTOCOL_ERROR
                            | h2::Reason::COMPRESSION_ERROR
                            | h2::Reason::FRAME_SIZE_ERROR
                    )
                );
        }
        cur = e.source();
    }
    false
}

/// Records a refused connection (no request was served on it).
pub async fn refuse_conn(
    shared: &Arc<Shared>,
    meta: &ConnMeta,
    host: Option<String>,
    f: &Failure,
    status: Option<u16>,
) {
    let mut ex = Exchange::begin(shared, meta).await;
    if let Some(h) = host {
        ex.record().host = h;
    }
    if let Some(durable) = ex.finish_failure(f, status) {
        durable.await;
    }
}
