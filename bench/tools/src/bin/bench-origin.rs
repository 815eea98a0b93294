//! The origin every contender of `bench/run` is measured against: HTTPS (HTTP/1.1 and
//! HTTP/2 by ALPN) on one port.
//!
//! - `GET /`: 13 bytes.
//! - `GET /bytes/N`: N bytes, streamed in 64 KiB frames from one shared buffer.
//! - `POST /upload`: reads the body, answers with its length.
//! - `GET /sse?n=N&ms=M`: N server-sent events M ms apart, each `data: <unix ns>` at sending.
//! - `GET /ws`: a WebSocket that echoes every message.
//!
//! Usage: bench-origin --listen 127.0.0.1:0 --cert origin.pem --key origin.key
//! It prints `listening on ADDR` once it accepts connections.

use std::{
    convert::Infallible,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt, stream};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{handshake::derive_accept_key, protocol::Role},
};

#[derive(Parser)]
#[command(about = "The benchmark suite's HTTPS origin (HTTP/1.1 and HTTP/2)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// PEM certificate chain.
    #[arg(long)]
    cert: PathBuf,
    /// PEM private key.
    #[arg(long)]
    key: PathBuf,
}

type Out = BoxBody<Bytes, Infallible>;

const CHUNK: usize = 64 * 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tls = bench::server_config(&args.cert, &args.key, &[b"h2", b"http/1.1"])?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of descriptors (idle pools of every contender): wait, do not exit.
                eprintln!("bench-origin: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let chunk = chunk.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| handle(req, chunk.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, chunk: Bytes) -> Result<Response<Out>, Infallible> {
    let path = req.uri().path().to_string();
    let response = match (req.method().as_str(), path.as_str()) {
        ("GET", "/") => text(StatusCode::OK, "hello, world\n".into()),
        ("GET", p) if p.starts_with("/bytes/") => match p["/bytes/".len()..].parse::<u64>() {
            Ok(n) => Response::new(
                Repeat {
                    left: n,
                    chunk: chunk.clone(),
                }
                .boxed(),
            ),
            Err(_) => text(StatusCode::BAD_REQUEST, "bad length\n".into()),
        },
        ("POST", "/upload") => {
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => n += frame.data_ref().map_or(0, |d| d.len()),
                    Err(e) => return Ok(text(StatusCode::BAD_REQUEST, format!("{e}\n"))),
                }
            }
            text(StatusCode::OK, format!("{n}\n"))
        }
        ("GET", "/sse") => sse(req.uri().query().unwrap_or("")),
        ("GET", "/ws") => websocket(req),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(response)
}

fn text(status: StatusCode, body: String) -> Response<Out> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    response
}

/// `left` bytes of `chunk`, repeated: a large body without a large buffer.
struct Repeat {
    left: u64,
    chunk: Bytes,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

fn sse(query: &str) -> Response<Out> {
    let param = |name: &str, default: u64| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(default)
    };
    let (n, ms) = (param("n", 100), param("ms", 10));
    let mut tick = tokio::time::interval(Duration::from_millis(ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let events = stream::unfold((n, tick), |(left, mut tick)| async move {
        if left == 0 {
            return None;
        }
        tick.tick().await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let event = Frame::data(Bytes::from(format!("data: {now}\n\n")));
        Some((Ok::<_, Infallible>(event), (left - 1, tick)))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(events)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn websocket(mut req: Request<Incoming>) -> Response<Out> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "not a WebSocket request\n".into());
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                return;
            }
        }
    });
    let mut response = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}
