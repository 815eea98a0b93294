//! The inbox processor: each stored Slack message becomes a turn (an execution on thread
//! `slack:<team>:<channel>:<thread_ts>`) and an outbox row, or is ignored, or becomes a
//! notice in the thread saying why it could not start. Every step is idempotent on the
//! message's key, so a crash anywhere only repeats it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::server::app::App;
use crate::server::slack::envelope::{self, Inbound, Parsed};
use crate::server::slack::state::Slack;
use crate::server::slack::web::CallError;
use crate::store::{EnqueueRequest, InboxEnd, InboxRow, NewDelivery, NewMessage, StoreError};

/// How long a claimed row is held before another claim may take it.
const HOLD_MS: i64 = 60_000;
/// Fetching a thread's history is retried this often before the turn starts without it.
const CONTEXT_ATTEMPTS: i64 = 5;
/// The most earlier messages a first turn brings along.
const MAX_CONTEXT: usize = 50;

/// Finished inbox rows are kept this long (Slack retries for minutes; a week covers any
/// redelivery), then deleted.
const KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

/// Processes the inbox until the process ends.
pub async fn run(app: Arc<App>, slack: Arc<Slack>) {
    let mut pruned: Option<std::time::Instant> = None;
    loop {
        if pruned.is_none_or(|t| t.elapsed() >= Duration::from_secs(600)) {
            pruned = Some(std::time::Instant::now());
            match app
                .store()
                .slack_inbox_prune(app.clock_ms() - KEEP_MS)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!("slack inbox: deleted {n} rows finished a week ago"),
                Err(e) => tracing::warn!("slack inbox: {e}"),
            }
        }
        match app.store().slack_inbox_claim(16, HOLD_MS).await {
            Ok(rows) => {
                for row in rows {
                    process(&app, &slack, row).await;
                }
            }
            Err(e) => tracing::warn!("slack inbox: {e}"),
        }
        tokio::select! {
            _ = slack.inbox.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// What became of a row, unless it must be tried again.
enum Step {
    End(InboxEnd, String),
    Later(Duration, String),
}

async fn process(app: &App, slack: &Slack, row: InboxRow) {
    let key = row.dedupe_key.clone();
    let step = match handle(app, slack, &row).await {
        Ok(step) => step,
        Err(e) => Step::Later(backoff(row.attempts), format!("store: {e}")),
    };
    let store = app.store();
    let written = match step {
        Step::End(end, outcome) => {
            tracing::info!("slack: message {key}: {outcome}");
            store.slack_inbox_end(&key, end, &outcome).await
        }
        Step::Later(after, why) => {
            tracing::warn!("slack: message {key}: {why}; trying again");
            let at = app.clock_ms() + i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
            store.slack_inbox_retry(&key, at, &why).await
        }
    };
    if let Err(e) = written {
        tracing::warn!("slack: message {key}: {e}");
    }
}

fn backoff(attempts: i64) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 8) as u32)
}

async fn handle(app: &App, slack: &Slack, row: &InboxRow) -> Result<Step, StoreError> {
    let m = match envelope::parse(row.body.as_bytes()) {
        Ok(Parsed::Message(m)) => m,
        Ok(_) => return Ok(Step::End(InboxEnd::Ignored, "not a message".into())),
        Err(e) => return Ok(Step::End(InboxEnd::Ignored, e)),
    };
    let store = app.store();
    let thread_key = m.thread_key();
    let joined = store.thread_exists(&thread_key).await?;
    if !m.addressed && !joined {
        return Ok(Step::End(
            InboxEnd::Ignored,
            "a reply in a thread the agent has not joined".into(),
        ));
    }
    let context = match (&row.context, m.is_reply() && !joined) {
        (Some(c), _) => c.clone(),
        (None, false) => String::new(),
        (None, true) => match history(slack, &m).await {
            Ok(c) => {
                store.slack_inbox_context(&row.dedupe_key, &c).await?;
                c
            }
            Err(CallError::Permanent(e)) => {
                tracing::warn!(
                    "slack: the thread's history is unavailable ({e}); starting without it"
                );
                String::new()
            }
            Err(e) if row.attempts < CONTEXT_ATTEMPTS => {
                return Ok(Step::Later(
                    backoff(row.attempts),
                    format!("conversations.replies: {e}"),
                ));
            }
            Err(e) => {
                tracing::warn!(
                    "slack: the thread's history is unavailable ({e}); starting without it"
                );
                String::new()
            }
        },
    };
    if let Some(h) = &m.harness
        && !app.settings.harnesses.contains_key(h)
    {
        let names: Vec<&str> = app.settings.harnesses.keys().map(String::as_str).collect();
        let why = format!("there is no harness {h:?} (one of: {})", names.join(", "));
        notice(app, slack, &m, &format!(":warning: I cannot start: {why}.")).await?;
        return Ok(Step::End(InboxEnd::Failed, why));
    }
    turn(app, slack, &m, &context).await
}

/// Queues the turn (idempotent on the message's key) and its outbox row.
async fn turn(app: &App, slack: &Slack, m: &Inbound, context: &str) -> Result<Step, StoreError> {
    let id = format!("slack-{}", short_hash(&m.dedupe_key()));
    let mut parts = Vec::new();
    if !context.is_empty() {
        parts.push(json!({"type": "text", "text": context}));
    }
    parts.push(json!({"type": "text", "text": m.text}));
    let req = EnqueueRequest {
        thread_key: m.thread_key(),
        generation: None,
        execute_id: Some(id.clone()),
        message: Some(NewMessage {
            message_id: Some(id),
            role: "user".into(),
            parts: Value::Array(parts),
        }),
        harness: m.harness.clone(),
        default_harness: app.settings.default_harness.clone(),
    };
    let out = match app.store().enqueue(&req).await {
        Ok(out) => out,
        Err(StoreError::Rejected(r)) => {
            let text = format!(":warning: I cannot start this turn: {}", r.message);
            notice(app, slack, m, &text).await?;
            return Ok(Step::End(InboxEnd::Failed, r.message));
        }
        Err(e) => return Err(e),
    };
    app.kick.notify_one();
    let execution_id = out.body["execution_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    app.store()
        .slack_delivery_create(&NewDelivery {
            source: execution_id.clone(),
            execution_id: Some(execution_id.clone()),
            notice: None,
            thread_key: m.thread_key(),
            channel: m.channel.clone(),
            thread_ts: m.thread_ts.clone(),
        })
        .await?;
    slack.courier.notify_one();
    Ok(Step::End(InboxEnd::Done, execution_id))
}

/// An outbox row with a fixed text.
async fn notice(app: &App, slack: &Slack, m: &Inbound, text: &str) -> Result<(), StoreError> {
    app.store()
        .slack_delivery_create(&NewDelivery {
            source: format!("notice:{}", m.dedupe_key()),
            execution_id: None,
            notice: Some(text.to_string()),
            thread_key: m.thread_key(),
            channel: m.channel.clone(),
            thread_ts: m.thread_ts.clone(),
        })
        .await?;
    slack.courier.notify_one();
    Ok(())
}

/// The thread's messages before this one, as context for the agent's first turn in it.
async fn history(slack: &Slack, m: &Inbound) -> Result<String, CallError> {
    let messages = slack.web.replies(&m.channel, &m.thread_ts).await?;
    let earlier: Vec<String> = messages
        .iter()
        .filter(|x| x["ts"].as_str().is_some_and(|ts| ts_before(ts, &m.ts)))
        .map(|x| {
            let who = x["user"]
                .as_str()
                .map(|u| format!("<@{u}>"))
                .or_else(|| x["bot_id"].as_str().map(|b| format!("bot {b}")))
                .unwrap_or_else(|| "someone".into());
            format!("{who}: {}", x["text"].as_str().unwrap_or(""))
        })
        .collect();
    if earlier.is_empty() {
        return Ok(String::new());
    }
    let skip = earlier.len().saturating_sub(MAX_CONTEXT);
    Ok(format!(
        "Earlier messages in this Slack thread, oldest first:\n{}\n\nThe message addressed to you:",
        earlier[skip..].join("\n")
    ))
}

/// Slack timestamps (`1700000000.000100`) compare as decimals.
fn ts_before(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        let (sec, frac) = s.split_once('.').unwrap_or((s, "0"));
        (sec.parse::<u64>().unwrap_or(0), format!("{frac:0<6}"))
    };
    parse(a) < parse(b)
}

fn short_hash(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    crate::store::hex(&d.as_ref()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_timestamps_order_as_decimals() {
        assert!(ts_before("1700000000.000100", "1700000000.000200"));
        assert!(ts_before("999.9", "1000.1"));
        assert!(!ts_before("1700000000.5", "1700000000.5"));
        assert!(ts_before("5.09", "5.1"), "0.09 < 0.1");
    }
}
