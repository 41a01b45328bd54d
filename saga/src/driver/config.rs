//! How the saga paces itself: the payment deadline, the retries of a failing step, when to park,
//! and how instances are leased and driven.

use std::time::Duration;

use stay_store::Backoff;

/// How the saga paces itself.
#[derive(Clone, Debug)]
pub struct SagaConfig {
    /// How long a charge may go unanswered before the reservation is rejected and the charge voided.
    pub payment_deadline: Duration,
    /// Failures in a row after which a step (other than the charge, which has its deadline) is parked.
    pub max_step_failures: u32,
    /// First retry delay; doubles per failure, with jitter.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long a driver holds an instance without renewing.
    pub lease: Duration,
    /// Instances driven at once per process.
    pub concurrency: usize,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            payment_deadline: Duration::from_secs(60),
            max_step_failures: 10,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            lease: Duration::from_secs(5),
            concurrency: 64,
        }
    }
}

impl SagaConfig {
    /// The waits of a failing step, by its failures in a row (persisted as the step's retry time):
    /// the first between `retry_base` and twice it, the ceiling doubling up to `retry_max`.
    pub fn step_retries(&self) -> Backoff {
        // A wait is between half its ceiling and the ceiling, so the first ceiling is twice the
        // base: the first retry never comes sooner than `retry_base`.
        let first = self.retry_base.saturating_mul(2).min(self.retry_max);
        Backoff::new(first, self.retry_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_failing_step_waits_from_the_base_doubling_up_to_the_longest_delay() {
        let config = SagaConfig::default();
        // Ceilings: base × 2^failures, at most retry_max; each wait is at least half its ceiling.
        for (failures, ceiling) in [(1, 400), (2, 800), (3, 1_600), (7, 25_600), (8, 30_000), (50, 30_000)] {
            for _ in 0..20 {
                let wait = config.step_retries().after(failures);
                assert!(wait >= ceiling * MS / 2 && wait <= ceiling * MS, "{wait:?} after {failures} failures");
            }
        }
    }

    #[test]
    fn a_base_above_the_longest_delay_waits_at_most_the_longest_delay() {
        let config = SagaConfig { retry_base: Duration::from_secs(60), ..SagaConfig::default() };
        let wait = config.step_retries().after(1);
        assert!(wait >= Duration::from_secs(15) && wait <= Duration::from_secs(30), "{wait:?}");
    }
}
