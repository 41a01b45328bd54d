//! Checkpoints: how far a named consumer of the feed has got.
//!
//! A consumer writes its own rows and its checkpoint in one transaction on the same database, so a
//! crash between the two cannot happen; and the checkpoint moves by compare-and-set from the
//! position the consumer read, so two workers cannot both apply a batch. Effects are exactly-once
//! although delivery is at-least-once. `SqlDatabase` is that database (the read store): the event store's own SQLite
//! file or PostgreSQL database by default, or a separate one.

use chrono::{SecondsFormat, Utc};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{ConnectOptions, PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use crate::error::StoreError;
use crate::migrate::{self, MigrationSet};
use crate::position::Position;
use crate::redact::redact_password;
use crate::sqlite::connect_options;
use crate::store::StoreUrl;

/// The checkpoint table, installable in any SQL database a consumer writes to.
pub const CHECKPOINT_MIGRATIONS: MigrationSet = MigrationSet {
    component: "checkpoints",
    sqlite: &[migrate::Migration {
        version: 1,
        name: "checkpoints",
        sql: include_str!("../migrations/sqlite/0001_checkpoints.sql"),
    }],
    postgres: &[migrate::Migration {
        version: 1,
        name: "checkpoints",
        sql: include_str!("../migrations/postgres/0001_checkpoints.sql"),
    }],
};

/// A SQL database that holds consumers' tables and their checkpoints.
#[derive(Clone, Debug)]
pub enum SqlDatabase {
    /// A SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// A transaction on a `SqlDatabase`; consumers match on it to write their own rows.
#[derive(Debug)]
pub enum SqlTransaction {
    /// On SQLite (begun IMMEDIATE, so it holds the write lock from the start and cannot deadlock
    /// upgrading a read lock).
    Sqlite(Transaction<'static, Sqlite>),
    /// On PostgreSQL.
    Postgres(Transaction<'static, Postgres>),
}

impl SqlDatabase {
    /// Opens a SQL database of its own (a read store apart from the event store): a SQLite file
    /// (created if missing) or an existing PostgreSQL database. EventStoreDB holds no tables.
    pub async fn open(url: &StoreUrl) -> Result<Self, StoreError> {
        match url {
            StoreUrl::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(StoreError::database)?;
                }
                let pool = SqlitePoolOptions::new().max_connections(8).connect_with(connect_options(path)).await?;
                Ok(SqlDatabase::Sqlite(pool))
            }
            StoreUrl::Postgres(url) => {
                let options: PgConnectOptions =
                    url.parse().map_err(|e| StoreError::UnsupportedUrl(format!("{}: {e}", redact_password(url))))?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options.disable_statement_logging())
                    .await?;
                Ok(SqlDatabase::Postgres(pool))
            }
            StoreUrl::EventStoreDb(url) => Err(StoreError::UnsupportedUrl(format!(
                "{}: a read store must be SQLite or PostgreSQL",
                redact_password(url)
            ))),
        }
    }

    /// Begins a transaction.
    pub async fn begin(&self) -> Result<SqlTransaction, StoreError> {
        Ok(match self {
            SqlDatabase::Sqlite(pool) => SqlTransaction::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            SqlDatabase::Postgres(pool) => SqlTransaction::Postgres(pool.begin().await?),
        })
    }

    /// Applies a component's pending migrations to this database.
    pub async fn migrate(&self, set: &MigrationSet) -> Result<Vec<String>, StoreError> {
        match self {
            SqlDatabase::Sqlite(pool) => migrate::apply_sqlite(&mut *pool.acquire().await?, set).await,
            SqlDatabase::Postgres(pool) => migrate::apply_postgres(&mut *pool.acquire().await?, set).await,
        }
    }

    /// A component's migrations not yet applied to this database.
    pub async fn pending_migrations(&self, set: &MigrationSet) -> Result<Vec<&'static str>, StoreError> {
        match self {
            SqlDatabase::Sqlite(pool) => migrate::pending_sqlite(&mut *pool.acquire().await?, set).await,
            SqlDatabase::Postgres(pool) => migrate::pending_postgres(&mut *pool.acquire().await?, set).await,
        }
    }

    /// The consumer's checkpoint (`START` when it has none).
    pub async fn checkpoint(&self, name: &str) -> Result<Position, StoreError> {
        let text: Option<String> = match self {
            SqlDatabase::Sqlite(pool) => {
                sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ?")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?
            }
            SqlDatabase::Postgres(pool) => {
                sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?
            }
        };
        parse_checkpoint(name, text)
    }

    /// Every checkpoint, by name.
    pub async fn checkpoints(&self) -> Result<Vec<(String, Position)>, StoreError> {
        let rows: Vec<(String, String)> = match self {
            SqlDatabase::Sqlite(pool) => {
                sqlx::query_as("SELECT name, position FROM checkpoints ORDER BY name").fetch_all(pool).await?
            }
            SqlDatabase::Postgres(pool) => {
                sqlx::query_as("SELECT name, position FROM checkpoints ORDER BY name").fetch_all(pool).await?
            }
        };
        rows.into_iter()
            .map(|(name, text)| {
                let position = parse_checkpoint(&name, Some(text))?;
                Ok((name, position))
            })
            .collect()
    }
}

impl SqlTransaction {
    /// The consumer's checkpoint as this transaction sees it.
    pub async fn checkpoint(&mut self, name: &str) -> Result<Position, StoreError> {
        let text: Option<String> = match self {
            SqlTransaction::Sqlite(tx) => {
                sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ?")
                    .bind(name)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            SqlTransaction::Postgres(tx) => {
                sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut **tx)
                    .await?
            }
        };
        parse_checkpoint(name, text)
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
                let moved = sqlx::query(
                    "UPDATE checkpoints SET position = $1, updated_at = now() WHERE name = $2 AND position = $3",
                )
                .bind(&position_text)
                .bind(name)
                .bind(&expected_text)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if moved == 0 && expected == Position::START {
                    sqlx::query(
                        "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, now()) ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(name)
                    .bind(&position_text)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
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
        match self {
            SqlTransaction::Sqlite(tx) => {
                sqlx::query("DELETE FROM checkpoints WHERE name = ?").bind(name).execute(&mut **tx).await?;
            }
            SqlTransaction::Postgres(tx) => {
                sqlx::query("DELETE FROM checkpoints WHERE name = $1").bind(name).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    /// Commits the consumer's rows and checkpoint together.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            SqlTransaction::Sqlite(tx) => tx.commit().await?,
            SqlTransaction::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// Abandons the transaction.
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self {
            SqlTransaction::Sqlite(tx) => tx.rollback().await?,
            SqlTransaction::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

fn parse_checkpoint(name: &str, text: Option<String>) -> Result<Position, StoreError> {
    match text {
        None => Ok(Position::START),
        Some(text) => text.parse().map_err(|e| StoreError::Decode(format!("checkpoint `{name}`: {e}"))),
    }
}
