-- Sandbox tokens (PostgreSQL): the key a thread's sandbox uses to reach the control plane. Its
-- gateway injects it on requests to centaur.internal; the sandbox never sees it. It is bound to
-- its thread and runtime: it is only honoured while that runtime is the thread's active one.
-- Keep in step with ../sqlite/0003_sandbox_tokens.sql.
ALTER TABLE api_keys ADD COLUMN thread_key TEXT;
ALTER TABLE api_keys ADD COLUMN runtime_id TEXT;
CREATE INDEX api_keys_thread ON api_keys (thread_key) WHERE thread_key IS NOT NULL;
