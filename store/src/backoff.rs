//! How long Stay waits before trying again, in one place.
//!
//! Every retry in Stay (a command that met a conflict, a worker whose batch failed, a call to the
//! payment provider, a dropped subscription, a failed saga step) waits by a [`Backoff`]: a ceiling
//! that starts at `first` and doubles per failure up to `max`, and a wait drawn between half the
//! ceiling and the ceiling, so many waiters do not retry in step. The waits come from `backon`;
//! [`Backoff::after`] gives the same schedule by failure count, for waits that are persisted
//! rather than slept (a saga step's retry time).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// A retry schedule: exponential, jittered, capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first wait.
    pub first: Duration,
    /// The largest ceiling.
    pub max: Duration,
    /// How many waits before giving up (`None`: never give up).
    pub times: Option<usize>,
}

impl Backoff {
    /// Waits from about `first`, doubling up to about `max`, without end.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max, times: None }
    }

    /// The same schedule, giving up after `times` waits.
    pub const fn times(self, times: usize) -> Self {
        Self { times: Some(times), ..self }
    }

    /// The schedule as a `backon` builder, for `Retryable::retry`.
    pub fn builder(&self) -> ExponentialBuilder {
        // backon waits between d and 2d; half the ceiling as d keeps each wait under the ceiling.
        let builder = ExponentialBuilder::new()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay(self.first / 2)
            .with_max_delay(self.max.max(self.first) / 2);
        match self.times {
            Some(times) => builder.with_max_times(times),
            None => builder.without_max_times(),
        }
    }

    /// A fresh run of waits: take the next one after each failure, start a new run after a success.
    pub fn waits(&self) -> Waits {
        Waits { schedule: *self, inner: self.builder().build() }
    }

    /// The wait after `failures` failures in a row (1 for the first), from the same schedule.
    pub fn after(&self, failures: u32) -> Duration {
        let unlimited = Self { times: None, ..*self };
        // The ceiling stops doubling at `max` long before 64 failures.
        let index = usize::try_from(failures.clamp(1, 64) - 1).unwrap_or(0);
        unlimited.builder().build().nth(index).unwrap_or(self.max)
    }
}

/// The waits of one run of failures.
#[derive(Debug)]
pub struct Waits {
    schedule: Backoff,
    inner: backon::ExponentialBackoff,
}

impl Waits {
    /// The next wait, or `None` once the schedule gives up.
    pub fn next_wait(&mut self) -> Option<Duration> {
        self.inner.next()
    }

    /// Starts over, after a success.
    pub fn reset(&mut self) {
        *self = self.schedule.waits();
    }
}

impl Iterator for Waits {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.next_wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn each_wait_is_between_half_its_ceiling_and_the_ceiling() {
        let schedule = Backoff::new(100 * MS, 800 * MS);
        for _ in 0..50 {
            let waits: Vec<Duration> = schedule.waits().take(6).collect();
            let ceilings = [100, 200, 400, 800, 800, 800];
            for (wait, ceiling) in waits.iter().zip(ceilings) {
                assert!(*wait >= ceiling * MS / 2 && *wait <= ceiling * MS, "{wait:?} for a ceiling of {ceiling} ms");
            }
        }
    }

    #[test]
    fn a_limited_schedule_gives_up() {
        assert_eq!(Backoff::new(MS, 10 * MS).times(3).waits().count(), 3);
    }

    #[test]
    fn after_follows_the_same_schedule_by_failure_count() {
        let schedule = Backoff::new(200 * MS, Duration::from_secs(30)).times(2);
        for (failures, ceiling) in [(1, 200), (2, 400), (3, 800), (10, 30_000), (1_000, 30_000)] {
            let wait = schedule.after(failures);
            assert!(wait >= ceiling * MS / 2 && wait <= ceiling * MS, "{wait:?} after {failures} failures");
        }
        assert!(schedule.after(0) <= 200 * MS, "no failure yet waits like the first");
    }

    #[test]
    fn a_reset_starts_over() {
        let mut waits = Backoff::new(100 * MS, Duration::from_secs(10)).waits();
        for _ in 0..5 {
            waits.next_wait();
        }
        waits.reset();
        assert!(waits.next_wait().expect("a wait") <= 100 * MS);
    }
}
