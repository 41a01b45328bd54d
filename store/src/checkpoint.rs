//! Checkpoints: how far a named consumer of the feed has got.
//!
//! A consumer writes its own rows and its checkpoint in one transaction on the same database (a
//! [`SqlDatabase`]), so a crash between the two cannot happen; and the checkpoint moves by
//! compare-and-set from the position the consumer read, so two workers cannot both apply a batch.
//! Effects are exactly-once although delivery is at-least-once.

use chrono::{SecondsFormat, Utc};

use crate::database::{SqlDatabase, SqlTransaction};
use crate::error::StoreError;
use crate::migrate::{Migration, MigrationSet};
use crate::position::Position;
use crate::sql::{Arg, Row};

/// The checkpoint table, installable in any SQL database a consumer writes to.
pub const CHECKPOINT_MIGRATIONS: MigrationSet = MigrationSet {
    component: "checkpoints",
    sqlite: &[Migration {
        version: 1,
        name: "checkpoints",
        sql: include_str!("../migrations/sqlite/0001_checkpoints.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        name: "checkpoints",
        sql: include_str!("../migrations/postgres/0001_checkpoints.sql"),
    }],
};

/// The PostgreSQL channel a moved checkpoint is announced on, with its name as the payload.
pub const CHECKPOINT_CHANNEL: &str = "stay_checkpoints";

const READ: &str = "SELECT position FROM checkpoints WHERE name = $1";
const LIST: &str = "SELECT name, position FROM checkpoints ORDER BY name";
const RESET: &str = "DELETE FROM checkpoints WHERE name = $1";

impl SqlDatabase {
    /// The consumer's checkpoint (`START` when it has none).
    pub async fn checkpoint(&self, name: &str) -> Result<Position, StoreError> {
        let rows = self.rows(READ, &[name.into()]).await?;
        position_of(name, rows.first())
    }

    /// Every checkpoint, by name.
    pub async fn checkpoints(&self) -> Result<Vec<(String, Position)>, StoreError> {
        self.rows(LIST, &[])
            .await?
            .iter()
            .map(|row| {
                let name = row.text("name")?;
                let position = position_of(&name, Some(row))?;
                Ok((name, position))
            })
            .collect()
    }
}

impl SqlTransaction {
    /// The consumer's checkpoint as this transaction sees it.
    pub async fn checkpoint(&mut self, name: &str) -> Result<Position, StoreError> {
        let rows = self.rows(READ, &[name.into()]).await?;
        position_of(name, rows.first())
    }

    /// Moves the consumer's checkpoint from `expected` to `position`; it takes effect with the
    /// transaction's commit. Compare-and-set: when another worker has moved the checkpoint since
    /// this one read it (a lease that ran out mid-batch), the answer is `StoreError::Conflict` and
    /// the caller must roll back, so no batch is applied twice and no checkpoint moves backwards.
    pub async fn save_checkpoint(
        &mut self,
        name: &str,
        expected: Position,
        position: Position,
    ) -> Result<(), StoreError> {
        if position < expected {
            return Err(StoreError::Schema(format!(
                "checkpoint `{name}` cannot move backwards from {expected} to {position}; reset it instead"
            )));
        }
        let (expected_text, position_text) = (expected.to_string(), position.to_string());
        // Written once per database, unlike the other statements: `updated_at` is a TIMESTAMPTZ
        // from PostgreSQL's clock there, and RFC 3339 text from ours on SQLite, which has no time
        // type (and no portable expression that writes the same text).
        let changed = match self {
            SqlTransaction::Sqlite(tx) => {
                let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
                let moved =
                    sqlx::query("UPDATE checkpoints SET position = ?, updated_at = ? WHERE name = ? AND position = ?")
                        .bind(&position_text)
                        .bind(&now)
                        .bind(name)
                        .bind(&expected_text)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                // No row moved: either there is none yet (a consumer's first save, from START) or
                // another worker moved it. Inserting only if absent tells the two apart.
                if moved == 0 && expected == Position::START {
                    sqlx::query(
                        "INSERT INTO checkpoints (name, position, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(name)
                    .bind(&position_text)
                    .bind(&now)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
                } else {
                    moved
                }
            }
            SqlTransaction::Postgres(tx) => {
                // Each statement also queues a notification of the move, which PostgreSQL sends
                // only if the transaction commits: processes without the projector (a query API
                // waiting for `min_position`) learn of it at once (`checkpoint_moves.rs`).
                let moved = sqlx::query(
                    "WITH moved AS (UPDATE checkpoints SET position = $1, updated_at = now() \
                     WHERE name = $2 AND position = $3 RETURNING name) \
                     SELECT pg_notify($4, name) FROM moved",
                )
                .bind(&position_text)
                .bind(name)
                .bind(&expected_text)
                .bind(CHECKPOINT_CHANNEL)
                .fetch_all(&mut **tx)
                .await?
                .len() as u64;
                if moved == 0 && expected == Position::START {
                    sqlx::query(
                        "WITH moved AS (INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, now()) \
                         ON CONFLICT (name) DO NOTHING RETURNING name) \
                         SELECT pg_notify($3, name) FROM moved",
                    )
                    .bind(name)
                    .bind(&position_text)
                    .bind(CHECKPOINT_CHANNEL)
                    .fetch_all(&mut **tx)
                    .await?
                    .len() as u64
                } else {
                    moved
                }
            }
        };
        if changed == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    /// Forgets the consumer's checkpoint (it starts again from the beginning), e.g. for a rebuild.
    pub async fn reset_checkpoint(&mut self, name: &str) -> Result<(), StoreError> {
        self.run(RESET, &[Arg::from(name)]).await?;
        Ok(())
    }
}

/// The position in a checkpoint row; `START` when there is no row.
fn position_of(name: &str, row: Option<&Row>) -> Result<Position, StoreError> {
    match row {
        None => Ok(Position::START),
        Some(row) => row.text("position")?.parse().map_err(|e| StoreError::Decode(format!("checkpoint `{name}`: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreUrl;

    async fn database() -> (tempfile::TempDir, SqlDatabase) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = SqlDatabase::open(&StoreUrl::Sqlite(dir.path().join("read.db"))).await.expect("open");
        db.migrate(&CHECKPOINT_MIGRATIONS).await.expect("migrate");
        (dir, db)
    }

    async fn save(db: &SqlDatabase, name: &str, expected: Position, position: Position) -> Result<(), StoreError> {
        let mut tx = db.begin().await.expect("begin");
        let saved = tx.save_checkpoint(name, expected, position).await;
        if saved.is_ok() {
            tx.commit().await.expect("commit");
        } else {
            tx.rollback().await.expect("rollback");
        }
        saved
    }

    fn at(n: u64) -> Position {
        Position::new(n, 0)
    }

    #[tokio::test]
    async fn a_consumer_without_a_checkpoint_starts_at_the_beginning() {
        let (_dir, db) = database().await;
        assert_eq!(db.checkpoint("roomview").await.expect("read"), Position::START);
        assert!(db.checkpoints().await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn the_checkpoint_moves_forward_from_the_position_read() {
        let (_dir, db) = database().await;
        save(&db, "roomview", Position::START, at(5)).await.expect("first save");
        assert_eq!(db.checkpoint("roomview").await.expect("read"), at(5));
        save(&db, "roomview", at(5), at(9)).await.expect("forward");
        save(&db, "roomview", at(9), at(9)).await.expect("to where it is");
        assert_eq!(db.checkpoint("roomview").await.expect("read"), at(9));
    }

    #[tokio::test]
    async fn a_stale_expected_position_is_a_conflict() {
        let (_dir, db) = database().await;
        save(&db, "roomview", Position::START, at(5)).await.expect("first save");
        // A worker that read START before the first save, and one that read an older position.
        assert!(matches!(save(&db, "roomview", Position::START, at(7)).await, Err(StoreError::Conflict)));
        assert!(matches!(save(&db, "roomview", at(3), at(7)).await, Err(StoreError::Conflict)));
        assert_eq!(db.checkpoint("roomview").await.expect("read"), at(5));
    }

    #[tokio::test]
    async fn a_checkpoint_never_moves_backwards() {
        let (_dir, db) = database().await;
        save(&db, "roomview", Position::START, at(5)).await.expect("first save");
        assert!(matches!(save(&db, "roomview", at(5), at(3)).await, Err(StoreError::Schema(_))));
        assert_eq!(db.checkpoint("roomview").await.expect("read"), at(5));
    }

    #[tokio::test]
    async fn a_save_is_seen_in_its_transaction_and_lost_with_its_rollback() {
        let (_dir, db) = database().await;
        let mut tx = db.begin().await.expect("begin");
        tx.save_checkpoint("roomview", Position::START, at(5)).await.expect("save");
        assert_eq!(tx.checkpoint("roomview").await.expect("in tx"), at(5));
        tx.rollback().await.expect("rollback");
        assert_eq!(db.checkpoint("roomview").await.expect("read"), Position::START);
    }

    #[tokio::test]
    async fn a_reset_starts_the_consumer_again() {
        let (_dir, db) = database().await;
        save(&db, "roomview", Position::START, at(5)).await.expect("first save");
        let mut tx = db.begin().await.expect("begin");
        tx.reset_checkpoint("roomview").await.expect("reset");
        tx.reset_checkpoint("never-saved").await.expect("reset of nothing");
        tx.commit().await.expect("commit");
        assert_eq!(db.checkpoint("roomview").await.expect("read"), Position::START);
        save(&db, "roomview", Position::START, at(2)).await.expect("from the beginning again");
    }

    #[tokio::test]
    async fn every_checkpoint_is_listed_by_name() {
        let (_dir, db) = database().await;
        save(&db, "sagas", Position::START, at(4)).await.expect("save");
        save(&db, "roomview", Position::START, at(9)).await.expect("save");
        let all = db.checkpoints().await.expect("list");
        assert_eq!(all, vec![("roomview".to_owned(), at(9)), ("sagas".to_owned(), at(4))]);
    }

    #[tokio::test]
    async fn an_unreadable_checkpoint_is_an_error_not_the_beginning() {
        let (_dir, db) = database().await;
        db.run(
            "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, $3)",
            &["roomview".into(), "not a position".into(), "2024-05-01T10:00:00Z".into()],
        )
        .await
        .expect("insert");
        assert!(matches!(db.checkpoint("roomview").await, Err(StoreError::Decode(_))));
        assert!(matches!(db.checkpoints().await, Err(StoreError::Decode(_))));
    }
}
