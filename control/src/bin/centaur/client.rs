//! A small HTTP client for the control plane's API: JSON requests and an SSE reader.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The API at `base` with a key.
pub struct Api {
    base: String,
    key: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// An answer that is not 2xx.
#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// One server-sent event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<i64>,
    pub event: String,
    pub data: String,
}

impl Api {
    pub fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            bail!("--server {base:?}: expected http://HOST:PORT");
        }
        let mut c = HttpConnector::new();
        c.set_connect_timeout(Some(Duration::from_secs(5)));
        Ok(Api {
            base,
            key: key.to_string(),
            http: Client::builder(TokioExecutor::new()).build(c),
        })
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if !self.key.is_empty() {
            // None inside a sandbox: its gateway adds the thread's token.
            b = b.header("authorization", format!("Bearer {}", self.key));
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        Ok(b.body(body)?)
    }

    /// A JSON call; a non-2xx answer is an [`ApiFailure`].
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let req = self.request(method, path, body)?;
        let resp = self
            .http
            .request(req)
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if !(200..300).contains(&status) {
            return Err(ApiFailure {
                status,
                code: v["code"].as_str().unwrap_or("HTTP").to_string(),
                message: v["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            }
            .into());
        }
        Ok(v)
    }

    /// Opens an event stream (`query` is the part after `?`), resuming after `last`.
    pub async fn events(
        &self,
        thread: &str,
        query: &str,
        last: Option<i64>,
    ) -> anyhow::Result<SseReader> {
        let path = format!("/agent/threads/{}/events?{query}", encode(thread));
        let mut req = self.request("GET", &path, None)?;
        req.headers_mut()
            .insert("accept", "text/event-stream".parse()?);
        if let Some(id) = last {
            req.headers_mut()
                .insert("last-event-id", id.to_string().parse()?);
        }
        let resp = self
            .http
            .request(req)
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let bytes = resp.into_body().collect().await?.to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(ApiFailure {
                status,
                code: v["code"].as_str().unwrap_or("HTTP").to_string(),
                message: v["message"].as_str().unwrap_or("").to_string(),
            }
            .into());
        }
        Ok(SseReader {
            body: resp.into_body(),
            buf: Vec::new(),
            cur: SseEvent::default(),
        })
    }
}

/// Percent-encodes a path segment.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Reads events off an SSE body.
pub struct SseReader {
    body: Incoming,
    buf: Vec<u8>,
    cur: SseEvent,
}

impl SseReader {
    /// The next event; `None` when the stream ended (or broke).
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                let line = line.strip_suffix('\r').unwrap_or(&line);
                if line.is_empty() {
                    if !self.cur.event.is_empty() || !self.cur.data.is_empty() {
                        let mut e = std::mem::take(&mut self.cur);
                        if e.data.ends_with('\n') {
                            e.data.pop();
                        }
                        return Some(e);
                    }
                    continue;
                }
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => self.cur.id = value.parse().ok(),
                    "event" => self.cur.event = value.to_string(),
                    "data" => {
                        self.cur.data.push_str(value);
                        self.cur.data.push('\n');
                    }
                    _ => {}
                }
            }
            match self.body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
                _ => return None,
            }
        }
    }
}
