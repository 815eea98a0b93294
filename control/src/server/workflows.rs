//! `/workflows`: the workflows this server runs, their runs (create, list, show, cancel) and
//! events (`crate::workflows`). Every route needs the `agent` scope.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::server::app::App;
use crate::server::http::{ApiError, bytes, caller, parse};
use crate::store::{Code, NewRun, RunStatus, Scope};
use crate::workflows::executor::Engine;

fn engine(app: &App) -> Result<&Arc<Engine>, ApiError> {
    app.workflows.get().ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            "no workflows are configured on this server (workflows: in its config)",
        )
    })
}

/// The workflows the worker serves, once it has started (a request right after the server
/// starts waits for it rather than finding none).
async fn loaded(
    engine: &Engine,
) -> Result<std::collections::BTreeMap<String, crate::workflows::worker::Found>, ApiError> {
    match engine.ready_worker().await {
        Ok(w) => Ok(w.workflows.clone()),
        Err(e) => Err(ApiError::new(
            Code::NotReady,
            format!("the workflow worker is not running: {e}"),
        )),
    }
}

/// `GET /workflows` → `{workflows: [{name, file, version}]}`.
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers, Scope::Agent).await?;
    let found = loaded(engine(&app)?).await?;
    Ok(Json(
        json!({"workflows": found.values().collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRun {
    workflow_name: String,
    #[serde(default)]
    input: Value,
    trigger_key: Option<String>,
}

/// `POST /workflows/runs {workflow_name, input, trigger_key?}` → the run (201 when new, 200
/// with `idempotent: true` when the trigger key found one).
pub async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller(&app, &headers, Scope::Agent).await?;
    let req: CreateRun = parse(&bytes(&app, body).await?)?;
    let engine = engine(&app)?;
    let found = loaded(engine).await?;
    let Some(wf) = found.get(&req.workflow_name) else {
        let known: Vec<&str> = found.keys().map(String::as_str).collect();
        return Err(ApiError::new(
            Code::NotFound,
            format!(
                "no workflow {:?} (loaded: {})",
                req.workflow_name,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    if req
        .trigger_key
        .as_deref()
        .is_some_and(|k| k.is_empty() || k.len() > 512)
    {
        return Err(ApiError::new(
            Code::InvalidField,
            "trigger_key: 1 to 512 bytes",
        ));
    }
    let (run, found) = app
        .store()
        .create_run(&NewRun {
            workflow_name: req.workflow_name,
            workflow_version: wf.version.clone(),
            input: req.input,
            trigger_key: req.trigger_key,
            idempotency: None,
        })
        .await?;
    engine.kick.notify_one();
    let status = if found {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(run.to_json(found))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
/// The filters of `GET /workflows/runs`.
pub struct ListQuery {
    workflow: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

/// `GET /workflows/runs?workflow=&status=&limit=` → `{runs}`, newest first.
pub async fn runs(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers, Scope::Agent).await?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::new(
                Code::InvalidField,
                format!("status: {s:?} is not queued, running, sleeping, waiting, completed, failed or cancelled"),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let runs = app
        .store()
        .list_runs(q.workflow.as_deref(), status, limit)
        .await?;
    Ok(Json(
        json!({"runs": runs.iter().map(|r| r.to_json(false)).collect::<Vec<_>>()}),
    ))
}

/// `GET /workflows/runs/{id}` → the run with its steps.
pub async fn show(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers, Scope::Agent).await?;
    let (run, steps) = app
        .store()
        .get_run(&id)
        .await?
        .ok_or_else(|| ApiError::new(Code::NotFound, format!("no workflow run {id:?}")))?;
    let mut out = run.to_json(false);
    out["steps"] = steps
        .iter()
        .map(|c| json!({"seq": c.seq, "name": c.name, "kind": c.kind.as_str(), "done": c.done, "value": c.value}))
        .collect();
    Ok(Json(out))
}

/// `POST /workflows/runs/{id}/cancel` → the run (idempotent once it ended).
pub async fn cancel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers, Scope::Agent).await?;
    let run = app
        .store()
        .cancel_run(&id)
        .await?
        .ok_or_else(|| ApiError::new(Code::NotFound, format!("no workflow run {id:?}")))?;
    Ok(Json(run.to_json(false)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostEvent {
    event_type: String,
    correlation_id: String,
    #[serde(default)]
    payload: Value,
}

/// `POST /workflows/events {event_type, correlation_id, payload}` → `{event_id, woken}`.
pub async fn event(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers, Scope::Agent).await?;
    let e: PostEvent = parse(&bytes(&app, body).await?)?;
    for (field, v) in [
        ("event_type", &e.event_type),
        ("correlation_id", &e.correlation_id),
    ] {
        if v.is_empty() || v.len() > 512 {
            return Err(ApiError::new(
                Code::InvalidField,
                format!("{field}: 1 to 512 bytes"),
            ));
        }
    }
    let (event_id, woken) = app
        .store()
        .post_workflow_event(&e.event_type, &e.correlation_id, &e.payload)
        .await?;
    if let Some(engine) = app.workflows.get() {
        engine.kick.notify_one();
    }
    Ok(Json(
        json!({"ok": true, "event_id": event_id, "woken": woken}),
    ))
}
