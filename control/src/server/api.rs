//! The agent API's handlers: spawn, message, execute, executions, threads, release, the warm
//! pool (the event stream is in `sse.rs`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::server::app::App;
use crate::server::http::{ApiError, body, caller, parse, query_error, ready};
use crate::store::{Code, EnqueueRequest, NewMessage, Scope, SpawnRequest, check_thread_key};

type ApiResult = Result<Response, ApiError>;

pub(crate) async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.ready() {
        axum::Json(json!({"ready": true, "store": app.store().engine()})).into_response()
    } else {
        ApiError::new(Code::NotReady, "the store is opening or migrating").into_response()
    }
}

pub(crate) async fn metrics(State(app): State<Arc<App>>) -> ApiResult {
    ready(&app)?;
    let counts = app.store().execution_counts().await?;
    let mut text = app.metrics.render(&counts);
    if let Some(slack) = &app.slack {
        text.push_str(&slack.render(&app.store().slack_delivery_counts().await?));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

fn key_field(name: &str, v: &Option<String>) -> Result<(), ApiError> {
    match v {
        Some(s)
            if s.is_empty() || s.len() > 200 || s.chars().any(|c| c.is_control() || c == ' ') =>
        {
            Err(ApiError::new(
                Code::InvalidField,
                format!("{name} must be 1 to 200 characters without spaces"),
            ))
        }
        _ => Ok(()),
    }
}

fn harness_field(app: &App, h: &Option<String>) -> Result<(), ApiError> {
    match h {
        Some(h) if !app.settings.harnesses.contains_key(h) => Err(ApiError::new(
            Code::UnknownHarness,
            format!(
                "harness {h:?} is not configured (configured: {})",
                app.settings
                    .harnesses
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

fn answer(out: crate::store::Outcome, status: StatusCode) -> Response {
    let mut body = out.body;
    if out.idempotent {
        body["idempotent"] = json!(true);
    }
    (status, axum::Json(body)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpawnBody {
    thread_key: String,
    spawn_id: Option<String>,
    harness: Option<String>,
    persona_id: Option<String>,
}

pub(crate) async fn spawn(State(app): State<Arc<App>>, headers: HeaderMap, b: Body) -> ApiResult {
    caller(&app, &headers, Scope::Agent).await?;
    let b: SpawnBody = body(&app, b).await?;
    check_thread_key(&b.thread_key)?;
    key_field("spawn_id", &b.spawn_id)?;
    harness_field(&app, &b.harness)?;
    let out = app
        .store()
        .spawn(&SpawnRequest {
            thread_key: b.thread_key,
            spawn_id: b.spawn_id,
            harness: b.harness,
            default_harness: app.settings.default_harness.clone(),
            persona_id: b.persona_id,
        })
        .await?;
    Ok(answer(out, StatusCode::OK))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    thread_key: String,
    assignment_generation: i64,
    message_id: Option<String>,
    role: Option<String>,
    parts: Option<Value>,
    event: Option<Value>,
    user_id: Option<String>,
    metadata: Option<Value>,
}

/// A message as the API accepts it: `parts` (content blocks), or an Anthropic-shaped
/// `event` (`{message: {role, content}}`), or (in `execute`) a plain string.
fn new_message(
    message_id: Option<String>,
    role: Option<String>,
    parts: Option<Value>,
    event: Option<Value>,
) -> Result<NewMessage, ApiError> {
    let bad = |m: &str| ApiError::new(Code::InvalidMessage, m.to_string());
    let (role, content) = match (parts, event) {
        (Some(p), None) => (role, p),
        (None, Some(e)) => {
            let m = e.get("message").ok_or_else(|| bad("event needs a message: {\"message\": {\"role\": \"user\", \"content\": [...]}}"))?;
            let r = m
                .get("role")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or(role);
            (r, m.get("content").cloned().unwrap_or(Value::Null))
        }
        (Some(_), Some(_)) => return Err(bad("give parts or event, not both")),
        (None, None) => return Err(bad("a message needs parts (or an event)")),
    };
    let parts = match content {
        Value::String(s) => json!([{"type": "text", "text": s}]),
        Value::Array(a) => Value::Array(a),
        _ => return Err(bad("parts must be an array of content blocks")),
    };
    let Value::Array(list) = &parts else {
        return Err(bad("parts must be an array"));
    };
    if list.is_empty() {
        return Err(bad("the message has no content (parts is empty)"));
    }
    for (i, p) in list.iter().enumerate() {
        match p.get("type").and_then(Value::as_str) {
            None => return Err(bad(&format!("parts[{i}] has no type"))),
            Some("text") if !p.get("text").is_some_and(Value::is_string) => {
                return Err(bad(&format!(
                    "parts[{i}] is a text block without a text string"
                )));
            }
            Some("text") if p["text"].as_str().is_some_and(|t| t.trim().is_empty()) => {
                return Err(bad(&format!("parts[{i}] is empty text")));
            }
            Some(_) => {
                if let Some(Err(e)) = crate::server::attachments::decode(p) {
                    return Err(ApiError::new(
                        Code::InvalidField,
                        format!("parts[{i}]: {e}"),
                    ));
                }
            }
        }
    }
    let role = role.unwrap_or_else(|| "user".into());
    if !matches!(role.as_str(), "user" | "assistant" | "system") {
        return Err(ApiError::new(
            Code::InvalidField,
            format!("role {role:?} is not user, assistant or system"),
        ));
    }
    key_field("message_id", &message_id)?;
    Ok(NewMessage {
        message_id,
        role,
        parts,
    })
}

pub(crate) async fn message(State(app): State<Arc<App>>, headers: HeaderMap, b: Body) -> ApiResult {
    caller(&app, &headers, Scope::Agent).await?;
    let b: MessageBody = body(&app, b).await?;
    check_thread_key(&b.thread_key)?;
    let _ = (&b.user_id, &b.metadata);
    let m = new_message(b.message_id, b.role, b.parts, b.event)?;
    let out = app
        .store()
        .append_message(&b.thread_key, b.assignment_generation, &m)
        .await?;
    Ok(answer(out, StatusCode::OK))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteBody {
    thread_key: String,
    assignment_generation: Option<i64>,
    execute_id: Option<String>,
    message: Option<Value>,
    harness: Option<String>,
    user_id: Option<String>,
    metadata: Option<Value>,
}

pub(crate) async fn execute(State(app): State<Arc<App>>, headers: HeaderMap, b: Body) -> ApiResult {
    caller(&app, &headers, Scope::Agent).await?;
    let b: ExecuteBody = body(&app, b).await?;
    check_thread_key(&b.thread_key)?;
    key_field("execute_id", &b.execute_id)?;
    harness_field(&app, &b.harness)?;
    let _ = (&b.user_id, &b.metadata);
    let message = match b.message {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(new_message(None, None, Some(Value::String(s)), None)?),
        Some(Value::Object(m)) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct M {
                message_id: Option<String>,
                role: Option<String>,
                parts: Option<Value>,
                event: Option<Value>,
            }
            let m: M = parse(Value::Object(m).to_string().as_bytes())?;
            Some(new_message(m.message_id, m.role, m.parts, m.event)?)
        }
        Some(_) => {
            return Err(ApiError::new(
                Code::InvalidMessage,
                "message must be a string or {parts | event}",
            ));
        }
    };
    let out = app
        .store()
        .enqueue(&EnqueueRequest {
            thread_key: b.thread_key,
            generation: b.assignment_generation,
            execute_id: b.execute_id,
            message,
            harness: b.harness,
            default_harness: app.settings.default_harness.clone(),
        })
        .await?;
    app.kick.notify_one();
    Ok(answer(out, StatusCode::ACCEPTED))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessagesQuery {
    thread_key: String,
    cursor: Option<String>,
    limit: Option<i64>,
}

pub(crate) async fn messages(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    caller(&app, &headers, Scope::Agent).await?;
    let Query(q) = q.map_err(query_error)?;
    check_thread_key(&q.thread_key)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let (list, more) = app
        .store()
        .messages(&q.thread_key, q.cursor.as_deref(), limit)
        .await?;
    let cursor = list.last().map(|m| m.message_id.clone());
    let messages: Vec<Value> = list
        .into_iter()
        .map(|m| {
            json!({"id": m.message_id, "role": m.role, "parts": m.parts, "delivered_execution_id": m.delivered_execution_id, "created_at": m.created_at})
        })
        .collect();
    Ok(axum::Json(json!({"thread_key": q.thread_key, "messages": messages, "cursor": cursor, "has_more": more})).into_response())
}

pub(crate) async fn execution(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    caller(&app, &headers, Scope::Agent).await?;
    match app.store().execution(&id).await? {
        Some(e) => Ok(axum::Json(e.to_json()).into_response()),
        None => Err(ApiError::new(
            Code::NotFound,
            format!("no execution {id:?}"),
        )),
    }
}

pub(crate) async fn cancel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    caller(&app, &headers, Scope::Agent).await?;
    let out = app.store().cancel(&id).await?;
    app.wake_execution(&id);
    Ok(answer(out, StatusCode::OK))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SteerBody {
    message: Value,
}

/// `POST /agent/executions/{id}/steer`: more input for a running turn, written to its
/// harness at once (each kind folds it into the turn its own way).
pub(crate) async fn steer(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Body,
) -> ApiResult {
    caller(&app, &headers, Scope::Agent).await?;
    let b: SteerBody = body(&app, b).await?;
    let m = new_message(None, None, Some(b.message), None)?;
    let e = app.store().record_steer(&id, &m.parts).await?;
    let a = app
        .store()
        .assignment(&e.thread_key)
        .await?
        .ok_or_else(|| ApiError::new(Code::ExecutionNotRunning, "the thread has no sandbox"))?;
    let h = app.runtimes.adapter(&a);
    let content = m.parts.as_array().cloned().unwrap_or_default();
    let line = h.steer_line(&crate::harness::Turn {
        content,
        preamble: None,
    });
    let steer_id = crate::store::new_id("steer_");
    app.runtimes
        .client(&a.runtime_id)
        .turn(&steer_id, &line)
        .await
        .map_err(|e| ApiError::new(Code::ExecutionNotRunning, e.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"ok": true, "execution_id": id, "steer_id": steer_id})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitQuery {
    limit: Option<i64>,
}

pub(crate) async fn threads(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    caller(&app, &headers, Scope::Agent).await?;
    let Query(q) = q.map_err(query_error)?;
    let list = app
        .store()
        .threads(q.limit.unwrap_or(50).clamp(1, 500))
        .await?;
    let threads: Vec<Value> = list
        .into_iter()
        .map(|t| json!({"thread_key": t.thread_key, "created_at": t.created_at, "last_event_id": t.last_event_id, "executions": t.executions, "harness": t.harness}))
        .collect();
    Ok(axum::Json(json!({"threads": threads})).into_response())
}

/// `GET /agent/pool` (admin): the warm pool's target, its ready members and every member.
pub(crate) async fn pool(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult {
    caller(&app, &headers, Scope::Admin).await?;
    let view = app.runtimes.pool_view(&app.store()).await?;
    Ok(axum::Json(view).into_response())
}

pub(crate) async fn thread_executions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(thread_key): Path<String>,
    q: Result<Query<LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    caller(&app, &headers, Scope::Agent).await?;
    let Query(q) = q.map_err(query_error)?;
    check_thread_key(&thread_key)?;
    let list = app
        .store()
        .thread_executions(&thread_key, q.limit.unwrap_or(20).clamp(1, 100))
        .await?;
    let executions: Vec<Value> = list.iter().map(|e| e.to_json()).collect();
    Ok(axum::Json(json!({"thread_key": thread_key, "executions": executions})).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    release_id: Option<String>,
    cancel_inflight: Option<bool>,
}

pub(crate) async fn release(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(thread_key): Path<String>,
    b: Body,
) -> ApiResult {
    caller(&app, &headers, Scope::Agent).await?;
    check_thread_key(&thread_key)?;
    let bytes = axum::body::to_bytes(b, app.settings.max_body)
        .await
        .map_err(|_| ApiError::new(Code::BodyTooLarge, "the body is too large"))?;
    let b: ReleaseBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        ReleaseBody::default()
    } else {
        parse(&bytes)?
    };
    key_field("release_id", &b.release_id)?;
    let running: Vec<String> = app
        .store()
        .thread_executions(&thread_key, 100)
        .await?
        .into_iter()
        .filter(|e| !e.status.is_terminal())
        .map(|e| e.execution_id)
        .collect();
    let (out, runtime) = app
        .store()
        .release(
            &thread_key,
            b.release_id.as_ref(),
            b.cancel_inflight.unwrap_or(false),
        )
        .await?;
    for id in running {
        app.wake_execution(&id);
    }
    if let Some(rt) = runtime {
        let app = app.clone();
        tokio::spawn(async move { app.runtimes.stop(&rt).await });
    }
    Ok(answer(out, StatusCode::OK))
}
