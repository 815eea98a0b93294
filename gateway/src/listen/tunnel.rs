//! Tunnels: HTTP CONNECT, and what runs inside a CONNECT or SOCKS5 tunnel. The target is
//! decided before anything is dialled; after the handshake the first byte decides: TLS →
//! interception, an HTTP method → the plain HTTP path, anything else → closed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use policy::Reason;
use policy::Request as PolicyRequest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use crate::exchange::body::{ProxyBody, full};
use crate::exchange::failure::Failure;
use crate::exchange::head::{is_connect, split_host_port};
use crate::exchange::proxy::{self, refuse};
use crate::exchange::{ConnMeta, Exchange, Target};
use crate::listen::https;
use crate::listen::io::Rewind;
use crate::listen::serve::{serve_connection, serve_http};
use crate::shared::Shared;

/// Serves HTTP on a tunnel-listener connection: CONNECT opens a tunnel, any other request
/// takes the proxy path (absolute-form requests).
pub async fn serve_proxy_http(shared: Arc<Shared>, meta: Arc<ConnMeta>, tcp: TcpStream) {
    let (s, m) = (shared.clone(), meta.clone());
    let svc = hyper::service::service_fn(move |req| {
        let (s, m) = (s.clone(), m.clone());
        async move {
            if is_connect(&req) {
                connect(s, m, req).await
            } else {
                proxy::serve_request(s, m, req).await
            }
        }
    });
    serve_connection(shared, meta, tcp, svc).await;
}

/// Handles `CONNECT host:port`: decide, answer 200, then run the tunnel.
pub async fn connect(
    shared: Arc<Shared>,
    meta: Arc<ConnMeta>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let mut ex = Exchange::begin(&shared, &meta).await;
    ex.record().method = Some("CONNECT".into());
    if shared.audit_refusing() {
        return Ok(refuse(ex, Failure::AuditUnavailable).await);
    }
    let target = req
        .uri()
        .authority()
        .and_then(|a| split_host_port(a.as_str()))
        .map(|(host, port)| Target {
            host,
            port: port.unwrap_or(443),
        });
    let Some(target) = target else {
        let f = Failure::Refused {
            status: StatusCode::BAD_REQUEST,
            reason: Reason::ConnectTargetInvalid,
            message: "CONNECT target is not host:port",
        };
        return Ok(refuse(ex, f).await);
    };
    ex.record().host = target.to_string();
    let (decision, _) = shared.policy.load().policy.decide(&PolicyRequest {
        host: &target.host,
        port: target.port,
        http: None,
    });
    if !decision.allowed() {
        let f = Failure::Policy {
            decision,
            host: target.host.to_string(),
        };
        return Ok(refuse(ex, f).await);
    }
    ex.allowed(&decision);
    ex.set_status(200);
    // The tunnel is the connection's request in flight until it closes: a slow answer inside
    // it is not the outer connection's idleness, and what it carries is not a request head.
    // What runs inside keeps its own timeouts (the first byte, the ClientHello, the inner
    // connection's idle and head deadlines, a passed-through connection's
    // `tunnel_idle_timeout`).
    ex.track(&meta);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let client = meta.client;
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            run(shared, client, target, TokioIo::new(upgraded), ex).await;
        }
    });
    Ok(Response::new(full(Bytes::new())))
}

/// After a CONNECT or SOCKS5 handshake: sniff the first byte and take the matching path.
/// The tunnel's own record is written when the tunnel closes. (Boxed: the path leads back to
/// `serve_http`, and a recursive future needs a name the compiler can check for `Send`.)
pub fn run<IO>(
    shared: Arc<Shared>,
    client: SocketAddr,
    target: Target,
    io: IO,
    ex: Exchange,
) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(run_tunnel(shared, client, target, io, ex))
}

async fn run_tunnel<IO>(
    shared: Arc<Shared>,
    client: SocketAddr,
    target: Target,
    mut io: IO,
    ex: Exchange,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut first = [0u8; 1];
    let read = tokio::time::timeout(
        shared.config.proxy.timeouts.client_header,
        io.read(&mut first),
    )
    .await;
    // A tunnel's record is written when it closes, after its bytes have flowed, in either
    // durability mode: there is nothing left to hold back.
    let Ok(Ok(1)) = read else {
        drop(ex.finish_ok());
        return;
    };
    let io = Rewind::new(Bytes::copy_from_slice(&first), io);
    let meta = ConnMeta::new("tunnel", client).in_tunnel(target);
    match first[0] {
        0x16 => https::intercept(shared, meta, io).await,
        b'A'..=b'Z' => serve_http(shared, Arc::new(meta), io).await,
        _ => {
            let f = Failure::Refused {
                status: StatusCode::BAD_REQUEST,
                reason: Reason::TunnelProtocolUnknown,
                message: "tunnel carries neither TLS nor HTTP",
            };
            drop(ex.finish_failure(&f, None));
            return;
        }
    }
    drop(ex.finish_ok());
}
