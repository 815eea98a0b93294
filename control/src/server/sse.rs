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

use crate::server::app::App;
use crate::server::http::{ApiError, caller, query_error};
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

/// One open stream's state.
struct Follower {
    app: Arc<App>,
    store: crate::store::Store,
    thread: String,
    cursor: i64,
    execution: Option<String>,
    sent_any: bool,
    /// When the commit that woke the stream returned (for the latency histogram).
    committed_at: Option<std::time::Instant>,
    /// The events that commit appended, when it announced them.
    pending: Arc<[Event]>,
    tx: mpsc::Sender<Bytes>,
}

/// What to do after sending what is new.
enum Next {
    Wait,
    End,
}

async fn stream(
    app: Arc<App>,
    thread: String,
    cursor: i64,
    execution: Option<String>,
    follow: bool,
    mut sub: broadcast::Receiver<crate::store::Announcement>,
    tx: mpsc::Sender<Bytes>,
) {
    app.metrics.sse_clients.fetch_add(1, Ordering::Relaxed);
    let _gauge = Gauge(&app.metrics.sse_clients);
    let mut shutdown = app.shutdown.subscribe();
    let mut f = Follower {
        store: app.store(),
        app: app.clone(),
        thread,
        cursor,
        execution,
        sent_any: false,
        committed_at: None,
        pending: Arc::new([]),
        tx,
    };
    loop {
        if let Next::End = f.send_new().await {
            return;
        }
        if f.execution_over().await || !follow {
            return;
        }
        if !f.wait(&mut sub, &mut shutdown).await {
            return;
        }
    }
}

impl Follower {
    /// Sends every event after the cursor: straight from the announcement that woke the
    /// stream when it carries them all (no read), else a page at a time from the store.
    async fn send_new(&mut self) -> Next {
        let pending = std::mem::replace(&mut self.pending, Arc::new([]));
        if pending
            .first()
            .is_some_and(|e| e.event_id <= self.cursor + 1)
        {
            let last = pending.last().map_or(self.cursor, |e| e.event_id);
            let fresh: Vec<&Event> = pending
                .iter()
                .filter(|e| e.event_id > self.cursor)
                .filter(|e| self.execution.is_none() || e.execution_id == self.execution)
                .collect();
            let next = self.send(&fresh).await;
            self.cursor = self.cursor.max(last);
            return next;
        }
        loop {
            let rows = match self
                .store
                .events_after(&self.thread, self.cursor, self.execution.as_deref(), PAGE)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("event stream of {}: {e}", self.thread);
                    let _ = self
                        .tx
                        .send(Bytes::from_static(
                            b"event: stream_error\ndata: {\"error\":\"event stream failed\"}\n\n",
                        ))
                        .await;
                    return Next::End;
                }
            };
            let refs: Vec<&Event> = rows.iter().collect();
            if let Next::End = self.send(&refs).await {
                return Next::End;
            }
            if i64::try_from(rows.len()).unwrap_or(0) < PAGE {
                return Next::Wait;
            }
        }
    }

    /// Writes events as one chunk; ends after an execution's terminal state when the stream
    /// follows one execution.
    async fn send(&mut self, events: &[&Event]) -> Next {
        let mut out = String::new();
        let mut end = false;
        for e in events {
            out.push_str(&frame(e));
            self.cursor = e.event_id;
            if self.execution.is_some() && terminal(e) {
                end = true;
                break;
            }
        }
        if !out.is_empty() {
            self.sent_any = true;
            if self.tx.send(Bytes::from(out)).await.is_err() {
                return Next::End;
            }
            if let Some(at) = self.committed_at.take() {
                let d = std::time::Instant::now().duration_since(at);
                self.app.metrics.observe_delivery(d);
            }
        }
        if end { Next::End } else { Next::Wait }
    }

    /// With `execution_id`: whether it ended (its terminal event may lie before the cursor:
    /// a stream that sent nothing ends with a snapshot of it).
    async fn execution_over(&mut self) -> bool {
        // Once something was sent, the terminal event cannot lie behind the cursor unseen.
        let Some(id) = self.execution.as_ref().filter(|_| !self.sent_any) else {
            return false;
        };
        let Ok(Some(x)) = self.store.execution(id).await else {
            return false;
        };
        if !x.status.is_terminal() {
            return false;
        }
        if !self.sent_any {
            let snap = Event {
                event_id: self.cursor,
                execution_id: Some(id.clone()),
                kind: "execution_state".into(),
                data: x.state_event().to_string(),
                created_at: x.updated_at,
            };
            let _ = self.tx.send(Bytes::from(frame(&snap))).await;
        }
        true
    }

    /// Waits for this thread's next commit, sending a keep-alive every [`KEEPALIVE`];
    /// false when the stream should end.
    async fn wait(
        &mut self,
        sub: &mut broadcast::Receiver<crate::store::Announcement>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + KEEPALIVE;
        loop {
            tokio::select! {
                a = sub.recv() => match a {
                    Ok(a) if *a.thread_key == *self.thread && a.event_id > self.cursor => {
                        self.committed_at = Some(a.at);
                        self.pending = a.events;
                        return true;
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return true,
                    Err(broadcast::error::RecvError::Closed) => return false,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return self.tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_ok();
                }
                _ = shutdown.changed() => return false,
                _ = self.tx.closed() => return false,
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
