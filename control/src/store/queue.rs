//! The execution queue: enqueue (idempotent, failure-loop guarded), claim in per-thread
//! order under leases, heartbeats, take-over of expired leases, cancel.

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

use super::executions::{
    Claimed, EnqueueRequest, Execution, FAILURE_LOOP, FAILURE_WINDOW_MS, Finish, Status,
    execution_row, finalize,
};

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
}
