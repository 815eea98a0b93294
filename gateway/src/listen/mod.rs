//! Listeners: the accept loops of the front doors (transparent TLS, transparent HTTP, the
//! CONNECT/SOCKS5 tunnel port, DNS) and what each connection goes through before its first
//! request reaches the exchange.

pub mod dns;
pub mod h2_resets;
pub mod hello;
pub mod https;
pub mod io;
pub mod passthrough;
pub mod serve;
pub mod socks;
pub mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use policy::Reason;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::exchange::ConnMeta;
use crate::exchange::failure::Failure;
use crate::listen::serve::{refuse_conn, serve_http};
use crate::shared::Shared;

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
                    serve_http(shared.clone(), Arc::new(ConnMeta::new("http", addr)), tcp).await
                }
                Kind::Tunnel => tunnel_port(shared.clone(), tcp, addr).await,
            }
            shared.metrics.closed();
            drop(permit);
        });
    }
}

/// Serves one tunnel-listener connection: HTTP CONNECT and SOCKS5 share the port (a first
/// byte of `0x05` is SOCKS5).
async fn tunnel_port(shared: Arc<Shared>, tcp: TcpStream, addr: SocketAddr) {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(
        shared.config.proxy.timeouts.client_header,
        tcp.peek(&mut first),
    )
    .await;
    match peeked {
        Ok(Ok(1)) if first[0] == 0x05 => socks::serve(shared, tcp, addr).await,
        Ok(Ok(1)) => {
            tunnel::serve_proxy_http(shared, Arc::new(ConnMeta::new("tunnel", addr)), tcp).await
        }
        Ok(_) => {}
        Err(_) => {
            let meta = ConnMeta::new("tunnel", addr);
            let f = Failure::Refused {
                status: StatusCode::REQUEST_TIMEOUT,
                reason: Reason::HandshakeTimeout,
                message: "no handshake received in time",
            };
            refuse_conn(&shared, &meta, None, &f, None).await;
        }
    }
}
