//! The courier: works the outbox. For each delivery it posts a progress message in the
//! thread, updates it as the agent acts, and posts the answer (mrkdwn, split below Slack's
//! limit) as threaded replies. Leased and retried: 429 waits `Retry-After`, 5xx and network
//! errors back off, permanent errors dead-letter at once. Each part is committed after Slack
//! accepts it; a retry first looks in the thread for the part in doubt (by the delivery id
//! in its metadata), so a crash between Slack's `ok` and our commit never posts it twice.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::harness::describe::describe;
use crate::server::app::App;
use crate::server::slack::mrkdwn::{MAX_CHARS, split, to_mrkdwn};
use crate::server::slack::state::Slack;
use crate::server::slack::web::CallError;
use crate::store::{Delivery, Execution, Status};

/// Transient failures before a delivery is dead-lettered.
const MAX_ATTEMPTS: i64 = 20;
/// Deliveries worked at once.
const PARALLEL: usize = 32;
/// The progress message is updated at most this often.
const UPDATE_EVERY: Duration = Duration::from_secs(2);
/// The metadata event type of every message we post.
pub const EVENT_TYPE: &str = "centaur_delivery";

/// Works the outbox until the process ends.
pub async fn run(app: Arc<App>, slack: Arc<Slack>) {
    let slots = Arc::new(Semaphore::new(PARALLEL));
    loop {
        let free = i64::try_from(slots.available_permits()).unwrap_or(0);
        if free > 0 {
            match app
                .store()
                .slack_delivery_claim(&app.worker_id, app.lease_ms(), free)
                .await
            {
                Ok(list) => {
                    for d in list {
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            return;
                        };
                        let (app, slack) = (app.clone(), slack.clone());
                        tokio::spawn(async move {
                            deliver(&app, &slack, d).await;
                            drop(permit);
                            slack.courier.notify_one();
                        });
                    }
                }
                Err(e) => tracing::warn!("slack outbox: {e}"),
            }
        }
        tokio::select! {
            _ = slack.courier.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// One attempt at a delivery, and its outcome recorded.
async fn deliver(app: &App, slack: &Slack, d: Delivery) {
    let now = app.clock_ms();
    let (state, next_at, error) = match drive(app, slack, &d).await {
        Ok(()) => {
            slack.counters.delivered.fetch_add(1, Ordering::Relaxed);
            ("delivered", now, None)
        }
        Err(CallError::Permanent(e)) => {
            slack.counters.dead.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("slack: delivery {} dead-lettered: {e}", d.delivery_id);
            ("dead", now, Some(e))
        }
        Err(e) if d.attempts >= MAX_ATTEMPTS => {
            slack.counters.dead.fetch_add(1, Ordering::Relaxed);
            let e = format!("gave up after {} attempts: {e}", d.attempts);
            tracing::warn!("slack: delivery {} dead-lettered: {e}", d.delivery_id);
            ("dead", now, Some(e))
        }
        Err(e) => {
            slack.counters.retried.fetch_add(1, Ordering::Relaxed);
            let wait = match &e {
                CallError::RateLimited(d) => *d,
                _ => Duration::from_secs(1u64 << d.attempts.clamp(0, 8) as u32),
            };
            tracing::info!(
                "slack: delivery {} attempt {}: {e}; again in {}s",
                d.delivery_id,
                d.attempts,
                wait.as_secs()
            );
            let wait = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            ("active", now.saturating_add(wait), Some(e.to_string()))
        }
    };
    if let Err(e) = app
        .store()
        .slack_delivery_settle(
            &d.delivery_id,
            &app.worker_id,
            state,
            next_at,
            error.as_deref(),
        )
        .await
    {
        tracing::warn!("slack: delivery {}: {e}", d.delivery_id);
    }
}

fn store_err(e: impl std::fmt::Display) -> CallError {
    CallError::Transient(format!("store: {e}"))
}

/// The metadata that marks a message as part `part` of `kind` of this delivery.
fn metadata(d: &Delivery, kind: &str, part: i64, parts: usize) -> Value {
    json!({"event_type": EVENT_TYPE,
           "event_payload": {"delivery_id": d.delivery_id, "kind": kind, "part": part, "parts": parts}})
}

/// The `ts` of our message `kind`/`part` of this delivery in its thread, if it is there.
async fn find(
    slack: &Slack,
    d: &Delivery,
    kind: &str,
    part: i64,
) -> Result<Option<String>, CallError> {
    let messages = match slack.web.replies(&d.channel, &d.thread_ts).await {
        Ok(m) => m,
        // No thread yet: nothing of ours is in it.
        Err(CallError::Permanent(e)) if e.ends_with("thread_not_found") => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(messages.iter().find_map(|m| {
        let meta = &m["metadata"];
        let p = &meta["event_payload"];
        let ours = meta["event_type"] == EVENT_TYPE
            && p["delivery_id"] == d.delivery_id.as_str()
            && p["kind"] == kind
            && p["part"].as_i64() == Some(part);
        ours.then(|| m["ts"].as_str().unwrap_or_default().to_string())
    }))
}

async fn drive(app: &App, slack: &Slack, d: &Delivery) -> Result<(), CallError> {
    // An earlier attempt may have posted without recording it: look before posting again.
    let in_doubt = d.attempts > 1;
    let status_ts = match (&d.notice, &d.status_ts) {
        (None, None) => Some(status_message(app, slack, d, in_doubt).await?),
        _ => d.status_ts.clone(),
    };
    let (answer, summary) = match &d.notice {
        Some(n) => (n.clone(), None),
        None => follow(app, slack, d, status_ts.as_deref()).await?,
    };
    let parts = split(&to_mrkdwn(&answer), MAX_CHARS);
    let first = usize::try_from(d.parts_posted).unwrap_or(0);
    for (i, part) in parts.iter().enumerate().skip(first) {
        let i = i64::try_from(i).unwrap_or(i64::MAX);
        let posted = if in_doubt && i == d.parts_posted {
            find(slack, d, "answer", i).await?
        } else {
            None
        };
        if posted.is_some() {
            slack.counters.recovered.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                "slack: delivery {} part {i} was already posted",
                d.delivery_id
            );
        } else {
            let meta = metadata(d, "answer", i, parts.len());
            slack.web.post(&d.channel, &d.thread_ts, part, meta).await?;
        }
        record(app, d, None, Some(i + 1)).await?;
    }
    if let (Some(ts), Some(summary)) = (status_ts, summary)
        && let Err(e) = slack.web.update(&d.channel, &ts, &summary).await
    {
        tracing::info!(
            "slack: delivery {}: the progress message stays as it was ({e})",
            d.delivery_id
        );
    }
    Ok(())
}

/// Posts the progress message (or, in doubt, finds the one an earlier attempt posted) and
/// records its `ts`.
async fn status_message(
    app: &App,
    slack: &Slack,
    d: &Delivery,
    in_doubt: bool,
) -> Result<String, CallError> {
    let found = if in_doubt {
        find(slack, d, "status", 0).await?
    } else {
        None
    };
    let ts = match found {
        Some(ts) => ts,
        None => {
            let text = ":hourglass_flowing_sand: Working on it…";
            let meta = metadata(d, "status", 0, 0);
            slack.web.post(&d.channel, &d.thread_ts, text, meta).await?
        }
    };
    record(app, d, Some(&ts), None).await?;
    Ok(ts)
}

/// Commits progress and renews the lease; an error if the lease was lost.
async fn record(
    app: &App,
    d: &Delivery,
    status_ts: Option<&str>,
    parts_posted: Option<i64>,
) -> Result<(), CallError> {
    let held = app
        .store()
        .slack_delivery_progress(
            &d.delivery_id,
            &app.worker_id,
            app.lease_ms(),
            status_ts,
            parts_posted,
        )
        .await
        .map_err(store_err)?;
    if held {
        Ok(())
    } else {
        Err(CallError::Transient("the delivery's lease was lost".into()))
    }
}

/// Follows the execution to its end, updating the progress message as the agent acts;
/// answers the text to post and the progress message's last words.
async fn follow(
    app: &App,
    slack: &Slack,
    d: &Delivery,
    status_ts: Option<&str>,
) -> Result<(String, Option<String>), CallError> {
    let store = app.store();
    let id = d.execution_id.as_deref().unwrap_or_default();
    let mut news = store.subscribe();
    let mut progress = Progress::default();
    let mut renewed = Instant::now();
    let renew_every = Duration::from_millis(u64::try_from(app.lease_ms() / 3).unwrap_or(1000));
    loop {
        let e = store
            .execution(id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| CallError::Permanent(format!("execution {id} does not exist")))?;
        progress.read(app, d, id).await?;
        if e.status.is_terminal() {
            return Ok(ending(&e, progress.steps));
        }
        if let Some(ts) = status_ts
            && progress.changed
            && progress.updated.is_none_or(|t| t.elapsed() >= UPDATE_EVERY)
        {
            progress.changed = false;
            progress.updated = Some(Instant::now());
            if let Err(e) = slack.web.update(&d.channel, ts, &progress.text()).await {
                tracing::info!("slack: progress update skipped: {e}");
            }
        }
        if renewed.elapsed() >= renew_every {
            renewed = Instant::now();
            record(app, d, None, None).await?;
        }
        let wait = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                got = news.recv() => match got {
                    Ok(a) if *a.thread_key != *d.thread_key => continue,
                    _ => break,
                },
            }
        }
    }
}

/// What the progress message shows.
#[derive(Default)]
struct Progress {
    cursor: i64,
    steps: usize,
    last: String,
    changed: bool,
    updated: Option<Instant>,
}

impl Progress {
    /// Reads the execution's new agent events.
    async fn read(&mut self, app: &App, d: &Delivery, id: &str) -> Result<(), CallError> {
        loop {
            let events = app
                .store()
                .events_after(&d.thread_key, self.cursor, Some(id), 500)
                .await
                .map_err(store_err)?;
            let Some(last) = events.last() else {
                return Ok(());
            };
            self.cursor = last.event_id;
            for e in events.iter().filter(|e| e.kind == "agent") {
                let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
                    continue;
                };
                if let Some(line) = describe(&v).into_iter().last() {
                    self.steps += 1;
                    self.last = line;
                    self.changed = true;
                }
            }
        }
    }

    fn text(&self) -> String {
        let last = self
            .last
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        format!(
            ":hourglass_flowing_sand: Working on it… ({} step{})\n`{}`",
            self.steps,
            if self.steps == 1 { "" } else { "s" },
            last.replace('`', "'")
        )
    }
}

/// The answer to post and the progress message's last words for an ended execution.
fn ending(e: &Execution, steps: usize) -> (String, Option<String>) {
    let took = e
        .completed_at
        .zip(e.started_at)
        .map(|(c, s)| format!(" in {}s", (c - s).max(0) / 1000))
        .unwrap_or_default();
    let s = if steps == 1 { "" } else { "s" };
    match e.status {
        Status::Completed => {
            let text = e.result_text.clone().filter(|t| !t.trim().is_empty());
            (
                text.unwrap_or_else(|| "_(the agent finished without an answer)_".into()),
                Some(format!(":white_check_mark: Done{took} ({steps} step{s})")),
            )
        }
        Status::Cancelled => (
            "The turn was cancelled.".into(),
            Some(format!(":black_square_for_stop: Cancelled{took}")),
        ),
        _ => {
            let why = e.error_text.clone().or_else(|| e.terminal_reason.clone());
            (
                format!(
                    "Sorry, the turn failed: {}",
                    why.unwrap_or_else(|| "unknown error".into())
                ),
                Some(format!(":x: Failed{took} ({steps} step{s})")),
            )
        }
    }
}
