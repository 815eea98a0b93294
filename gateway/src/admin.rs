//! The management API (bearer token) and the unauthenticated metrics/health listener.
//!
//! `/healthz` and `/readyz` need no token (probes); everything else does.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use policy::{Config, ConfigErrors};
use tokio::net::TcpListener;

use crate::credential::store::SecretEnv;
use crate::shared::{Addrs, Shared};

/// What the management endpoints need.
#[derive(Debug)]
pub struct Mgmt {
    /// Shared gateway state.
    pub shared: Arc<Shared>,
    /// Bound addresses, for `/v1/status`.
    pub addrs: Addrs,
    /// Start time.
    pub started: Instant,
    /// The bearer token; `None` on the metrics listener, where only public routes exist.
    pub token: Option<String>,
}

/// Why a reload failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// No file to reload from.
    #[error("the gateway was not started from a configuration file")]
    NoFile,
    /// The file could not be read.
    #[error("could not read the configuration file: {0}")]
    Read(std::io::Error),
    /// The new policy is invalid; the running one stays.
    #[error("{0}")]
    Invalid(ConfigErrors),
}

/// Re-reads the configuration file and swaps the policy atomically; in-flight requests keep
/// the snapshot they loaded. Listeners, CA and limits need a restart.
pub fn reload(shared: &Shared) -> Result<usize, ReloadError> {
    let path = shared.config_path.as_ref().ok_or(ReloadError::NoFile)?;
    match std::fs::read_to_string(path) {
        Ok(text) => install(shared, &text),
        Err(e) => {
            shared.metrics.reloads_failed.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "policy reload refused; the running policy stays");
            Err(ReloadError::Read(e))
        }
    }
}

/// Validates and compiles `text` (a whole policy file), then swaps its policy in at once.
/// On any error the running policy stays.
pub fn install(shared: &Shared, text: &str) -> Result<usize, ReloadError> {
    match Config::parse(text) {
        Ok(cfg) => {
            let env = shared.policy.load().env.clone();
            Ok(install_policy(shared, cfg.policy, env))
        }
        Err(e) => {
            shared.metrics.reloads_failed.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "new policy refused; the running policy stays");
            Err(ReloadError::Invalid(e))
        }
    }
}

/// Swaps in `policy`, with `env` as the values of its `{type: env}` sources from now on;
/// returns its rule count. For an embedder that already validated the policy (a warm
/// sandbox's gateway claimed by a thread): the listeners, CA and audit sinks stay.
pub fn install_policy(shared: &Shared, policy: policy::Policy, env: SecretEnv) -> usize {
    let rules = policy.rule_count();
    let snap = crate::shared::Snapshot::new(policy, &shared.upstreams, &env);
    shared.policy.store(Arc::new(snap));
    shared.metrics.reloads_ok.fetch_add(1, Relaxed);
    tracing::info!(rules, "policy installed");
    rules
}

/// Serves management requests until the task is dropped.
pub async fn serve(state: Arc<Mgmt>, listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", v.to_string())
}

fn authorized(token: &str, req: &Request<Incoming>) -> bool {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant time in the token's length.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Ready unless the audit trail cannot be written (a full disk): a load balancer then sends
/// its traffic elsewhere.
fn readiness(s: &Shared) -> Response<Full<Bytes>> {
    match s.audit.stats().is_failing() {
        true => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: the audit trail cannot be written\n",
        ),
        false => reply(StatusCode::OK, "text/plain", "ready\n"),
    }
}

async fn handle(
    state: Arc<Mgmt>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let public =
        matches!(path, "/healthz" | "/readyz") || (state.token.is_none() && path == "/metrics");
    if !public {
        match &state.token {
            Some(t) if authorized(t, &req) => {}
            _ => {
                return Ok(json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "unauthorized"}),
                ));
            }
        }
    }
    let allowed = match path {
        "/healthz" | "/readyz" | "/metrics" | "/v1/status" => "GET",
        "/v1/reload" => "POST",
        "/v1/policy" => "PUT",
        _ => {
            return Ok(json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "not found"}),
            ));
        }
    };
    if req.method().as_str() != allowed {
        let mut r = json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "method not allowed"}),
        );
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static(allowed));
        return Ok(r);
    }
    let s = &state.shared;
    Ok(match path {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => readiness(s),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            s.metrics.render(s.leaf_count(), s.audit.stats()),
        ),
        "/v1/status" => json(
            StatusCode::OK,
            serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_seconds": state.started.elapsed().as_secs(),
                "policy_rules": s.policy.load().policy.rule_count(),
                "listeners": state.addrs,
                "connections_active": s.metrics.active(),
                "requests_total": s.metrics.exchanges_total(),
                "leaf_certificates": s.leaf_count(),
            }),
        ),
        "/v1/policy" => put_policy(s, req).await,
        _ => outcome(reload(s)),
    })
}

/// `PUT /v1/policy`: a policy file as the body; or, as `application/json`, a
/// [`Takeover`].
async fn put_policy(s: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let takeover = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = http_body_util::Limited::new(req.into_body(), MAX_POLICY_BYTES)
        .collect()
        .await;
    let Ok(b) = body.map(|b| b.to_bytes()) else {
        return json(
            StatusCode::PAYLOAD_TOO_LARGE,
            serde_json::json!({"error": format!("a policy is at most {MAX_POLICY_BYTES} bytes")}),
        );
    };
    if takeover {
        return match serde_json::from_slice::<Takeover>(&b) {
            Ok(t) => outcome(take_over(s, t)),
            Err(e) => json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": format!(
                    "expected {{\"policy\": \"<policy file>\", \"env\": {{\"NAME\": \"value\"}}}}: {e}"
                )}),
            ),
        };
    }
    match std::str::from_utf8(&b) {
        Ok(text) => outcome(install(s, text)),
        Err(_) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "the policy is not UTF-8 text"}),
        ),
    }
}

/// The JSON body of `PUT /v1/policy`: a gateway handed to a new workload (a warm sandbox
/// claimed by a thread) takes its policy, the values of the policy's `{type: env}`
/// sources (over the gateway's own environment, which a running pod cannot change), and
/// the policy's `audit.sandbox` labels for every record from now on. No `Debug`: it holds
/// secret values.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Takeover {
    policy: String,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
}

fn take_over(s: &Shared, t: Takeover) -> Result<usize, ReloadError> {
    let cfg = Config::parse(&t.policy).map_err(|e| {
        s.metrics.reloads_failed.fetch_add(1, Relaxed);
        tracing::warn!(error = %e, "new policy refused; the running policy stays");
        ReloadError::Invalid(e)
    })?;
    let env = t
        .env
        .into_iter()
        .map(|(k, v)| {
            let v = crate::credential::store::SecretValue::new(v.into_bytes());
            (k, v)
        })
        .collect();
    let rules = install_policy(s, cfg.policy, SecretEnv::new(env));
    s.audit.relabel(cfg.audit.sandbox);
    Ok(rules)
}

/// The largest policy `PUT /v1/policy` accepts.
const MAX_POLICY_BYTES: usize = 4 << 20;

fn outcome(result: Result<usize, ReloadError>) -> Response<Full<Bytes>> {
    match result {
        Ok(rules) => json(
            StatusCode::OK,
            serde_json::json!({"status": "ok", "policy_rules": rules}),
        ),
        Err(ReloadError::Invalid(errs)) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({
                "error": "invalid policy; the running policy stays",
                "errors": errs.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        ),
        Err(e) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({"error": e.to_string()}),
        ),
    }
}
