//! Listeners: accept loops and the HTTP serving every client connection ends in.

pub mod https;
pub mod socks;
pub mod tunnel;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::conn::Idle;
use crate::context::{ConnMeta, Exchange};
use crate::error::Failure;
use crate::proxy;
use crate::state::Shared;

/// Which front door a listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Transparent TLS (SNI-routed).
    Https,
    /// Transparent plain HTTP (Host-routed).
    Http,
    /// CONNECT and SOCKS5.
    Tunnel,
}

impl Kind {
    /// Name used in audit records and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Https => "https",
            Kind::Http => "http",
            Kind::Tunnel => "tunnel",
        }
    }
}

/// Accepts connections until the task is dropped; at most `limit` are served at once (new
/// ones wait in the kernel's backlog, which is the back-pressure).
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    kind: Kind,
    limit: Arc<Semaphore>,
) {
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, listener = kind.name(), "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        shared.metrics.accepted(kind.name());
        let shared = shared.clone();
        tokio::spawn(async move {
            match kind {
                Kind::Https => {
                    https::intercept(shared.clone(), ConnMeta::new("https", addr), tcp).await
                }
                Kind::Http => {
                    serve_http(
                        shared.clone(),
                        Arc::new(ConnMeta::new("http", addr)),
                        tcp,
                        false,
                    )
                    .await
                }
                Kind::Tunnel => tunnel::serve(shared.clone(), tcp, addr).await,
            }
            shared.metrics.closed();
            drop(permit);
        });
    }
}

/// Serves HTTP/1.1 or HTTP/2 on a client connection. With `accept_connect`, CONNECT opens a
/// tunnel; elsewhere it is refused with 405.
pub async fn serve_http<IO>(shared: Arc<Shared>, meta: Arc<ConnMeta>, io: IO, accept_connect: bool)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = Idle::new(
        io,
        shared.config.proxy.timeouts.idle,
        Some(meta.inflight.clone()),
    );
    let (s, m) = (shared.clone(), meta.clone());
    let svc = hyper::service::service_fn(move |req| {
        let (s, m) = (s.clone(), m.clone());
        async move {
            if accept_connect && proxy::is_connect(&req) {
                tunnel::connect(s, m, req).await
            } else {
                proxy::serve_request(s, m, req).await
            }
        }
    });
    if let Err(e) = shared
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await
    {
        protocol_error(&shared, &meta, &*e).await;
    }
}

/// Audits a connection that ended in a protocol error hyper already answered (400/431/408).
async fn protocol_error(
    shared: &Arc<Shared>,
    meta: &ConnMeta,
    e: &(dyn std::error::Error + Send + Sync + 'static),
) {
    let Some(h) = e.downcast_ref::<hyper::Error>() else {
        return;
    };
    let (status, reason, message) = if h.is_parse_too_large() {
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "http_headers_too_large",
            "request head too large",
        )
    } else if h.is_parse() || h.is_parse_status() {
        (
            StatusCode::BAD_REQUEST,
            "http_malformed",
            "malformed HTTP request",
        )
    } else if is_h2_protocol_error(h) {
        (
            StatusCode::BAD_REQUEST,
            "http2_protocol_error",
            "malformed HTTP/2 frames",
        )
    } else if h.is_timeout() && meta.requests.load(Ordering::Relaxed) == 0 {
        (
            StatusCode::REQUEST_TIMEOUT,
            "client_header_timeout",
            "request head not received in time",
        )
    } else {
        tracing::debug!(error = %h, "client connection ended");
        return;
    };
    // hyper answers parse errors itself but closes a timed-out connection without a response.
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

/// Whether hyper's error is an HTTP/2 connection error the client caused (the h2 library
/// sent GOAWAY with PROTOCOL_ERROR, COMPRESSION_ERROR or FRAME_SIZE_ERROR). Malformed
/// single streams are reset by the library without reaching the gateway, and are not recorded.
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
