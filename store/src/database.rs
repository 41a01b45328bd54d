//! The SQL database beside the log: where consumers of the feed keep their own tables.
//!
//! [`SqlDatabase`] is the event store's own SQLite file or PostgreSQL database, or a separate one
//! (a read store; with EventStoreDB it must be separate). A consumer writes its rows and its
//! checkpoint (see `checkpoint.rs`) in one [`SqlTransaction`], so a crash between the two cannot
//! happen. This file opens the database, begins, commits and abandons transactions, and applies a
//! component's migrations.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{ConnectOptions, PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use crate::error::StoreError;
use crate::migrate::{self, MigrationSet};
use crate::redact::redact_password;
use crate::sqlite::{connect_options, SqliteStore};
use crate::store::StoreUrl;

/// A SQL database that holds consumers' tables and their checkpoints.
#[derive(Clone, Debug)]
pub enum SqlDatabase {
    /// A SQLite file.
    Sqlite(SqliteDatabase),
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

/// A SQLite file: a pool for reads and transactions, and — in the event log's own file — the
/// log's writer, through which single-statement writes share the appends' commits (one writer
/// for the whole file, rather than several waiting for its lock).
#[derive(Clone, Debug)]
pub struct SqliteDatabase {
    pool: SqlitePool,
    writer: Option<SqliteStore>,
}

impl SqliteDatabase {
    /// A file of its own (a read store apart from the log).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool, writer: None }
    }

    /// The event log's own file: its single-statement writes go through the log's writer.
    pub fn of_log(store: &SqliteStore) -> Self {
        Self { pool: store.pool().clone(), writer: Some(store.clone()) }
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) fn writer(&self) -> Option<&SqliteStore> {
        self.writer.as_ref()
    }
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
                Ok(SqlDatabase::Sqlite(SqliteDatabase::new(pool)))
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
            SqlDatabase::Sqlite(db) => SqlTransaction::Sqlite(db.pool().begin_with("BEGIN IMMEDIATE").await?),
            SqlDatabase::Postgres(pool) => SqlTransaction::Postgres(pool.begin().await?),
        })
    }

    /// Applies a component's pending migrations to this database.
    pub async fn migrate(&self, set: &MigrationSet) -> Result<Vec<String>, StoreError> {
        match self {
            SqlDatabase::Sqlite(db) => migrate::apply_sqlite(&mut *db.pool().acquire().await?, set).await,
            SqlDatabase::Postgres(pool) => migrate::apply_postgres(&mut *pool.acquire().await?, set).await,
        }
    }

    /// A component's migrations not yet applied to this database.
    pub async fn pending_migrations(&self, set: &MigrationSet) -> Result<Vec<&'static str>, StoreError> {
        match self {
            SqlDatabase::Sqlite(db) => migrate::pending_sqlite(&mut *db.pool().acquire().await?, set).await,
            SqlDatabase::Postgres(pool) => migrate::pending_postgres(&mut *pool.acquire().await?, set).await,
        }
    }
}

impl SqlTransaction {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::Migration;
    use crate::sql::Arg;

    const NOTES: MigrationSet = MigrationSet {
        component: "notes",
        sqlite: &[Migration { version: 1, name: "notes", sql: "CREATE TABLE notes (text TEXT NOT NULL)" }],
        postgres: &[Migration { version: 1, name: "notes", sql: "CREATE TABLE notes (text TEXT NOT NULL)" }],
    };

    async fn notes_database(dir: &tempfile::TempDir) -> SqlDatabase {
        let db = SqlDatabase::open(&StoreUrl::Sqlite(dir.path().join("read.db"))).await.expect("open");
        db.migrate(&NOTES).await.expect("migrate");
        db
    }

    async fn notes(db: &SqlDatabase) -> usize {
        db.rows("SELECT text FROM notes", &[]).await.expect("read").len()
    }

    #[tokio::test]
    async fn opening_a_sqlite_file_creates_its_directories() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("deep").join("er").join("read.db");
        let db = SqlDatabase::open(&StoreUrl::Sqlite(path.clone())).await.expect("open");
        assert!(matches!(db, SqlDatabase::Sqlite(_)));
        db.migrate(&NOTES).await.expect("migrate");
        assert!(path.exists());
    }

    #[tokio::test]
    async fn a_read_store_on_eventstoredb_is_refused_without_its_password() {
        let url = StoreUrl::EventStoreDb("esdb://admin:changeit@h:2113?tls=false".into());
        let refused = SqlDatabase::open(&url).await;
        assert!(
            matches!(&refused, Err(StoreError::UnsupportedUrl(m)) if m.contains("SQLite or PostgreSQL") && !m.contains("changeit")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn an_unreadable_postgres_url_is_refused_without_its_password() {
        let url = StoreUrl::Postgres("postgres://stay:s3cret@db:notaport/stay".into());
        let refused = SqlDatabase::open(&url).await;
        assert!(matches!(&refused, Err(StoreError::UnsupportedUrl(m)) if !m.contains("s3cret")), "{refused:?}");
    }

    #[tokio::test]
    async fn migrations_apply_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = SqlDatabase::open(&StoreUrl::Sqlite(dir.path().join("read.db"))).await.expect("open");
        assert_eq!(db.pending_migrations(&NOTES).await.expect("pending"), vec!["notes"]);
        assert_eq!(db.migrate(&NOTES).await.expect("migrate").len(), 1);
        assert!(db.pending_migrations(&NOTES).await.expect("pending").is_empty());
        assert!(db.migrate(&NOTES).await.expect("again").is_empty());
    }

    #[tokio::test]
    async fn writes_in_the_logs_own_file_share_its_writer_and_a_failing_one_fails_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::store::EventStore::open(
            &StoreUrl::Sqlite(dir.path().join("stay.db")),
            crate::store::StoreOptions::default(),
        )
        .await
        .expect("open");
        store.migrate().await.expect("migrate");
        let db = store.sql_database().expect("a SQL database beside the log");
        assert!(matches!(&db, SqlDatabase::Sqlite(file) if file.writer().is_some()), "{db:?}");
        db.run("CREATE TABLE keys (id TEXT PRIMARY KEY, n BIGINT NOT NULL DEFAULT 0)", &[]).await.expect("create");

        // Sent at once, the inserts reach the writer together; the duplicates break the key.
        let ids: Vec<String> = (0..40).map(|i| format!("k{}", i % 30)).collect();
        let args: Vec<[Arg; 1]> = ids.iter().map(|id| [Arg::from(id.as_str())]).collect();
        let inserts = args.iter().map(|arg| db.run("INSERT INTO keys (id) VALUES ($1)", arg));
        let answers = futures::future::join_all(inserts).await;
        let refused = answers.iter().filter(|a| matches!(a, Err(StoreError::Conflict))).count();
        assert_eq!(refused, 10, "{answers:?}");
        assert!(answers.iter().all(|a| matches!(a, Ok(1) | Err(StoreError::Conflict))), "{answers:?}");
        let kept = db.rows("SELECT id FROM keys", &[]).await.expect("read");
        assert_eq!(kept.len(), 30, "every key once: each duplicate failed alone");

        // A write that returns rows answers them, through the same writer.
        let bumped = db
            .rows("UPDATE keys SET n = n + 1 WHERE id IN ($1, $2) RETURNING id, n", &["k1".into(), "k2".into()])
            .await
            .expect("update");
        let mut bumped: Vec<(String, i64)> =
            bumped.iter().map(|r| (r.text("id").expect("id"), r.int("n").expect("n"))).collect();
        bumped.sort();
        assert_eq!(bumped, vec![("k1".to_owned(), 1), ("k2".to_owned(), 1)]);
    }

    #[tokio::test]
    async fn a_committed_transaction_keeps_its_rows_and_an_abandoned_one_does_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = notes_database(&dir).await;

        let mut tx = db.begin().await.expect("begin");
        tx.run("INSERT INTO notes (text) VALUES ($1)", &["kept".into()]).await.expect("insert");
        tx.commit().await.expect("commit");
        assert_eq!(notes(&db).await, 1);

        let mut tx = db.begin().await.expect("begin");
        tx.run("INSERT INTO notes (text) VALUES ($1)", &["dropped".into()]).await.expect("insert");
        tx.rollback().await.expect("rollback");
        assert_eq!(notes(&db).await, 1);
    }
}
