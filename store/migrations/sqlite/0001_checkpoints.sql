-- Where each named consumer of the feed has got to; written in the consumer's own transaction.
CREATE TABLE checkpoints
(
  name       TEXT PRIMARY KEY,
  position   TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
