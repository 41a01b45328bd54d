//! Portable statements over a [`SqlDatabase`] or [`SqlTransaction`]: one SQL text (PostgreSQL's
//! `$1` placeholders, rewritten for SQLite), arguments and cells of a few kinds (text, integer,
//! bytes), and rows read by column name. A value of any other type, or of another type than the
//! one asked for, is an error: never a silent 0, `""` or empty list.
//!
//! The components that keep tables beside the log (read models, the saga's schedule) write the
//! same SQL for both databases; this keeps them from writing every statement twice.

use std::sync::Arc;

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row as _, TypeInfo, ValueRef};

use crate::database::{SqlDatabase, SqlTransaction};
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
    fn kind(&self) -> &'static str {
        match self {
            Cell::Text(_) => "text",
            Cell::Int(_) => "an integer",
            Cell::Bytes(_) => "bytes",
            Cell::Null => "NULL",
        }
    }
}

/// A result row: its cells, read by column name and type. A cell that is not of the type asked
/// for is an error, never a default: a read model that cannot read its own row must say so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    columns: Arc<[String]>,
    cells: Vec<Cell>,
}

impl Row {
    /// A row of these cells under these column names.
    pub fn new(columns: Arc<[String]>, cells: Vec<Cell>) -> Self {
        Self { columns, cells }
    }

    /// The cell of `column`.
    pub fn cell(&self, column: &str) -> Result<&Cell, StoreError> {
        self.columns.iter().position(|name| name == column).and_then(|i| self.cells.get(i)).ok_or_else(|| {
            StoreError::Decode(format!("the row has no column `{column}` (it has {})", self.columns.join(", ")))
        })
    }

    fn wrong(column: &str, wanted: &str, cell: &Cell) -> StoreError {
        StoreError::Decode(format!("column `{column}`: expected {wanted}, found {}", cell.kind()))
    }

    /// The text of `column`; anything else (NULL included) is an error.
    pub fn text(&self, column: &str) -> Result<String, StoreError> {
        match self.cell(column)? {
            Cell::Text(text) => Ok(text.clone()),
            other => Err(Self::wrong(column, "text", other)),
        }
    }

    /// The text of `column`, or `None` for NULL; anything else is an error.
    pub fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        match self.cell(column)? {
            Cell::Text(text) => Ok(Some(text.clone())),
            Cell::Null => Ok(None),
            other => Err(Self::wrong(column, "text or NULL", other)),
        }
    }

    /// The integer of `column`; anything else (NULL included) is an error.
    pub fn int(&self, column: &str) -> Result<i64, StoreError> {
        match self.cell(column)? {
            Cell::Int(value) => Ok(*value),
            other => Err(Self::wrong(column, "an integer", other)),
        }
    }

    /// The integer of `column`, or `None` for NULL; anything else is an error.
    pub fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        match self.cell(column)? {
            Cell::Int(value) => Ok(Some(*value)),
            Cell::Null => Ok(None),
            other => Err(Self::wrong(column, "an integer or NULL", other)),
        }
    }

    /// The bytes of `column`, or `None` for NULL; anything else is an error.
    pub fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.cell(column)? {
            Cell::Bytes(bytes) => Ok(Some(bytes.clone())),
            Cell::Null => Ok(None),
            other => Err(Self::wrong(column, "bytes or NULL", other)),
        }
    }

    /// `column` as a JSON document of type `T` (stored as text).
    pub fn json<T: serde::de::DeserializeOwned>(&self, column: &str) -> Result<T, StoreError> {
        let text = self.text(column)?;
        serde_json::from_str(&text).map_err(|err| StoreError::Decode(format!("column `{column}`: {err}")))
    }

    /// The cells, in column order (for comparing whole rows).
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }
}

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

fn columns<R: sqlx::Row>(row: Option<&R>) -> Arc<[String]> {
    use sqlx::Column;
    row.map(|row| row.columns().iter().map(|c| c.name().to_owned()).collect::<Vec<_>>()).unwrap_or_default().into()
}

/// Rows with their column names; `cell` reads one non-NULL value by its type.
fn read_rows<R>(
    rows: &[R],
    cell: impl Fn(&R, usize, &str) -> Result<Option<Cell>, sqlx::Error>,
) -> Result<Vec<Row>, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
{
    let names = columns(rows.first());
    rows.iter()
        .map(|row| {
            let cells = (0..row.len())
                .map(|i| {
                    let raw = row.try_get_raw(i)?;
                    if raw.is_null() {
                        return Ok(Cell::Null);
                    }
                    let kind = raw.type_info().name().to_owned();
                    cell(row, i, &kind)?.ok_or_else(|| unsupported(&names, i, &kind))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(Row::new(names.clone(), cells))
        })
        .collect()
}

fn sqlite_rows(rows: &[SqliteRow]) -> Result<Vec<Row>, StoreError> {
    // SQLite types values, not columns: each value is read by its own storage class.
    read_rows(rows, |row, i, class| {
        Ok(match class {
            "INTEGER" => Some(Cell::Int(row.try_get(i)?)),
            "TEXT" => Some(Cell::Text(row.try_get(i)?)),
            "BLOB" => Some(Cell::Bytes(row.try_get(i)?)),
            _ => None,
        })
    })
}

fn postgres_rows(rows: &[PgRow]) -> Result<Vec<Row>, StoreError> {
    read_rows(rows, |row, i, kind| {
        Ok(match kind {
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Some(Cell::Text(row.try_get(i)?)),
            "INT8" => Some(Cell::Int(row.try_get(i)?)),
            "INT4" => Some(Cell::Int(i64::from(row.try_get::<i32, _>(i)?))),
            "INT2" => Some(Cell::Int(i64::from(row.try_get::<i16, _>(i)?))),
            "BYTEA" => Some(Cell::Bytes(row.try_get(i)?)),
            _ => None,
        })
    })
}

fn unsupported(names: &[String], i: usize, kind: &str) -> StoreError {
    let column = names.get(i).map_or("?", String::as_str);
    StoreError::Decode(format!("column `{column}` has the type {kind}, which portable statements do not read"))
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
    pub async fn rows(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>, StoreError> {
        Ok(match self {
            SqlTransaction::Sqlite(tx) => {
                let sql = for_sqlite(sql);
                sqlite_rows(&bind_all!(sqlx::query(&sql), args).fetch_all(&mut **tx).await?)?
            }
            SqlTransaction::Postgres(tx) => {
                postgres_rows(&bind_all!(sqlx::query(sql), args).fetch_all(&mut **tx).await?)?
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

/// Runs one statement on a SQLite connection (SQLite placeholders): the rows it touched and
/// the rows it returned.
pub(crate) async fn run_sqlite(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    args: &[Arg],
) -> Result<(u64, Vec<Row>), StoreError> {
    if returns_rows(sql) {
        let rows = sqlite_rows(&bind_all!(sqlx::query(sql), args).fetch_all(conn).await?)?;
        Ok((rows.len() as u64, rows))
    } else {
        Ok((bind_all!(sqlx::query(sql), args).execute(conn).await?.rows_affected(), Vec::new()))
    }
}

/// Whether a writing statement returns rows (`… RETURNING …`).
fn returns_rows(sql: &str) -> bool {
    sql.to_ascii_uppercase().contains("RETURNING")
}

/// Whether a statement only reads (and so needs no writer).
fn only_reads(sql: &str) -> bool {
    let start = sql.trim_start();
    ["SELECT", "WITH", "EXPLAIN", "PRAGMA"]
        .iter()
        .any(|word| start.get(..word.len()).is_some_and(|s| s.eq_ignore_ascii_case(word)))
}

impl SqlDatabase {
    /// Runs a statement; answers the rows it touched. In the event log's own SQLite file it runs
    /// in the log writer's next commit.
    pub async fn run(&self, sql: &str, args: &[Arg]) -> Result<u64, StoreError> {
        Ok(match self {
            SqlDatabase::Sqlite(db) => match db.writer() {
                Some(writer) => writer.write_statement(for_sqlite(sql), args.to_vec()).await?.0,
                None => {
                    let sql = for_sqlite(sql);
                    bind_all!(sqlx::query(&sql), args).execute(db.pool()).await?.rows_affected()
                }
            },
            SqlDatabase::Postgres(pool) => bind_all!(sqlx::query(sql), args).execute(pool).await?.rows_affected(),
        })
    }

    /// Runs a query (or a write with `RETURNING`, which in the event log's own SQLite file runs in
    /// the log writer's next commit); answers its rows.
    pub async fn rows(&self, sql: &str, args: &[Arg]) -> Result<Vec<Row>, StoreError> {
        Ok(match self {
            SqlDatabase::Sqlite(db) => match db.writer().filter(|_| !only_reads(sql)) {
                Some(writer) => writer.write_statement(for_sqlite(sql), args.to_vec()).await?.1,
                None => {
                    let sql = for_sqlite(sql);
                    sqlite_rows(&bind_all!(sqlx::query(&sql), args).fetch_all(db.pool()).await?)?
                }
            },
            SqlDatabase::Postgres(pool) => postgres_rows(&bind_all!(sqlx::query(sql), args).fetch_all(pool).await?)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreUrl;

    async fn database() -> (tempfile::TempDir, SqlDatabase) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = SqlDatabase::open(&StoreUrl::Sqlite(dir.path().join("read.db"))).await.expect("open");
        db.run("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT, note TEXT, data BLOB)", &[]).await.expect("create");
        (dir, db)
    }

    #[tokio::test]
    async fn rows_are_read_by_column_name_and_type() {
        let (_dir, db) = database().await;
        let args = ["a".into(), 7.into(), Arg::Null, Arg::Bytes(vec![1, 2])];
        db.run("INSERT INTO t (id, n, note, data) VALUES ($1, $2, $3, $4)", &args).await.expect("insert");
        let rows = db.rows("SELECT id, n, note, data FROM t", &[]).await.expect("read");
        let row = &rows[0];
        assert_eq!(row.text("id").expect("id"), "a");
        assert_eq!(row.int("n").expect("n"), 7);
        assert_eq!(row.opt_text("note").expect("note"), None);
        assert_eq!(row.opt_bytes("data").expect("data"), Some(vec![1, 2]));
    }

    #[tokio::test]
    async fn a_cell_of_another_type_is_an_error_not_a_default() {
        let (_dir, db) = database().await;
        db.run("INSERT INTO t (id, n, note) VALUES ($1, $2, $3)", &["a".into(), Arg::NullInt, "x".into()])
            .await
            .expect("insert");
        let rows = db.rows("SELECT id, n, note FROM t", &[]).await.expect("read");
        let row = &rows[0];
        assert!(matches!(row.int("id"), Err(StoreError::Decode(_))), "text read as an integer");
        assert!(matches!(row.int("n"), Err(StoreError::Decode(_))), "NULL read as an integer");
        assert!(matches!(row.text("n"), Err(StoreError::Decode(_))), "NULL read as text");
        assert!(matches!(row.text("missing"), Err(StoreError::Decode(_))), "a column the row lacks");
        assert!(matches!(row.json::<Vec<i64>>("note"), Err(StoreError::Decode(_))), "text that is not JSON");
        assert_eq!(row.opt_int("n").expect("NULL is None"), None);
    }

    #[tokio::test]
    async fn a_type_portable_statements_do_not_read_is_an_error() {
        let (_dir, db) = database().await;
        let read = db.rows("SELECT 1.5 AS ratio", &[]).await;
        assert!(matches!(read, Err(StoreError::Decode(message)) if message.contains("ratio")));
    }
}
