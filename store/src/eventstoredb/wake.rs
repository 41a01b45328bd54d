//! Wake-ups for feed readers from other processes' appends: a catch-up `subscribe_to_all`,
//! filtered like the feed and starting at the end, pokes the feed signal on every event.
//!
//! It only wakes readers; they read the feed themselves. So nothing is lost when the
//! subscription drops: after a reconnect the signal is poked once (events may have come in
//! meanwhile) and readers poll as a fallback anyway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventstore::{Client, StreamPosition, SubscribeToAllOptions, SubscriptionEvent, SubscriptionFilter};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::signal::FeedSignal;

/// Waits before resubscribing: ceilings of 375 ms doubling to 22.5 s, those of the waits this
/// schedule replaced (250 ms doubling to 15 s, plus up to half again). Never gives up: readers
/// poll meanwhile, so a server that is away costs latency only.
const RESUBSCRIBE: Backoff = Backoff::new(Duration::from_millis(375), Duration::from_millis(22_500));

/// Follows `$all` and pokes `signal` on every matching event, resubscribing after a wait by
/// [`RESUBSCRIBE`]. Runs until aborted.
pub(super) async fn wake_feed_readers(client: Client, filter: SubscriptionFilter, signal: FeedSignal) {
    let mut waits = RESUBSCRIBE.waits();
    loop {
        let confirmed = Arc::new(AtomicBool::new(false));
        // Each subscription runs in a task of its own: the client library panics on some
        // unexpected server messages, and a panic must cost one subscription, not the wake-ups.
        let subscription =
            AbortOnDrop(tokio::spawn(follow(client.clone(), filter.clone(), signal.clone(), confirmed.clone())));
        match subscription.join().await {
            Ok(err) => tracing::debug!(error = %err, "feed wake-up subscription ended; resubscribing"),
            Err(err) => tracing::warn!(error = %err, "feed wake-up subscription failed; resubscribing"),
        }
        // Events may have been appended while no subscription was listening.
        signal.poke();
        // A subscription the server confirmed was a success: the next failure starts over.
        if confirmed.load(Ordering::Relaxed) {
            waits.reset();
        }
        // The schedule has no limit, so there is always a next wait; its ceiling if not.
        tokio::time::sleep(waits.next_wait().unwrap_or(RESUBSCRIBE.max)).await;
    }
}

/// One subscription, from the end of `$all`, until it fails. Answers the failure.
async fn follow(
    client: Client,
    filter: SubscriptionFilter,
    signal: FeedSignal,
    confirmed: Arc<AtomicBool>,
) -> eventstore::Error {
    let options = SubscribeToAllOptions::default().position(StreamPosition::End).filter(filter);
    let mut subscription = client.subscribe_to_all(&options).await;
    loop {
        match subscription.next_subscription_event().await {
            Ok(SubscriptionEvent::EventAppeared(_)) => signal.poke(),
            Ok(SubscriptionEvent::Confirmed(_)) => {
                confirmed.store(true, Ordering::Relaxed);
                // Whatever was appended before the subscription began is for readers to find.
                signal.poke();
            }
            Ok(_) => {}
            Err(err) => return err,
        }
    }
}

/// A task that is aborted when its handle is dropped, so aborting the wake-up loop also ends
/// the subscription it is waiting on.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resubscriptions_wait_longer_each_time_up_to_a_ceiling_and_never_give_up() {
        let ceilings = [375, 750, 1_500, 3_000, 6_000, 12_000, 22_500, 22_500];
        let mut waits = RESUBSCRIBE.waits();
        for ceiling in ceilings.into_iter().chain(std::iter::repeat_n(22_500, 100)) {
            let wait = waits.next_wait().expect("never gives up");
            let ceiling = Duration::from_millis(ceiling);
            assert!(wait >= ceiling / 2 && wait <= ceiling, "{wait:?} for a ceiling of {ceiling:?}");
        }
        waits.reset();
        assert!(waits.next_wait().expect("a wait") <= Duration::from_millis(375));
    }
}
