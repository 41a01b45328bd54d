-- Which saga instances need driving, and who drives each (a lease).
CREATE TABLE IF NOT EXISTS saga_instances (
    saga_id        TEXT    PRIMARY KEY,
    status         TEXT    NOT NULL,
    step           TEXT    NOT NULL,
    due_at_ms      INTEGER,
    lease_owner    TEXT,
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    wakes          INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS saga_instances_due ON saga_instances (due_at_ms) WHERE due_at_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS saga_instances_status ON saga_instances (status, saga_id);

-- Every call to the payment provider as Stay knows it.
CREATE TABLE IF NOT EXISTS saga_payment_ledger (
    entry_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_key      TEXT    NOT NULL UNIQUE,
    payment_id     TEXT    NOT NULL,
    reservation_id TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    amount_minor   INTEGER NOT NULL,
    currency       TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    provider_ref   TEXT,
    updated_at_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS saga_payment_ledger_reservation ON saga_payment_ledger (reservation_id, entry_id);
