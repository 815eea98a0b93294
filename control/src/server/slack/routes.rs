//! `POST /api/slack/events` and `/api/webhooks/slack` (Slack's Events API, signed), and
//! `GET /agent/slack/deliveries` (the outbox, for operators).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::server::app::App;
use crate::server::http::{ApiError, caller, query_error};
use crate::server::slack::envelope::{self, Parsed};
use crate::server::slack::state::Slack;
use crate::server::slack::verify::verify;
use crate::store::{Code, Scope};

fn slack_error(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({"ok": false, "error": error}))).into_response()
}

/// One Events API request: verified over the raw body before anything is parsed or stored;
/// answered as soon as the event is durably in the inbox (the turn starts in the
/// background).
pub(crate) async fn events(State(app): State<Arc<App>>, headers: HeaderMap, b: Body) -> Response {
    let Some(slack) = app.slack.clone() else {
        return slack_error(StatusCode::NOT_FOUND, "slack_not_configured");
    };
    let Ok(raw) = axum::body::to_bytes(b, app.settings.max_body).await else {
        slack.counters.refused.fetch_add(1, Ordering::Relaxed);
        return slack_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    };
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let now = app.clock_ms() / 1000;
    if let Err(refusal) = verify(
        &slack.settings.signing_secret,
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        &raw,
        now,
    ) {
        slack.counters.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("slack: refused a request: {}", refusal.as_str());
        return slack_error(StatusCode::UNAUTHORIZED, refusal.as_str());
    }
    if !app.ready() {
        // Slack retries what is not acknowledged.
        return slack_error(StatusCode::SERVICE_UNAVAILABLE, "starting");
    }
    match accept(&app, &slack, &raw).await {
        Ok(Accepted::Challenge(c)) => axum::Json(json!({"challenge": c})).into_response(),
        Ok(Accepted::Stored) => axum::Json(json!({"ok": true})).into_response(),
        Ok(Accepted::Duplicate) => {
            axum::Json(json!({"ok": true, "duplicate": true})).into_response()
        }
        Ok(Accepted::Ignored(why)) => {
            axum::Json(json!({"ok": true, "ignored": why})).into_response()
        }
        Err(Refused::Invalid(e)) => {
            slack.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("slack: a signed body we cannot read: {e}");
            slack_error(StatusCode::BAD_REQUEST, "invalid_payload")
        }
        Err(Refused::Store(e)) => {
            tracing::error!("slack: cannot store an event: {e}");
            slack_error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        }
    }
}

/// What became of a verified body.
pub enum Accepted {
    /// `url_verification`.
    Challenge(String),
    /// Stored in the inbox.
    Stored,
    /// Already stored.
    Duplicate,
    /// Nothing to do.
    Ignored(String),
}

/// Why a verified body was not taken.
pub enum Refused {
    /// It is not an event we can read.
    Invalid(String),
    /// The store failed: do not acknowledge.
    Store(String),
}

/// Takes a verified body (HTTP, or a Socket Mode envelope's payload): stores a message in
/// the inbox once and wakes the processor.
pub async fn accept(app: &App, slack: &Slack, raw: &[u8]) -> Result<Accepted, Refused> {
    let m = match envelope::parse(raw).map_err(Refused::Invalid)? {
        Parsed::Challenge(c) => return Ok(Accepted::Challenge(c)),
        Parsed::Ignore(why) => return Ok(Accepted::Ignored(why)),
        Parsed::Message(m) => m,
    };
    let body = String::from_utf8_lossy(raw);
    let new = app
        .store()
        .slack_inbox_insert(&m.dedupe_key(), &m.event_id, &body)
        .await
        .map_err(|e| Refused::Store(e.to_string()))?;
    if new {
        slack.counters.accepted.fetch_add(1, Ordering::Relaxed);
        slack.inbox.notify_one();
        Ok(Accepted::Stored)
    } else {
        slack.counters.duplicates.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            "slack: event {} (message {}) was already received",
            m.event_id,
            m.dedupe_key()
        );
        Ok(Accepted::Duplicate)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveriesQuery {
    state: Option<String>,
    limit: Option<i64>,
}

/// The outbox, newest first (`?state=active|delivered|dead`); admin scope.
pub(crate) async fn deliveries(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller(&app, &headers, Scope::Admin).await?;
    let Query(q) = q.map_err(query_error)?;
    if let Some(s) = &q.state
        && !["active", "delivered", "dead"].contains(&s.as_str())
    {
        return Err(ApiError::new(
            Code::InvalidField,
            format!("state {s:?}: one of active, delivered, dead"),
        ));
    }
    let rows = app
        .store()
        .slack_deliveries(q.state.as_deref(), q.limit.unwrap_or(50).clamp(1, 500))
        .await?;
    let list: Vec<Value> = rows
        .into_iter()
        .map(|d| {
            json!({"delivery_id": d.delivery_id, "execution_id": d.execution_id,
                   "thread_key": d.thread_key, "channel": d.channel, "thread_ts": d.thread_ts,
                   "state": d.state, "status_ts": d.status_ts, "parts_posted": d.parts_posted,
                   "attempts": d.attempts, "last_error": d.last_error,
                   "created_at": d.created_at, "delivered_at": d.delivered_at,
                   "notice": d.notice})
        })
        .collect();
    Ok(axum::Json(json!({"deliveries": list})).into_response())
}
