//! The circuit breaker in front of the payment provider: after enough failed attempts in a row it
//! opens and refuses calls at once for a cool-down, then lets one trial call through, whose answer
//! closes it again and whose failure opens it for another cool-down.
//!
//! [`Resilient`](super::resilient::Resilient) asks it before every attempt and tells it how each
//! attempt went; [`CircuitHandle`] lets others (the command API's fast 503) read its state.
//! Metric: `stay_provider_circuit_open` (1 while open or half-open, 0 once closed).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::ProviderError;

/// Whether calls are going through to the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail at once; a trial call is let through after `retry_in`.
    Open {
        /// Time left before the trial call.
        retry_in: Duration,
    },
    /// The cool-down is over: the next call is a trial; its success closes the circuit, its
    /// failure opens it again.
    HalfOpen,
}

/// A cheap, cloneable view of a [`Resilient`](super::resilient::Resilient)'s circuit, for whoever
/// must answer quickly while the provider is down (the HTTP side) without holding the provider itself.
#[derive(Clone, Debug)]
pub struct CircuitHandle {
    circuit: Circuit,
}

impl CircuitHandle {
    /// The circuit's state now.
    pub fn state(&self) -> CircuitState {
        self.circuit.state()
    }
}

/// One breaker shared by every call through one provider.
#[derive(Clone, Debug)]
pub(crate) struct Circuit {
    breaker: Arc<Mutex<Breaker>>,
}

impl Circuit {
    /// A closed circuit that opens after `failure_threshold` failed attempts in a row (0 is read
    /// as 1) and stays open for `cool_down`.
    pub(crate) fn new(failure_threshold: u32, cool_down: Duration) -> Self {
        let breaker = Breaker {
            failure_threshold: failure_threshold.max(1),
            cool_down,
            state: BreakerState::Closed { failures: 0 },
        };
        metrics::gauge!("stay_provider_circuit_open").set(0.0);
        Self { breaker: Arc::new(Mutex::new(breaker)) }
    }

    /// The circuit's state now.
    pub(crate) fn state(&self) -> CircuitState {
        self.lock().state(Instant::now())
    }

    /// A view of the circuit for other components.
    pub(crate) fn handle(&self) -> CircuitHandle {
        CircuitHandle { circuit: self.clone() }
    }

    /// Lets an attempt through, or refuses it with [`ProviderError::CircuitOpen`]. The attempt
    /// reports how it went with [`Admission::report`]; while the circuit is half-open, an attempt
    /// dropped without reporting frees the trial slot for the next caller.
    pub(crate) fn admit(&self, call_timeout: Duration) -> Result<Admission<'_>, ProviderError> {
        let permit = self.lock().admit(Instant::now(), call_timeout)?;
        Ok(Admission { circuit: self, trial: permit == Permit::Trial })
    }

    fn lock(&self) -> MutexGuard<'_, Breaker> {
        // The breaker's state is valid after any panic (each update is one assignment), so a
        // poisoned lock is still worth using.
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An attempt the circuit let through.
#[derive(Debug)]
pub(crate) struct Admission<'a> {
    circuit: &'a Circuit,
    /// Whether this is the one call of the half-open state and has not reported yet.
    trial: bool,
}

impl Admission<'_> {
    /// Tells the breaker how the attempt went: `answered` is any answer, even a decline or a
    /// refusal (the provider is alive); otherwise the attempt failed to get one. Says whether
    /// this failure opened the circuit.
    pub(crate) fn report(mut self, answered: bool) -> bool {
        self.trial = false;
        let mut breaker = self.circuit.lock();
        if answered {
            breaker.succeeded();
            false
        } else {
            breaker.failed(Instant::now())
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        // The trial call was abandoned (its caller gave up): free the slot, so the circuit cannot
        // stay half-open with a trial that will never report.
        if self.trial {
            let mut breaker = self.circuit.lock();
            if matches!(breaker.state, BreakerState::HalfOpen { .. }) {
                breaker.state = BreakerState::HalfOpen { trial_in_flight: false };
            }
        }
    }
}

#[derive(Debug)]
struct Breaker {
    failure_threshold: u32,
    cool_down: Duration,
    state: BreakerState,
}

#[derive(Clone, Copy, Debug)]
enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

/// What the breaker let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Permit {
    Normal,
    /// The one call of the half-open state.
    Trial,
}

impl Breaker {
    fn state(&self, now: Instant) -> CircuitState {
        match self.state {
            BreakerState::Closed { .. } => CircuitState::Closed,
            BreakerState::Open { until } if now < until => CircuitState::Open { retry_in: until - now },
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Lets a call through, or says how long until one would be.
    fn admit(&mut self, now: Instant, call_timeout: Duration) -> Result<Permit, ProviderError> {
        match self.state {
            BreakerState::Closed { .. } => Ok(Permit::Normal),
            BreakerState::Open { until } if now < until => {
                Err(ProviderError::CircuitOpen { retry_in_ms: ceil_millis(until - now) })
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { trial_in_flight: false } => {
                self.state = BreakerState::HalfOpen { trial_in_flight: true };
                Ok(Permit::Trial)
            }
            // The trial decides within one call timeout.
            BreakerState::HalfOpen { trial_in_flight: true } => {
                Err(ProviderError::CircuitOpen { retry_in_ms: ceil_millis(call_timeout) })
            }
        }
    }

    fn succeeded(&mut self) {
        if !matches!(self.state, BreakerState::Closed { .. }) {
            tracing::info!("payment provider answered again; circuit closed");
            metrics::gauge!("stay_provider_circuit_open").set(0.0);
        }
        self.state = BreakerState::Closed { failures: 0 };
    }

    /// Counts a failed attempt; answers whether it opened the circuit.
    fn failed(&mut self, now: Instant) -> bool {
        let open = match self.state {
            BreakerState::Closed { failures } => {
                let failures = failures.saturating_add(1);
                self.state = BreakerState::Closed { failures };
                failures >= self.failure_threshold
            }
            BreakerState::HalfOpen { .. } => true,
            // Already open (a call admitted before it opened has failed too): keep the cool-down.
            BreakerState::Open { .. } => return true,
        };
        if open {
            tracing::warn!(cool_down = ?self.cool_down, "payment provider failing; circuit open");
            metrics::gauge!("stay_provider_circuit_open").set(1.0);
            self.state = BreakerState::Open { until: now + self.cool_down };
        }
        open
    }
}

fn ceil_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros().div_ceil(1000)).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn breaker(threshold: u32) -> Breaker {
        Breaker {
            failure_threshold: threshold,
            cool_down: Duration::from_secs(5),
            state: BreakerState::Closed { failures: 0 },
        }
    }

    #[test]
    fn it_opens_after_the_threshold_of_failures_in_a_row_and_an_answer_resets_the_count() {
        let now = Instant::now();
        let mut breaker = breaker(3);
        assert!(!breaker.failed(now) && !breaker.failed(now));
        breaker.succeeded();
        assert!(!breaker.failed(now) && !breaker.failed(now));
        assert_eq!(breaker.state(now), CircuitState::Closed);

        assert!(breaker.failed(now), "the third failure in a row opens it");
        assert_eq!(breaker.state(now), CircuitState::Open { retry_in: Duration::from_secs(5) });
        assert_eq!(breaker.admit(now, TIMEOUT), Err(ProviderError::CircuitOpen { retry_in_ms: 5_000 }));
    }

    #[test]
    fn after_the_cool_down_one_trial_goes_through_and_its_answer_closes_the_circuit() {
        let now = Instant::now();
        let mut breaker = breaker(1);
        breaker.failed(now);
        let later = now + Duration::from_secs(5);
        assert_eq!(breaker.state(later), CircuitState::HalfOpen);

        assert_eq!(breaker.admit(later, TIMEOUT), Ok(Permit::Trial));
        assert_eq!(
            breaker.admit(later, TIMEOUT),
            Err(ProviderError::CircuitOpen { retry_in_ms: 5_000 }),
            "one trial at a time"
        );
        breaker.succeeded();
        assert_eq!(breaker.state(later), CircuitState::Closed);
        assert_eq!(breaker.admit(later, TIMEOUT), Ok(Permit::Normal));
    }

    #[test]
    fn a_failed_trial_opens_the_circuit_for_another_cool_down() {
        let now = Instant::now();
        let mut breaker = breaker(1);
        breaker.failed(now);
        let later = now + Duration::from_secs(5);
        assert_eq!(breaker.admit(later, TIMEOUT), Ok(Permit::Trial));

        assert!(breaker.failed(later));

        assert_eq!(breaker.state(later), CircuitState::Open { retry_in: Duration::from_secs(5) });
    }

    #[test]
    fn a_trial_dropped_without_reporting_frees_the_slot() {
        let circuit = Circuit::new(1, Duration::ZERO);
        assert!(circuit.admit(TIMEOUT).expect("closed").report(false), "one failure opens it");
        let trial = circuit.admit(TIMEOUT).expect("the cool-down is over: a trial");
        assert!(circuit.admit(TIMEOUT).is_err(), "the trial is in flight");

        drop(trial);

        let next = circuit.admit(TIMEOUT).expect("the slot is free again");
        assert!(!next.report(true));
        assert_eq!(circuit.state(), CircuitState::Closed);
    }

    #[test]
    fn refusals_round_the_wait_up_to_a_whole_millisecond() {
        assert_eq!(ceil_millis(Duration::from_micros(1)), 1);
        assert_eq!(ceil_millis(Duration::from_micros(1_001)), 2);
        assert_eq!(ceil_millis(Duration::ZERO), 1);
    }
}
