//! Threads, their assignments (which sandbox serves them) and their messages.

use serde_json::{Value, json};
use sqlx::Row as _;

use super::code::Code;
use super::db::{Store, StoreError, in_tx, new_id, on_pool, request_hash};
use super::events::{append_event, lock_thread, write_events};

/// The thread's active assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The thread.
    pub thread_key: String,
    /// Its generation (1, 2, … per thread).
    pub generation: i64,
    /// The sandbox that serves it.
    pub runtime_id: String,
    /// The harness it runs.
    pub harness: String,
    /// The persona, if one was asked for.
    pub persona_id: Option<String>,
    /// The last harness output line committed (the supervisor's spool sequence).
    pub spool_seq: i64,
}

macro_rules! assignment_row {
    ($r:expr) => {{
        let r = $r;
        Assignment {
            thread_key: r.try_get("thread_key")?,
            generation: r.try_get("generation")?,
            runtime_id: r.try_get("runtime_id")?,
            harness: r.try_get("harness")?,
            persona_id: r.try_get("persona_id")?,
            spool_seq: r.try_get("spool_seq")?,
        }
    }};
}
pub(crate) use assignment_row;

/// `POST /agent/spawn`, checked.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    /// The thread.
    pub thread_key: String,
    /// The idempotency key.
    pub spawn_id: Option<String>,
    /// The harness asked for (`None`: the active one, or the default).
    pub harness: Option<String>,
    /// The server's default harness.
    pub default_harness: String,
    /// A persona.
    pub persona_id: Option<String>,
}

/// A message to append, checked.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The idempotency key (generated if absent).
    pub message_id: Option<String>,
    /// `user` (the default), `assistant` or `system`.
    pub role: String,
    /// Content parts, e.g. `[{"type":"text","text":"…"}]`; never empty.
    pub parts: Value,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its id.
    pub message_id: String,
    /// Its order in the thread.
    pub seq: i64,
    /// Its role.
    pub role: String,
    /// Its parts.
    pub parts: Value,
    /// The execution that delivered it to the harness.
    pub delivered_execution_id: Option<String>,
    /// When it was stored.
    pub created_at: i64,
}

/// One line of `GET /agent/threads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSummary {
    /// The thread.
    pub thread_key: String,
    /// When it started.
    pub created_at: i64,
    /// Its newest event id.
    pub last_event_id: i64,
    /// How many executions it has had.
    pub executions: i64,
    /// Its active harness, if assigned.
    pub harness: Option<String>,
}

/// What a replayable write answers: the body, and whether it was a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The response body.
    pub body: Value,
    /// The idempotency key matched an earlier identical request.
    pub idempotent: bool,
}

/// Looks up an idempotency key in `$tx`: evaluates to `Some(stored response)` for the same
/// payload, returns 409 for a different one, `None` for a new key.
macro_rules! replay {
    ($tx:expr, $thread:expr, $kind:expr, $key:expr, $hash:expr) => {{
        match $key {
            None => None,
            Some(key) => {
                let row = sqlx::query(
                    "SELECT request_hash, response FROM requests WHERE thread_key = $1 AND kind = $2 AND request_key = $3",
                )
                .bind($thread)
                .bind($kind)
                .bind(key)
                .fetch_optional(&mut *$tx)
                .await?;
                match row {
                    None => None,
                    Some(r) => {
                        let stored: String = r.try_get("request_hash")?;
                        if stored != *$hash {
                            return Err(StoreError::reject(
                                Code::IdempotencyPayloadMismatch,
                                format!("{} {key:?} was used before with a different payload", $kind),
                            ));
                        }
                        let body: String = r.try_get("response")?;
                        Some(serde_json::from_str::<Value>(&body).unwrap_or(Value::Null))
                    }
                }
            }
        }
    }};
}

/// Records an idempotency key's response in `$tx`.
macro_rules! remember {
    ($tx:expr, $thread:expr, $kind:expr, $key:expr, $hash:expr, $body:expr, $now:expr) => {
        if let Some(key) = $key {
            sqlx::query(
                "INSERT INTO requests (thread_key, kind, request_key, request_hash, response, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind($thread)
            .bind($kind)
            .bind(key)
            .bind($hash)
            .bind($body.to_string())
            .bind($now)
            .execute(&mut *$tx)
            .await?;
        }
    };
}

/// Creates the thread if it is new, in `$tx`.
macro_rules! ensure_thread {
    ($tx:expr, $thread:expr, $now:expr) => {
        sqlx::query("INSERT INTO threads (thread_key, created_at) VALUES ($1, $2) ON CONFLICT (thread_key) DO NOTHING")
            .bind($thread)
            .bind($now)
            .execute(&mut *$tx)
            .await?
    };
}

/// The thread's active assignment, in `$tx`.
macro_rules! active_assignment {
    ($tx:expr, $thread:expr) => {{
        let row =
            sqlx::query("SELECT * FROM assignments WHERE thread_key = $1 AND state = 'active'")
                .bind($thread)
                .fetch_optional(&mut *$tx)
                .await?;
        match row {
            Some(r) => Some(assignment_row!(&r)),
            None => None,
        }
    }};
}

/// Gets or creates the active assignment in `$tx` (the thread row is locked); evaluates to it.
macro_rules! assign {
    ($tx:expr, $thread:expr, $harness:expr, $persona:expr, $now:expr) => {{
        match active_assignment!($tx, $thread) {
            Some(a) => {
                if let Some(h) = $harness {
                    if *h != a.harness {
                        return Err(StoreError::reject(
                            Code::ActiveAssignmentMismatch,
                            format!(
                                "the thread's active assignment runs harness {:?}, not {h:?}; release it first",
                                a.harness
                            ),
                        ));
                    }
                }
                a
            }
            None => {
                let generation: i64 = sqlx::query_scalar(
                    "UPDATE threads SET last_generation = last_generation + 1 WHERE thread_key = $1 RETURNING last_generation",
                )
                .bind($thread)
                .fetch_one(&mut *$tx)
                .await?;
                let a = Assignment {
                    thread_key: $thread.to_string(),
                    generation,
                    runtime_id: new_id("rt_"),
                    harness: $harness.cloned().unwrap_or_default(),
                    persona_id: $persona.cloned(),
                    spool_seq: 0,
                };
                sqlx::query(
                    "INSERT INTO assignments (thread_key, generation, runtime_id, harness, persona_id, state, created_at) VALUES ($1, $2, $3, $4, $5, 'active', $6)",
                )
                .bind(&a.thread_key)
                .bind(a.generation)
                .bind(&a.runtime_id)
                .bind(&a.harness)
                .bind(&a.persona_id)
                .bind($now)
                .execute(&mut *$tx)
                .await?;
                a
            }
        }
    }};
}

/// Appends a message in `$tx` for the active generation; evaluates to `(message_id, event id)`.
macro_rules! insert_message {
    ($tx:expr, $ev:ident, $thread:expr, $generation:expr, $msg:expr, $now:expr) => {{
        let msg: &NewMessage = $msg;
        let message_id = msg.message_id.clone().unwrap_or_else(|| new_id("msg_"));
        let seq: i64 = sqlx::query_scalar(
            "UPDATE threads SET last_message = last_message + 1 WHERE thread_key = $1 RETURNING last_message",
        )
        .bind($thread)
        .fetch_one(&mut *$tx)
        .await?;
        sqlx::query(
            "INSERT INTO messages (thread_key, seq, message_id, generation, role, parts, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind($thread)
        .bind(seq)
        .bind(&message_id)
        .bind($generation)
        .bind(&msg.role)
        .bind(msg.parts.to_string())
        .bind($now)
        .execute(&mut *$tx)
        .await?;
        let data = json!({"type": "message", "message_id": message_id, "role": msg.role, "parts": msg.parts});
        let event_id = append_event!($tx, $ev, $thread, None::<&str>, "message", data.to_string(), $now);
        (message_id, event_id)
    }};
}

/// Cancels the thread's unfinished executions in `$tx` (reason `released`); evaluates to
/// the newest event id, if any.
macro_rules! cancel_unfinished {
    ($tx:expr, $ev:ident, $thread:expr, $now:expr) => {{
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT execution_id FROM executions WHERE thread_key = $1 AND status IN ('queued', 'running', 'cancel_requested') ORDER BY seq",
        )
        .bind($thread)
        .fetch_all(&mut *$tx)
        .await?;
        let mut newest = None;
        for id in ids {
            sqlx::query("UPDATE executions SET status = 'cancelled', terminal_reason = 'released', completed_at = $1, updated_at = $1, worker_id = NULL, lease_expires_at = NULL WHERE execution_id = $2")
                .bind($now)
                .bind(&id)
                .execute(&mut *$tx)
                .await?;
            let data = json!({"type": "execution.state", "execution_id": id, "thread_key": $thread, "status": "cancelled", "terminal_reason": "released"});
            newest = Some(append_event!($tx, $ev, $thread, Some(&id), "execution_state", data.to_string(), $now));
        }
        newest
    }};
}

pub(crate) use {active_assignment, assign, ensure_thread, insert_message, remember, replay};

impl Store {
    /// Assigns a sandbox to the thread, or returns the active assignment. Idempotent on
    /// `spawn_id`.
    pub async fn spawn(&self, req: &SpawnRequest) -> Result<Outcome, StoreError> {
        super::db::check_thread_key(&req.thread_key)?;
        let hash = request_hash(&json!({
            "thread_key": req.thread_key, "harness": req.harness, "persona_id": req.persona_id,
        }));
        let now = self.now();
        let thread = req.thread_key.as_str();
        let out = in_tx!(self, |tx| {
            ensure_thread!(tx, thread, now);
            let _ = lock_thread!(tx, thread);
            if let Some(body) = replay!(tx, thread, "spawn", req.spawn_id.as_ref(), &hash) {
                Outcome {
                    body,
                    idempotent: true,
                }
            } else {
                let harness = req.harness.as_ref().or(Some(&req.default_harness));
                let a = if req.harness.is_none() {
                    match active_assignment!(tx, thread) {
                        Some(a) => a,
                        None => assign!(tx, thread, harness, req.persona_id.as_ref(), now),
                    }
                } else {
                    assign!(tx, thread, harness, req.persona_id.as_ref(), now)
                };
                let body = json!({
                    "ok": true,
                    "thread_key": thread,
                    "runtime_id": a.runtime_id,
                    "assignment_generation": a.generation,
                    "assignment_state": "active",
                    "harness": a.harness,
                    "persona_id": a.persona_id,
                });
                remember!(
                    tx,
                    thread,
                    "spawn",
                    req.spawn_id.as_ref(),
                    &hash,
                    &body,
                    now
                );
                Outcome {
                    body,
                    idempotent: false,
                }
            }
        });
        Ok(out)
    }

    /// Stores a message for the thread's active assignment `generation`. Idempotent on
    /// `message_id`.
    pub async fn append_message(
        &self,
        thread_key: &str,
        generation: i64,
        msg: &NewMessage,
    ) -> Result<Outcome, StoreError> {
        super::db::check_thread_key(thread_key)?;
        let hash = request_hash(&json!({
            "generation": generation, "role": msg.role, "parts": msg.parts,
        }));
        let now = self.now();
        let out = write_events!(self, thread_key, |tx, ev| {
            if !lock_thread!(tx, thread_key) {
                return Err(StoreError::reject(
                    Code::NoActiveAssignment,
                    format!("thread {thread_key:?} has no active assignment: spawn first"),
                ));
            }
            if let Some(body) = replay!(tx, thread_key, "message", msg.message_id.as_ref(), &hash) {
                (
                    Outcome {
                        body,
                        idempotent: true,
                    },
                    None,
                )
            } else {
                check_generation(active_assignment!(tx, thread_key), thread_key, generation)?;
                let (message_id, event_id) =
                    insert_message!(tx, ev, thread_key, generation, msg, now);
                let body = json!({"ok": true, "thread_key": thread_key, "message_id": message_id, "event_id": event_id});
                remember!(
                    tx,
                    thread_key,
                    "message",
                    Some(&message_id),
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

    /// Releases the thread's active assignment (cancelling its unfinished executions with
    /// `cancel_inflight`). Returns the response and the runtime to stop, if any. Idempotent
    /// on `release_id`.
    pub async fn release(
        &self,
        thread_key: &str,
        release_id: Option<&String>,
        cancel_inflight: bool,
    ) -> Result<(Outcome, Option<String>), StoreError> {
        super::db::check_thread_key(thread_key)?;
        let hash = request_hash(&json!({"cancel_inflight": cancel_inflight}));
        let now = self.now();
        let out = write_events!(self, thread_key, |tx, ev| {
            ensure_thread!(tx, thread_key, now);
            let _ = lock_thread!(tx, thread_key);
            if let Some(body) = replay!(tx, thread_key, "release", release_id, &hash) {
                (
                    (
                        Outcome {
                            body,
                            idempotent: true,
                        },
                        None,
                    ),
                    None,
                )
            } else {
                let mut newest = None;
                let (body, runtime) = match active_assignment!(tx, thread_key) {
                    None => (
                        json!({"ok": true, "thread_key": thread_key, "released": false, "reason": "no_active_assignment"}),
                        None,
                    ),
                    Some(a) => {
                        sqlx::query("UPDATE assignments SET state = 'released', released_at = $1 WHERE thread_key = $2 AND generation = $3")
                            .bind(now)
                            .bind(thread_key)
                            .bind(a.generation)
                            .execute(&mut *tx)
                            .await?;
                        if cancel_inflight {
                            newest = cancel_unfinished!(tx, ev, thread_key, now);
                        }
                        (
                            json!({"ok": true, "thread_key": thread_key, "released": true, "assignment_generation": a.generation, "runtime_id": a.runtime_id}),
                            Some(a.runtime_id),
                        )
                    }
                };
                remember!(tx, thread_key, "release", release_id, &hash, &body, now);
                (
                    (
                        Outcome {
                            body,
                            idempotent: false,
                        },
                        runtime,
                    ),
                    newest,
                )
            }
        });
        Ok(out)
    }

    /// The thread's active assignment.
    pub async fn assignment(&self, thread_key: &str) -> Result<Option<Assignment>, StoreError> {
        on_pool!(self, |pool| {
            let row =
                sqlx::query("SELECT * FROM assignments WHERE thread_key = $1 AND state = 'active'")
                    .bind(thread_key)
                    .fetch_optional(pool)
                    .await?;
            Ok(match row {
                Some(r) => Some(assignment_row!(&r)),
                None => None,
            })
        })
    }

    /// Up to `limit` messages after the one with id `cursor`, oldest first, and whether
    /// there are more.
    pub async fn messages(
        &self,
        thread_key: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        on_pool!(self, |pool| {
            let after: i64 = match cursor {
                None => 0,
                Some(c) => sqlx::query_scalar(
                    "SELECT seq FROM messages WHERE thread_key = $1 AND message_id = $2",
                )
                .bind(thread_key)
                .bind(c)
                .fetch_optional(pool)
                .await?
                .ok_or_else(|| {
                    StoreError::reject(
                        Code::NotFound,
                        format!("cursor {c:?} is not a message of this thread"),
                    )
                })?,
            };
            let rows = sqlx::query(
                "SELECT * FROM messages WHERE thread_key = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(thread_key)
            .bind(after)
            .bind(limit + 1)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let parts: String = r.try_get("parts")?;
                out.push(Message {
                    message_id: r.try_get("message_id")?,
                    seq: r.try_get("seq")?,
                    role: r.try_get("role")?,
                    parts: serde_json::from_str(&parts).unwrap_or(Value::Null),
                    delivered_execution_id: r.try_get("delivered_execution_id")?,
                    created_at: r.try_get("created_at")?,
                });
            }
            let more = out.len() as i64 > limit;
            out.truncate(usize::try_from(limit).unwrap_or(0));
            Ok((out, more))
        })
    }

    /// The newest threads first.
    pub async fn threads(&self, limit: i64) -> Result<Vec<ThreadSummary>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT t.thread_key, t.created_at, t.last_event_id, t.last_execution, a.harness FROM threads t LEFT JOIN assignments a ON a.thread_key = t.thread_key AND a.state = 'active' ORDER BY t.created_at DESC, t.thread_key LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(ThreadSummary {
                    thread_key: r.try_get("thread_key")?,
                    created_at: r.try_get("created_at")?,
                    last_event_id: r.try_get("last_event_id")?,
                    executions: r.try_get("last_execution")?,
                    harness: r.try_get("harness")?,
                });
            }
            Ok(out)
        })
    }
}

/// The active assignment must exist and be `generation`.
pub(crate) fn check_generation(
    active: Option<Assignment>,
    thread_key: &str,
    generation: i64,
) -> Result<Assignment, StoreError> {
    match active {
        None => Err(StoreError::reject(
            Code::NoActiveAssignment,
            format!("thread {thread_key:?} has no active assignment: spawn first"),
        )),
        Some(a) if a.generation != generation => Err(StoreError::reject(
            Code::AssignmentGenerationStale,
            format!(
                "assignment_generation {generation} is stale: the active one is {}",
                a.generation
            ),
        )),
        Some(a) => Ok(a),
    }
}
