//! Throw-away databases for tests.

use std::path::PathBuf;

use sqlx::{Connection, Executor, PgConnection};
use tempfile::TempDir;
use uuid::Uuid;

/// The server tests create their databases on; `STAY_TEST_POSTGRES_URL` overrides it.
pub fn postgres_admin_url() -> String {
    std::env::var("STAY_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A PostgreSQL database of its own, dropped (with its connections) when this value is dropped.
#[derive(Debug)]
pub struct TestPostgres {
    name: String,
    url: String,
}

impl TestPostgres {
    /// Creates a fresh, empty database.
    pub async fn create() -> Self {
        let admin = postgres_admin_url();
        let name = format!("stay_test_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin} is needed for this test (start it, or set STAY_TEST_POSTGRES_URL): {e}")
        });
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create test database");
        let _ = conn.close().await;
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("STAY_TEST_POSTGRES_URL must end in /DATABASE"),
        };
        Self { name, url }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// An event store over this database, migrated.
    pub async fn open_store(&self) -> stay_store::EventStore {
        let url = stay_store::StoreUrl::Postgres(self.url.clone());
        let store = stay_store::EventStore::open(&url, stay_store::StoreOptions::default()).await.expect("open");
        store.migrate().await.expect("migrate");
        store
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on async work: drop the
        // database from a thread with a runtime of its own.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&postgres_admin_url()).await.ok()?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: test database {} was not dropped", self.name);
        }
    }
}

/// A temporary directory holding a SQLite store file; removed when dropped.
#[derive(Debug)]
pub struct TestSqlite {
    dir: TempDir,
}

impl TestSqlite {
    /// A fresh, empty directory.
    pub fn create() -> Self {
        Self { dir: tempfile::Builder::new().prefix("stay-test-").tempdir().expect("temporary directory") }
    }

    /// The store file inside it.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("stay.db")
    }

    /// The directory (a `--data-dir` for `stay`).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
