-- Which process holds a pending claim, and which processes are alive: a claim whose process has
-- stopped beating is taken over at once by a retry, instead of after a fixed wait.
ALTER TABLE command_idempotency ADD COLUMN IF NOT EXISTS claimed_by TEXT;

CREATE TABLE IF NOT EXISTS command_api_processes (
    process_id      TEXT   PRIMARY KEY,
    heartbeat_at_ms BIGINT NOT NULL
);
