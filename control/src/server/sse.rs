//! `GET /agent/threads/{thread_key}/events`: the thread's events as server-sent events —
//! replay after the cursor (`after_event_id`, or the `Last-Event-ID` header on a reconnect;
//! both exclusive), then live. Live delivery is pushed: the store announces each commit (and
//! PostgreSQL's `NOTIFY` carries other replicas'), the stream reads what is new at once.
//! A keep-alive comment goes out every 15 s. With `execution_id`, only that execution's
//! events, and the stream ends after its terminal `execution_state`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use crate::server::App;
use crate::server::api::{ApiError, caller, query_error};
use crate::store::{Code, Event, Scope, Status, check_thread_key};

/// Events read per query.
const PAGE: i64 = 500;
/// The longest silence on a stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    after_event_id: Option<i64>,
    execution_id: Option<String>,
    /// `false`: end once the stored events are sent (not in the reference contract; for
    /// `centaur events`).
    follow: Option<bool>,
}

pub(crate) async fn events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(thread_key): Path<String>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller(&app, &headers, Scope::Agent).await?;
    let Query(q) = q.map_err(query_error)?;
    check_thread_key(&thread_key)?;
    let last = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError(crate::store::Rejection::new(
                        Code::InvalidField,
                        "Last-Event-ID must be an event id (a whole number)",
                    ))
                })?,
        ),
    };
    let cursor = last.or(q.after_event_id).unwrap_or(0);
    if cursor < 0 {
        return Err(ApiError(crate::store::Rejection::new(
            Code::InvalidField,
            "after_event_id must be 0 or more",
        )));
    }
    if let Some(e) = &q.execution_id {
        match app.store().execution(e).await? {
            Some(x) if x.thread_key == thread_key => {}
            _ => {
                return Err(ApiError(crate::store::Rejection::new(
                    Code::NotFound,
                    format!("no execution {e:?} on thread {thread_key:?}"),
                )));
            }
        }
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    // Subscribe before the first read, so nothing committed in between is missed.
    let sub = app.store().subscribe();
    tokio::spawn(stream(
        app,
        thread_key,
        cursor,
        q.execution_id,
        q.follow != Some(false),
        sub,
        tx,
    ));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    }));
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

/// One SSE frame: `id`, `event`, and the data (each of its lines a `data:` field).
pub fn frame(e: &Event) -> String {
    let mut s = String::with_capacity(e.data.len() + 48);
    let _ = write!(s, "id: {}\nevent: {}\n", e.event_id, e.kind);
    for line in e.data.split(['\n', '\r']) {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    s
}

fn terminal(e: &Event) -> bool {
    e.kind == "execution_state"
        && serde_json::from_str::<serde_json::Value>(&e.data)
            .ok()
            .and_then(|v| v["status"].as_str().and_then(Status::parse))
            .is_some_and(Status::is_terminal)
}

struct Gauge<'a>(&'a std::sync::atomic::AtomicI64);
impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn stream(
    app: Arc<App>,
    thread: String,
    mut cursor: i64,
    execution: Option<String>,
    follow: bool,
    mut sub: broadcast::Receiver<crate::store::Announcement>,
    tx: mpsc::Sender<Bytes>,
) {
    app.metrics.sse_clients.fetch_add(1, Ordering::Relaxed);
    let _gauge = Gauge(&app.metrics.sse_clients);
    let store = app.store();
    let mut shutdown = app.shutdown.subscribe();
    let mut sent_any = false;
    let mut committed_at = None;
    loop {
        loop {
            let rows = match store
                .events_after(&thread, cursor, execution.as_deref(), PAGE)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("event stream of {thread}: {e}");
                    let _ = tx
                        .send(Bytes::from_static(
                            b"event: stream_error\ndata: {\"error\":\"event stream failed\"}\n\n",
                        ))
                        .await;
                    return;
                }
            };
            let n = rows.len();
            let mut out = String::new();
            let mut end = false;
            for e in &rows {
                out.push_str(&frame(e));
                cursor = e.event_id;
                if execution.is_some() && terminal(e) {
                    end = true;
                    break;
                }
            }
            if !out.is_empty() {
                sent_any = true;
                if tx.send(Bytes::from(out)).await.is_err() {
                    return;
                }
                if let Some(at) = committed_at.take() {
                    app.metrics
                        .observe_delivery(std::time::Instant::now().duration_since(at));
                }
            }
            if end {
                return;
            }
            if i64::try_from(n).unwrap_or(0) < PAGE {
                break;
            }
        }
        if let Some(id) = &execution {
            // The terminal event may lie before the cursor: end with a snapshot of it.
            if let Ok(Some(x)) = store.execution(id).await
                && x.status.is_terminal()
            {
                if !sent_any {
                    let snap = Event {
                        event_id: cursor,
                        execution_id: Some(id.clone()),
                        kind: "execution_state".into(),
                        data: x.state_event().to_string(),
                        created_at: x.updated_at,
                    };
                    let _ = tx.send(Bytes::from(frame(&snap))).await;
                }
                return;
            }
        }
        if !follow {
            return;
        }
        // Wait for this thread's next commit.
        let deadline = tokio::time::Instant::now() + KEEPALIVE;
        loop {
            tokio::select! {
                a = sub.recv() => match a {
                    Ok(a) if *a.thread_key == *thread && a.event_id > cursor => {
                        committed_at = Some(a.at);
                        break;
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                        return;
                    }
                    break;
                }
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_the_line_verbatim_and_splits_only_on_newlines() {
        let e = Event {
            event_id: 7,
            execution_id: None,
            kind: "output".into(),
            data: r#"{"type":"assistant","text":"a\nb"}"#.into(),
            created_at: 0,
        };
        assert_eq!(
            frame(&e),
            "id: 7\nevent: output\ndata: {\"type\":\"assistant\",\"text\":\"a\\nb\"}\n\n"
        );
        let two = Event {
            data: "x\ny".into(),
            ..e
        };
        assert_eq!(frame(&two), "id: 7\nevent: output\ndata: x\ndata: y\n\n");
    }
}
