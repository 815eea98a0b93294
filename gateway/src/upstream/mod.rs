//! Upstream connections: the guard as a hyper connector, verified TLS (system and webpki roots
//! plus configured bundles; no way to skip verification), ALPN h2/http1.1 and pooling.

pub mod body;
pub mod fault;
pub mod guard;
pub mod via;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use policy::{Host, UpstreamProxy};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;

use crate::upstream::body::CountedBody;
use crate::upstream::fault::Fault;
use crate::upstream::guard::{Guard, GuardError};

/// The address an upstream connection was made to, as audit records write it; found in
/// response extensions. Written once per connection, not once per request.
#[derive(Debug, Clone)]
pub struct UpstreamAddr(pub Arc<str>);

/// A connector that only connects to addresses the guard checked.
#[derive(Debug, Clone)]
pub struct GuardConnector {
    guard: Arc<Guard>,
    proxy: Option<Arc<UpstreamProxy>>,
}

/// A checked upstream TCP connection.
#[derive(Debug)]
pub struct GuardedStream {
    io: TokioIo<TcpStream>,
    peer: Arc<str>,
}

impl Connection for GuardedStream {
    fn connected(&self) -> Connected {
        Connected::new().extra(UpstreamAddr(self.peer.clone()))
    }
}

impl hyper::rt::Read for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    /// TLS records to the upstream leave in one `writev`.
    fn is_write_vectored(&self) -> bool {
        hyper::rt::Write::is_write_vectored(&self.io)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tower_service::Service<Uri> for GuardConnector {
    type Response = GuardedStream;
    type Error = GuardError;
    type Future = Pin<Box<dyn Future<Output = Result<GuardedStream, GuardError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GuardError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (guard, proxy) = (self.guard.clone(), self.proxy.clone());
        Box::pin(async move {
            let host = uri
                .host()
                .and_then(|h| Host::parse(h).ok())
                .ok_or_else(|| GuardError::Resolve("request has no valid host".into()))?;
            let https = uri.scheme_str() != Some("http");
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let (stream, peer) = via::dial(&guard, proxy.as_deref(), &host, port, https).await?;
            Ok(GuardedStream {
                io: TokioIo::new(stream),
                peer: peer.to_string().into(),
            })
        })
    }
}

type Https = HttpsConnector<GuardConnector>;

/// The upstream clients: one negotiating h2 or HTTP/1.1, one HTTP/1.1-only.
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// ALPN h2 and http/1.1: HTTP/2 clients and the gateway's own calls.
    pub auto: Client<Https, CountedBody>,
    /// ALPN http/1.1 only: WebSocket upgrades, and HTTP/1.1 clients' requests (a pooled
    /// connection per request in flight) while at most [`MULTIPLEX_ABOVE`] await their heads;
    /// see [`Upstreams::pick`].
    pub h1: Client<Https, CountedBody>,
    /// HTTP/1.1 clients' requests awaiting their response head now, on either client.
    http1_heads: Arc<AtomicUsize>,
    /// The address guard both clients dial through, for connections that are not HTTP
    /// requests (`sni-only` passthrough).
    pub guard: Arc<Guard>,
    /// The upstream proxy every dial goes through, if configured.
    pub proxy: Option<Arc<UpstreamProxy>>,
}

/// Errors building the upstream trust store.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TrustError {
    path: String,
    message: String,
}

/// System roots, webpki roots and each PEM bundle in `extra`.
pub fn root_store(extra: &[String]) -> Result<RootCertStore, TrustError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots.add_parsable_certificates(system_roots());
    for path in extra {
        let err = |message: String| TrustError {
            path: path.clone(),
            message,
        };
        let pem = std::fs::read(Path::new(path)).map_err(|e| err(e.to_string()))?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("holds no PEM certificate".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| err(e.to_string()))?;
        }
    }
    Ok(roots)
}

/// The system's trusted roots: one bundle file (`SSL_CERT_FILE`, else the distribution's),
/// or where there is none, the platform's default search (`SSL_CERT_DIR` and the like).
/// Reading a certificate directory as well costs a file per certificate for the same
/// certificates again: it was a third of the gateway's start-up on Debian.
fn system_roots() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    const BUNDLES: [&str; 4] = [
        "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Arch, Gentoo
        "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
        "/etc/ssl/ca-bundle.pem",             // openSUSE
        "/etc/ssl/cert.pem",                  // Alpine, macOS
    ];
    let bundle = match std::env::var_os("SSL_CERT_FILE") {
        Some(file) => Some(std::path::PathBuf::from(file)),
        None => BUNDLES
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file()),
    };
    match bundle.filter(|p| p.is_file()) {
        Some(file) => rustls_native_certs::load_certs_from_paths(Some(&file), None),
        None => rustls_native_certs::load_native_certs(),
    }
    .certs
}

impl Upstreams {
    /// Clients over `guard`, trusting `roots`, keeping up to `max_idle` idle connections per
    /// host for `idle`. An HTTP/1.1 client holds one upstream connection per request in flight,
    /// so `max_idle` should cover the most client connections: a smaller pool closes the
    /// surplus after every burst and pays a new TLS handshake per request (at 256 connections
    /// a pool of 64 cost three times the CPU per request).
    pub fn new(
        guard: Arc<Guard>,
        proxy: Option<UpstreamProxy>,
        roots: RootCertStore,
        idle: Duration,
        max_idle: usize,
    ) -> Self {
        let proxy = proxy.map(Arc::new);
        let tls = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = GuardConnector {
            guard: guard.clone(),
            proxy: proxy.clone(),
        };
        let auto = HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector.clone());
        let h1 = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = |c: Https| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(idle)
                .pool_max_idle_per_host(max_idle)
                .build(c)
        };
        Upstreams {
            auto: client(auto),
            h1: client(h1),
            http1_heads: Arc::default(),
            guard,
            proxy,
        }
    }
}

/// While at most this many HTTP/1.1 clients' requests await their response heads, each takes
/// a pooled HTTP/1.1 connection upstream; beyond it, new ones multiplex onto the origin's
/// HTTP/2 connection (where the origin offers h2), all of them, not only the surplus. A few
/// long transfers keep a connection each, which a single h2 connection's one task and
/// flow-control window would slow (1 MiB downloads: 385 against 294 MiB/s); hundreds of
/// small concurrent requests share one, which saves an upstream write and read per request.
/// Counting only the requests on HTTP/1.1 connections (as before 2026-12-01) kept 32 of
/// them busy at 256 client connections, and those fast ones carried a third of the requests:
/// 0.73 upstream system calls a request against 0.03 now (`bench/README.md`).
pub const MULTIPLEX_ABOVE: usize = 32;

/// What a request needs of its upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    /// An HTTP/2 client: h2 where the origin offers it.
    Http2,
    /// An HTTP/1.1 client: a pooled HTTP/1.1 connection while few are busy, else h2.
    Http1,
    /// A protocol upgrade (WebSocket): HTTP/1.1 only.
    Upgrade,
}

/// An HTTP/1.1 request counted as awaiting its head on `h1`; uncounted when dropped.
#[derive(Debug)]
pub struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstreams {
    /// The client for a request that `wants`, and for an HTTP/1.1 client's request the count
    /// of those awaiting their heads that it is part of (drop it once the head arrives).
    pub fn pick(&self, wants: Wants) -> (&Client<Https, CountedBody>, Option<Waiting<'_>>) {
        match wants {
            Wants::Http2 => (&self.auto, None),
            Wants::Upgrade => (&self.h1, None),
            // A cost bound, not a limit: above it requests multiplex, they do not wait.
            Wants::Http1 => {
                let before = self.http1_heads.fetch_add(1, Ordering::Relaxed);
                let waiting = Some(Waiting(&self.http1_heads));
                match before < MULTIPLEX_ABOVE {
                    true => (&self.h1, waiting),
                    false => (&self.auto, waiting),
                }
            }
        }
    }
}

/// Why a request of the gateway's own (a token endpoint, Vault) failed. Never holds a
/// credential: only codes, statuses and the upstream's error classification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The URL is not usable.
    #[error("invalid URL")]
    Url,
    /// No answer: connection, TLS, guard or protocol failure (a reason code).
    #[error("request failed: {0}")]
    Failed(policy::Reason),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The answer's body is over the limit.
    #[error("response too large")]
    TooLarge,
}

/// The most the gateway reads of a response to its own requests.
const CALL_BODY_LIMIT: usize = 1 << 20;

impl Upstreams {
    /// Sends a request of the gateway's own (same guard, pins and trust as sandbox traffic)
    /// and reads the whole answer, bounded in time and size.
    pub async fn call(
        &self,
        method: http::Method,
        url: &str,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Result<(http::StatusCode, bytes::Bytes), CallError> {
        use http_body_util::BodyExt;
        let uri: Uri = url.parse().map_err(|_| CallError::Url)?;
        let mut req = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(CountedBody::bytes(body, Arc::default()))
            .map_err(|_| CallError::Url)?;
        let work = async {
            let resp = self
                .auto
                .request(req)
                .await
                .map_err(|e| CallError::Failed(Fault::classify(&e).reason()))?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), CALL_BODY_LIMIT)
                .collect()
                .await
                .map_err(|_| CallError::TooLarge)?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| CallError::Timeout)?
    }
}

#[cfg(test)]
impl Upstreams {
    /// Clients that trust no root and resolve no name: for tests that need the type.
    pub(crate) fn for_tests() -> Upstreams {
        // What `crate::install_crypto` does; called here to keep this module below the crate root.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let guard = Guard::new(
            vec![],
            vec![],
            vec![],
            Default::default(),
            Duration::from_secs(1),
        );
        Upstreams::new(
            Arc::new(guard),
            None,
            RootCertStore::empty(),
            Duration::from_secs(1),
            1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http1_requests_multiplex_only_beyond_the_bound_and_upgrades_never() {
        // The bound counts every HTTP/1.1 client's request awaiting its head, on either client.
        let up = Upstreams::for_tests();
        let is_h1 = |c: &Client<Https, CountedBody>| std::ptr::eq(c, &up.h1);
        let mut held = Vec::new();
        for _ in 0..MULTIPLEX_ABOVE {
            let (client, waiting) = up.pick(Wants::Http1);
            assert!(is_h1(client));
            held.push(waiting.expect("counted while it waits"));
        }
        let (client, waiting) = up.pick(Wants::Http1);
        assert!(!is_h1(client), "the next one multiplexes");
        let multiplexed = waiting.expect("counted too: it awaits its head as well");
        held.pop();
        let (client, waiting) = up.pick(Wants::Http1);
        assert!(
            !is_h1(client),
            "a head arrived, but the multiplexed one still waits: still over the bound"
        );
        drop(waiting);
        drop(multiplexed);
        assert!(
            is_h1(up.pick(Wants::Upgrade).0),
            "an upgrade needs HTTP/1.1"
        );
        assert!(!is_h1(up.pick(Wants::Http2).0));
        held.pop();
        let (client, waiting) = up.pick(Wants::Http1);
        assert!(
            is_h1(client) && waiting.is_some(),
            "a head arrived: room again"
        );
        drop(waiting);
        drop(held);
        assert_eq!(up.http1_heads.load(Ordering::Relaxed), 0);
    }
}
