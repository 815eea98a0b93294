//! Slack's durable inbox (one row per Slack message) and outbox (one row per answer).

use sqlx::Row as _;

use super::db::{Store, StoreError, in_tx, new_id, on_pool};

/// An inbox row due for processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    /// team:channel:ts.
    pub dedupe_key: String,
    /// The event body, verbatim.
    pub body: String,
    /// The thread's earlier messages, once fetched.
    pub context: Option<String>,
    /// Processing attempts so far, this one included.
    pub attempts: i64,
}

/// How an inbox row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxEnd {
    /// A turn was queued.
    Done,
    /// Nothing to do.
    Ignored,
    /// It could not become a turn (the thread was told why).
    Failed,
}

/// An outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `dlv_…`: also in the metadata of every message it posts.
    pub delivery_id: String,
    /// The execution whose progress and answer it posts.
    pub execution_id: Option<String>,
    /// Or a fixed notice.
    pub notice: Option<String>,
    /// The thread.
    pub thread_key: String,
    /// Where it posts.
    pub channel: String,
    /// The Slack thread it answers in.
    pub thread_ts: String,
    /// `active`, `delivered` or `dead`.
    pub state: String,
    /// The progress message, once posted.
    pub status_ts: Option<String>,
    /// Answer parts Slack accepted.
    pub parts_posted: i64,
    /// Attempts so far (this one included, once claimed).
    pub attempts: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was made.
    pub created_at: i64,
    /// When it was delivered.
    pub delivered_at: Option<i64>,
}

/// A delivery to make.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Unique per delivery: the execution id, or `notice:<dedupe key>`.
    pub source: String,
    /// The execution, if any.
    pub execution_id: Option<String>,
    /// The notice, if no execution.
    pub notice: Option<String>,
    /// The thread.
    pub thread_key: String,
    /// The channel.
    pub channel: String,
    /// The Slack thread.
    pub thread_ts: String,
}

macro_rules! delivery_row {
    ($r:expr) => {{
        let r = $r;
        Delivery {
            delivery_id: r.try_get("delivery_id")?,
            execution_id: r.try_get("execution_id")?,
            notice: r.try_get("notice")?,
            thread_key: r.try_get("thread_key")?,
            channel: r.try_get("channel")?,
            thread_ts: r.try_get("thread_ts")?,
            state: r.try_get("state")?,
            status_ts: r.try_get("status_ts")?,
            parts_posted: r.try_get("parts_posted")?,
            attempts: r.try_get("attempts")?,
            last_error: r.try_get("last_error")?,
            created_at: r.try_get("created_at")?,
            delivered_at: r.try_get("delivered_at")?,
        }
    }};
}

impl Store {
    /// Stores a Slack message's event once; false when its key was already stored.
    pub async fn slack_inbox_insert(
        &self,
        dedupe_key: &str,
        event_id: &str,
        body: &str,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let n = in_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO slack_inbox (dedupe_key, event_id, body, state, next_at, received_at, updated_at) VALUES ($1, $2, $3, 'pending', $4, $4, $4) ON CONFLICT (dedupe_key) DO NOTHING",
            )
            .bind(dedupe_key)
            .bind(event_id)
            .bind(body)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Claims up to `limit` due inbox rows for `hold_ms` (another claim before then skips
    /// them; a crash leaves them due again afterwards).
    pub async fn slack_inbox_claim(
        &self,
        limit: i64,
        hold_ms: i64,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let now = self.now();
        let claimed = in_tx!(self, |tx| {
            let rows = sqlx::query(
                "SELECT dedupe_key FROM slack_inbox WHERE state = 'pending' AND next_at <= $1 ORDER BY next_at LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let mut out = Vec::new();
            for r in &rows {
                let key: String = r.try_get("dedupe_key")?;
                let row = sqlx::query(
                    "UPDATE slack_inbox SET next_at = $1, attempts = attempts + 1, updated_at = $2 WHERE dedupe_key = $3 AND state = 'pending' AND next_at <= $2 RETURNING dedupe_key, body, context, attempts",
                )
                .bind(now + hold_ms)
                .bind(now)
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(r) = row {
                    out.push(InboxRow {
                        dedupe_key: r.try_get("dedupe_key")?,
                        body: r.try_get("body")?,
                        context: r.try_get("context")?,
                        attempts: r.try_get("attempts")?,
                    });
                }
            }
            out
        });
        Ok(claimed)
    }

    /// Keeps the thread's earlier messages with the row, so a retry sends the same turn.
    pub async fn slack_inbox_context(&self, key: &str, context: &str) -> Result<(), StoreError> {
        in_tx!(self, |tx| {
            sqlx::query("UPDATE slack_inbox SET context = $1 WHERE dedupe_key = $2")
                .bind(context)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// Ends an inbox row with what became of it (an execution id, or the reason).
    pub async fn slack_inbox_end(
        &self,
        key: &str,
        end: InboxEnd,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let state = match end {
            InboxEnd::Done => "done",
            InboxEnd::Ignored => "ignored",
            InboxEnd::Failed => "failed",
        };
        let now = self.now();
        in_tx!(self, |tx| {
            sqlx::query(
                "UPDATE slack_inbox SET state = $1, outcome = $2, updated_at = $3 WHERE dedupe_key = $4",
            )
            .bind(state)
            .bind(outcome)
            .bind(now)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Leaves an inbox row pending until `next_at`, with the reason.
    pub async fn slack_inbox_retry(
        &self,
        key: &str,
        next_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        in_tx!(self, |tx| {
            sqlx::query(
                "UPDATE slack_inbox SET next_at = $1, outcome = $2, updated_at = $3 WHERE dedupe_key = $4 AND state = 'pending'",
            )
            .bind(next_at)
            .bind(error)
            .bind(now)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Deletes finished inbox rows last touched before `before`; how many.
    pub async fn slack_inbox_prune(&self, before: i64) -> Result<u64, StoreError> {
        let n = in_tx!(self, |tx| {
            sqlx::query("DELETE FROM slack_inbox WHERE state <> 'pending' AND updated_at < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(n)
    }

    /// Whether the store has this thread (the agent joined it).
    pub async fn thread_exists(&self, thread_key: &str) -> Result<bool, StoreError> {
        on_pool!(self, |pool| {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM threads WHERE thread_key = $1")
                .bind(thread_key)
                .fetch_one(pool)
                .await?;
            Ok(n > 0)
        })
    }

    /// Makes a delivery unless one with its source exists.
    pub async fn slack_delivery_create(&self, d: &NewDelivery) -> Result<(), StoreError> {
        let now = self.now();
        in_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO slack_deliveries (delivery_id, source, execution_id, notice, thread_key, channel, thread_ts, state, next_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $8, $8) ON CONFLICT (source) DO NOTHING",
            )
            .bind(new_id("dlv_"))
            .bind(&d.source)
            .bind(&d.execution_id)
            .bind(&d.notice)
            .bind(&d.thread_key)
            .bind(&d.channel)
            .bind(&d.thread_ts)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Claims up to `limit` due deliveries for `owner` until `lease_ms` from now, counting
    /// an attempt on each.
    pub async fn slack_delivery_claim(
        &self,
        owner: &str,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let now = self.now();
        let claimed = in_tx!(self, |tx| {
            let rows = sqlx::query(
                "SELECT delivery_id FROM slack_deliveries WHERE state = 'active' AND next_at <= $1 AND (lease_until IS NULL OR lease_until < $1) ORDER BY next_at LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let mut out = Vec::new();
            for r in &rows {
                let id: String = r.try_get("delivery_id")?;
                let row = sqlx::query(
                    "UPDATE slack_deliveries SET lease_owner = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 WHERE delivery_id = $4 AND state = 'active' AND (lease_until IS NULL OR lease_until < $3) RETURNING *",
                )
                .bind(owner)
                .bind(now + lease_ms)
                .bind(now)
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(r) = row {
                    out.push(delivery_row!(&r));
                }
            }
            out
        });
        Ok(claimed)
    }

    /// Records progress on a leased delivery: renews the lease and sets the given columns
    /// (`status_ts`, `parts_posted`); false if the lease was lost.
    pub async fn slack_delivery_progress(
        &self,
        id: &str,
        owner: &str,
        lease_ms: i64,
        status_ts: Option<&str>,
        parts_posted: Option<i64>,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let n = in_tx!(self, |tx| {
            sqlx::query(
                "UPDATE slack_deliveries SET lease_until = $1, status_ts = COALESCE($2, status_ts), parts_posted = COALESCE($3, parts_posted), updated_at = $4 WHERE delivery_id = $5 AND lease_owner = $6 AND state = 'active'",
            )
            .bind(now + lease_ms)
            .bind(status_ts)
            .bind(parts_posted)
            .bind(now)
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Ends or defers a leased delivery: `delivered`, `dead` (with the reason), or back to
    /// `active` at `next_at` (with the reason), the lease released.
    pub async fn slack_delivery_settle(
        &self,
        id: &str,
        owner: &str,
        state: &str,
        next_at: i64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let delivered = (state == "delivered").then_some(now);
        in_tx!(self, |tx| {
            sqlx::query(
                "UPDATE slack_deliveries SET state = $1, next_at = $2, last_error = COALESCE($3, last_error), delivered_at = $4, lease_owner = NULL, lease_until = NULL, updated_at = $5 WHERE delivery_id = $6 AND lease_owner = $7",
            )
            .bind(state)
            .bind(next_at)
            .bind(error)
            .bind(delivered)
            .bind(now)
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Frees every delivery lease (start-up of the only server on a SQLite file: whoever
    /// held them is gone).
    pub async fn slack_release_leases(&self) -> Result<u64, StoreError> {
        let n = in_tx!(self, |tx| {
            sqlx::query(
                "UPDATE slack_deliveries SET lease_owner = NULL, lease_until = NULL WHERE state = 'active' AND lease_owner IS NOT NULL",
            )
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n)
    }

    /// Deliveries, newest first, optionally in one state.
    pub async fn slack_deliveries(
        &self,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT * FROM slack_deliveries WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) ORDER BY created_at DESC, delivery_id LIMIT $2",
            )
            .bind(state)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(delivery_row!(r));
            }
            Ok(out)
        })
    }

    /// `(state, count)` of every delivery state present.
    pub async fn slack_delivery_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        on_pool!(self, |pool| {
            let rows =
                sqlx::query("SELECT state, COUNT(*) AS n FROM slack_deliveries GROUP BY state")
                    .fetch_all(pool)
                    .await?;
            let mut out = Vec::new();
            for r in &rows {
                out.push((r.try_get("state")?, r.try_get("n")?));
            }
            Ok(out)
        })
    }
}
