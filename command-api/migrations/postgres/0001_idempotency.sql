-- The first answer to each (caller, Idempotency-Key), so a retry replays it.
CREATE TABLE IF NOT EXISTS command_idempotency (
    principal     TEXT   NOT NULL,
    idem_key      TEXT   NOT NULL,
    fingerprint   TEXT   NOT NULL,
    state         TEXT   NOT NULL CHECK (state IN ('pending', 'done')),
    claimed_at_ms BIGINT NOT NULL,
    status        INTEGER,
    content_type  TEXT,
    location      TEXT,
    body          BYTEA,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (principal, idem_key)
);
