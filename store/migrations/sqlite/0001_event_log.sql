-- The event log. The composite primary key is what detects concurrent writers (one winner per
-- sequence); the global position is assigned by the trigger below from a counter row, inside the
-- writing transaction, so it is gap-free and in commit order (SQLite has one writer at a time).
CREATE TABLE events
(
  aggregate_type  TEXT    NOT NULL,
  aggregate_id    TEXT    NOT NULL,
  sequence        INTEGER NOT NULL CHECK (sequence > 0),
  event_type      TEXT    NOT NULL,
  event_version   TEXT    NOT NULL,
  payload         TEXT    NOT NULL,
  metadata        TEXT    NOT NULL,
  recorded_at     TEXT    NOT NULL,
  global_position INTEGER,
  PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_by_global_position ON events (global_position);

CREATE TABLE event_counter
(
  id            INTEGER PRIMARY KEY CHECK (id = 1),
  last_position INTEGER NOT NULL
);
INSERT INTO event_counter (id, last_position) VALUES (1, 0);

CREATE TRIGGER events_assign_global_position AFTER INSERT ON events
BEGIN
  UPDATE event_counter SET last_position = last_position + 1 WHERE id = 1;
  UPDATE events SET global_position = (SELECT last_position FROM event_counter WHERE id = 1)
   WHERE rowid = NEW.rowid;
END;

-- Snapshots of our own (cqrs-es 0.5's snapshot stores apply events twice): the latest state of a
-- long stream, so a cold load replays only the events after it.
CREATE TABLE aggregate_snapshots
(
  aggregate_type TEXT    NOT NULL,
  aggregate_id   TEXT    NOT NULL,
  last_sequence  INTEGER NOT NULL,
  payload        TEXT    NOT NULL,
  taken_at       TEXT    NOT NULL,
  PRIMARY KEY (aggregate_type, aggregate_id)
);
