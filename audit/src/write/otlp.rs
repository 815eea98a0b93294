//! The OTLP/HTTP logs exporter. It is configured like every OpenTelemetry SDK, by the
//! standard `OTEL_EXPORTER_OTLP_*` variables (which win over the policy file's `audit.otlp`),
//! and sends batches of up to 512 records at least once a second.
//!
//! It is a secondary copy: the file and stdout sinks apply back-pressure, this one never
//! slows the gateway. When the receiver is down it retries a batch with backoff, then gives up
//! on it; every record given up on is counted (`otlp_dropped`) and logged.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use policy::OtlpConfig;
use tokio::sync::mpsc;

use crate::write::sink::Stats;
use crate::write::sink::{Link, Sink};

/// Encoding on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`.
    Protobuf,
    /// `http/json`.
    Json,
}

/// Where and how to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Full logs URL.
    pub url: String,
    /// Encoding.
    pub protocol: Protocol,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Gzip request bodies.
    pub gzip: bool,
    /// `service.name` and `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource: Vec<(String, String)>,
}

impl Target {
    /// The export target from the policy file and the environment; `None` when OTLP is off
    /// (no `audit.otlp` and no endpoint variable).
    pub fn resolve(
        cfg: Option<&OtlpConfig>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Target>, OtlpError> {
        let var = |logs: &str, all: &str| env(logs).or_else(|| env(all));
        let url = match (
            env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
            env("OTEL_EXPORTER_OTLP_ENDPOINT"),
            cfg,
        ) {
            (Some(url), _, _) => url,
            (None, Some(base), _) => logs_url(&base),
            (None, None, Some(c)) => {
                logs_url(c.endpoint.as_deref().unwrap_or("http://localhost:4318"))
            }
            (None, None, None) => return Ok(None),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(OtlpError::Endpoint(url));
        }
        let protocol = var(
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        )
        .or_else(|| cfg.and_then(|c| c.protocol.clone()));
        let mut headers = pairs(&env("OTEL_EXPORTER_OTLP_HEADERS").unwrap_or_default());
        for (k, v) in pairs(&env("OTEL_EXPORTER_OTLP_LOGS_HEADERS").unwrap_or_default()) {
            headers.retain(|(k0, _)| !k0.eq_ignore_ascii_case(&k));
            headers.push((k, v));
        }
        let timeout = var(
            "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        );
        let compression = var(
            "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        );
        Ok(Some(Target {
            url,
            protocol: protocol_of(protocol.as_deref())?,
            headers,
            timeout: timeout_of(timeout)?,
            gzip: gzip_of(compression.as_deref())?,
            resource: resource(&env),
        }))
    }
}

/// An OTLP export setting (policy file or `OTEL_EXPORTER_OTLP_*`) that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpError {
    /// Not an http(s) URL.
    #[error("OTLP endpoint `{0}` must be an http:// or https:// URL")]
    Endpoint(String),
    /// gRPC or an unknown protocol.
    #[error("OTLP protocol `{0}` is not supported (use http/protobuf or http/json)")]
    Protocol(String),
    /// Not a number of milliseconds.
    #[error("OTEL_EXPORTER_OTLP_TIMEOUT `{0}` is not milliseconds")]
    Timeout(String),
    /// Not `gzip` or `none`.
    #[error("OTLP compression `{0}` is not supported (use gzip or none)")]
    Compression(String),
}

fn protocol_of(name: Option<&str>) -> Result<Protocol, OtlpError> {
    match name {
        None | Some("http/protobuf") => Ok(Protocol::Protobuf),
        Some("http/json") => Ok(Protocol::Json),
        Some(other) => Err(OtlpError::Protocol(other.to_string())),
    }
}

fn timeout_of(ms: Option<String>) -> Result<Duration, OtlpError> {
    ms.map(|t| t.parse::<u64>().map_err(|_| OtlpError::Timeout(t)))
        .transpose()
        .map(|t| t.map_or(Duration::from_secs(10), Duration::from_millis))
}

fn gzip_of(compression: Option<&str>) -> Result<bool, OtlpError> {
    match compression {
        None | Some("none") => Ok(false),
        Some("gzip") => Ok(true),
        Some(other) => Err(OtlpError::Compression(other.to_string())),
    }
}

/// `service.name` (default `centaur-gateway`) and `OTEL_RESOURCE_ATTRIBUTES`.
fn resource(env: &impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut resource = vec![(
        "service.name".to_string(),
        env("OTEL_SERVICE_NAME").unwrap_or_else(|| "centaur-gateway".into()),
    )];
    for (k, v) in pairs(&env("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default()) {
        if k != "service.name" || env("OTEL_SERVICE_NAME").is_none() {
            resource.retain(|(k0, _)| *k0 != k);
            resource.push((k, v));
        }
    }
    resource
}

fn logs_url(base: &str) -> String {
    format!("{}/v1/logs", base.trim_end_matches('/'))
}

/// `k=v,k2=v2` with percent-encoded values (the OTel environment format).
fn pairs(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = percent_encoding::percent_decode_str(v.trim()).decode_utf8_lossy();
            (k.trim().to_string(), v.into_owned())
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// Records waiting for the exporter.
const QUEUE: usize = 16 * 1024;
const BATCH: usize = 512;
const ATTEMPTS: u32 = 5;

/// The sink side: hands lines to the exporter task without ever waiting.
pub struct OtlpSink {
    tx: mpsc::Sender<Vec<u8>>,
    stats: Arc<Stats>,
}

impl OtlpSink {
    /// Starts the exporter task on the current tokio runtime.
    pub fn start(
        mut target: Target,
        labels: &BTreeMap<String, String>,
        stats: Arc<Stats>,
    ) -> OtlpSink {
        let (tx, rx) = mpsc::channel(QUEUE);
        for (k, v) in labels {
            target
                .resource
                .push((format!("centaur.sandbox.{k}"), v.clone()));
        }
        let exporter = Exporter::new(target, stats.clone());
        tokio::spawn(exporter.run(rx));
        OtlpSink { tx, stats }
    }
}

impl Sink for OtlpSink {
    fn write(&mut self, line: &[u8], _: Link) -> io::Result<()> {
        if self.tx.try_send(line.to_vec()).is_err() {
            let n = self.stats.otlp_dropped.fetch_add(1, Relaxed);
            if n.is_power_of_two() {
                tracing::error!(
                    dropped = n + 1,
                    "OTLP exporter is behind or stopped: records not exported (the other sinks have them)"
                );
            }
        }
        Ok(())
    }

    fn commit(&mut self, _: bool) -> io::Result<()> {
        Ok(())
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Exporter {
    target: Target,
    client: HttpsClient,
    stats: Arc<Stats>,
}

impl Exporter {
    fn new(target: Target, stats: Arc<Stats>) -> Exporter {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        Exporter {
            target,
            client,
            stats,
        }
    }

    async fn run(self, mut rx: mpsc::Receiver<Vec<u8>>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let deadline = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(deadline);
            while batch.len() < BATCH {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(l) => batch.push(l),
                        None => break,
                    },
                    _ = &mut deadline => break,
                }
            }
            self.export(&batch).await;
        }
    }

    async fn export(&self, batch: &[Vec<u8>]) {
        let (body, content_type) = match self.target.protocol {
            Protocol::Protobuf => (
                crate::write::otlp_encode::protobuf(batch, &self.target.resource),
                "application/x-protobuf",
            ),
            Protocol::Json => (
                crate::write::otlp_encode::json(batch, &self.target.resource),
                "application/json",
            ),
        };
        let body = match self.target.gzip {
            true => match gzip(&body) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "OTLP: could not compress a batch");
                    body
                }
            },
            false => body,
        };
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            match self.post(&body, content_type).await {
                Ok(()) => {
                    self.stats
                        .otlp_exported
                        .fetch_add(batch.len() as u64, Relaxed);
                    return;
                }
                Err((e, retry)) if retry && attempt < ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "OTLP export failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err((e, _)) => {
                    self.stats
                        .otlp_dropped
                        .fetch_add(batch.len() as u64, Relaxed);
                    tracing::error!(error = %e, records = batch.len(), "OTLP export failed; batch not exported (the other sinks have it)");
                    return;
                }
            }
        }
    }

    async fn post(&self, body: &[u8], content_type: &str) -> Result<(), (String, bool)> {
        let mut req = hyper::Request::post(&self.target.url)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::USER_AGENT, "centaur-audit");
        if self.target.gzip {
            req = req.header(hyper::header::CONTENT_ENCODING, "gzip");
        }
        for (k, v) in &self.target.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| (format!("bad request: {e}"), false))?;
        let resp = tokio::time::timeout(self.target.timeout, self.client.request(req))
            .await
            .map_err(|_| ("timed out".to_string(), true))?
            .map_err(|e| (e.to_string(), true))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry = matches!(status.as_u16(), 429 | 502 | 503 | 504);
        Err((format!("receiver answered {status}"), retry))
    }
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn resolves_the_standard_variables() {
        assert_eq!(Target::resolve(None, env(&[])), Ok(None));
        let t = Target::resolve(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20x,a=b"),
                ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "A=c"),
                ("OTEL_SERVICE_NAME", "gw"),
                ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.url, "http://collector:4318/v1/logs");
        assert_eq!(t.protocol, Protocol::Protobuf);
        assert_eq!(
            t.headers,
            vec![
                ("authorization".into(), "Bearer x".into()),
                ("A".into(), "c".into())
            ]
        );
        assert_eq!(t.resource[0], ("service.name".into(), "gw".into()));
        assert_eq!(t.resource[1].0, "deployment.environment");
        let t = Target::resolve(
            Some(&OtlpConfig::default()),
            env(&[
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "https://x/logs"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (t.url.as_str(), t.protocol),
            ("https://x/logs", Protocol::Json)
        );
        let grpc = Target::resolve(
            Some(&OtlpConfig::default()),
            env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
        );
        assert!(grpc.unwrap_err().to_string().contains("not supported"));
    }
}
