//! Checkpoints: written in the consumer's own transaction, moved by compare-and-set.

use std::time::Duration;

use stay_store::checkpoint_moves::CheckpointMoves;
use stay_store::{EventStore, Position, SqlDatabase, StoreError, StoreOptions, StoreUrl};
use stay_tests::{TestPostgres, TestSqlite};

async fn checkpoints_commit_with_the_consumers_rows_and_refuse_a_stale_writer(db: SqlDatabase) {
    let name = "roomview";
    assert_eq!(db.checkpoint(name).await.expect("read"), Position::START);

    // Rolled back: neither the consumer's row nor the checkpoint remains.
    let mut tx = db.begin().await.expect("begin");
    write_row(&mut tx, "first").await;
    tx.save_checkpoint(name, Position::START, Position::new(5, 0)).await.expect("save");
    tx.rollback().await.expect("rollback");
    assert_eq!(db.checkpoint(name).await.expect("read"), Position::START);
    assert_eq!(rows(&db).await, 0);

    // Committed: both.
    let mut tx = db.begin().await.expect("begin");
    write_row(&mut tx, "first").await;
    tx.save_checkpoint(name, Position::START, Position::new(5, 0)).await.expect("save");
    tx.commit().await.expect("commit");
    assert_eq!(db.checkpoint(name).await.expect("read"), Position::new(5, 0));
    assert_eq!(rows(&db).await, 1);

    // A worker that read the checkpoint before another moved it cannot apply its batch.
    let mut tx = db.begin().await.expect("begin");
    let refused = tx.save_checkpoint(name, Position::START, Position::new(9, 0)).await;
    assert!(matches!(refused, Err(StoreError::Conflict)), "{refused:?}");
    tx.rollback().await.expect("rollback");
    let mut tx = db.begin().await.expect("begin");
    let backwards = tx.save_checkpoint(name, Position::new(5, 0), Position::new(3, 0)).await;
    assert!(matches!(backwards, Err(StoreError::Schema(_))), "{backwards:?}");
    tx.save_checkpoint(name, Position::new(5, 0), Position::new(9, 0)).await.expect("forward");
    assert_eq!(tx.checkpoint(name).await.expect("in tx"), Position::new(9, 0));
    tx.commit().await.expect("commit");
    assert_eq!(db.checkpoints().await.expect("all"), vec![(name.to_owned(), Position::new(9, 0))]);

    // A rebuild starts again from the beginning.
    let mut tx = db.begin().await.expect("begin");
    tx.reset_checkpoint(name).await.expect("reset");
    tx.commit().await.expect("commit");
    assert_eq!(db.checkpoint(name).await.expect("read"), Position::START);
}

async fn write_row(tx: &mut stay_store::SqlTransaction, value: &str) {
    match tx {
        stay_store::SqlTransaction::Sqlite(tx) => {
            sqlx::query("INSERT INTO consumer_rows (value) VALUES (?)")
                .bind(value)
                .execute(&mut **tx)
                .await
                .expect("row");
        }
        stay_store::SqlTransaction::Postgres(tx) => {
            sqlx::query("INSERT INTO consumer_rows (value) VALUES ($1)")
                .bind(value)
                .execute(&mut **tx)
                .await
                .expect("row");
        }
    }
}

async fn rows(db: &SqlDatabase) -> i64 {
    match db {
        SqlDatabase::Sqlite(db) => sqlx::query_scalar("SELECT count(*) FROM consumer_rows").fetch_one(db.pool()).await,
        SqlDatabase::Postgres(pool) => sqlx::query_scalar("SELECT count(*) FROM consumer_rows").fetch_one(pool).await,
    }
    .expect("count")
}

async fn with_consumer_table(store: &EventStore) -> SqlDatabase {
    store.migrate().await.expect("migrate");
    let db = store.sql_database().expect("a SQL database beside the log");
    match &db {
        SqlDatabase::Sqlite(db) => {
            sqlx::query("CREATE TABLE consumer_rows (value TEXT)").execute(db.pool()).await.map(drop)
        }
        SqlDatabase::Postgres(pool) => {
            sqlx::query("CREATE TABLE consumer_rows (value TEXT)").execute(pool).await.map(drop)
        }
    }
    .expect("consumer table");
    db
}

#[tokio::test]
async fn sqlite_checkpoints() {
    let dir = TestSqlite::create();
    let store = EventStore::open(&StoreUrl::Sqlite(dir.path()), StoreOptions::default()).await.expect("open");
    checkpoints_commit_with_the_consumers_rows_and_refuse_a_stale_writer(with_consumer_table(&store).await).await;
}

#[tokio::test]
async fn postgres_checkpoints() {
    let db = TestPostgres::create().await;
    let store =
        EventStore::open(&StoreUrl::Postgres(db.url().to_owned()), StoreOptions::default()).await.expect("open");
    checkpoints_commit_with_the_consumers_rows_and_refuse_a_stale_writer(with_consumer_table(&store).await).await;
}

/// Another process's projector moves a checkpoint: a process that only queries hears of it from
/// PostgreSQL when the move commits, not before and not for a rollback, and only watchers of that
/// model are woken. (Two pools on one database stand for the two processes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_announces_a_committed_checkpoint_move_to_other_processes() {
    let db = TestPostgres::create().await;
    let url = StoreUrl::Postgres(db.url().to_owned());
    let store = EventStore::open(&url, StoreOptions::default()).await.expect("open");
    let projector = with_consumer_table(&store).await;
    let queries = SqlDatabase::open(&url).await.expect("the query process's own pool");
    let moves = CheckpointMoves::listen(&queries).expect("PostgreSQL announces moves");
    let mut roomview = moves.watch("projection:roomview:v");
    let mut sagas = moves.watch("projection:sagas:v");
    // The listener wakes everyone once it listens (moves before that were not announced).
    for watcher in [&mut roomview, &mut sagas] {
        tokio::time::timeout(Duration::from_secs(10), watcher.changed()).await.expect("listening").expect("open");
        watcher.borrow_and_update();
    }

    let name = "projection:roomview:v1";
    let mut tx = projector.begin().await.expect("begin");
    tx.save_checkpoint(name, Position::START, Position::new(5, 0)).await.expect("save");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!roomview.has_changed().expect("open"), "announced before the commit");
    tx.rollback().await.expect("rollback");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!roomview.has_changed().expect("open"), "a rolled-back move was announced");

    let mut tx = projector.begin().await.expect("begin");
    tx.save_checkpoint(name, Position::START, Position::new(5, 0)).await.expect("first save");
    tx.commit().await.expect("commit");
    tokio::time::timeout(Duration::from_secs(5), roomview.changed()).await.expect("heard in time").expect("open");
    roomview.borrow_and_update();

    let mut tx = projector.begin().await.expect("begin");
    tx.save_checkpoint(name, Position::new(5, 0), Position::new(9, 0)).await.expect("a later save");
    tx.commit().await.expect("commit");
    tokio::time::timeout(Duration::from_secs(5), roomview.changed()).await.expect("heard in time").expect("open");

    assert!(!sagas.has_changed().expect("open"), "another model's watcher was woken");
    let dir = TestSqlite::create();
    let sqlite = SqlDatabase::open(&StoreUrl::Sqlite(dir.path())).await.expect("open");
    assert!(CheckpointMoves::listen(&sqlite).is_none(), "SQLite has no channel to announce moves on");
}
