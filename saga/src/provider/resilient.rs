//! Resilience around any payment provider: a timeout per call, retries with jittered exponential
//! backoff (Stay's one retry schedule, [`stay_store::Backoff`]), and a circuit breaker
//! ([`super::breaker`]).
//!
//! Only failures to get an answer ([`ProviderError::Timeout`], [`ProviderError::Unavailable`]) are
//! retried and counted by the breaker; a decline, a refused refund or a protocol error is an
//! answer, and asking again would only get it again. Retrying is safe because every call carries
//! its idempotency key. While the breaker is open calls fail at once with
//! [`ProviderError::CircuitOpen`], so the saga waits and new reservations get a fast, honest
//! answer instead of piling up behind a dead provider.
//!
//! Metrics: `stay_provider_calls_total{op,result}` (one per attempt, and one per call refused by
//! the open circuit), `stay_provider_call_duration_seconds{op}` (per attempt) and
//! `stay_provider_circuit_open` (1 while the circuit is open or half-open, 0 once closed).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stay_store::Backoff;
use tokio::time::Instant;

use super::breaker::Circuit;
pub use super::breaker::{CircuitHandle, CircuitState};
use super::{
    ChargeOutcome, ChargeRequest, LedgerEntry, PaymentProvider, ProviderError, RefundOutcome, RefundRequest,
    VoidOutcome, VoidRequest,
};

/// How hard [`Resilient`] tries, and when it stops trying for a while.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResilienceConfig {
    /// How long one attempt may take before it counts as a [`ProviderError::Timeout`]. Longer than
    /// a slow-but-healthy provider (`tok_slow` takes 2 s).
    pub call_timeout: Duration,
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait before the second attempt is up to this (and at least half of it); it doubles per
    /// attempt.
    pub backoff_base: Duration,
    /// The wait never exceeds this.
    pub backoff_max: Duration,
    /// Consecutive failed attempts that open the circuit (at least 1).
    pub failure_threshold: u32,
    /// How long the circuit stays open before a trial call is let through.
    pub cool_down: Duration,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(5),
            max_attempts: 3,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            failure_threshold: 5,
            cool_down: Duration::from_secs(5),
        }
    }
}

impl ResilienceConfig {
    /// The waits between the attempts of one call: one fewer than the attempts.
    pub fn retries(&self) -> Backoff {
        let waits = self.max_attempts.max(1) - 1;
        Backoff::new(self.backoff_base, self.backoff_max).times(usize::try_from(waits).unwrap_or(usize::MAX))
    }
}

/// A payment provider with a timeout, retries and a circuit breaker around it.
#[derive(Debug)]
pub struct Resilient<P> {
    inner: P,
    config: ResilienceConfig,
    circuit: Circuit,
}

impl<P: PaymentProvider> Resilient<P> {
    /// Wraps `inner`. Zero attempts or a zero threshold are read as 1.
    pub fn new(inner: P, config: ResilienceConfig) -> Self {
        let circuit = Circuit::new(config.failure_threshold, config.cool_down);
        Self { inner, config, circuit }
    }

    /// The provider wrapped.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The configuration in force.
    pub fn config(&self) -> &ResilienceConfig {
        &self.config
    }

    /// The circuit's state now.
    pub fn circuit(&self) -> CircuitState {
        self.circuit.state()
    }

    /// A view of the circuit that can be handed to other components.
    pub fn circuit_handle(&self) -> CircuitHandle {
        self.circuit.handle()
    }

    /// Runs `attempt` under the timeout, retry and breaker rules.
    async fn call<T, F, Fut>(&self, op: &'static str, mut attempt: F) -> Result<T, ProviderError>
    where
        T: Labelled,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut waits = self.config.retries().waits();
        let mut number = 1;
        let mut last_failure = None;
        loop {
            let admission = match self.circuit.admit(self.config.call_timeout) {
                Ok(admission) => admission,
                Err(refusal) => {
                    count(op, error_label(&refusal));
                    // Opened by another call between our attempts: our own failure says more (a
                    // timeout may have moved money) than the refusal does.
                    return Err(last_failure.unwrap_or(refusal));
                }
            };
            let started = Instant::now();
            let result =
                tokio::time::timeout(self.config.call_timeout, attempt()).await.unwrap_or(Err(ProviderError::Timeout));
            metrics::histogram!("stay_provider_call_duration_seconds", "op" => op)
                .record(started.elapsed().as_secs_f64());
            count(op, result.as_ref().map_or_else(error_label, Labelled::label));

            let retryable = matches!(result, Err(ProviderError::Timeout | ProviderError::Unavailable(_)));
            // Any answer, even a decline or a refusal, shows the provider is alive.
            let opened = admission.report(!retryable);
            // When the breaker has just opened, stop here rather than back off into a refusal, and
            // report the real failure (a timeout may have moved money).
            let wait = if retryable && !opened { waits.next_wait() } else { None };
            match (result, wait) {
                (Err(err), Some(wait)) => {
                    tracing::debug!(op, attempt = number, error = %err, "payment provider call failed; retrying");
                    tokio::time::sleep(wait).await;
                    number += 1;
                    last_failure = Some(err);
                }
                // An answer, or the attempts are spent.
                (result, _) => return result,
            }
        }
    }
}

#[async_trait]
impl<P: PaymentProvider> PaymentProvider for Resilient<P> {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderError> {
        self.call("charge", || self.inner.charge(request)).await
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProviderError> {
        self.call("refund", || self.inner.refund(request)).await
    }

    async fn void(&self, request: &VoidRequest) -> Result<VoidOutcome, ProviderError> {
        self.call("void", || self.inner.void(request)).await
    }

    async fn ledger(&self) -> Result<Vec<LedgerEntry>, ProviderError> {
        self.call("ledger", || self.inner.ledger()).await
    }
}

/// A shared provider is a provider, so one simulator (or an `Arc<dyn PaymentProvider>` chosen at
/// start-up) can sit inside [`Resilient`] and still be reached directly.
#[async_trait]
impl<T: PaymentProvider + ?Sized> PaymentProvider for Arc<T> {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderError> {
        (**self).charge(request).await
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProviderError> {
        (**self).refund(request).await
    }

    async fn void(&self, request: &VoidRequest) -> Result<VoidOutcome, ProviderError> {
        (**self).void(request).await
    }

    async fn ledger(&self) -> Result<Vec<LedgerEntry>, ProviderError> {
        (**self).ledger().await
    }
}

fn count(op: &'static str, result: &'static str) {
    metrics::counter!("stay_provider_calls_total", "op" => op, "result" => result).increment(1);
}

/// The `result` label of a call's outcome.
trait Labelled {
    fn label(&self) -> &'static str;
}

impl Labelled for ChargeOutcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Approved { .. } => "approved",
            Self::Declined { .. } => "declined",
        }
    }
}

impl Labelled for RefundOutcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Refunded { .. } => "refunded",
            Self::Refused { .. } => "refused",
        }
    }
}

impl Labelled for VoidOutcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Voided { .. } => "voided",
            Self::NothingToVoid => "nothing_to_void",
        }
    }
}

impl Labelled for Vec<LedgerEntry> {
    fn label(&self) -> &'static str {
        "ok"
    }
}

/// The `result` label of a call that got no answer.
fn error_label(err: &ProviderError) -> &'static str {
    match err {
        ProviderError::Timeout => "timeout",
        ProviderError::Unavailable(_) => "unavailable",
        ProviderError::CircuitOpen { .. } => "circuit_open",
        ProviderError::Protocol(_) => "protocol",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Mutex;

    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
    use stay_domain::{Currency, Money, PaymentId, ReservationId};
    use uuid::Uuid;

    use super::*;
    use crate::provider::simulator::{cards, Simulator};

    /// Counts the calls that reach the provider inside.
    #[derive(Debug)]
    struct Counting<P> {
        inner: P,
        calls: AtomicU32,
    }

    #[async_trait]
    impl<P: PaymentProvider> PaymentProvider for Counting<P> {
        async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner.charge(request).await
        }
        async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner.refund(request).await
        }
        async fn void(&self, request: &VoidRequest) -> Result<VoidOutcome, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner.void(request).await
        }
        async fn ledger(&self) -> Result<Vec<LedgerEntry>, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner.ledger().await
        }
    }

    /// A provider that is down or up at the test's say.
    #[derive(Debug, Default)]
    struct Switch {
        down: AtomicBool,
    }

    #[async_trait]
    impl PaymentProvider for Switch {
        async fn charge(&self, _: &ChargeRequest) -> Result<ChargeOutcome, ProviderError> {
            if self.down.load(Ordering::SeqCst) {
                Err(ProviderError::Unavailable("down".to_owned()))
            } else {
                Ok(ChargeOutcome::Approved { provider_ref: "ok".to_owned() })
            }
        }
        async fn refund(&self, _: &RefundRequest) -> Result<RefundOutcome, ProviderError> {
            Err(ProviderError::Protocol("not used".to_owned()))
        }
        async fn void(&self, _: &VoidRequest) -> Result<VoidOutcome, ProviderError> {
            Err(ProviderError::Protocol("not used".to_owned()))
        }
        async fn ledger(&self) -> Result<Vec<LedgerEntry>, ProviderError> {
            Ok(Vec::new())
        }
    }

    fn counting<P>(inner: P) -> Resilient<Counting<P>>
    where
        P: PaymentProvider,
    {
        Resilient::new(Counting { inner, calls: AtomicU32::new(0) }, ResilienceConfig::default())
    }

    fn calls<P>(provider: &Resilient<Counting<P>>) -> u32
    where
        P: PaymentProvider,
    {
        provider.inner().calls.load(Ordering::SeqCst)
    }

    fn charge_with(card: &str) -> ChargeRequest {
        let reservation_id = ReservationId::from_uuid(Uuid::new_v4());
        ChargeRequest {
            payment_id: PaymentId::for_reservation(reservation_id),
            reservation_id,
            amount: Money::new(12_000, Currency::USD).unwrap(),
            card_token: card.to_owned(),
        }
    }

    fn down() -> Switch {
        Switch { down: AtomicBool::new(true) }
    }

    #[tokio::test]
    async fn a_provider_that_heals_is_retried_until_it_approves() {
        tokio::time::pause();
        let provider = counting(Simulator::new());

        let outcome = provider.charge(&charge_with(cards::ERROR)).await.unwrap();

        assert!(matches!(outcome, ChargeOutcome::Approved { .. }));
        assert_eq!(calls(&provider), 3);
        assert_eq!(provider.circuit(), CircuitState::Closed);
    }

    #[tokio::test]
    async fn declines_and_refusals_are_answers_and_are_not_retried() {
        tokio::time::pause();
        let provider = counting(Simulator::new());

        let outcome = provider.charge(&charge_with(cards::DECLINED)).await.unwrap();
        assert_eq!(outcome, ChargeOutcome::Declined { reason: "card_declined".to_owned() });
        assert_eq!(calls(&provider), 1);

        let protocol = counting(Switch::default());
        let refund = RefundRequest {
            refund_id: stay_domain::RefundId::from_uuid(Uuid::new_v4()),
            payment_id: PaymentId::from_uuid(Uuid::new_v4()),
            reservation_id: ReservationId::from_uuid(Uuid::new_v4()),
            amount: Money::new(1, Currency::USD).unwrap(),
        };
        assert!(matches!(protocol.refund(&refund).await, Err(ProviderError::Protocol(_))));
        assert_eq!(calls(&protocol), 1);
    }

    #[tokio::test]
    async fn a_call_that_never_answers_times_out_after_the_call_timeout_per_attempt() {
        tokio::time::pause();
        let provider = counting(Simulator::new());
        let started = Instant::now();

        let err = provider.charge(&charge_with(cards::TIMEOUT)).await.unwrap_err();

        assert_eq!(err, ProviderError::Timeout);
        assert_eq!(calls(&provider), 3);
        let config = ResilienceConfig::default();
        let least = config.call_timeout * 3;
        assert!(started.elapsed() >= least && started.elapsed() <= least + config.backoff_max * 2);
    }

    #[tokio::test]
    async fn a_slow_provider_is_waited_for_not_retried() {
        tokio::time::pause();
        let provider = counting(Simulator::new());

        assert!(matches!(provider.charge(&charge_with(cards::SLOW)).await, Ok(ChargeOutcome::Approved { .. })));
        assert_eq!(calls(&provider), 1);
    }

    #[tokio::test]
    async fn the_circuit_opens_after_k_consecutive_failures_and_then_fails_fast() {
        tokio::time::pause();
        let provider = counting(down());

        // 3 attempts, then 2 more: the fifth consecutive failure opens the circuit mid-call.
        assert!(matches!(provider.charge(&charge_with(cards::VISA)).await, Err(ProviderError::Unavailable(_))));
        assert_eq!(provider.circuit(), CircuitState::Closed);
        assert!(matches!(provider.charge(&charge_with(cards::VISA)).await, Err(ProviderError::Unavailable(_))));
        assert_eq!(calls(&provider), 5);
        assert!(matches!(provider.circuit(), CircuitState::Open { retry_in } if retry_in == Duration::from_secs(5)));

        let started = Instant::now();
        let err = provider.charge(&charge_with(cards::VISA)).await.unwrap_err();

        assert_eq!(err, ProviderError::CircuitOpen { retry_in_ms: 5_000 });
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(calls(&provider), 5, "no call reached the provider");
        assert_eq!(provider.circuit_handle().state(), provider.circuit());
    }

    #[tokio::test]
    async fn after_the_cool_down_one_trial_call_closes_the_circuit_when_it_succeeds() {
        tokio::time::pause();
        let provider = counting(down());
        for _ in 0..2 {
            let _ = provider.charge(&charge_with(cards::VISA)).await;
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(provider.circuit(), CircuitState::HalfOpen);
        provider.inner().inner.down.store(false, Ordering::SeqCst);

        assert!(provider.charge(&charge_with(cards::VISA)).await.is_ok());

        assert_eq!(provider.circuit(), CircuitState::Closed);
        assert_eq!(calls(&provider), 6);
    }

    #[tokio::test]
    async fn a_failed_trial_call_opens_the_circuit_again_without_retrying() {
        tokio::time::pause();
        let provider = counting(down());
        for _ in 0..2 {
            let _ = provider.charge(&charge_with(cards::VISA)).await;
        }
        tokio::time::advance(Duration::from_secs(5)).await;

        let err = provider.charge(&charge_with(cards::VISA)).await.unwrap_err();

        assert!(matches!(err, ProviderError::Unavailable(_)));
        assert_eq!(calls(&provider), 6, "one trial, no retries into an open circuit");
        assert!(matches!(provider.circuit(), CircuitState::Open { retry_in } if retry_in == Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn an_abandoned_trial_call_frees_the_half_open_slot() {
        tokio::time::pause();
        let silent = Resilient::new(Simulator::new(), ResilienceConfig { failure_threshold: 1, ..Default::default() });
        let _ = silent.charge(&charge_with(cards::TIMEOUT)).await;
        tokio::time::advance(Duration::from_secs(5)).await;

        let abandoned =
            tokio::time::timeout(Duration::from_millis(10), silent.charge(&charge_with(cards::TIMEOUT))).await;
        assert!(abandoned.is_err());

        assert_eq!(silent.circuit(), CircuitState::HalfOpen);
        assert!(silent.charge(&charge_with(cards::VISA)).await.is_ok());
        assert_eq!(silent.circuit(), CircuitState::Closed);
    }

    #[tokio::test]
    async fn attempts_are_spaced_by_the_backoff_and_stop_after_max_attempts() {
        tokio::time::pause();
        // A high threshold keeps the circuit out of it: only the retry schedule decides.
        for (max_attempts, waited_ms) in [(1, 0..=0), (3, 75..=155), (5, 375..=755)] {
            let config = ResilienceConfig { max_attempts, failure_threshold: 100, ..Default::default() };
            let provider = Resilient::new(Counting { inner: down(), calls: AtomicU32::new(0) }, config);
            let started = Instant::now();

            let err = provider.charge(&charge_with(cards::VISA)).await.unwrap_err();

            assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
            assert_eq!(calls(&provider), max_attempts, "every attempt, then it gives up");
            // Each wait is between half its ceiling and the ceiling (50, 100, 200, 400 ms); the timer
            // rounds each up to a whole millisecond.
            let waited = u64::try_from(started.elapsed().as_millis()).unwrap();
            assert!(waited_ms.contains(&waited), "{max_attempts} attempts waited {waited} ms");
        }
    }

    /// Records counter increments by key, for asserting on the metrics emitted.
    #[derive(Debug, Default)]
    struct Counters(Mutex<HashMap<String, Arc<AtomicU32>>>);

    #[derive(Debug)]
    struct Count(Arc<AtomicU32>);

    impl metrics::CounterFn for Count {
        fn increment(&self, value: u64) {
            self.0.fetch_add(u32::try_from(value).unwrap(), Ordering::SeqCst);
        }
        fn absolute(&self, _: u64) {}
    }

    impl Recorder for Counters {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<_> = key.labels().map(|label| format!("{}={}", label.key(), label.value())).collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let count = self.0.lock().unwrap().entry(name).or_default().clone();
            Counter::from_arc(Arc::new(Count(count)))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[tokio::test]
    async fn every_attempt_is_counted_by_operation_and_result() {
        tokio::time::pause();
        let recorder = Counters::default();
        // The test runtime is single-threaded, so a thread-local recorder sees every call.
        let _guard = metrics::set_default_local_recorder(&recorder);
        let provider = counting(Simulator::new());

        provider.charge(&charge_with(cards::ERROR)).await.unwrap();

        let counts = recorder.0.lock().unwrap();
        let count = |key: &str| counts.get(key).map_or(0, |count| count.load(Ordering::SeqCst));
        assert_eq!(count("stay_provider_calls_total{op=charge,result=unavailable}"), 2);
        assert_eq!(count("stay_provider_calls_total{op=charge,result=approved}"), 1);
    }
}
