-- The import that filled this store from an export file (`stay import`): the file's SHA-256, how
-- many events it holds and how many are in. Moved by compare-and-set in the same transaction as
-- each batch of imported events, so an interrupted import resumes exactly after its last
-- committed batch, and two imports cannot interleave. One row at most: a store is imported once.
CREATE TABLE event_imports
(
  id         INTEGER     PRIMARY KEY CHECK (id = 1),
  digest     TEXT        NOT NULL,
  total      BIGINT      NOT NULL,
  imported   BIGINT      NOT NULL,
  started_at TIMESTAMPTZ NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL
);
