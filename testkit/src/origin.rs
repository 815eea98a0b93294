//! A small origin server for the demo and the tests: HTTPS (h2 and HTTP/1.1, its own CA) or
//! plain HTTP. `/sse` streams events, `/bytes/N` sends N bytes, `/delay/MS` echoes after MS
//! milliseconds with nothing sent meanwhile (a slow answer), everything else echoes the
//! request as JSON.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{CertificateParams, IsCa, Issuer, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A running origin.
#[derive(Debug)]
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// PEM of the CA that signed its certificate (empty for plain HTTP).
    pub ca_pem: String,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

type Seen = Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

impl Origin {
    /// The requests received so far (as echoed), oldest first.
    pub fn seen(&self) -> Vec<serde_json::Value> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn tls_config(names: &[&str], h2: bool) -> Result<(Arc<ServerConfig>, String), rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Centaur test origin CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?
        .signed_by(&key, &issuer)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut cfg = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
    cfg.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok((Arc::new(cfg), ca_cert.pem()))
}

impl Origin {
    /// An HTTPS origin on 127.0.0.1 with a certificate for `names`; `h2` offers HTTP/2.
    pub async fn https(names: &[&str], h2: bool) -> std::io::Result<Origin> {
        Origin::https_requiring(names, h2, None).await
    }

    /// [`Origin::https`] that answers 401 to any request whose `header` is not `value` (an
    /// API that needs a real key).
    pub async fn https_requiring(
        names: &[&str],
        h2: bool,
        key: Option<(&str, &str)>,
    ) -> std::io::Result<Origin> {
        let key: Key = key.map(|(h, v)| Arc::new((h.to_ascii_lowercase(), v.to_string())));
        let (cfg, ca_pem) = tls_config(names, h2).map_err(std::io::Error::other)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(cfg);
        let seen = Seen::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, log, key) = (acceptor.clone(), log.clone(), key.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, log, key).await;
                    }
                });
            }
        });
        Ok(Origin {
            addr,
            ca_pem,
            seen,
            task,
        })
    }

    /// A plain-HTTP origin on 127.0.0.1.
    pub async fn http() -> std::io::Result<Origin> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Seen::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, log.clone(), None));
            }
        });
        Ok(Origin {
            addr,
            ca_pem: String::new(),
            seen,
            task,
        })
    }
}

/// The header and value every request must carry, if any.
type Key = Option<Arc<(String, String)>>;

async fn serve<IO>(io: IO, seen: Seen, key: Key)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(req, seen.clone(), key.clone()));
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await;
}

async fn handle(
    req: Request<Incoming>,
    seen: Seen,
    key: Key,
) -> Result<Response<Body>, Infallible> {
    if let Some(k) = key {
        let sent = req.headers().get(k.0.as_str()).map(|v| v.as_bytes());
        if sent != Some(k.1.as_bytes()) {
            let mut resp = Response::new(full(r#"{"error":"invalid api key"}"#));
            *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
            return Ok(resp);
        }
    }
    let path = req.uri().path().to_string();
    if path == "/sse" {
        return Ok(sse());
    }
    if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        return Ok(bytes(n));
    }
    if let Some(ms) = path
        .strip_prefix("/delay/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    if let Ok(mut log) = seen.lock() {
        if log.len() >= 1000 {
            log.remove(0);
        }
        log.push(echo.clone());
    }
    let mut resp = Response::new(full(echo.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn full(s: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(s.into()).boxed()
}

/// Three events, 300 ms apart, each flushed on its own.
fn sse() -> Response<Body> {
    let stream = futures_util::stream::unfold(0u32, |i| async move {
        if i == 3 {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let frame = Frame::data(Bytes::from(format!("data: event {i}\n\n")));
        Some((Ok::<_, Infallible>(frame), i + 1))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    resp
}

/// `n` bytes in 64 KiB chunks.
fn bytes(n: usize) -> Response<Body> {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(chunk.len());
            Some((
                Ok::<_, Infallible>(Frame::data(chunk.slice(..take))),
                left - take,
            ))
        }
    });
    Response::new(StreamBody::new(stream).boxed())
}
