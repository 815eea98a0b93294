//! `/api/webhooks/{slug}`: a workflow's webhook (`crate::workflows::webhooks`). No API key:
//! each webhook authenticates its requests itself (HMAC, GitHub's signature, a bearer token).
//! Answers 202 `{run_id, duplicate}` once the run is stored; a delivery sent again (same
//! trigger key, same body) gets the same run with `duplicate: true`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::server::app::App;
use crate::store::{NewRun, StoreError};
use crate::workflows::webhooks::{Request, accept};

fn refuse(status: u16, reason: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(json!({"ok": false, "error": reason.into()}))).into_response()
}

/// Any method: the webhook says which it accepts.
pub(crate) async fn receive(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(engine) = app.workflows.get() else {
        return refuse(
            404,
            format!("no webhook {slug:?}: no workflows are configured"),
        );
    };
    // The worker declares the webhooks: wait for it once after a start.
    if let Err(e) = engine.ready_worker().await {
        return refuse(503, format!("the workflow worker is not running: {e}"));
    }
    let Some((hook, version)) = engine.webhooks.get(&slug) else {
        return refuse(404, format!("no webhook {slug:?}"));
    };
    let Ok(raw) = axum::body::to_bytes(body, app.settings.max_body).await else {
        return refuse(
            413,
            format!("the body is larger than {} bytes", app.settings.max_body),
        );
    };
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let req = Request {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &pairs,
        body: &raw,
    };
    let secrets = engine.webhook_secret.clone();
    let (input, key) = match accept(&hook, &req, |name| secrets(name)) {
        Ok(x) => x,
        Err((status, reason)) => {
            tracing::warn!("webhook {slug}: refused ({status}): {reason}");
            return refuse(status, reason);
        }
    };
    let idempotency = json!({"raw_body_sha256": input["webhook"]["raw_body_sha256"]});
    let created = app
        .store()
        .create_run(&NewRun {
            workflow_name: hook.workflow.clone(),
            workflow_version: version,
            input,
            trigger_key: Some(key),
            idempotency: Some(idempotency),
        })
        .await;
    match created {
        Ok((run, duplicate)) => {
            engine.kick.notify_one();
            (
                StatusCode::ACCEPTED,
                Json(json!({"ok": true, "run_id": run.run_id, "duplicate": duplicate})),
            )
                .into_response()
        }
        Err(StoreError::Rejected(r)) => refuse(409, r.message),
        Err(e) => {
            tracing::error!("webhook {slug}: {e}");
            refuse(500, "the run could not be stored")
        }
    }
}
