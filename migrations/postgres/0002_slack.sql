-- Slack (PostgreSQL): every event once (the inbox) and every answer once (the outbox). Times are
-- Unix milliseconds. Keep in step with ../sqlite/0002_slack.sql.

-- One row per Slack message: the app_mention and message events of one post, and Slack's
-- retries of either, share `dedupe_key` (team:channel:ts), so one post starts one turn even
-- across a restart. Stored before Slack gets its 200, processed after.
CREATE TABLE slack_inbox (
    dedupe_key  TEXT PRIMARY KEY,
    event_id    TEXT NOT NULL,
    body        TEXT NOT NULL,
    -- The thread's earlier messages (conversations.replies), fetched once and kept, so a
    -- retried hand-off sends the same turn.
    context     TEXT,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'done', 'ignored', 'failed')),
    outcome     TEXT,
    attempts    BIGINT NOT NULL DEFAULT 0,
    next_at     BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX slack_inbox_due ON slack_inbox (next_at) WHERE state = 'pending';

-- The outbox: one row per execution started from Slack (its progress message and final
-- answer) or per notice (a turn that could not start). Leased; `parts_posted` commits after
-- each part Slack accepted, so only the next part can be in doubt after a crash, and a
-- retry looks for it in the thread (by the delivery id in its metadata) before posting.
CREATE TABLE slack_deliveries (
    delivery_id  TEXT PRIMARY KEY,
    source       TEXT NOT NULL UNIQUE,
    execution_id TEXT,
    notice       TEXT,
    thread_key   TEXT NOT NULL,
    channel      TEXT NOT NULL,
    thread_ts    TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('active', 'delivered', 'dead')),
    status_ts    TEXT,
    parts_posted BIGINT NOT NULL DEFAULT 0,
    attempts     BIGINT NOT NULL DEFAULT 0,
    next_at      BIGINT NOT NULL,
    lease_owner  TEXT,
    lease_until  BIGINT,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX slack_deliveries_due ON slack_deliveries (next_at) WHERE state = 'active';
CREATE INDEX slack_deliveries_by_state ON slack_deliveries (state, created_at);
