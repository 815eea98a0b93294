//! A turn in the store: its line made once from the thread's messages, the harness's
//! output committed once per spool line, its end.

use serde_json::{Value, json};
use sqlx::Row as _;

use super::code::Code;
use super::db::{Store, StoreError, in_tx};
use super::events::{append_event, lock_thread, write_events};
use super::executions::{Execution, Finish, Line, Status, execution_row, finalize};

impl Store {
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
                for a in &l.agent {
                    newest = Some(append_event!(tx, ev, thread, execution_id, "agent", a, now));
                }
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

    /// Records a steer of a running execution (event `steer`, its content) and returns the
    /// execution; one that is not running is refused (`EXECUTION_NOT_RUNNING`).
    pub async fn record_steer(
        &self,
        execution_id: &str,
        content: &Value,
    ) -> Result<Execution, StoreError> {
        let now = self.now();
        let e = self.execution(execution_id).await?.ok_or_else(|| {
            StoreError::reject(Code::NotFound, format!("no execution {execution_id}"))
        })?;
        let thread = e.thread_key.clone();
        write_events!(self, &thread, |tx, ev| {
            let _ = lock_thread!(tx, &thread);
            let status: String =
                sqlx::query_scalar("SELECT status FROM executions WHERE execution_id = $1")
                    .bind(execution_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if status != "running" {
                return Err(StoreError::reject(
                    Code::ExecutionNotRunning,
                    format!(
                        "execution {execution_id} is {status}: only a running turn can be steered"
                    ),
                ));
            }
            let data = json!({"type": "steer", "content": content});
            let id = append_event!(tx, ev, &thread, Some(execution_id), "steer", data, now);
            ((), Some(id))
        });
        Ok(e)
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
}
