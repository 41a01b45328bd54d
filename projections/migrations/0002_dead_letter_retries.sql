-- Valid on both SQLite and PostgreSQL, so one file serves both.
-- A dead letter's state: `retrying` (refused; tried again at next_retry_ms), `parked` (refused as
-- often as the runner tries; waits for an operator), `held` (never tried: an earlier event of its
-- aggregate is a dead letter). `request` is an operator's `retry` or `skip`, carried out by the
-- worker that holds the model's lease.
ALTER TABLE projection_dead_letters ADD COLUMN state TEXT NOT NULL DEFAULT 'parked';
ALTER TABLE projection_dead_letters ADD COLUMN attempts BIGINT NOT NULL DEFAULT 1;
ALTER TABLE projection_dead_letters ADD COLUMN next_retry_ms BIGINT;
ALTER TABLE projection_dead_letters ADD COLUMN request TEXT;
ALTER TABLE projection_dead_letters ADD COLUMN requested_at_ms BIGINT;
UPDATE projection_dead_letters SET state = 'held', attempts = 0
 WHERE error = 'held behind an earlier parked event of the same aggregate';

-- Events an operator skipped: no version of the model applies them, a rebuilt one included.
CREATE TABLE IF NOT EXISTS projection_skips (
    projection     TEXT   NOT NULL,
    position       TEXT   NOT NULL,
    aggregate_type TEXT   NOT NULL,
    aggregate_id   TEXT   NOT NULL,
    event_type     TEXT   NOT NULL,
    error          TEXT   NOT NULL,
    skipped_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (projection, position)
);
