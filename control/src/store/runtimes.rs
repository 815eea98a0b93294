//! Who owns which sandbox: the threads' active assignments (the reaper, idle suspension and
//! the capacity limit ask), and the warm pool's durable membership (`sandbox_pool`): which
//! sandboxes were made ahead of need, on which machine, from which deploy, and whether they
//! are ready to be claimed.

use super::db::{Store, StoreError, in_tx, on_pool};

/// One member of the pool.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PoolMember {
    /// Its runtime (the supervisor's directory; the thread's runtime once claimed).
    pub runtime_id: String,
    /// The machine and data directory it runs in.
    pub scope: String,
    /// What it was made from.
    pub deploy_hash: String,
    /// `starting` or `ready`.
    pub state: String,
    /// When its row was written (ms).
    pub created_at: i64,
    /// When it became ready (ms).
    pub ready_at: Option<i64>,
}

impl Store {
    /// Every runtime an active assignment or the warm pool owns (the reaper keeps these).
    pub async fn active_runtimes(&self) -> Result<Vec<String>, StoreError> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_scalar(
                "SELECT runtime_id FROM assignments WHERE state = 'active' UNION SELECT runtime_id FROM sandbox_pool",
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// Every active assignment's `(runtime_id, thread_key)` (idle suspension, capacity).
    pub async fn active_runtime_threads(&self) -> Result<Vec<(String, String)>, StoreError> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT runtime_id, thread_key FROM assignments WHERE state = 'active'",
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// Whether the thread has an execution queued, running or being cancelled (its sandbox
    /// is about to be used, or is used).
    pub async fn thread_busy(&self, thread_key: &str) -> Result<bool, StoreError> {
        on_pool!(self, |pool| {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM executions WHERE thread_key = $1 AND status IN ('queued', 'running', 'cancel_requested')",
            )
            .bind(thread_key)
            .fetch_one(pool)
            .await?;
            Ok(n > 0)
        })
    }

    /// Gives the assignment a new runtime (its old sandbox is gone): the spool starts over.
    pub async fn replace_runtime(
        &self,
        thread_key: &str,
        generation: i64,
        runtime_id: &str,
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| {
            sqlx::query("UPDATE assignments SET runtime_id = $1, spool_seq = 0 WHERE thread_key = $2 AND generation = $3")
                .bind(runtime_id)
                .bind(thread_key)
                .bind(generation)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// Records a member about to be made (before its sandbox, so the reaper keeps it).
    pub async fn pool_add(
        &self,
        runtime_id: &str,
        scope: &str,
        deploy_hash: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        on_pool!(self, |pool| {
            sqlx::query("INSERT INTO sandbox_pool (runtime_id, scope, deploy_hash, state, created_at) VALUES ($1, $2, $3, 'starting', $4)")
                .bind(runtime_id)
                .bind(scope)
                .bind(deploy_hash)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Marks a member ready to be claimed; false when its row is gone (evicted meanwhile).
    pub async fn pool_ready(&self, runtime_id: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let n = on_pool!(self, |pool| {
            sqlx::query("UPDATE sandbox_pool SET state = 'ready', ready_at = $1 WHERE runtime_id = $2 AND state = 'starting'")
                .bind(now)
                .bind(runtime_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Removes a member's row; false when it was not there (claimed or removed meanwhile).
    pub async fn pool_remove(&self, runtime_id: &str) -> Result<bool, StoreError> {
        let n = on_pool!(self, |pool| {
            sqlx::query("DELETE FROM sandbox_pool WHERE runtime_id = $1")
                .bind(runtime_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// The members of a scope, oldest first (every scope with `None`).
    pub async fn pool_members(&self, scope: Option<&str>) -> Result<Vec<PoolMember>, StoreError> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT runtime_id, scope, deploy_hash, state, created_at, ready_at FROM sandbox_pool WHERE $1 IS NULL OR scope = $1 ORDER BY created_at, runtime_id",
            )
            .bind(scope)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Claims the oldest ready member of `scope` made from `deploy_hash` for the thread's
    /// assignment of `generation`: in one transaction the member leaves the pool and becomes
    /// the assignment's runtime (its spool starts over). `None` when no member is ready. One
    /// statement takes the row, so two claimers never get the same member (on PostgreSQL the
    /// later one finds the row gone and gets `None`).
    pub async fn pool_claim(
        &self,
        scope: &str,
        deploy_hash: &str,
        thread_key: &str,
        generation: i64,
    ) -> Result<Option<String>, StoreError> {
        // On PostgreSQL, concurrent claims skip a member another claim holds: without SKIP
        // LOCKED the second claim waits for the first, finds the oldest member gone, and
        // claims nothing although another one is ready. SQLite runs one writer at a time.
        let sql = match &self.db {
            crate::store::db::Db::Postgres(_) => {
                "DELETE FROM sandbox_pool WHERE runtime_id = (SELECT runtime_id FROM sandbox_pool WHERE scope = $1 AND deploy_hash = $2 AND state = 'ready' ORDER BY created_at, runtime_id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING runtime_id"
            }
            crate::store::db::Db::Sqlite(_) => {
                "DELETE FROM sandbox_pool WHERE runtime_id = (SELECT runtime_id FROM sandbox_pool WHERE scope = $1 AND deploy_hash = $2 AND state = 'ready' ORDER BY created_at, runtime_id LIMIT 1) RETURNING runtime_id"
            }
        };
        let claimed: Option<String> = in_tx!(self, |tx| {
            let id: Option<String> = sqlx::query_scalar(sql)
                .bind(scope)
                .bind(deploy_hash)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(id) = &id {
                sqlx::query("UPDATE assignments SET runtime_id = $1, spool_seq = 0 WHERE thread_key = $2 AND generation = $3")
                    .bind(id)
                    .bind(thread_key)
                    .bind(generation)
                    .execute(&mut *tx)
                    .await?;
            }
            id
        });
        Ok(claimed)
    }
}
