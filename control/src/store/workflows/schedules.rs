//! Schedules in the store: the next slot of each workflow's schedule, moved by
//! compare-and-set so that one replica fires each slot, and the slot's run created in the
//! same transaction with its fire key as trigger key.

use serde_json::json;

use super::types::NewRun;
use crate::store::db::{Store, StoreError, in_tx, new_id, on_pool, request_hash};

/// A schedule whose next slot is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueSchedule {
    /// The workflow.
    pub workflow_name: String,
    /// Which version of its `SCHEDULE` set the slot.
    pub spec_hash: String,
    /// The slot (epoch ms).
    pub due: i64,
}

impl Store {
    /// Records the schedules the loaded workflows declare: a new or changed one starts at
    /// `next` (its first slot from now), an unchanged one keeps its next slot, and the
    /// schedules of workflows not in the list stop.
    pub async fn sync_schedules(
        &self,
        schedules: &[(String, String, i64)],
    ) -> Result<(), StoreError> {
        let now = self.now();
        in_tx!(self, |tx| {
            for (name, hash, next) in schedules {
                sqlx::query(
                    "INSERT INTO workflow_schedules (workflow_name, spec_hash, next_fire_at, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (workflow_name) DO UPDATE SET spec_hash = excluded.spec_hash, next_fire_at = excluded.next_fire_at, updated_at = excluded.updated_at \
                     WHERE workflow_schedules.spec_hash <> excluded.spec_hash OR workflow_schedules.next_fire_at IS NULL",
                )
                .bind(name)
                .bind(hash)
                .bind(next)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let keep: Vec<&str> = schedules.iter().map(|s| s.0.as_str()).collect();
            let all: Vec<String> = sqlx::query_scalar(
                "SELECT workflow_name FROM workflow_schedules WHERE next_fire_at IS NOT NULL",
            )
            .fetch_all(&mut *tx)
            .await?;
            for name in all.iter().filter(|n| !keep.contains(&n.as_str())) {
                sqlx::query("UPDATE workflow_schedules SET next_fire_at = NULL, updated_at = $2 WHERE workflow_name = $1")
                    .bind(name)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
        });
        Ok(())
    }

    /// The schedules whose next slot is at or before now.
    pub async fn due_schedules(&self) -> Result<Vec<DueSchedule>, StoreError> {
        let now = self.now();
        let rows: Vec<(String, String, i64)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT workflow_name, spec_hash, next_fire_at FROM workflow_schedules WHERE next_fire_at IS NOT NULL AND next_fire_at <= $1 ORDER BY next_fire_at",
            )
            .bind(now)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(workflow_name, spec_hash, due)| DueSchedule {
                workflow_name,
                spec_hash,
                due,
            })
            .collect())
    }

    /// Moves the schedule from slot `due` to `next` and, if `fire` is given, creates the
    /// slot's run (trigger key `schedule:<workflow>:<slot>`) in the same transaction.
    /// Returns the run id when this call fired the slot; `None` when another replica moved
    /// the schedule first, or the slot was skipped.
    pub async fn advance_schedule(
        &self,
        s: &DueSchedule,
        next: Option<i64>,
        fire: Option<(i64, NewRun)>,
    ) -> Result<Option<String>, StoreError> {
        let now = self.now();
        let run_id = new_id("wfr_");
        let out = in_tx!(self, |tx| {
            let moved = sqlx::query(
                "UPDATE workflow_schedules SET next_fire_at = $3, last_slot = COALESCE($4, last_slot), updated_at = $5 WHERE workflow_name = $1 AND next_fire_at = $2 AND spec_hash = $6",
            )
            .bind(&s.workflow_name)
            .bind(s.due)
            .bind(next)
            .bind(fire.as_ref().map(|f| f.0))
            .bind(now)
            .bind(&s.spec_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            match (&fire, moved) {
                (Some((slot, new)), 1) => {
                    let key = format!("schedule:{}:{slot}", new.workflow_name);
                    let hash =
                        request_hash(&json!({"workflow": new.workflow_name, "input": new.input}));
                    let n = sqlx::query(
                        "INSERT INTO workflow_runs (run_id, workflow_name, workflow_version, root_run_id, status, input_json, trigger_key, request_hash, available_at, created_at, updated_at) \
                         VALUES ($1, $2, $3, $1, 'queued', $4, $5, $6, $7, $7, $7) ON CONFLICT DO NOTHING",
                    )
                    .bind(&run_id)
                    .bind(&new.workflow_name)
                    .bind(&new.workflow_version)
                    .bind(new.input.to_string())
                    .bind(&key)
                    .bind(&hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    (n == 1).then(|| run_id.clone())
                }
                _ => None,
            }
        });
        Ok(out)
    }
}
