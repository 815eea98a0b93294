-- The warm pool (postgres): sandboxes made ahead of need with a neutral policy. `scope` is the
-- machine and data directory they run in (a local sandbox lives there); `deploy_hash` is
-- what they were made from (binary, policy, limits, the API's address): a server evicts and
-- deletes its scope's members of any other hash at start. A row is written before its
-- sandbox is made, so the reaper keeps it; a claim deletes it in the transaction that gives
-- the sandbox to a thread's assignment. Keep in step with ../sqlite/0005_sandbox_pool.sql.
CREATE TABLE sandbox_pool (
    runtime_id  TEXT PRIMARY KEY,
    scope       TEXT NOT NULL,
    deploy_hash TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('starting', 'ready')),
    created_at  BIGINT NOT NULL,
    ready_at    BIGINT
);
CREATE INDEX sandbox_pool_claim ON sandbox_pool (scope, deploy_hash, state, created_at);
