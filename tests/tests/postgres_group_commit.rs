//! Group commit on PostgreSQL: concurrent appends share one transaction, yet a conflicting append
//! fails alone and a group that fails as a whole leaves nothing half-written.

use chrono::Utc;
use futures::future::join_all;
use serde_json::json;
use stay_store::{Append, CommandContext, EventStore, NewEvent, StoreError};
use stay_tests::tally::added;
use stay_tests::TestPostgres;

fn append(id: &str, expected_version: u64, amounts: &[i64]) -> Append {
    Append {
        aggregate_type: "Tally".to_owned(),
        aggregate_id: id.to_owned(),
        expected_version,
        events: amounts.iter().map(|a| added(*a)).collect(),
        metadata: CommandContext::new("tester").metadata(Utc::now()),
    }
}

async fn sequences(store: &EventStore, id: &str) -> Vec<(u64, String)> {
    let events = store.read_stream("Tally", id).await.expect("stream");
    events.iter().map(|e| (e.sequence, e.payload.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflicting_append_fails_alone_and_leaves_nothing_of_itself() {
    let db = TestPostgres::create().await;
    let store = db.open_store().await;
    for round in 0..20 {
        let contested = format!("contested-{round}");
        // Two writers decided on the same version of one stream (one with two events, one with
        // one), beside forty appends to streams of their own, all sent at once so they share groups.
        let mut appends = vec![append(&contested, 0, &[1, 2]), append(&contested, 0, &[100])];
        appends.extend((0..40).map(|i| append(&format!("own-{round}-{i}"), 0, &[i, i + 1])));
        let answers = join_all(appends.into_iter().map(|a| store.append(a))).await;

        let (two, one) = (&answers[0], &answers[1]);
        assert!(
            matches!((two, one), (Ok(_), Err(StoreError::Conflict)) | (Err(StoreError::Conflict), Ok(_))),
            "exactly one of the rivals wins: {two:?} {one:?}"
        );
        let stream = sequences(&store, &contested).await;
        match two {
            Ok(positions) => {
                assert_eq!(positions.len(), 2);
                assert_eq!(stream.len(), 2, "the winner whole: {stream:?}");
            }
            Err(_) => assert_eq!(stream.len(), 1, "the loser left nothing, not even its second event: {stream:?}"),
        }
        for (i, answer) in answers[2..].iter().enumerate() {
            let positions = answer.as_ref().expect("an append of its own stream commits");
            assert_eq!(positions.len(), 2);
            assert!(positions[0] < positions[1], "positions in the append's order");
            assert_eq!(sequences(&store, &format!("own-{round}-{i}")).await.len(), 2);
        }
    }
    // Behind and ahead of the stream: both refused, the stream unchanged.
    store.append(append("steady", 0, &[1])).await.expect("first");
    assert!(matches!(store.append(append("steady", 0, &[2])).await, Err(StoreError::Conflict)));
    assert!(matches!(store.append(append("steady", 5, &[3])).await, Err(StoreError::Conflict)));
    assert_eq!(sequences(&store, "steady").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_that_fails_as_a_whole_leaves_nothing_half_written() {
    let db = TestPostgres::create().await;
    let store = db.open_store().await;
    // PostgreSQL refuses a NUL character in jsonb: the group's one INSERT fails, so the whole
    // transaction does. Each append is then tried alone; only the bad one fails.
    let mut bad = append("bad", 0, &[1]);
    bad.events.push(NewEvent {
        event_type: "Added".into(),
        event_version: "1.0".into(),
        payload: json!({"x": "\u{0}"}),
    });
    let mut appends = vec![bad];
    appends.extend((0..30).map(|i| append(&format!("good-{i}"), 0, &[i, i + 1, i + 2])));
    let answers = join_all(appends.into_iter().map(|a| store.append(a))).await;

    assert!(matches!(answers[0], Err(StoreError::Database(_))), "{:?}", answers[0]);
    assert!(sequences(&store, "bad").await.is_empty(), "nothing of the failed append, not even its good event");
    for (i, answer) in answers[1..].iter().enumerate() {
        assert_eq!(answer.as_ref().expect("the others commit").len(), 3);
        assert_eq!(sequences(&store, &format!("good-{i}")).await.len(), 3, "whole");
    }
}
