-- Durable workflows (sqlite): runs, their checkpoints (the handler's recorded steps, in the
-- order it made them) and the events waits are woken by. A run is claimed under a lease
-- (worker_id, lease_expires_at); every checkpoint and status write is fenced by it.
-- Keep in step with ../postgres/0004_workflows.sql.
CREATE TABLE workflow_runs (
    run_id           TEXT PRIMARY KEY,
    workflow_name    TEXT NOT NULL,
    workflow_version TEXT NOT NULL,
    parent_run_id    TEXT,
    root_run_id      TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'sleeping', 'waiting', 'completed', 'failed', 'cancelled')),
    input_json       TEXT NOT NULL,
    output_json      TEXT,
    error_code       TEXT,
    error_text       TEXT,
    trigger_key      TEXT,
    request_hash     TEXT NOT NULL,
    -- While sleeping or waiting: what the run waits on (JSON).
    waiting_on       TEXT,
    -- While waiting for an event: its type and correlation id, joined by a newline.
    wait_key         TEXT,
    -- When it may be claimed again.
    available_at     INTEGER NOT NULL,
    -- Failed attempts of the step the run is retrying: {"seq": n, "attempts": k}.
    retry_json       TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    lease_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    completed_at     INTEGER,
    updated_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX workflow_runs_trigger ON workflow_runs (workflow_name, trigger_key) WHERE trigger_key IS NOT NULL;
CREATE INDEX workflow_runs_due ON workflow_runs (available_at) WHERE status IN ('queued', 'running', 'sleeping', 'waiting');
CREATE INDEX workflow_runs_wait ON workflow_runs (wait_key) WHERE wait_key IS NOT NULL;
CREATE INDEX workflow_runs_parent ON workflow_runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX workflow_runs_created ON workflow_runs (created_at);

CREATE TABLE workflow_checkpoints (
    run_id     TEXT NOT NULL REFERENCES workflow_runs (run_id),
    seq        INTEGER NOT NULL,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    -- 0 while a sleep or wait is pending; 1 once value_json is final.
    done       INTEGER NOT NULL,
    value_json TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, name)
);

CREATE TABLE workflow_events (
    event_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type     TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    payload_json   TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);
CREATE INDEX workflow_events_key ON workflow_events (event_type, correlation_id, event_id);

-- One schedule per workflow (its SCHEDULE). A slot fires when a replica moves next_fire_at
-- past it (compare-and-set) and creates the run with the trigger key
-- schedule:<workflow>:<slot ms>: once per slot across restarts and replicas.
CREATE TABLE workflow_schedules (
    workflow_name TEXT PRIMARY KEY,
    spec_hash     TEXT NOT NULL,
    -- NULL: the workflow has no schedule any more.
    next_fire_at  INTEGER,
    last_slot     INTEGER,
    updated_at    INTEGER NOT NULL
);
