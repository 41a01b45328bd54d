-- Valid on both SQLite and PostgreSQL, so one file serves both.
-- Which version of each read model is live, and which (if any) is being rebuilt beside it.
CREATE TABLE IF NOT EXISTS projection_state (
    name            TEXT    PRIMARY KEY,
    live_version    BIGINT  NOT NULL,
    building_version BIGINT,
    updated_at_ms   BIGINT  NOT NULL
);

-- One active worker per projection across processes.
CREATE TABLE IF NOT EXISTS projection_leases (
    name        TEXT   PRIMARY KEY,
    owner       TEXT   NOT NULL,
    until_ms    BIGINT NOT NULL
);

-- Events a projection could not apply, and the later events of the same aggregate held behind them.
CREATE TABLE IF NOT EXISTS projection_dead_letters (
    projection     TEXT   NOT NULL,
    version        BIGINT NOT NULL,
    position       TEXT   NOT NULL,
    aggregate_type TEXT   NOT NULL,
    aggregate_id   TEXT   NOT NULL,
    event_type     TEXT   NOT NULL,
    error          TEXT   NOT NULL,
    event          TEXT   NOT NULL,
    parked_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (projection, version, position)
);
