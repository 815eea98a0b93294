//! The append-only event log: per-thread ids, allocated under the thread's row lock.

use sqlx::Row as _;

use super::db::{Store, StoreError, on_pool};
use super::event::Event;

/// Appends an event in the transaction `$tx` (which holds the thread's lock) and keeps a copy
/// in `$ev` (announced after the commit); evaluates to its id.
macro_rules! append_event {
    ($tx:expr, $ev:ident, $thread:expr, $execution:expr, $kind:expr, $data:expr, $now:expr) => {{
        let id: i64 = sqlx::query_scalar(
            "UPDATE threads SET last_event_id = last_event_id + 1 WHERE thread_key = $1 RETURNING last_event_id",
        )
        .bind($thread)
        .fetch_one(&mut *$tx)
        .await?;
        let execution: Option<&str> = $execution;
        let data: String = $data.to_string();
        sqlx::query(
            "INSERT INTO events (thread_key, event_id, execution_id, kind, data, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($thread)
        .bind(id)
        .bind(execution)
        .bind($kind)
        .bind(&data)
        .bind($now)
        .execute(&mut *$tx)
        .await?;
        $ev.push($crate::store::event::Event {
            event_id: id,
            execution_id: execution.map(str::to_string),
            kind: $kind.to_string(),
            data,
            created_at: $now,
        });
        id
    }};
}

/// Takes the thread's row lock in `$tx` (PostgreSQL; SQLite's `BEGIN IMMEDIATE` already holds
/// the database's); evaluates to whether the thread exists.
macro_rules! lock_thread {
    ($tx:expr, $thread:expr) => {
        sqlx::query("UPDATE threads SET last_event_id = last_event_id WHERE thread_key = $1")
            .bind($thread)
            .execute(&mut *$tx)
            .await?
            .rows_affected()
            == 1
    };
}

/// Like `in_tx!`, for a body that appends events to one thread (collected in `$ev`) and
/// evaluates to `(value, Option<newest event id>)`: on PostgreSQL it notifies the other
/// replicas inside the transaction; after the commit it announces the thread with the events
/// themselves, so its streams need not read them back. Evaluates to the value.
macro_rules! write_events {
    ($store:expr, $thread:expr, |$tx:ident, $ev:ident| $body:expr) => {{
        let mut $ev: Vec<$crate::store::event::Event> = Vec::new();
        let (out, newest): (_, Option<i64>) = match &$store.db {
            $crate::store::db::Db::Sqlite(pool) => {
                // Writers queue here, in order, rather than in SQLite's sleeping busy handler.
                let _writer = $store.writer.lock().await;
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::store::db::Db::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let out = $body;
                if let Some(id) = out.1 {
                    sqlx::query("SELECT pg_notify('centaur_events', $1)")
                        .bind(format!("{} {id} {}", $store.instance, $thread))
                        .execute(&mut *$tx)
                        .await?;
                }
                $tx.commit().await?;
                out
            }
        };
        if let Some(id) = newest {
            $store.announce($thread, id, $ev);
        }
        out
    }};
}

pub(crate) use {append_event, lock_thread, write_events};

macro_rules! event_row {
    ($r:expr) => {{
        let r = $r;
        Event {
            event_id: r.try_get("event_id")?,
            execution_id: r.try_get("execution_id")?,
            kind: r.try_get("kind")?,
            data: r.try_get("data")?,
            created_at: r.try_get("created_at")?,
        }
    }};
}

impl Store {
    /// Up to `limit` events of the thread after `after` (exclusive), oldest first; only the
    /// execution's with `execution_id`.
    pub async fn events_after(
        &self,
        thread_key: &str,
        after: i64,
        execution_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        on_pool!(self, |pool| {
            let rows = match execution_id {
                None => {
                    sqlx::query(
                        "SELECT event_id, execution_id, kind, data, created_at FROM events WHERE thread_key = $1 AND event_id > $2 ORDER BY event_id LIMIT $3",
                    )
                    .bind(thread_key)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
                }
                Some(e) => {
                    sqlx::query(
                        "SELECT event_id, execution_id, kind, data, created_at FROM events WHERE thread_key = $1 AND event_id > $2 AND execution_id = $3 ORDER BY event_id LIMIT $4",
                    )
                    .bind(thread_key)
                    .bind(after)
                    .bind(e)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
                }
            };
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(event_row!(r));
            }
            Ok(out)
        })
    }

    /// The thread's newest event id (0 if none or no thread).
    pub async fn last_event_id(&self, thread_key: &str) -> Result<i64, StoreError> {
        on_pool!(self, |pool| {
            let id: Option<i64> =
                sqlx::query_scalar("SELECT last_event_id FROM threads WHERE thread_key = $1")
                    .bind(thread_key)
                    .fetch_optional(pool)
                    .await?;
            Ok(id.unwrap_or(0))
        })
    }
}
