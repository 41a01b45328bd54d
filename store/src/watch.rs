//! Wake-ups per aggregate: whoever waits for one aggregate to change (a request answered once
//! its reservation is final) is woken when the feed shows a new event of *that* aggregate, not
//! by every event in the store.
//!
//! One follower task per process reads the feed once for everybody (from the head at its start)
//! and wakes only the subscribers of the aggregates it sees; it runs while anybody is
//! subscribed. A subscriber registers before it looks at the aggregate, so an event that lands
//! between its look and its wait still wakes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::position::Position;
use crate::store::EventStore;

/// Events read from the feed at a time.
const BATCH: usize = 1_000;
/// How long the follower waits for events before it checks whether anybody still listens.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Subscriptions to single aggregates' changes, served by one feed follower.
#[derive(Clone, Debug)]
pub struct AggregateWatch {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: EventStore,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Per aggregate type and id: the sender its subscribers listen on, and how many they are.
    watched: HashMap<String, HashMap<String, (watch::Sender<Position>, usize)>>,
    /// Whether a follower task is running.
    following: bool,
}

/// One subscriber's wake-ups; it unsubscribes when dropped.
#[derive(Debug)]
pub struct Subscription {
    aggregate_type: String,
    aggregate_id: String,
    changes: watch::Receiver<Position>,
    inner: Weak<Inner>,
}

impl AggregateWatch {
    /// Wake-ups for aggregates of `store`.
    pub fn new(store: EventStore) -> Self {
        Self { inner: Arc::new(Inner { store, state: Mutex::new(State::default()) }) }
    }

    /// Subscribes to new events of one aggregate. Subscribe first, then look at the aggregate,
    /// then wait on the subscription: nothing committed after the subscription is missed.
    pub async fn subscribe(&self, aggregate_type: &str, aggregate_id: &str) -> Subscription {
        let (changes, start_follower) = {
            let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = state
                .watched
                .entry(aggregate_type.to_owned())
                .or_default()
                .entry(aggregate_id.to_owned())
                .or_insert_with(|| (watch::channel(Position::START).0, 0));
            entry.1 += 1;
            let changes = entry.0.subscribe();
            let start = !state.following;
            state.following = true;
            (changes, start)
        };
        if start_follower {
            // The follower starts at the head as it is now: whatever came before was there to be
            // seen by the subscriber's own look.
            let from = match self.inner.store.head().await {
                Ok(head) => head,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the feed's head; following from the start");
                    Position::START
                }
            };
            tokio::spawn(follow(Arc::downgrade(&self.inner), from));
        }
        Subscription {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            changes,
            inner: Arc::downgrade(&self.inner),
        }
    }
}

impl Subscription {
    /// Waits until a new event of the aggregate is seen, or `timeout` passes; true if one was.
    pub async fn changed(&mut self, timeout: Duration) -> bool {
        matches!(tokio::time::timeout(timeout, self.changes.changed()).await, Ok(Ok(())))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(inner) = self.inner.upgrade() else { return };
        let mut state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ids) = state.watched.get_mut(&self.aggregate_type) else { return };
        if let Some(entry) = ids.get_mut(&self.aggregate_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                ids.remove(&self.aggregate_id);
            }
        }
        if ids.is_empty() {
            state.watched.remove(&self.aggregate_type);
        }
    }
}

/// Reads the feed after `from` and wakes the subscribers of each event's aggregate; ends when
/// nobody is subscribed (the next subscription starts a new follower from the then head).
async fn follow(inner: Weak<Inner>, mut after: Position) {
    loop {
        let Some(watch) = inner.upgrade() else { return };
        {
            let mut state = watch.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.watched.is_empty() {
                state.following = false;
                return;
            }
        }
        let store = watch.store.clone();
        drop(watch);
        let batch = match store.read_feed(after, BATCH).await {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(error = %err, "the aggregate watch cannot read the feed; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if let Some(last) = batch.last() {
            after = last.position;
            let Some(watch) = inner.upgrade() else { return };
            let state = watch.state.lock().unwrap_or_else(PoisonError::into_inner);
            for event in &batch {
                let watched = state.watched.get(&event.aggregate_type).and_then(|ids| ids.get(&event.aggregate_id));
                if let Some((sender, _)) = watched {
                    sender.send_replace(event.position);
                }
            }
            continue;
        }
        if let Err(err) = store.wait_for_events(after, IDLE_CHECK).await {
            tracing::warn!(error = %err, "the aggregate watch cannot wait on the feed; trying again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{Append, CommandContext, NewEvent};
    use crate::store::{StoreOptions, StoreUrl};

    async fn store() -> (tempfile::TempDir, EventStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = StoreOptions { upcasters: Arc::new(Vec::new()), ..StoreOptions::default() };
        let store = EventStore::open(&StoreUrl::Sqlite(dir.path().join("stay.db")), options).await.expect("open");
        store.migrate().await.expect("migrate");
        (dir, store)
    }

    async fn append(store: &EventStore, id: &str, expected_version: u64) {
        let event = NewEvent {
            event_type: "Noted".into(),
            event_version: "1.0".into(),
            payload: serde_json::json!({"Noted": {}}),
        };
        let append = Append {
            aggregate_type: "Note".into(),
            aggregate_id: id.into(),
            expected_version,
            events: vec![event],
            metadata: CommandContext::new("test").metadata(chrono::Utc::now()),
        };
        store.append(append).await.expect("append");
    }

    #[tokio::test]
    async fn a_subscriber_is_woken_by_its_own_aggregate_only() {
        let (_dir, store) = store().await;
        let watch = AggregateWatch::new(store.clone());
        let mut mine = watch.subscribe("Note", "mine").await;
        append(&store, "other", 0).await;
        assert!(!mine.changed(Duration::from_millis(300)).await, "another aggregate's event does not wake it");
        append(&store, "mine", 0).await;
        assert!(mine.changed(Duration::from_secs(5)).await, "its own event wakes it");
    }

    #[tokio::test]
    async fn an_event_between_the_subscription_and_the_wait_is_not_lost() {
        let (_dir, store) = store().await;
        let watch = AggregateWatch::new(store.clone());
        let mut subscription = watch.subscribe("Note", "n").await;
        append(&store, "n", 0).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(subscription.changed(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn the_follower_stops_when_nobody_listens_and_starts_again_for_the_next() {
        let (_dir, store) = store().await;
        let watch = AggregateWatch::new(store.clone());
        drop(watch.subscribe("Note", "a").await);
        tokio::time::sleep(IDLE_CHECK + Duration::from_millis(500)).await;
        assert!(!watch.inner.state.lock().unwrap_or_else(PoisonError::into_inner).following, "the follower ended");
        let mut again = watch.subscribe("Note", "a").await;
        append(&store, "a", 0).await;
        assert!(again.changed(Duration::from_secs(5)).await);
    }
}
