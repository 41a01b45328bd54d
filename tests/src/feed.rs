//! Reading the global feed the way a consumer does, for tests.

use std::time::Duration;

use stay_store::{EventStore, Position, RecordedEvent};

/// Reads the feed after `after`, batch by batch, waiting for more as a consumer would, until it has
/// `want` events or `deadline` has passed; returns what it read, in feed order.
pub async fn read_feed_until(
    store: &EventStore,
    mut after: Position,
    want: usize,
    deadline: Duration,
) -> Vec<RecordedEvent> {
    let started = tokio::time::Instant::now();
    let mut seen = Vec::new();
    while seen.len() < want && started.elapsed() < deadline {
        let batch = store.read_feed(after, 500).await.expect("read the feed");
        match batch.last() {
            Some(last) => {
                after = last.position;
                seen.extend(batch);
            }
            None => {
                store.wait_for_events(after, Duration::from_millis(500)).await.expect("wait on the feed");
            }
        }
    }
    seen
}
