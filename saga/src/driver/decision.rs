//! What follows a failed step: one explicit decision for every failure, as a process manager in
//! Commanded makes it — never a silent loop. Each decision is recorded (`StepFailed`, and
//! `SagaParked` when it parks), so it is counted and visible on the saga's timeline.
//!
//! | failure ([`StepError`]) | step | decision |
//! |---|---|---|
//! | the provider's circuit is open (`Provider(CircuitOpen)`) | charge, void, refund | [`Decision::Wait`] until the breaker lets a trial through (at least 50 ms); not counted as a failure, so it never parks |
//! | any other failure | a call to the provider for the charge | [`Decision::RetryAt`] after the step backoff; never parks: the payment deadline ends the charge (void, release, reject) once an attempt fails with no retry due before it |
//! | any other failure | every other step, and the charge's own bookkeeping (asking the Payment for the charge before the deadline is set; recording the deadline once it has passed) | [`Decision::RetryAt`] after the step backoff, then [`Decision::Park`] at the `max_step_failures`-th failure in a row |
//!
//! "Any other failure" is each of: the store failed (`Store`); a conflict outlasted the executor's
//! retries (`Conflict`); an aggregate refused a command the step did not expect to be refused
//! (`Room`, `Reservation`, `Payment`); the provider gave no answer (`Provider(Timeout)`,
//! `Provider(Unavailable)`) or refused the request (`Provider(Protocol)`); the provider refused a
//! refund (`RefundRefused`); the ledger could not be written (`Ledger`); the saga lacks a fact it
//! needs (`ReservationMissing`, `NotStarted`, `NoPrice`, `HoldVanished`); an amount that cannot
//! be charged (`InvalidAmount`). The step backoff is [`SagaConfig::step_retries`] after the
//! failures in a row, this one included.
//!
//! No failure is retried at once. A conflict reaches the saga only after the executor's own
//! jittered retries, so an immediate retry would meet the same contention; the backoff lets it
//! clear. A stale saga record (another driver moved the saga) is not a step failure at all: the
//! driver drops its record and looks again at once, which is the only immediate "retry" there is.
//! Failures that waiting cannot cure (a refusal, a missing fact, a protocol error) are retried all
//! the same and park after `max_step_failures`, so a person sees them with their error.

use chrono::{DateTime, TimeDelta, Utc};

use super::{SagaConfig, StepError};
use crate::instance::Step;
use crate::provider::ProviderError;

/// The shortest wait for an open circuit, so a saga does not spin on a breaker about to close.
const MIN_CIRCUIT_WAIT_MS: u64 = 50;

/// What follows a failed step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try the step again at this time; the failure counts towards parking.
    RetryAt(DateTime<Utc>),
    /// The step could not be tried (the provider's circuit is open): try again at `until`
    /// without counting a failure.
    Wait {
        /// When a call may go through.
        until: DateTime<Utc>,
    },
    /// Stop and wait for an operator to retry or skip the step.
    Park,
}

impl Decision {
    /// Whether the failure counts towards parking (it is the step's `failures + 1`-th in a row).
    pub fn counts(self) -> bool {
        !matches!(self, Decision::Wait { .. })
    }
}

/// What follows `error` in `step`, after `failures` failures of it in a row, at `now`;
/// `calling_for_charge` when the step that failed was a call to the provider for the charge
/// (rather than the charge's bookkeeping). See the module's table.
pub fn decide(
    step: Step,
    error: &StepError,
    failures: u32,
    config: &SagaConfig,
    now: DateTime<Utc>,
    calling_for_charge: bool,
) -> Decision {
    match error {
        StepError::Provider(ProviderError::CircuitOpen { retry_in_ms }) => {
            let wait = std::time::Duration::from_millis((*retry_in_ms).max(MIN_CIRCUIT_WAIT_MS));
            return Decision::Wait { until: later(now, wait) };
        }
        // Listed one by one so that a new cause needs a decision here.
        StepError::Provider(ProviderError::Timeout | ProviderError::Unavailable(_) | ProviderError::Protocol(_))
        | StepError::Store(_)
        | StepError::Conflict { .. }
        | StepError::Room(_)
        | StepError::Reservation(_)
        | StepError::Payment(_)
        | StepError::RefundRefused { .. }
        | StepError::Ledger(_)
        | StepError::ReservationMissing
        | StepError::NotStarted
        | StepError::NoPrice
        | StepError::HoldVanished
        | StepError::InvalidAmount(_) => {}
    }
    let failure = failures.saturating_add(1);
    let retry = Decision::RetryAt(later(now, config.step_retries().after(failure)));
    if (step == Step::Charge && calling_for_charge) || failure < config.max_step_failures {
        retry
    } else {
        Decision::Park
    }
}

/// `now` plus `wait`; a wait too long to represent is forever.
fn later(now: DateTime<Utc>, wait: std::time::Duration) -> DateTime<Utc> {
    TimeDelta::from_std(wait).ok().and_then(|wait| now.checked_add_signed(wait)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;
    use stay_domain::{PaymentError, ReservationError, RoomError, ValidationError};
    use stay_store::StoreError;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).single().unwrap()
    }

    fn config() -> SagaConfig {
        SagaConfig { max_step_failures: 3, ..SagaConfig::default() }
    }

    /// One error of every cause except the open circuit.
    fn counted_failures() -> Vec<StepError> {
        vec![
            StepError::Store(StoreError::Closed),
            StepError::Conflict { aggregate: "Room", attempts: 25 },
            StepError::Room(RoomError::RoomNotFound),
            StepError::Reservation(ReservationError::ReservationNotFound),
            StepError::Payment(PaymentError::PaymentNotFound),
            StepError::Provider(ProviderError::Timeout),
            StepError::Provider(ProviderError::Unavailable("502".into())),
            StepError::Provider(ProviderError::Protocol("400".into())),
            StepError::RefundRefused { reason: "no_charge".into() },
            StepError::Ledger(StoreError::Decode("bad".into())),
            StepError::ReservationMissing,
            StepError::NotStarted,
            StepError::NoPrice,
            StepError::HoldVanished,
            StepError::InvalidAmount(ValidationError::NotPositive { field: "amount_minor" }),
        ]
    }

    const STEPS: [Step; 9] = [
        Step::Start,
        Step::Hold,
        Step::Charge,
        Step::Confirm,
        Step::Void,
        Step::Refund,
        Step::Release,
        Step::Reject,
        Step::CompleteCancellation,
    ];

    /// A retry between half the ceiling and the ceiling of the step backoff after `failure` failures.
    fn assert_retry(decision: Decision, failure: u32, context: &str) {
        let Decision::RetryAt(at) = decision else { panic!("{context}: expected a retry, got {decision:?}") };
        // Default base 200 ms: ceilings 400 ms, 800 ms, 1.6 s, …
        let ceiling = TimeDelta::milliseconds(200_i64 << failure.min(20)).min(TimeDelta::seconds(30));
        assert!(at >= now() + ceiling / 2 && at <= now() + ceiling, "{context}: retry at {at} after {failure}");
    }

    #[test]
    fn an_open_circuit_waits_for_the_breaker_without_counting_in_every_step() {
        for (step, calling) in STEPS.into_iter().flat_map(|step| [(step, false), (step, step == Step::Charge)]) {
            for failures in [0, 2, 100] {
                let open = StepError::Provider(ProviderError::CircuitOpen { retry_in_ms: 1_500 });
                let decision = decide(step, &open, failures, &config(), now(), calling);
                assert_eq!(decision, Decision::Wait { until: now() + TimeDelta::milliseconds(1_500) }, "{step:?}");
                assert!(!decision.counts());
            }
        }
    }

    #[test]
    fn a_circuit_about_to_close_is_still_waited_for_a_moment() {
        let open = StepError::Provider(ProviderError::CircuitOpen { retry_in_ms: 1 });
        let decision = decide(Step::Charge, &open, 0, &config(), now(), true);
        assert_eq!(decision, Decision::Wait { until: now() + TimeDelta::milliseconds(50) });
    }

    #[test]
    fn a_call_for_the_charge_retries_every_failure_and_never_parks() {
        for error in counted_failures() {
            for failures in [0, 1, 2, 3, 50] {
                let decision = decide(Step::Charge, &error, failures, &config(), now(), true);
                assert_retry(decision, failures + 1, &format!("charge, {error:?}, {failures} failures"));
                assert!(decision.counts());
            }
        }
    }

    #[test]
    fn every_other_step_retries_with_backoff_then_parks_after_max_failures_in_a_row() {
        for step in STEPS.into_iter().filter(|step| *step != Step::Charge) {
            for error in counted_failures() {
                let context = format!("{step:?}, {error:?}");
                assert_retry(decide(step, &error, 0, &config(), now(), false), 1, &context);
                assert_retry(decide(step, &error, 1, &config(), now(), false), 2, &context);
                assert_eq!(decide(step, &error, 2, &config(), now(), false), Decision::Park, "{context}");
                assert_eq!(decide(step, &error, 9, &config(), now(), false), Decision::Park, "{context}");
                // Only the charge has a deadline to end it: no other step is kept from parking.
                assert_eq!(decide(step, &error, 2, &config(), now(), true), Decision::Park, "{context}");
            }
        }
    }

    #[test]
    fn the_charges_bookkeeping_parks_like_any_step() {
        // Asking the Payment for the charge, and recording that the deadline passed.
        for error in counted_failures() {
            assert_retry(decide(Step::Charge, &error, 0, &config(), now(), false), 1, &format!("{error:?}"));
            assert_eq!(decide(Step::Charge, &error, 2, &config(), now(), false), Decision::Park, "{error:?}");
        }
    }

    #[test]
    fn one_failure_allowed_parks_at_the_first() {
        let config = SagaConfig { max_step_failures: 1, ..SagaConfig::default() };
        assert_eq!(decide(Step::Refund, &StepError::NoPrice, 0, &config, now(), false), Decision::Park);
    }

    #[test]
    fn the_backoff_grows_with_the_failures_in_a_row_up_to_the_longest_delay() {
        let config = SagaConfig { max_step_failures: u32::MAX, ..SagaConfig::default() };
        for failures in [0, 1, 4, 6, 7, 20, 1_000] {
            let decision =
                decide(Step::Release, &StepError::Store(StoreError::Closed), failures, &config, now(), false);
            assert_retry(decision, failures + 1, "release");
        }
        let longest = SagaConfig { retry_max: Duration::from_secs(1), ..config };
        let Decision::RetryAt(at) = decide(Step::Hold, &StepError::NoPrice, 40, &longest, now(), false) else {
            panic!("a retry")
        };
        assert!(at <= now() + TimeDelta::seconds(1));
    }
}
