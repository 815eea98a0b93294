//! Claims, heartbeats and the writes a worker makes to the run it holds, each fenced by its
//! lease; and what wakes a waiting run (an event, a child's end, an agent turn's end).

use serde_json::{Value, json};
use sqlx::Row;

use super::types::{ClaimedRun, RunEnd, RunRecord, RunStatus};
use crate::store::db::{Store, StoreError, in_tx, on_pool};
use crate::store::events::{append_event, lock_thread, write_events};
use crate::store::threads::ensure_thread;
use crate::workflows::core::{Attempts, Checkpoint, Effect, Kind};

/// The fence of every write a worker makes to its run.
macro_rules! fence {
    () => {
        "run_id = $1 AND worker_id = $2 AND status = 'running' AND cancel_requested = 0"
    };
}

/// Wakes the runs waiting on `key` (see `Target::key`): they are due now.
macro_rules! wake {
    ($tx:ident, $key:expr, $now:expr) => {
        sqlx::query(
            "UPDATE workflow_runs SET available_at = $2, updated_at = $2 WHERE wait_key = $1 AND status = 'waiting'",
        )
        .bind($key)
        .bind($now)
        .execute(&mut *$tx)
        .await?
        .rows_affected()
    };
}
pub(crate) use wake;

/// Whether what `key` names is already there. It first locks the row the other side writes
/// (the child run, the execution) or, for an event, takes the key's advisory lock on
/// PostgreSQL (`post_workflow_event` takes it too): either this transaction sees the event
/// or end, or the other side's `wake!` sees this run waiting.
macro_rules! resolved {
    ($tx:ident, $key:expr) => {{
        let key: &str = $key;
        let mut parts = key.splitn(3, '\n');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("event"), Some(t), Some(c)) => {
                if engine(&$tx) == "PostgreSQL" {
                    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                        .bind(key)
                        .execute(&mut *$tx)
                        .await?;
                }
                sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM workflow_events WHERE event_type = $1 AND correlation_id = $2",
                )
                .bind(t)
                .bind(c)
                .fetch_one(&mut *$tx)
                .await?
                    > 0
            }
            (Some("workflow"), Some(id), None) => {
                let status: Option<String> = sqlx::query_scalar(
                    "UPDATE workflow_runs SET updated_at = updated_at WHERE run_id = $1 RETURNING status",
                )
                .bind(id)
                .fetch_optional(&mut *$tx)
                .await?;
                status.is_none_or(|s| RunStatus::parse(&s).is_none_or(RunStatus::terminal))
            }
            (Some("execution"), Some(id), None) => {
                let status: Option<String> = sqlx::query_scalar(
                    "UPDATE executions SET updated_at = updated_at WHERE execution_id = $1 RETURNING status",
                )
                .bind(id)
                .fetch_optional(&mut *$tx)
                .await?;
                status.is_none_or(|s| matches!(s.as_str(), "completed" | "failed" | "cancelled"))
            }
            _ => true,
        }
    }};
}

/// Writes one effect inside `commit_run`'s transaction.
macro_rules! apply_effect {
    ($tx:ident, $run_id:expr, $e:expr, $now:expr, $resolved:expr) => {
        match $e {
            Effect::Record(c) => {
                sqlx::query(
                    "INSERT INTO workflow_checkpoints (run_id, seq, name, kind, done, value_json, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                     ON CONFLICT (run_id, seq) DO UPDATE SET done = excluded.done, value_json = excluded.value_json, updated_at = excluded.updated_at",
                )
                .bind($run_id)
                .bind(c.seq)
                .bind(&c.name)
                .bind(c.kind.as_str())
                .bind(i64::from(c.done))
                .bind(c.value.to_string())
                .bind($now)
                .execute(&mut *$tx)
                .await?;
                sqlx::query("UPDATE workflow_runs SET retry_json = NULL, error_text = NULL WHERE run_id = $1")
                    .bind($run_id)
                    .execute(&mut *$tx)
                    .await?;
            }
            Effect::RetryAt { attempts, at, message } => {
                sqlx::query(
                    "UPDATE workflow_runs SET status = 'sleeping', retry_json = $2, error_text = $3, available_at = $4, waiting_on = $5, worker_id = NULL, lease_expires_at = NULL WHERE run_id = $1",
                )
                .bind($run_id)
                .bind(json!({"seq": attempts.seq, "failed": attempts.failed}).to_string())
                .bind(message)
                .bind(*at)
                .bind(json!({"type": "retry", "seq": attempts.seq, "failed_attempts": attempts.failed, "until": at}).to_string())
                .execute(&mut *$tx)
                .await?;
            }
            Effect::Suspend {
                wait_key,
                until,
                waiting_on,
            } => {
                let (status, due) = match wait_key {
                    None => ("sleeping", *until),
                    // Already there (an event posted first, a child that ended): due at once.
                    Some(_) if $resolved => ("waiting", $now),
                    Some(_) => ("waiting", *until),
                };
                sqlx::query(
                    "UPDATE workflow_runs SET status = $2, wait_key = $3, waiting_on = $4, available_at = $5, worker_id = NULL, lease_expires_at = NULL WHERE run_id = $1",
                )
                .bind($run_id)
                .bind(status)
                .bind(wait_key)
                .bind(waiting_on.to_string())
                .bind(due)
                .execute(&mut *$tx)
                .await?;
            }
            Effect::Fail { code, message } => {
                sqlx::query(
                    "UPDATE workflow_runs SET status = 'failed', error_code = $2, error_text = $3, worker_id = NULL, lease_expires_at = NULL, completed_at = $4 WHERE run_id = $1",
                )
                .bind($run_id)
                .bind(*code)
                .bind(message)
                .bind($now)
                .execute(&mut *$tx)
                .await?;
                wake!($tx, &format!("workflow\n{}", $run_id), $now);
            }
        }
    };
}

/// A run a worker may claim at `$1`.
macro_rules! due {
    () => {
        "((status IN ('queued', 'sleeping', 'waiting') AND available_at <= $1) OR (status = 'running' AND lease_expires_at < $1))"
    };
}

impl Store {
    /// Claims the run that has been due longest (queued, or suspended until now, or running
    /// under an expired lease) for `lease_ms`, with what its replay needs.
    pub async fn claim_run(
        &self,
        worker: &str,
        lease_ms: i64,
    ) -> Result<Option<ClaimedRun>, StoreError> {
        let now = self.now();
        loop {
            let candidate: Option<String> = on_pool!(self, |pool| {
                sqlx::query_scalar(concat!(
                    "SELECT run_id FROM workflow_runs WHERE ",
                    due!(),
                    " ORDER BY available_at, created_at LIMIT 1"
                ))
                .bind(now)
                .fetch_optional(pool)
                .await?
            });
            let Some(run_id) = candidate else {
                return Ok(None);
            };
            // Only one claimer's conditional update matches (the row lock re-checks it).
            let thread = run_thread(&run_id);
            let thread = thread.as_str();
            let claimed = write_events!(self, thread, |tx, ev| {
                ensure_thread!(tx, thread, now);
                let _ = lock_thread!(tx, thread);
                let n = sqlx::query(concat!("UPDATE workflow_runs SET status = 'running', worker_id = $2, lease_expires_at = $3, started_at = COALESCE(started_at, $1), waiting_on = NULL, wait_key = NULL, updated_at = $1 WHERE run_id = $4 AND ", due!()))
                .bind(now)
                .bind(worker)
                .bind(now + lease_ms)
                .bind(&run_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    let row = sqlx::query(concat!(
                        "SELECT ",
                        run_columns!(),
                        ", retry_json FROM workflow_runs WHERE run_id = $1"
                    ))
                    .bind(&run_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    let retry: Option<String> = row.try_get("retry_json")?;
                    let run = run_row!(&row);
                    let mut checkpoints = Vec::new();
                    for r in sqlx::query(
                        "SELECT seq, name, kind, done, value_json FROM workflow_checkpoints WHERE run_id = $1 ORDER BY seq",
                    )
                    .bind(&run_id)
                    .fetch_all(&mut *tx)
                    .await?
                    {
                        checkpoints.push(checkpoint_row!(&r));
                    }
                    let data = json!({"type": "workflow.run", "run_id": run_id, "status": "running", "workflow_name": run.workflow_name, "recorded": checkpoints.len()});
                    let id = append_event!(tx, ev, thread, None, "workflow", data, now);
                    (
                        Some(ClaimedRun {
                            run,
                            checkpoints,
                            attempts: retry.as_deref().and_then(attempts),
                        }),
                        Some(id),
                    )
                } else {
                    (None, None)
                }
            });
            if claimed.is_some() {
                return Ok(claimed);
            }
        }
    }

    /// Extends the worker's lease; `false` if it lost the run or a cancel was asked for.
    pub async fn renew_run(
        &self,
        run_id: &str,
        worker: &str,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let n = on_pool!(self, |pool| {
            sqlx::query(concat!(
                "UPDATE workflow_runs SET lease_expires_at = $3 WHERE ",
                fence!()
            ))
            .bind(run_id)
            .bind(worker)
            .bind(now + lease_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Commits a decision's effects in one transaction, fenced by the worker's lease;
    /// `false` (nothing written) if it lost the run or a cancel was asked for.
    pub async fn commit_run(
        &self,
        run_id: &str,
        worker: &str,
        effects: &[Effect],
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let thread = run_thread(run_id);
        let thread = thread.as_str();
        let ok = write_events!(self, thread, |tx, ev| {
            // Lock order, as everywhere: the run's thread, then what it waits on (the child
            // run, the execution: the side that ends it takes that row first too), then the
            // run itself.
            ensure_thread!(tx, thread, now);
            let _ = lock_thread!(tx, thread);
            let wait_key = effects.iter().find_map(|e| match e {
                Effect::Suspend {
                    wait_key: Some(k), ..
                } => Some(k.as_str()),
                _ => None,
            });
            let resolved = match wait_key {
                Some(k) => resolved!(tx, k),
                None => false,
            };
            let n = sqlx::query(concat!(
                "UPDATE workflow_runs SET lease_expires_at = $3, updated_at = $4 WHERE ",
                fence!()
            ))
            .bind(run_id)
            .bind(worker)
            .bind(now + lease_ms)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let mut newest = None;
            if n == 1 {
                for e in effects {
                    apply_effect!(tx, run_id, e, now, resolved);
                    let data = progress(run_id, e);
                    newest = Some(append_event!(tx, ev, thread, None, "workflow", data, now));
                }
            }
            (n == 1, newest)
        });
        Ok(ok)
    }

    /// Ends a run the worker holds; `false` if it lost it. `Cancelled` needs only the worker
    /// (a cancel was asked for); `Completed` also needs no pending cancel.
    pub async fn end_run(
        &self,
        run_id: &str,
        worker: &str,
        end: &RunEnd,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        macro_rules! end_query {
            ($fence:expr) => {
                concat!(
                    "UPDATE workflow_runs SET status = $3, output_json = $4, error_code = NULL, error_text = NULL, worker_id = NULL, lease_expires_at = NULL, completed_at = $5, updated_at = $5 WHERE ",
                    $fence
                )
            };
        }
        let (status, output, query) = match end {
            RunEnd::Completed(v) => ("completed", Some(v.to_string()), end_query!(fence!())),
            RunEnd::Cancelled => (
                "cancelled",
                None,
                end_query!("run_id = $1 AND worker_id = $2 AND status = 'running'"),
            ),
        };
        let thread = run_thread(run_id);
        let thread = thread.as_str();
        let ended = write_events!(self, thread, |tx, ev| {
            ensure_thread!(tx, thread, now);
            let _ = lock_thread!(tx, thread);
            let n = sqlx::query(query)
                .bind(run_id)
                .bind(worker)
                .bind(status)
                .bind(output)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let mut newest = None;
            if n == 1 {
                wake!(tx, &format!("workflow\n{run_id}"), now);
                let data = json!({"type": "workflow.run", "run_id": run_id, "status": status});
                newest = Some(append_event!(tx, ev, thread, None, "workflow", data, now));
            }
            (n == 1, newest)
        });
        Ok(ended)
    }

    /// Gives back every run a worker holds (call it only when no other server can hold
    /// one: the sole server on a SQLite file, at start). Returns how many.
    pub async fn release_orphaned_runs(&self) -> Result<u64, StoreError> {
        let now = self.now();
        let n = in_tx!(self, |tx| {
            let cancelled = sqlx::query(
                "UPDATE workflow_runs SET status = 'cancelled', worker_id = NULL, lease_expires_at = NULL, completed_at = $1, updated_at = $1 WHERE status = 'running' AND cancel_requested = 1 RETURNING run_id",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            for row in &cancelled {
                let id: String = row.try_get("run_id")?;
                wake!(tx, &format!("workflow\n{id}"), now);
            }
            sqlx::query(
                "UPDATE workflow_runs SET status = 'queued', worker_id = NULL, lease_expires_at = NULL, available_at = $1, updated_at = $1 WHERE status = 'running'",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n)
    }

    /// Gives a run back (its worker died): claimable again at `at`.
    pub async fn release_run(&self, run_id: &str, worker: &str, at: i64) -> Result<(), StoreError> {
        let now = self.now();
        on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE workflow_runs SET status = 'queued', worker_id = NULL, lease_expires_at = NULL, available_at = $3, updated_at = $4 WHERE run_id = $1 AND worker_id = $2 AND status = 'running'",
            )
            .bind(run_id)
            .bind(worker)
            .bind(at)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}

fn attempts(s: &str) -> Option<Attempts> {
    let v: Value = serde_json::from_str(s).ok()?;
    Some(Attempts {
        seq: v["seq"].as_i64()?,
        failed: u32::try_from(v["failed"].as_u64()?).ok()?,
    })
}

/// The engine a transaction runs on (`PostgreSQL`, `SQLite`).
fn engine<DB: sqlx::Database>(_: &sqlx::Transaction<'_, DB>) -> &'static str {
    DB::NAME
}

/// The thread a run's progress is appended to (and its agent turns run on by default).
pub fn run_thread(run_id: &str) -> String {
    format!("workflow:{run_id}")
}

/// The event a committed effect appends to the run's thread.
fn progress(run_id: &str, e: &Effect) -> Value {
    match e {
        Effect::Record(c) => json!({
            "type": "workflow.step", "run_id": run_id, "seq": c.seq, "name": c.name,
            "kind": c.kind.as_str(), "done": c.done,
        }),
        Effect::RetryAt {
            attempts,
            at,
            message,
        } => json!({
            "type": "workflow.run", "run_id": run_id, "status": "sleeping",
            "retry": {"seq": attempts.seq, "failed_attempts": attempts.failed, "at": at, "error": message},
        }),
        Effect::Suspend {
            wait_key,
            waiting_on,
            ..
        } => json!({
            "type": "workflow.run", "run_id": run_id,
            "status": if wait_key.is_some() { "waiting" } else { "sleeping" },
            "waiting_on": waiting_on,
        }),
        Effect::Fail { code, message } => json!({
            "type": "workflow.run", "run_id": run_id, "status": "failed",
            "error_code": code, "error_text": message,
        }),
    }
}
