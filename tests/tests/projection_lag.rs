//! Projection lag is read from positions, on SQLite and PostgreSQL: the count of events after a
//! checkpoint and the age of the first of them, with no event read whole or decoded. An event that
//! no reader can decode, sitting after the checkpoint, does not stop a status.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use stay_projections::runner::{lag, statuses};
use stay_projections::{models, PROJECTION_MIGRATIONS};
use stay_store::{Append, CommandContext, EventStore, NewEvent, Position, SqlDatabase, StoreUrl};
use stay_tests::{TestPostgres, TestSqlite};

/// Appends event `sequence` of lag aggregate `id`, recorded `minutes_ago`; answers its position.
async fn append(store: &EventStore, id: &str, sequence: u64, minutes_ago: i64) -> Position {
    let at = Utc::now() - Duration::minutes(minutes_ago);
    let append = Append {
        aggregate_type: "LagProbe".into(),
        aggregate_id: id.into(),
        expected_version: sequence - 1,
        events: vec![NewEvent {
            event_type: "Noted".into(),
            event_version: "1".into(),
            payload: json!({"n": sequence}),
        }],
        metadata: CommandContext::new("test").metadata(at),
    };
    store.append(append).await.expect("append")[0]
}

/// Writes a row straight into the log that no reader can decode: on SQLite neither its payload
/// nor its metadata is JSON; on PostgreSQL (JSONB) its payload is no event of any aggregate.
async fn append_undecodable(store: &EventStore, db: &SqlDatabase) {
    let at = (Utc::now() - Duration::minutes(30)).to_rfc3339();
    let columns = "INSERT INTO events \
        (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at)";
    let (sql, payload, metadata) = match store.kind() {
        "sqlite" => (
            format!("{columns} VALUES ('LagProbe', 'broken', 1, 'Garbled', '1', $1, $2, $3)"),
            "not json {",
            "not json",
        ),
        _ => (
            format!(
                "{columns} VALUES ('LagProbe', 'broken', 1, 'Garbled', '1', $1::jsonb, $2::jsonb, $3::timestamptz)"
            ),
            "\"not an event\"",
            "{}",
        ),
    };
    db.run(&sql, &[payload.into(), metadata.into(), at.into()]).await.expect("a raw row");
}

async fn lag_is_read_from_positions(store: EventStore) {
    let db = store.sql_database().expect("a SQL database beside the log");
    db.migrate(&PROJECTION_MIGRATIONS).await.expect("the projections' tables");
    let a1 = append(&store, "a", 1, 50).await;
    let a2 = append(&store, "a", 2, 40).await;
    append_undecodable(&store, &db).await;
    append(&store, "b", 1, 20).await;
    let head = append(&store, "b", 2, 10).await;

    let (events, ms) = lag(&store, Position::START, 1_000).await.expect("lag from the start");
    assert_eq!(events, 5);
    assert!((50 * 60_000..55 * 60_000).contains(&ms), "the first event waited 50 minutes: {ms} ms");

    let (events, ms) = lag(&store, a1, 1_000).await.expect("lag after the first");
    assert_eq!(events, 4);
    assert!((40 * 60_000..45 * 60_000).contains(&ms), "the oldest not applied waited 40 minutes: {ms} ms");

    let (events, ms) = lag(&store, a2, 1_000).await.expect("lag before the garbled row");
    assert_eq!(events, 3, "the garbled row is counted, not read");
    assert!((30 * 60_000..35 * 60_000).contains(&ms), "it waited 30 minutes: {ms} ms");

    assert_eq!(lag(&store, a1, 2).await.expect("capped").0, 2, "counted up to the cap");
    assert_eq!(lag(&store, head, 1_000).await.expect("caught up"), (0, 0), "caught up: no events, no age");

    let all: Vec<_> = models::all().into_iter().map(|m| m as Arc<_>).collect();
    let listed = statuses(&store, &db, &all).await.expect("a status with a garbled event in the feed");
    assert_eq!(listed.len(), all.len());
    for status in listed {
        assert_eq!((status.lag_events, status.status.as_str()), (5, "catching_up"), "{status:?}");
        assert!(status.lag_ms >= 50 * 60_000, "{status:?}");
    }
}

#[tokio::test]
async fn lag_is_read_from_positions_on_sqlite() {
    let dir = TestSqlite::create();
    let store = EventStore::open(&StoreUrl::Sqlite(dir.path()), Default::default()).await.expect("open");
    store.migrate().await.expect("migrate");
    lag_is_read_from_positions(store).await;
}

#[tokio::test]
async fn lag_is_read_from_positions_on_postgres() {
    let db = TestPostgres::create().await;
    lag_is_read_from_positions(db.open_store().await).await;
}
