//! Portable statements over a [`SqlDatabase`] or [`SqlTransaction`]: one SQL text (PostgreSQL's
//! `$1` placeholders, rewritten for SQLite), arguments and cells of two kinds, text and integer.
//!
//! The components that keep tables beside the log (read models, the saga's schedule) write the
//! same SQL for both databases; this keeps them from writing every statement twice.

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::checkpoint::{SqlDatabase, SqlTransaction};
use crate::error::StoreError;

/// An argument of a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// NULL where text is expected.
    Null,
    /// NULL where an integer is expected (PostgreSQL will not compare a text NULL with a number).
    NullInt,
    /// Bytes (BLOB on SQLite, BYTEA on PostgreSQL).
    Bytes(Vec<u8>),
}

impl From<&str> for Arg {
    fn from(text: &str) -> Self {
        Arg::Text(text.to_owned())
    }
}

impl From<String> for Arg {
    fn from(text: String) -> Self {
        Arg::Text(text)
    }
}

impl From<i64> for Arg {
    fn from(value: i64) -> Self {
        Arg::Int(value)
    }
}

impl From<Option<String>> for Arg {
    fn from(value: Option<String>) -> Self {
        value.map_or(Arg::Null, Arg::Text)
    }
}

impl From<Option<&str>> for Arg {
    fn from(value: Option<&str>) -> Self {
        value.map_or(Arg::Null, Into::into)
    }
}

impl From<Option<i64>> for Arg {
    fn from(value: Option<i64>) -> Self {
        value.map_or(Arg::NullInt, Arg::Int)
    }
}

/// A cell of a result row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// Bytes.
    Bytes(Vec<u8>),
    /// NULL.
    Null,
}

impl Cell {
    /// The text, or "" for anything else.
    pub fn text(&self) -> &str {
        match self {
            Cell::Text(text) => text,
            _ => "",
        }
    }

    /// The text, if the cell is text.
    pub fn opt_text(&self) -> Option<&str> {
        match self {
            Cell::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The integer, or 0 for anything else.
    pub fn int(&self) -> i64 {
        match self {
            Cell::Int(value) => *value,
            Cell::Text(text) => text.parse().unwrap_or(0),
            Cell::Bytes(_) | Cell::Null => 0,
        }
    }

    /// The bytes, if the cell holds bytes (or text, as its UTF-8).
    pub fn opt_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Cell::Bytes(bytes) => Some(bytes.clone()),
            Cell::Text(text) => Some(text.as_bytes().to_vec()),
            _ => None,
        }
    }

    /// The integer, if the cell is one.
    pub fn opt_int(&self) -> Option<i64> {
        match self {
            Cell::Int(value) => Some(*value),
            _ => None,
        }
    }
}

/// A result row.
pub type Cells = Vec<Cell>;

/// PostgreSQL placeholders (`$1`) as SQLite's numbered ones (`?1`).
pub fn for_sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}

macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Text(text) => query.bind(text.clone()),
                Arg::Int(value) => query.bind(*value),
                Arg::Null => query.bind(Option::<String>::None),
                Arg::NullInt => query.bind(Option::<i64>::None),
                Arg::Bytes(bytes) => query.bind(bytes.clone()),
            };
        }
        query
    }};
}

fn sqlite_cells(row: &SqliteRow) -> Cells {
    (0..row.len())
        .map(|i| {
            if let Ok(Some(value)) = row.try_get::<Option<i64>, _>(i) {
                return Cell::Int(value);
            }
            match row.try_get::<Option<String>, _>(i) {
                Ok(Some(text)) => Cell::Text(text),
                Ok(None) => Cell::Null,
                Err(_) => match row.try_get::<Option<Vec<u8>>, _>(i) {
                    Ok(Some(bytes)) => Cell::Bytes(bytes),
                    _ => Cell::Null,
                },
            }
        })
        .collect()
}

fn postgres_cells(row: &PgRow) -> Cells {
    (0..row.len())
        .map(|i| {
            if let Ok(value) = row.try_get::<Option<String>, _>(i) {
                return value.map_or(Cell::Null, Cell::Text);
            }
            if let Ok(value) = row.try_get::<Option<i64>, _>(i) {
                return value.map_or(Cell::Null, Cell::Int);
            }
            if let Ok(value) = row.try_get::<Option<i32>, _>(i) {
                return value.map_or(Cell::Null, |v| Cell::Int(i64::from(v)));
            }
            match row.try_get::<Option<Vec<u8>>, _>(i) {
                Ok(Some(bytes)) => Cell::Bytes(bytes),
                _ => Cell::Null,
            }
        })
        .collect()
}

impl SqlTransaction {
    /// Runs a statement; answers the rows it touched.
    pub async fn run(&mut self, sql: &str, args: &[Arg]) -> Result<u64, StoreError> {
        Ok(match self {
            SqlTransaction::Sqlite(tx) => {
                let sql = for_sqlite(sql);
                bind_all!(sqlx::query(&sql), args).execute(&mut **tx).await?.rows_affected()
            }
            SqlTransaction::Postgres(tx) => bind_all!(sqlx::query(sql), args).execute(&mut **tx).await?.rows_affected(),
        })
    }

    /// Runs a query; answers its rows.
    pub async fn rows(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Cells>, StoreError> {
        Ok(match self {
            SqlTransaction::Sqlite(tx) => {
                let sql = for_sqlite(sql);
                bind_all!(sqlx::query(&sql), args).fetch_all(&mut **tx).await?.iter().map(sqlite_cells).collect()
            }
            SqlTransaction::Postgres(tx) => {
                bind_all!(sqlx::query(sql), args).fetch_all(&mut **tx).await?.iter().map(postgres_cells).collect()
            }
        })
    }

    /// Runs several DDL statements (one string, `;`-separated).
    pub async fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        use sqlx::Executor;
        match self {
            SqlTransaction::Sqlite(tx) => {
                (&mut **tx).execute(sql).await?;
            }
            SqlTransaction::Postgres(tx) => {
                (&mut **tx).execute(sql).await?;
            }
        }
        Ok(())
    }
}

impl SqlDatabase {
    /// Runs a statement; answers the rows it touched.
    pub async fn run(&self, sql: &str, args: &[Arg]) -> Result<u64, StoreError> {
        Ok(match self {
            SqlDatabase::Sqlite(pool) => {
                let sql = for_sqlite(sql);
                bind_all!(sqlx::query(&sql), args).execute(pool).await?.rows_affected()
            }
            SqlDatabase::Postgres(pool) => bind_all!(sqlx::query(sql), args).execute(pool).await?.rows_affected(),
        })
    }

    /// Runs a query; answers its rows.
    pub async fn rows(&self, sql: &str, args: &[Arg]) -> Result<Vec<Cells>, StoreError> {
        Ok(match self {
            SqlDatabase::Sqlite(pool) => {
                let sql = for_sqlite(sql);
                bind_all!(sqlx::query(&sql), args).fetch_all(pool).await?.iter().map(sqlite_cells).collect()
            }
            SqlDatabase::Postgres(pool) => {
                bind_all!(sqlx::query(sql), args).fetch_all(pool).await?.iter().map(postgres_cells).collect()
            }
        })
    }
}
