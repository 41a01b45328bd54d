//! PostgreSQL's feed fence (DESIGN.md §4.2): a transaction that is still open holds the feed back
//! instead of being skipped, and a rolled-back one leaves no gap that stalls it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::{Connection, PgConnection};
use stay_store::{Append, CommandContext, EventStore, Position, RecordedEvent, StoreOptions, StoreUrl};
use stay_tests::tally::added;
use stay_tests::{read_feed_until, TestPostgres};
use uuid::Uuid;

fn one_event(id: &str, amount: i64) -> Append {
    Append {
        aggregate_type: "Tally".to_owned(),
        aggregate_id: id.to_owned(),
        expected_version: 0,
        events: vec![added(amount)],
        metadata: CommandContext::new("tester").metadata(Utc::now()),
    }
}

/// Inserts one event the way the store does, inside a transaction the caller controls.
async fn insert_in(conn: &mut PgConnection, id: &str) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at)
         VALUES ('Tally', $1, 1, 'Added', '1.0', '{\"Added\": {\"amount\": 7}}', '{}', now())",
    )
    .bind(id)
    .execute(conn)
    .await
    .expect("insert in the slow transaction");
}

async fn read_all(store: &EventStore, mut after: Position) -> Vec<RecordedEvent> {
    let mut seen = Vec::new();
    loop {
        let batch = store.read_feed(after, 1000).await.expect("read");
        match batch.last() {
            Some(last) => after = last.position,
            None => return seen,
        }
        seen.extend(batch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_transaction_holds_the_feed_back_and_is_delivered_when_it_commits() {
    let db = TestPostgres::create().await;
    let store = db.open_store().await;
    let start = store.head().await.expect("head");

    // A slow writer appends first and keeps its transaction open for 3 s.
    let mut slow = PgConnection::connect(db.url()).await.expect("connect");
    let mut tx = slow.begin().await.expect("begin");
    let slow_id = Uuid::new_v4().to_string();
    insert_in(&mut tx, &slow_id).await;

    // Meanwhile 100 other events commit, each in its own transaction.
    let fast = Arc::new(store.clone());
    let mut writers = Vec::new();
    for i in 0..100 {
        let store = fast.clone();
        writers.push(tokio::spawn(async move { store.append(one_event(&Uuid::new_v4().to_string(), i + 1)).await }));
    }
    for writer in writers {
        writer.await.expect("writer").expect("append");
    }

    // For the 3 s the slow transaction stays open, the feed must not pass it.
    let held_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < held_until {
        let visible = read_all(&store, start).await;
        assert!(visible.is_empty(), "the feed passed an open transaction: {} events delivered", visible.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tx.commit().await.expect("commit the slow transaction");

    // Once it commits, all 101 arrive, the slow one first (its transaction began first), none skipped.
    let delivered = read_feed_until(&store, start, 101, Duration::from_secs(10)).await;
    assert_eq!(delivered.len(), 101, "every event delivered once");
    assert_eq!(delivered[0].aggregate_id, slow_id);
    let mut ids: Vec<&str> = delivered.iter().map(|e| e.aggregate_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 101, "no event delivered twice");
    assert!(delivered.windows(2).all(|w| w[0].position < w[1].position));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolled_back_transaction_leaves_no_gap_that_stalls_the_feed() {
    let db = TestPostgres::create().await;
    let store = db.open_store().await;
    let start = store.head().await.expect("head");

    let mut conn = PgConnection::connect(db.url()).await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    insert_in(&mut tx, &Uuid::new_v4().to_string()).await; // takes an identity value, then vanishes
    tx.rollback().await.expect("rollback");

    for i in 0..10 {
        store.append(one_event(&Uuid::new_v4().to_string(), i + 1)).await.expect("append");
    }
    let delivered = read_feed_until(&store, start, 10, Duration::from_secs(5)).await;
    assert_eq!(delivered.len(), 10, "the feed went on past the rolled-back gap");
    let globals: Vec<u64> = delivered.iter().map(|e| e.position.minor()).collect();
    assert!(globals[0] > 1, "the rolled-back insert used identity value 1, so the gap is real: {globals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_order_is_numeric_across_transaction_id_digit_boundaries() {
    // Regression: the feed once sorted by the text form of the transaction id, so an event of
    // transaction 100003 came before one of 99991. Plant rows with such ids (long committed, so
    // the fence lets them through) and read them back in numeric order.
    let db = TestPostgres::create().await;
    let store = db.open_store().await;
    let mut conn = PgConnection::connect(db.url()).await.expect("connect");
    // Pick ids on both sides of a power of ten, below every running transaction.
    let mut current: u64 = 0;
    while current < 1_100 {
        let text: String =
            sqlx::query_scalar("SELECT pg_current_xact_id()::text").fetch_one(&mut conn).await.expect("xid");
        current = text.parse().expect("numeric xid");
    }
    let boundary = 10u64.pow((current - 2).ilog10());
    let planted = [(boundary + 1, "b"), (boundary - 9, "a"), (boundary + 2, "c")];
    for (tx_id, id) in planted {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, tx_id)
             VALUES ('Tally', $1, 1, 'Added', '1.0', '{\"Added\": {\"amount\": 1}}', '{}', now(), $2::text::xid8)",
        )
        .bind(id)
        .bind(tx_id.to_string())
        .execute(&mut conn)
        .await
        .expect("plant");
    }
    let read = read_all(&store, Position::START).await;
    let order: Vec<&str> = read.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(order, ["a", "b", "c"]);
    assert_eq!(read[2].position, store.head().await.expect("head"));
    let after_first = store.read_feed(read[0].position, 10).await.expect("read after");
    assert_eq!(after_first.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_in_another_process_is_woken_by_notification_not_polling() {
    let db = TestPostgres::create().await;
    let writer = db.open_store().await;
    // A second store on the same database stands for another process: its own pool and listener,
    // and a poll interval so long that only a notification can wake it in time.
    let options = StoreOptions { poll_interval: Duration::from_secs(60), ..StoreOptions::default() };
    let reader = EventStore::open(&StoreUrl::Postgres(db.url().to_owned()), options).await.expect("open reader");
    let head = reader.head().await.expect("head");
    tokio::time::sleep(Duration::from_millis(300)).await; // let its listener subscribe
    let waiting = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let woke = reader.wait_for_events(head, Duration::from_secs(40)).await.expect("wait");
        (woke, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    writer.append(one_event(&Uuid::new_v4().to_string(), 1)).await.expect("append");
    let (woke, waited) = waiting.await.expect("reader");
    assert!(woke);
    // Well under the 60 s poll; not tighter, because the fence is cluster-wide and the test beside
    // this one holds a transaction open for 3 s on purpose.
    assert!(waited < Duration::from_secs(10), "woken by NOTIFY, not by the 60 s poll: {waited:?}");
}
