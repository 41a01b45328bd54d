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
use rand::Rng;
use tokio::task::JoinHandle;

use crate::signal::FeedSignal;

/// First wait before resubscribing after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between resubscriptions.
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Follows `$all` and pokes `signal` on every matching event, resubscribing with jittered
/// backoff. Runs until aborted.
pub(super) async fn wake_feed_readers(client: Client, filter: SubscriptionFilter, signal: FeedSignal) {
    let mut backoff = MIN_BACKOFF;
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
        if confirmed.load(Ordering::Relaxed) {
            backoff = MIN_BACKOFF;
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
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

/// `base` plus up to half of it again, so many processes do not reconnect in step.
fn jittered(base: Duration) -> Duration {
    let half = u64::try_from(base.as_millis() / 2).unwrap_or(u64::MAX);
    base + Duration::from_millis(rand::thread_rng().gen_range(0..=half))
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
    fn backoff_jitter_stays_within_half_again() {
        for _ in 0..100 {
            let wait = jittered(Duration::from_millis(400));
            assert!(wait >= Duration::from_millis(400) && wait <= Duration::from_millis(600), "{wait:?}");
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
