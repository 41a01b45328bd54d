-- The event log. The composite primary key detects concurrent writers (one winner per sequence).
-- global_position is taken at insert but becomes visible at commit, so readers must not trust it
-- alone: tx_id records the writing transaction, and the feed reads only rows whose tx_id is below
-- the oldest transaction still running (pg_snapshot_xmin), ordered by (tx_id, global_position).
CREATE TABLE events
(
  aggregate_type  TEXT        NOT NULL,
  aggregate_id    TEXT        NOT NULL,
  sequence        BIGINT      NOT NULL CHECK (sequence > 0),
  event_type      TEXT        NOT NULL,
  event_version   TEXT        NOT NULL,
  payload         JSONB       NOT NULL,
  metadata        JSONB       NOT NULL,
  recorded_at     TIMESTAMPTZ NOT NULL,
  global_position BIGINT      GENERATED ALWAYS AS IDENTITY,
  tx_id           XID8        NOT NULL DEFAULT pg_current_xact_id(),
  PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_feed_order ON events (tx_id, global_position);

CREATE TABLE aggregate_snapshots
(
  aggregate_type TEXT        NOT NULL,
  aggregate_id   TEXT        NOT NULL,
  last_sequence  BIGINT      NOT NULL,
  payload        JSONB       NOT NULL,
  taken_at       TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (aggregate_type, aggregate_id)
);
