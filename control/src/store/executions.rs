//! Executions: one agent turn each, queued per thread in order, claimed by workers with
//! leases, finished once with a terminal reason.

use serde_json::{Value, json};
use sqlx::Row as _;

use super::db::{Store, StoreError, on_pool};
use super::threads::{Assignment, NewMessage};

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
    /// Its canonical events (`agent` events, JSON), stored after it.
    pub agent: Vec<String>,
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
            // A workflow run waiting on this turn is due now (see workflows::core::Target).
            sqlx::query(
                "UPDATE workflow_runs SET available_at = $1, updated_at = $1 WHERE wait_key = $2 AND status = 'waiting'",
            )
            .bind($now)
            .bind(format!("execution\n{}", $id))
            .execute(&mut *$tx)
            .await?;
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

pub(crate) use {execution_row, finalize};

impl Store {
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
