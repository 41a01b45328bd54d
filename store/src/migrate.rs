//! Embedded, versioned schema migrations, one list per component.
//!
//! Each crate that owns tables (the store here; projections and the saga later) keeps its own list,
//! recorded under its own component name in `stay_migrations`, so no crate's schema depends on
//! another's migration history. Applying is idempotent and safe to race: PostgreSQL takes an
//! advisory lock, SQLite an immediate (write) transaction.

use chrono::Utc;
use sqlx::{Connection, PgConnection, SqliteConnection};

use crate::error::StoreError;

/// One schema change: applied once, in version order, inside a transaction.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Increasing from 1 within a component.
    pub version: i64,
    /// A short name, shown by `stay migrate`.
    pub name: &'static str,
    /// The DDL, possibly several statements.
    pub sql: &'static str,
}

/// A component's migrations for both SQL dialects.
#[derive(Debug, Clone, Copy)]
pub struct MigrationSet {
    /// The owning component (`store`, `projections`, `saga`).
    pub component: &'static str,
    /// SQLite DDL.
    pub sqlite: &'static [Migration],
    /// PostgreSQL DDL.
    pub postgres: &'static [Migration],
}

/// The event store's own schema.
pub const STORE_MIGRATIONS: MigrationSet = MigrationSet {
    component: "store",
    sqlite: &[
        Migration { version: 1, name: "event_log", sql: include_str!("../migrations/sqlite/0001_event_log.sql") },
        Migration {
            version: 2,
            name: "event_imports",
            sql: include_str!("../migrations/sqlite/0002_event_imports.sql"),
        },
    ],
    postgres: &[
        Migration { version: 1, name: "event_log", sql: include_str!("../migrations/postgres/0001_event_log.sql") },
        Migration {
            version: 2,
            name: "event_imports",
            sql: include_str!("../migrations/postgres/0002_event_imports.sql"),
        },
    ],
};

const LEDGER_SQLITE: &str = "CREATE TABLE IF NOT EXISTS stay_migrations (
  component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL,
  PRIMARY KEY (component, version))";
const LEDGER_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS stay_migrations (
  component TEXT NOT NULL, version BIGINT NOT NULL, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (component, version))";

/// Applies the set's pending SQLite migrations; returns the names it applied.
pub async fn apply_sqlite(conn: &mut SqliteConnection, set: &MigrationSet) -> Result<Vec<String>, StoreError> {
    // An immediate transaction holds the write lock from the start, so two migrators cannot both
    // decide a migration is pending; sqlx rolls it back if this future is dropped halfway.
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let applied = apply_sqlite_locked(&mut tx, set).await?;
    tx.commit().await?;
    Ok(applied)
}

async fn apply_sqlite_locked(conn: &mut SqliteConnection, set: &MigrationSet) -> Result<Vec<String>, StoreError> {
    sqlx::raw_sql(LEDGER_SQLITE).execute(&mut *conn).await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM stay_migrations WHERE component = ?")
        .bind(set.component)
        .fetch_all(&mut *conn)
        .await?;
    check_not_newer(set.component, &applied, set.sqlite)?;
    let mut done = Vec::new();
    for migration in set.sqlite.iter().filter(|m| !applied.contains(&m.version)) {
        sqlx::raw_sql(migration.sql).execute(&mut *conn).await?;
        sqlx::query("INSERT INTO stay_migrations (component, version, name, applied_at) VALUES (?, ?, ?, ?)")
            .bind(set.component)
            .bind(migration.version)
            .bind(migration.name)
            .bind(Utc::now().to_rfc3339())
            .execute(&mut *conn)
            .await?;
        done.push(format!("{}/{:04}_{}", set.component, migration.version, migration.name));
    }
    Ok(done)
}

/// Applies the set's pending PostgreSQL migrations; returns the names it applied.
pub async fn apply_postgres(conn: &mut PgConnection, set: &MigrationSet) -> Result<Vec<String>, StoreError> {
    let mut tx = conn.begin().await?;
    // One migrator at a time across processes; the lock ends with the transaction.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('stay_migrations'))").execute(&mut *tx).await?;
    sqlx::raw_sql(LEDGER_POSTGRES).execute(&mut *tx).await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM stay_migrations WHERE component = $1")
        .bind(set.component)
        .fetch_all(&mut *tx)
        .await?;
    check_not_newer(set.component, &applied, set.postgres)?;
    let mut done = Vec::new();
    for migration in set.postgres.iter().filter(|m| !applied.contains(&m.version)) {
        sqlx::raw_sql(migration.sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO stay_migrations (component, version, name, applied_at) VALUES ($1, $2, $3, now())")
            .bind(set.component)
            .bind(migration.version)
            .bind(migration.name)
            .execute(&mut *tx)
            .await?;
        done.push(format!("{}/{:04}_{}", set.component, migration.version, migration.name));
    }
    tx.commit().await?;
    Ok(done)
}

/// The set's migrations not yet applied (for `/readyz`), on SQLite.
pub async fn pending_sqlite(conn: &mut SqliteConnection, set: &MigrationSet) -> Result<Vec<&'static str>, StoreError> {
    let exists: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'stay_migrations'")
            .fetch_optional(&mut *conn)
            .await?;
    let applied: Vec<i64> = match exists {
        None => Vec::new(),
        Some(_) => {
            sqlx::query_scalar("SELECT version FROM stay_migrations WHERE component = ?")
                .bind(set.component)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    Ok(set.sqlite.iter().filter(|m| !applied.contains(&m.version)).map(|m| m.name).collect())
}

/// The set's migrations not yet applied (for `/readyz`), on PostgreSQL.
pub async fn pending_postgres(conn: &mut PgConnection, set: &MigrationSet) -> Result<Vec<&'static str>, StoreError> {
    let exists: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('stay_migrations')::text").fetch_one(&mut *conn).await?;
    let applied: Vec<i64> = match exists {
        None => Vec::new(),
        Some(_) => {
            sqlx::query_scalar("SELECT version FROM stay_migrations WHERE component = $1")
                .bind(set.component)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    Ok(set.postgres.iter().filter(|m| !applied.contains(&m.version)).map(|m| m.name).collect())
}

/// A database migrated by a newer binary must not be written by an older one.
fn check_not_newer(component: &str, applied: &[i64], known: &[Migration]) -> Result<(), StoreError> {
    let newest_known = known.iter().map(|m| m.version).max().unwrap_or(0);
    match applied.iter().max() {
        Some(&newest) if newest > newest_known => Err(StoreError::Schema(format!(
            "the {component} schema is at version {newest}, newer than this binary knows ({newest_known}); upgrade stay"
        ))),
        _ => Ok(()),
    }
}
