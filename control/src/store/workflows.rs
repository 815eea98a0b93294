//! Workflow runs, their checkpoints and events: created idempotently on a trigger key,
//! claimed under a lease, and changed only by writes fenced by that lease (the worker id and
//! `running`), so a worker that lost its run can record nothing more.

use serde_json::{Value, json};
use sqlx::Row;

use crate::store::code::Code;
use crate::store::db::{Store, StoreError, in_tx, new_id, on_pool, request_hash};
use crate::workflows::core::{Attempts, Checkpoint, Effect, Kind, Wait};

/// A run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Waiting to be claimed.
    Queued,
    /// A worker drives its handler.
    Running,
    /// Suspended until a time.
    Sleeping,
    /// Suspended until an event (or its deadline).
    Waiting,
    /// The handler returned.
    Completed,
    /// The handler raised, or the run could not go on.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl RunStatus {
    /// Its name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Sleeping => "sleeping",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<RunStatus> {
        [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Sleeping,
            RunStatus::Waiting,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// Whether the run has ended.
    pub fn terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The workflow.
    pub workflow_name: String,
    /// Its version (a hash of its source).
    pub workflow_version: String,
    /// The handler's input.
    pub input: Value,
    /// Runs are idempotent on (workflow, trigger key).
    pub trigger_key: Option<String>,
}

/// A run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// `wfr_<16 hex>`.
    pub run_id: String,
    /// The workflow.
    pub workflow_name: String,
    /// Its version when the run was created.
    pub workflow_version: String,
    /// The run that started it.
    pub parent_run_id: Option<String>,
    /// The first run of its family (itself when it has no parent).
    pub root_run_id: String,
    /// Where it is.
    pub status: RunStatus,
    /// The handler's input.
    pub input: Value,
    /// The handler's return value.
    pub output: Option<Value>,
    /// Why it failed: a stable code.
    pub error_code: Option<String>,
    /// Why it failed (or the last error of a step being retried).
    pub error_text: Option<String>,
    /// Its trigger key.
    pub trigger_key: Option<String>,
    /// What it waits on while sleeping or waiting.
    pub waiting_on: Option<Value>,
    /// Whether a cancel was asked for while it ran.
    pub cancel_requested: bool,
    /// Epoch ms.
    pub created_at: i64,
    /// When a worker first claimed it.
    pub started_at: Option<i64>,
    /// When it ended.
    pub completed_at: Option<i64>,
}

impl RunRecord {
    /// The API's view; `idempotent` says the create found an existing run.
    pub fn to_json(&self, idempotent: bool) -> Value {
        json!({
            "run_id": self.run_id,
            "workflow_name": self.workflow_name,
            "workflow_version": self.workflow_version,
            "parent_run_id": self.parent_run_id,
            "root_run_id": self.root_run_id,
            "status": self.status.as_str(),
            "input": self.input,
            "output": self.output,
            "error_code": self.error_code,
            "error_text": self.error_text,
            "trigger_key": self.trigger_key,
            "waiting_on": self.waiting_on,
            "cancel_requested": self.cancel_requested,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "idempotent": idempotent,
        })
    }
}

/// A claimed run: what its handler's replay needs.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// The run.
    pub run: RunRecord,
    /// Its checkpoints, by seq.
    pub checkpoints: Vec<Checkpoint>,
    /// The step being retried.
    pub attempts: Option<Attempts>,
}

/// How a run ends.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// The handler returned this.
    Completed(Value),
    /// It was cancelled while it ran.
    Cancelled,
}

macro_rules! run_columns {
    () => {
        "run_id, workflow_name, workflow_version, parent_run_id, root_run_id, status, input_json, output_json, error_code, error_text, trigger_key, waiting_on, cancel_requested, created_at, started_at, completed_at"
    };
}

macro_rules! run_row {
    ($r:expr) => {{
        let r = $r;
        let status: String = r.try_get("status")?;
        let input: String = r.try_get("input_json")?;
        let output: Option<String> = r.try_get("output_json")?;
        let waiting: Option<String> = r.try_get("waiting_on")?;
        let cancel: i64 = r.try_get("cancel_requested")?;
        RunRecord {
            run_id: r.try_get("run_id")?,
            workflow_name: r.try_get("workflow_name")?,
            workflow_version: r.try_get("workflow_version")?,
            parent_run_id: r.try_get("parent_run_id")?,
            root_run_id: r.try_get("root_run_id")?,
            status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
            input: serde_json::from_str(&input).unwrap_or(Value::Null),
            output: output.and_then(|o| serde_json::from_str(&o).ok()),
            error_code: r.try_get("error_code")?,
            error_text: r.try_get("error_text")?,
            trigger_key: r.try_get("trigger_key")?,
            waiting_on: waiting.and_then(|w| serde_json::from_str(&w).ok()),
            cancel_requested: cancel != 0,
            created_at: r.try_get("created_at")?,
            started_at: r.try_get("started_at")?,
            completed_at: r.try_get("completed_at")?,
        }
    }};
}

macro_rules! checkpoint_row {
    ($r:expr) => {{
        let r = $r;
        let kind: String = r.try_get("kind")?;
        let value: String = r.try_get("value_json")?;
        let done: i64 = r.try_get("done")?;
        Checkpoint {
            seq: r.try_get("seq")?,
            name: r.try_get("name")?,
            kind: Kind::parse(&kind).unwrap_or(Kind::Step),
            done: done != 0,
            value: serde_json::from_str(&value).unwrap_or(Value::Null),
        }
    }};
}

/// The fence of every write a worker makes to its run.
macro_rules! fence {
    () => {
        "run_id = $1 AND worker_id = $2 AND status = 'running' AND cancel_requested = 0"
    };
}

/// Writes one effect inside `commit_run`'s transaction.
macro_rules! apply_effect {
    ($tx:ident, $run_id:expr, $e:expr, $now:expr) => {
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
            Effect::Suspend { wait, until, waiting_on } => {
                let (status, key, event) = match wait {
                    Wait::Sleep => ("sleeping", None, None),
                    Wait::Event(t, c) => ("waiting", Some(format!("{t}\n{c}")), Some((t, c))),
                };
                // An event already stored for the key makes the run due at once.
                sqlx::query(
                    "UPDATE workflow_runs SET status = $2, wait_key = $3, waiting_on = $4, worker_id = NULL, lease_expires_at = NULL, \
                     available_at = CASE WHEN EXISTS (SELECT 1 FROM workflow_events e WHERE e.event_type = $7 AND e.correlation_id = $8) THEN $6 ELSE $5 END WHERE run_id = $1",
                )
                .bind($run_id)
                .bind(status)
                .bind(key)
                .bind(waiting_on.to_string())
                .bind(*until)
                .bind($now)
                .bind(event.map(|e| e.0.as_str()))
                .bind(event.map(|e| e.1.as_str()))
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
    /// Creates a run, or returns the run with the same workflow and trigger key (`true`:
    /// found) if its input is the same; a different input is `IDEMPOTENCY_PAYLOAD_MISMATCH`.
    pub async fn create_run(&self, new: &NewRun) -> Result<(RunRecord, bool), StoreError> {
        let now = self.now();
        let hash = request_hash(&json!({"workflow": new.workflow_name, "input": new.input}));
        let run_id = new_id("wfr_");
        let input = new.input.to_string();
        let out = in_tx!(self, |tx| {
            let inserted = sqlx::query(
                "INSERT INTO workflow_runs (run_id, workflow_name, workflow_version, root_run_id, status, input_json, trigger_key, request_hash, available_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $1, 'queued', $4, $5, $6, $7, $7, $7) ON CONFLICT DO NOTHING",
            )
            .bind(&run_id)
            .bind(&new.workflow_name)
            .bind(&new.workflow_version)
            .bind(&input)
            .bind(&new.trigger_key)
            .bind(&hash)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let row = if inserted == 1 {
                sqlx::query(concat!(
                    "SELECT ",
                    run_columns!(),
                    ", request_hash FROM workflow_runs WHERE run_id = $1"
                ))
                .bind(&run_id)
                .fetch_one(&mut *tx)
                .await?
            } else {
                sqlx::query(concat!("SELECT ", run_columns!(), ", request_hash FROM workflow_runs WHERE workflow_name = $1 AND trigger_key = $2"))
                    .bind(&new.workflow_name)
                    .bind(&new.trigger_key)
                    .fetch_one(&mut *tx)
                    .await?
            };
            let stored: String = row.try_get("request_hash")?;
            (run_row!(&row), inserted == 0, stored == hash)
        });
        let (run, found, same) = out;
        if !same {
            return Err(StoreError::reject(
                Code::IdempotencyPayloadMismatch,
                format!(
                    "trigger key {:?} of workflow {} was used by run {} with another input",
                    new.trigger_key.as_deref().unwrap_or_default(),
                    new.workflow_name,
                    run.run_id
                ),
            ));
        }
        Ok((run, found))
    }

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
            let claimed = in_tx!(self, |tx| {
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
                    Some(ClaimedRun {
                        run,
                        checkpoints,
                        attempts: retry.as_deref().and_then(attempts),
                    })
                } else {
                    None
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
        let ok = in_tx!(self, |tx| {
            let wait_key = effects.iter().find_map(|e| match e {
                Effect::Suspend {
                    wait: Wait::Event(t, c),
                    ..
                } => Some(format!("{t}\n{c}")),
                _ => None,
            });
            if let (Some(key), crate::store::db::Db::Postgres(_)) = (&wait_key, &self.db) {
                // Serialises with post_workflow_event on the same key: an event committed
                // while this run suspends is seen by one side or the other.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
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
            if n == 1 {
                for e in effects {
                    apply_effect!(tx, run_id, e, now);
                }
            }
            n == 1
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
        let n = on_pool!(self, |pool| {
            sqlx::query(query)
                .bind(run_id)
                .bind(worker)
                .bind(status)
                .bind(output)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
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

    /// Cancels a run: at once if no worker holds it, else its worker stops it at its next
    /// commit or heartbeat. Idempotent for a run that has ended. `None`: no such run.
    pub async fn cancel_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let now = self.now();
        on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE workflow_runs SET status = 'cancelled', waiting_on = NULL, wait_key = NULL, completed_at = $2, updated_at = $2 WHERE run_id = $1 AND status IN ('queued', 'sleeping', 'waiting')",
            )
            .bind(run_id)
            .bind(now)
            .execute(pool)
            .await?;
            sqlx::query(
                "UPDATE workflow_runs SET cancel_requested = 1, updated_at = $2 WHERE run_id = $1 AND status = 'running'",
            )
            .bind(run_id)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(self.get_run(run_id).await?.map(|(r, _)| r))
    }

    /// A run and its checkpoints.
    pub async fn get_run(
        &self,
        run_id: &str,
    ) -> Result<Option<(RunRecord, Vec<Checkpoint>)>, StoreError> {
        let out = on_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                run_columns!(),
                " FROM workflow_runs WHERE run_id = $1"
            ))
            .bind(run_id)
            .fetch_optional(pool)
            .await?;
            match row {
                None => None,
                Some(row) => {
                    let mut checkpoints = Vec::new();
                    for r in sqlx::query(
                        "SELECT seq, name, kind, done, value_json FROM workflow_checkpoints WHERE run_id = $1 ORDER BY seq",
                    )
                    .bind(run_id)
                    .fetch_all(pool)
                    .await?
                    {
                        checkpoints.push(checkpoint_row!(&r));
                    }
                    Some((run_row!(&row), checkpoints))
                }
            }
        });
        Ok(out)
    }

    /// Runs, newest first, optionally of one workflow and one status.
    pub async fn list_runs(
        &self,
        workflow: Option<&str>,
        status: Option<RunStatus>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let out = on_pool!(self, |pool| {
            let rows = sqlx::query(concat!("SELECT ", run_columns!(), " FROM workflow_runs WHERE ($1 IS NULL OR workflow_name = $1) AND ($2 IS NULL OR status = $2) ORDER BY created_at DESC, run_id DESC LIMIT $3"))
            .bind(workflow)
            .bind(status.map(RunStatus::as_str))
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(run_row!(r));
            }
            out
        });
        Ok(out)
    }

    /// Stores an event and wakes the runs waiting on it; returns its id and how many runs
    /// it woke. A run that waits later finds it (an event is never lost).
    pub async fn post_workflow_event(
        &self,
        event_type: &str,
        correlation_id: &str,
        payload: &Value,
    ) -> Result<(i64, u64), StoreError> {
        let now = self.now();
        let key = format!("{event_type}\n{correlation_id}");
        let out = in_tx!(self, |tx| {
            if let crate::store::db::Db::Postgres(_) = &self.db {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(&key)
                    .execute(&mut *tx)
                    .await?;
            }
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO workflow_events (event_type, correlation_id, payload_json, created_at) VALUES ($1, $2, $3, $4) RETURNING event_id",
            )
            .bind(event_type)
            .bind(correlation_id)
            .bind(payload.to_string())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let woken = sqlx::query(
                "UPDATE workflow_runs SET available_at = $2, updated_at = $2 WHERE wait_key = $1 AND status = 'waiting'",
            )
            .bind(&key)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            (id, woken)
        });
        Ok(out)
    }

    /// The payload of the first event of this type and correlation id.
    pub async fn find_workflow_event(
        &self,
        event_type: &str,
        correlation_id: &str,
    ) -> Result<Option<Value>, StoreError> {
        let payload: Option<String> = on_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT payload_json FROM workflow_events WHERE event_type = $1 AND correlation_id = $2 ORDER BY event_id LIMIT 1",
            )
            .bind(event_type)
            .bind(correlation_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(payload.map(|p| serde_json::from_str(&p).unwrap_or(Value::Null)))
    }
}

fn attempts(s: &str) -> Option<Attempts> {
    let v: Value = serde_json::from_str(s).ok()?;
    Some(Attempts {
        seq: v["seq"].as_i64()?,
        failed: u32::try_from(v["failed"].as_u64()?).ok()?,
    })
}
