//! Workflow runs, their checkpoints and events: created idempotently on a trigger key,
//! claimed under a lease, and changed only by writes fenced by that lease (the worker id and
//! `running`), so a worker that lost its run can record nothing more.

use serde_json::{Value, json};
use sqlx::Row;

use crate::store::code::Code;
use crate::store::db::{Store, StoreError, in_tx, new_id, on_pool, request_hash};
use crate::workflows::core::{Checkpoint, Kind};
#[macro_use]
mod types;
mod lease;
mod schedules;

pub use schedules::DueSchedule;
pub use types::{ClaimedRun, NewRun, RunEnd, RunRecord, RunStatus};

impl Store {
    /// Creates a run, or returns the run with the same workflow and trigger key (`true`:
    /// found) if its input is the same; a different input is `IDEMPOTENCY_PAYLOAD_MISMATCH`.
    pub async fn create_run(&self, new: &NewRun) -> Result<(RunRecord, bool), StoreError> {
        let now = self.now();
        let hash = request_hash(&json!({
            "workflow": new.workflow_name,
            "input": new.idempotency.as_ref().unwrap_or(&new.input),
        }));
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

    /// Cancels a run and, with it, its children and the agent turns it started: at once if
    /// no worker holds it, else its worker stops it at its next write or heartbeat. Idempotent
    /// for a run that has ended. `None`: no such run.
    pub async fn cancel_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let now = self.now();
        let mut todo = vec![run_id.to_string()];
        let mut executions = Vec::new();
        let mut seen = 0;
        while let Some(id) = todo.pop() {
            seen += 1;
            if seen > 10_000 {
                break;
            }
            let (children, started) = in_tx!(self, |tx| {
                let n = sqlx::query(
                    "UPDATE workflow_runs SET status = 'cancelled', waiting_on = NULL, wait_key = NULL, completed_at = $2, updated_at = $2 WHERE run_id = $1 AND status IN ('queued', 'sleeping', 'waiting')",
                )
                .bind(&id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    lease::wake!(tx, &format!("workflow\n{id}"), now);
                }
                sqlx::query(
                    "UPDATE workflow_runs SET cancel_requested = 1, updated_at = $2 WHERE run_id = $1 AND status = 'running'",
                )
                .bind(&id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let children: Vec<String> = sqlx::query_scalar(
                    "SELECT run_id FROM workflow_runs WHERE parent_run_id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')",
                )
                .bind(&id)
                .fetch_all(&mut *tx)
                .await?;
                let started: Vec<String> = sqlx::query_scalar(
                    "SELECT value_json FROM workflow_checkpoints WHERE run_id = $1 AND kind = 'start_agent'",
                )
                .bind(&id)
                .fetch_all(&mut *tx)
                .await?;
                (children, started)
            });
            todo.extend(children);
            executions.extend(started.iter().filter_map(|v| {
                let v: Value = serde_json::from_str(v).ok()?;
                v["result"].as_str().map(str::to_string)
            }));
        }
        for e in executions {
            if let Some(x) = self.execution(&e).await?
                && matches!(
                    x.status,
                    crate::store::executions::Status::Queued
                        | crate::store::executions::Status::Running
                )
            {
                // Already ending is fine: the turn's end wakes nobody who is cancelled.
                let _ = self.cancel(&e).await;
            }
        }
        Ok(self.get_run(run_id).await?.map(|(r, _)| r))
    }

    /// Creates the child run `child_id` of `parent` (idempotent on the id, which derives from
    /// the parent and the call).
    pub async fn create_child_run(
        &self,
        parent: &RunRecord,
        child_id: &str,
        workflow: (&str, &str),
        input: &Value,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let hash = request_hash(&json!({"workflow": workflow.0, "input": input}));
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO workflow_runs (run_id, workflow_name, workflow_version, parent_run_id, root_run_id, status, input_json, request_hash, available_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $8, $8) ON CONFLICT (run_id) DO NOTHING",
            )
            .bind(child_id)
            .bind(workflow.0)
            .bind(workflow.1)
            .bind(&parent.run_id)
            .bind(&parent.root_run_id)
            .bind(input.to_string())
            .bind(&hash)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
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
        let key = crate::workflows::core::Target::Event {
            event_type: event_type.into(),
            correlation_id: correlation_id.into(),
        }
        .key();
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
            let woken = lease::wake!(tx, &key, now);
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
