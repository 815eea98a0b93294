-- The control plane's durable state (SQLite). Times are Unix milliseconds; JSON is stored
-- as text, verbatim. Keep in step with ../postgres/0001_control_plane.sql.

CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    key_prefix  TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    scopes      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

-- One row per conversation. `last_event_id` is the thread's event sequence: it is bumped
-- under the row's write lock in the transaction that inserts the event, so ids commit in
-- order and a reader resuming after id N never misses a later commit with a smaller id.
CREATE TABLE threads (
    thread_key      TEXT PRIMARY KEY CHECK (length(CAST(thread_key AS BLOB)) <= 512 AND instr(thread_key, ':') > 1),
    created_at      INTEGER NOT NULL,
    last_event_id   INTEGER NOT NULL DEFAULT 0,
    last_message    INTEGER NOT NULL DEFAULT 0,
    last_execution  INTEGER NOT NULL DEFAULT 0,
    last_generation INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE assignments (
    thread_key  TEXT NOT NULL REFERENCES threads (thread_key),
    generation  INTEGER NOT NULL,
    runtime_id  TEXT NOT NULL,
    harness     TEXT NOT NULL,
    persona_id  TEXT,
    state       TEXT NOT NULL CHECK (state IN ('active', 'released')),
    spool_seq   INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    released_at INTEGER,
    PRIMARY KEY (thread_key, generation)
);
CREATE UNIQUE INDEX assignments_one_active ON assignments (thread_key) WHERE state = 'active';

-- The idempotency store: one row per (thread, kind, caller key).
CREATE TABLE requests (
    thread_key   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    request_key  TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (thread_key, kind, request_key)
);

CREATE TABLE messages (
    thread_key             TEXT NOT NULL REFERENCES threads (thread_key),
    seq                    INTEGER NOT NULL,
    message_id             TEXT NOT NULL,
    generation             INTEGER NOT NULL,
    role                   TEXT NOT NULL,
    parts                  TEXT NOT NULL,
    delivered_execution_id TEXT,
    created_at             INTEGER NOT NULL,
    PRIMARY KEY (thread_key, seq),
    UNIQUE (thread_key, message_id)
);
CREATE INDEX messages_undelivered ON messages (thread_key, seq) WHERE delivered_execution_id IS NULL;

CREATE TABLE executions (
    execution_id     TEXT PRIMARY KEY,
    thread_key       TEXT NOT NULL REFERENCES threads (thread_key),
    seq              INTEGER NOT NULL,
    generation       INTEGER NOT NULL,
    execute_id       TEXT,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'cancel_requested', 'completed', 'failed', 'cancelled')),
    terminal_reason  TEXT,
    result_text      TEXT,
    error_text       TEXT,
    agent_thread_id  TEXT,
    turn_input       TEXT,
    -- The turn delivers the thread's undelivered messages up to this one (its own).
    upto_message     INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    lease_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    last_progress_at INTEGER,
    completed_at     INTEGER,
    updated_at       INTEGER NOT NULL,
    UNIQUE (thread_key, seq)
);
CREATE UNIQUE INDEX executions_one_active ON executions (thread_key) WHERE status IN ('running', 'cancel_requested');
CREATE INDEX executions_live ON executions (status, thread_key, seq) WHERE status IN ('queued', 'running', 'cancel_requested');
CREATE INDEX executions_by_thread ON executions (thread_key, created_at);

CREATE TABLE events (
    thread_key   TEXT NOT NULL REFERENCES threads (thread_key),
    event_id     INTEGER NOT NULL,
    execution_id TEXT,
    kind         TEXT NOT NULL,
    data         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (thread_key, event_id)
);
CREATE INDEX events_by_execution ON events (execution_id, event_id);
