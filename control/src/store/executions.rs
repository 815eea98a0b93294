//! Executions: one agent turn each, queued per thread in order, claimed by workers with
//! leases, finished once with a terminal reason.

use serde_json::{Value, json};
use sqlx::Row as _;

use super::code::Code;
use super::db::{Store, StoreError, in_tx, new_id, on_pool, request_hash};
use super::events::{append_event, lock_thread, write_events};
use super::threads::Assignment;
use super::threads::{
    NewMessage, Outcome, active_assignment, assign, assignment_row, check_generation,
    ensure_thread, insert_message, remember, replay,
};

/// Failures on a thread within [`FAILURE_WINDOW_MS`] that stop new executions.
pub const FAILURE_LOOP: i64 = 3;
/// The failure-loop window.
pub const FAILURE_WINDOW_MS: i64 = 5 * 60 * 1000;

/// Where an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for its turn on the thread.
    Queued,
    /// A worker runs it.
    Running,
    /// Cancelled while running; the worker stops the harness and finishes it.
    CancelRequested,
    /// The harness answered.
    Completed,
    /// It ended without an answer.
    Failed,
    /// It was cancelled.
    Cancelled,
}

impl Status {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::CancelRequested => "cancel_requested",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a stored status.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "queued" => Status::Queued,
            "running" => Status::Running,
            "cancel_requested" => Status::CancelRequested,
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }

    /// Whether it is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

/// A stored execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// `exe_…`.
    pub execution_id: String,
    /// The thread.
    pub thread_key: String,
    /// The assignment generation it runs on.
    pub generation: i64,
    /// The caller's idempotency key.
    pub execute_id: Option<String>,
    /// Where it is.
    pub status: Status,
    /// Why it ended.
    pub terminal_reason: Option<String>,
    /// The answer.
    pub result_text: Option<String>,
    /// What went wrong.
    pub error_text: Option<String>,
    /// The harness's own session id.
    pub agent_thread_id: Option<String>,
    /// The turn line written to the harness (set once, before it is written).
    pub turn_input: Option<String>,
    /// Timestamps (Unix ms).
    pub created_at: i64,
    /// When a worker first claimed it.
    pub started_at: Option<i64>,
    /// When the harness last printed something for it.
    pub last_progress_at: Option<i64>,
    /// When it ended.
    pub completed_at: Option<i64>,
    /// Its last change.
    pub updated_at: i64,
}

macro_rules! execution_row {
    ($r:expr) => {{
        let r = $r;
        let status: String = r.try_get("status")?;
        Execution {
            execution_id: r.try_get("execution_id")?,
            thread_key: r.try_get("thread_key")?,
            generation: r.try_get("generation")?,
            execute_id: r.try_get("execute_id")?,
            status: Status::parse(&status).unwrap_or(Status::Failed),
            terminal_reason: r.try_get("terminal_reason")?,
            result_text: r.try_get("result_text")?,
            error_text: r.try_get("error_text")?,
            agent_thread_id: r.try_get("agent_thread_id")?,
            turn_input: r.try_get("turn_input")?,
            created_at: r.try_get("created_at")?,
            started_at: r.try_get("started_at")?,
            last_progress_at: r.try_get("last_progress_at")?,
            completed_at: r.try_get("completed_at")?,
            updated_at: r.try_get("updated_at")?,
        }
    }};
}

impl Execution {
    /// The API's view (`GET /agent/executions/{id}`).
    pub fn to_json(&self) -> Value {
        json!({
            "execution_id": self.execution_id,
            "thread_key": self.thread_key,
            "assignment_generation": self.generation,
            "execute_id": self.execute_id,
            "status": self.status.as_str(),
            "terminal_reason": self.terminal_reason,
            "result_text": self.result_text,
            "error_text": self.error_text,
            "agent_thread_id": self.agent_thread_id,
            "turn_delivered": self.turn_input.is_some(),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "updated_at": self.updated_at,
        })
    }

    /// The `execution_state` event for its current state.
    pub fn state_event(&self) -> Value {
        let mut v = json!({
            "type": "execution.state",
            "execution_id": self.execution_id,
            "thread_key": self.thread_key,
            "status": self.status.as_str(),
        });
        for (k, x) in [
            ("terminal_reason", &self.terminal_reason),
            ("result_text", &self.result_text),
            ("error_text", &self.error_text),
            ("agent_thread_id", &self.agent_thread_id),
        ] {
            if let Some(x) = x {
                v[k] = json!(x);
            }
        }
        v
    }
}

/// `POST /agent/execute`, checked.
#[derive(Debug, Clone)]
pub struct EnqueueRequest {
    /// The thread.
    pub thread_key: String,
    /// The caller's assignment generation; `None` with a message: spawn and append first.
    pub generation: Option<i64>,
    /// The idempotency key.
    pub execute_id: Option<String>,
    /// A message to append first (auto mode).
    pub message: Option<NewMessage>,
    /// The harness asked for (auto mode).
    pub harness: Option<String>,
    /// The server's default harness.
    pub default_harness: String,
}

/// An execution a worker now holds, with its thread's assignment.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The execution.
    pub execution: Execution,
    /// The assignment it runs on.
    pub assignment: Assignment,
}

/// A harness output line, with its spool sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The supervisor's sequence number (1, 2, … per sandbox).
    pub seq: i64,
    /// The line, verbatim.
    pub text: String,
}

/// How an execution ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// `Completed`, `Failed` or `Cancelled`.
    pub status: Status,
    /// The terminal reason (`completed`, `harness_error`, `sandbox_lost`, …).
    pub reason: String,
    /// The answer.
    pub result_text: Option<String>,
    /// What went wrong.
    pub error_text: Option<String>,
    /// The harness's session id.
    pub agent_thread_id: Option<String>,
}

/// Ends the execution in `$tx` unless it already ended; evaluates to the new state event's
/// id, if it ended now.
macro_rules! finalize {
    ($tx:expr, $ev:ident, $thread:expr, $id:expr, $f:expr, $now:expr) => {{
        let f: &Finish = $f;
        let done = sqlx::query(
            "UPDATE executions SET status = $1, terminal_reason = $2, result_text = $3, error_text = $4, agent_thread_id = COALESCE($5, agent_thread_id), completed_at = $6, updated_at = $6, worker_id = NULL, lease_expires_at = NULL WHERE execution_id = $7 AND status IN ('queued', 'running', 'cancel_requested')",
        )
        .bind(f.status.as_str())
        .bind(&f.reason)
        .bind(&f.result_text)
        .bind(&f.error_text)
        .bind(&f.agent_thread_id)
        .bind($now)
        .bind($id)
        .execute(&mut *$tx)
        .await?
        .rows_affected()
            == 1;
        if done {
            let row = sqlx::query("SELECT * FROM executions WHERE execution_id = $1")
                .bind($id)
                .fetch_one(&mut *$tx)
                .await?;
            let e = execution_row!(&row);
            Some(append_event!($tx, $ev,
                $thread,
                Some($id),
                "execution_state",
                e.state_event().to_string(),
                $now
            ))
        } else {
            None
        }
    }};
}

/// Refuses a new execution in `$tx` after [`FAILURE_LOOP`] recent failures on the thread.
macro_rules! failure_loop {
    ($tx:expr, $thread:expr, $now:expr) => {
        let failures: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM executions WHERE thread_key = $1 AND status = 'failed' AND completed_at >= $2",
        )
        .bind($thread)
        .bind($now - FAILURE_WINDOW_MS)
        .fetch_one(&mut *$tx)
        .await?;
        if failures >= FAILURE_LOOP {
            return Err(StoreError::reject(
                Code::ThreadFailureLoop,
                format!(
                    "{failures} executions failed on this thread in the last 5 minutes; wait, or release the thread and start over"
                ),
            ));
        }
    };
}

/// Queues an execution in `$tx` (its turn takes the thread's messages stored so far);
/// evaluates to `(execution id, its queued event's id)`.
macro_rules! insert_execution {
    ($tx:expr, $ev:ident, $thread:expr, $generation:expr, $execute_id:expr, $now:expr) => {{
        let upto: i64 = sqlx::query_scalar("SELECT last_message FROM threads WHERE thread_key = $1")
            .bind($thread)
            .fetch_one(&mut *$tx)
            .await?;
        let seq: i64 = sqlx::query_scalar(
            "UPDATE threads SET last_execution = last_execution + 1 WHERE thread_key = $1 RETURNING last_execution",
        )
        .bind($thread)
        .fetch_one(&mut *$tx)
        .await?;
        let id = new_id("exe_");
        sqlx::query(
            "INSERT INTO executions (execution_id, thread_key, seq, generation, execute_id, status, upto_message, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $7)",
        )
        .bind(&id)
        .bind($thread)
        .bind(seq)
        .bind($generation)
        .bind($execute_id)
        .bind(upto)
        .bind($now)
        .execute(&mut *$tx)
        .await?;
        let data = json!({"type": "execution.state", "execution_id": id, "thread_key": $thread, "status": "queued"});
        let event_id = append_event!($tx, $ev, $thread, Some(&id), "execution_state", data.to_string(), $now);
        (id, event_id)
    }};
}

impl Store {
    /// Queues an execution (in auto mode, spawning and appending the message first).
    /// Idempotent on `execute_id`; refused after `FAILURE_LOOP` (3) recent failures.
    pub async fn enqueue(&self, req: &EnqueueRequest) -> Result<Outcome, StoreError> {
        super::db::check_thread_key(&req.thread_key)?;
        if req.generation.is_none() && req.message.is_none() {
            return Err(StoreError::reject(
                Code::MissingField,
                "execute needs assignment_generation (after spawn) or a message (auto mode)",
            ));
        }
        let hash = request_hash(&json!({
            "generation": req.generation,
            "harness": req.harness,
            "message": req.message.as_ref().map(|m| json!({"message_id": m.message_id, "role": m.role, "parts": m.parts})),
        }));
        let now = self.now();
        let thread = req.thread_key.as_str();
        let out = write_events!(self, thread, |tx, ev| {
            ensure_thread!(tx, thread, now);
            let _ = lock_thread!(tx, thread);
            if let Some(body) = replay!(tx, thread, "execute", req.execute_id.as_ref(), &hash) {
                (
                    Outcome {
                        body,
                        idempotent: true,
                    },
                    None,
                )
            } else {
                failure_loop!(tx, thread, now);
                let a = match req.generation {
                    Some(g) => check_generation(active_assignment!(tx, thread), thread, g)?,
                    None => {
                        let harness = req.harness.as_ref().or(Some(&req.default_harness));
                        assign!(tx, thread, harness, None::<&String>, now)
                    }
                };
                if let Some(m) = &req.message {
                    insert_message!(tx, ev, thread, a.generation, m, now);
                }
                let (id, event_id) =
                    insert_execution!(tx, ev, thread, a.generation, &req.execute_id, now);
                let body = json!({
                    "ok": true,
                    "execution_id": id,
                    "execute_id": req.execute_id,
                    "thread_key": thread,
                    "assignment_generation": a.generation,
                    "runtime_id": a.runtime_id,
                    "status": "queued",
                });
                remember!(
                    tx,
                    thread,
                    "execute",
                    req.execute_id.as_ref(),
                    &hash,
                    &body,
                    now
                );
                (
                    Outcome {
                        body,
                        idempotent: false,
                    },
                    Some(event_id),
                )
            }
        });
        Ok(out)
    }

    /// Claims the oldest queued execution whose thread has none running, for `lease_ms`.
    /// An execution whose assignment was released fails with `assignment_missing`.
    pub async fn claim(&self, worker: &str, lease_ms: i64) -> Result<Option<Claimed>, StoreError> {
        let now = self.now();
        loop {
            let candidate = self.next_queued().await?;
            let Some((id, thread)) = candidate else {
                return Ok(None);
            };
            let thread = thread.as_str();
            let claimed = write_events!(self, thread, |tx, ev| {
                let _ = lock_thread!(tx, thread);
                let row = sqlx::query("SELECT * FROM executions WHERE execution_id = $1")
                    .bind(&id)
                    .fetch_one(&mut *tx)
                    .await?;
                let e = execution_row!(&row);
                let busy: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM executions WHERE thread_key = $1 AND status IN ('running', 'cancel_requested')",
                )
                .bind(thread)
                .fetch_one(&mut *tx)
                .await?;
                if e.status != Status::Queued || busy > 0 {
                    // Another worker got there first.
                    (Err(()), None)
                } else {
                    let a = active_assignment!(tx, thread).filter(|a| a.generation == e.generation);
                    match a {
                        None => {
                            let f = Finish {
                                status: Status::Failed,
                                reason: "assignment_missing".into(),
                                result_text: None,
                                error_text: Some("the thread's assignment was released before this execution ran".into()),
                                agent_thread_id: None,
                            };
                            let ev = finalize!(tx, ev, thread, &id, &f, now);
                            (Err(()), ev)
                        }
                        Some(a) => {
                            sqlx::query(
                                "UPDATE executions SET status = 'running', worker_id = $1, lease_expires_at = $2, started_at = COALESCE(started_at, $3), updated_at = $3 WHERE execution_id = $4",
                            )
                            .bind(worker)
                            .bind(now + lease_ms)
                            .bind(now)
                            .bind(&id)
                            .execute(&mut *tx)
                            .await?;
                            let mut e = e;
                            e.status = Status::Running;
                            e.started_at = e.started_at.or(Some(now));
                            let ev = append_event!(
                                tx,
                                ev,
                                thread,
                                Some(&id),
                                "execution_state",
                                e.state_event().to_string(),
                                now
                            );
                            (
                                Ok(Claimed {
                                    execution: e,
                                    assignment: a,
                                }),
                                Some(ev),
                            )
                        }
                    }
                }
            });
            if let Ok(c) = claimed {
                return Ok(Some(c));
            }
        }
    }

    /// The oldest queued execution that is first in its thread and whose thread has none
    /// running.
    async fn next_queued(&self) -> Result<Option<(String, String)>, StoreError> {
        let candidate: Option<(String, String)> = on_pool!(self, |pool| {
            let row = sqlx::query(
                    "SELECT e.execution_id, e.thread_key FROM executions e WHERE e.status = 'queued' \
                     AND NOT EXISTS (SELECT 1 FROM executions r WHERE r.thread_key = e.thread_key AND r.status IN ('running', 'cancel_requested')) \
                     AND NOT EXISTS (SELECT 1 FROM executions q WHERE q.thread_key = e.thread_key AND q.status = 'queued' AND q.seq < e.seq) \
                     ORDER BY e.created_at, e.execution_id LIMIT 1",
                )
                .fetch_optional(pool)
                .await?;
            match row {
                Some(r) => Some((r.try_get("execution_id")?, r.try_get("thread_key")?)),
                None => None,
            }
        });
        Ok(candidate)
    }

    /// Takes over running executions whose lease expired (every running one with `all`: the
    /// caller knows no other worker lives, e.g. the only server on a SQLite file restarted).
    /// Never the caller's own: it is still running them.
    pub async fn recover(
        &self,
        worker: &str,
        lease_ms: i64,
        all: bool,
    ) -> Result<Vec<Claimed>, StoreError> {
        let now = self.now();
        let horizon = if all { i64::MAX } else { now };
        let ids: Vec<String> = on_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT execution_id FROM executions WHERE status IN ('running', 'cancel_requested') AND (lease_expires_at IS NULL OR lease_expires_at < $1) AND (worker_id IS NULL OR worker_id <> $2) ORDER BY created_at",
            )
            .bind(horizon)
            .bind(worker)
            .fetch_all(pool)
            .await?
        });
        let mut out = Vec::new();
        for id in ids {
            let got = in_tx!(self, |tx| {
                let n = sqlx::query(
                    "UPDATE executions SET worker_id = $1, lease_expires_at = $2, updated_at = $3 WHERE execution_id = $4 AND status IN ('running', 'cancel_requested') AND (lease_expires_at IS NULL OR lease_expires_at < $5) AND (worker_id IS NULL OR worker_id <> $1)",
                )
                .bind(worker)
                .bind(now + lease_ms)
                .bind(now)
                .bind(&id)
                .bind(horizon)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    let row = sqlx::query("SELECT * FROM executions WHERE execution_id = $1")
                        .bind(&id)
                        .fetch_one(&mut *tx)
                        .await?;
                    let e = execution_row!(&row);
                    let a = sqlx::query(
                        "SELECT * FROM assignments WHERE thread_key = $1 AND generation = $2",
                    )
                    .bind(&e.thread_key)
                    .bind(e.generation)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match a {
                        Some(r) => Some(Claimed {
                            execution: e,
                            assignment: assignment_row!(&r),
                        }),
                        None => None,
                    }
                } else {
                    None
                }
            });
            out.extend(got);
        }
        Ok(out)
    }

    /// Extends the worker's lease; returns the execution's status, or `None` if the worker
    /// no longer holds it (it ended, or another worker took it over).
    pub async fn heartbeat(
        &self,
        execution_id: &str,
        worker: &str,
        lease_ms: i64,
    ) -> Result<Option<Status>, StoreError> {
        let now = self.now();
        let status: Option<String> = in_tx!(self, |tx| {
            sqlx::query_scalar(
                "UPDATE executions SET lease_expires_at = $1 WHERE execution_id = $2 AND worker_id = $3 AND status IN ('running', 'cancel_requested') RETURNING status",
            )
            .bind(now + lease_ms)
            .bind(execution_id)
            .bind(worker)
            .fetch_optional(&mut *tx)
            .await?
        });
        Ok(status.as_deref().and_then(Status::parse))
    }

    /// The turn line for the execution: the thread's undelivered user messages up to its own
    /// (those stored when it was queued), marked delivered by it in the same transaction. Made once: later calls return the stored line, so a
    /// restarted worker sends exactly the same turn (the supervisor drops a repeat).
    pub async fn prepare_turn(&self, execution_id: &str) -> Result<String, StoreError> {
        let now = self.now();
        let turn = in_tx!(self, |tx| {
            let row = sqlx::query("SELECT * FROM executions WHERE execution_id = $1")
                .bind(execution_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| {
                    StoreError::reject(Code::NotFound, format!("no execution {execution_id}"))
                })?;
            let e = execution_row!(&row);
            match e.turn_input {
                Some(t) => t,
                None => {
                    let upto: i64 = row.try_get("upto_message")?;
                    let rows = sqlx::query(
                        "SELECT parts FROM messages WHERE thread_key = $1 AND delivered_execution_id IS NULL AND role = 'user' AND seq <= $2 ORDER BY seq",
                    )
                    .bind(&e.thread_key)
                    .bind(upto)
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut content = Vec::new();
                    for r in &rows {
                        let parts: String = r.try_get("parts")?;
                        if let Ok(Value::Array(a)) = serde_json::from_str::<Value>(&parts) {
                            content.extend(a);
                        }
                    }
                    if content.is_empty() {
                        content.push(json!({"type": "text", "text": "continue"}));
                    }
                    let turn =
                        json!({"type": "user", "message": {"role": "user", "content": content}})
                            .to_string();
                    sqlx::query("UPDATE messages SET delivered_execution_id = $1 WHERE thread_key = $2 AND delivered_execution_id IS NULL AND role = 'user' AND seq <= $3")
                        .bind(execution_id)
                        .bind(&e.thread_key)
                        .bind(upto)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("UPDATE executions SET turn_input = $1, updated_at = $2 WHERE execution_id = $3")
                        .bind(&turn)
                        .bind(now)
                        .bind(execution_id)
                        .execute(&mut *tx)
                        .await?;
                    turn
                }
            }
        });
        Ok(turn)
    }

    /// Commits harness output lines (those after the assignment's spool position; a line
    /// already committed is skipped, so a replayed spool stores nothing twice) as `output`
    /// events of `execution_id`, moves the spool position, and ends the execution with
    /// `finish`. One transaction. Returns the newest event id, if any was appended.
    pub async fn commit_lines(
        &self,
        assignment: (&str, i64),
        execution_id: Option<&str>,
        lines: &[Line],
        finish: Option<&Finish>,
    ) -> Result<Option<i64>, StoreError> {
        let (thread, generation) = assignment;
        let now = self.now();
        let newest = write_events!(self, thread, |tx, ev| {
            let _ = lock_thread!(tx, thread);
            let committed: i64 = sqlx::query_scalar(
                "SELECT spool_seq FROM assignments WHERE thread_key = $1 AND generation = $2",
            )
            .bind(thread)
            .bind(generation)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(i64::MAX);
            let mut newest = None;
            let mut last = committed;
            for l in lines.iter().filter(|l| l.seq > committed) {
                newest = Some(append_event!(
                    tx,
                    ev,
                    thread,
                    execution_id,
                    "output",
                    &l.text,
                    now
                ));
                last = last.max(l.seq);
            }
            if last != committed {
                sqlx::query("UPDATE assignments SET spool_seq = $1 WHERE thread_key = $2 AND generation = $3")
                    .bind(last)
                    .bind(thread)
                    .bind(generation)
                    .execute(&mut *tx)
                    .await?;
                if let Some(id) = execution_id {
                    sqlx::query("UPDATE executions SET last_progress_at = $1, updated_at = $1 WHERE execution_id = $2")
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            if let (Some(f), Some(id)) = (finish, execution_id)
                && let Some(ev) = finalize!(tx, ev, thread, id, f, now)
            {
                newest = Some(ev);
            }
            (newest, newest)
        });
        Ok(newest)
    }

    /// Ends an execution (no output to commit).
    pub async fn finish(
        &self,
        thread_key: &str,
        execution_id: &str,
        f: &Finish,
    ) -> Result<Option<i64>, StoreError> {
        let now = self.now();
        let newest = write_events!(self, thread_key, |tx, ev| {
            let _ = lock_thread!(tx, thread_key);
            let ev = finalize!(tx, ev, thread_key, execution_id, f, now);
            (ev, ev)
        });
        Ok(newest)
    }

    /// Cancels: a queued execution is cancelled at once, a running one becomes
    /// `cancel_requested` (its worker stops the harness and finishes it); an ended one is
    /// left as it is (`idempotent`).
    pub async fn cancel(&self, execution_id: &str) -> Result<Outcome, StoreError> {
        let Some(e) = self.execution(execution_id).await? else {
            return Err(StoreError::reject(
                Code::NotFound,
                format!("no execution {execution_id}"),
            ));
        };
        let now = self.now();
        let thread = e.thread_key.as_str();
        let out = write_events!(self, thread, |tx, ev| {
            let _ = lock_thread!(tx, thread);
            let row = sqlx::query("SELECT * FROM executions WHERE execution_id = $1")
                .bind(execution_id)
                .fetch_one(&mut *tx)
                .await?;
            let e = execution_row!(&row);
            match e.status {
                Status::Queued => {
                    let f = Finish {
                        status: Status::Cancelled,
                        reason: "cancelled".into(),
                        result_text: None,
                        error_text: None,
                        agent_thread_id: None,
                    };
                    let ev = finalize!(tx, ev, thread, execution_id, &f, now);
                    (
                        Outcome {
                            body: json!({"ok": true, "execution_id": execution_id, "status": "cancelled"}),
                            idempotent: false,
                        },
                        ev,
                    )
                }
                Status::Running => {
                    sqlx::query("UPDATE executions SET status = 'cancel_requested', updated_at = $1 WHERE execution_id = $2")
                        .bind(now)
                        .bind(execution_id)
                        .execute(&mut *tx)
                        .await?;
                    let mut e = e;
                    e.status = Status::CancelRequested;
                    let ev = append_event!(
                        tx,
                        ev,
                        thread,
                        Some(execution_id),
                        "execution_state",
                        e.state_event().to_string(),
                        now
                    );
                    (
                        Outcome {
                            body: json!({"ok": true, "execution_id": execution_id, "status": "cancel_requested"}),
                            idempotent: false,
                        },
                        Some(ev),
                    )
                }
                s => (
                    Outcome {
                        body: json!({"ok": true, "execution_id": execution_id, "status": s.as_str()}),
                        idempotent: true,
                    },
                    None,
                ),
            }
        });
        Ok(out)
    }

    /// One execution.
    pub async fn execution(&self, execution_id: &str) -> Result<Option<Execution>, StoreError> {
        on_pool!(self, |pool| {
            let row = sqlx::query("SELECT * FROM executions WHERE execution_id = $1")
                .bind(execution_id)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(r) => Some(execution_row!(&r)),
                None => None,
            })
        })
    }

    /// The thread's executions, newest first.
    pub async fn thread_executions(
        &self,
        thread_key: &str,
        limit: i64,
    ) -> Result<Vec<Execution>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT * FROM executions WHERE thread_key = $1 ORDER BY seq DESC LIMIT $2",
            )
            .bind(thread_key)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(execution_row!(r));
            }
            Ok(out)
        })
    }

    /// How many executions are in each status (for `/metrics`).
    pub async fn execution_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT status, COUNT(*) AS n FROM executions GROUP BY status ORDER BY status",
            )
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push((r.try_get("status")?, r.try_get("n")?));
            }
            Ok(out)
        })
    }
}
