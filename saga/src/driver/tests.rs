//! The driver on a real saga: a temporary SQLite store, the aggregates' executors, the simulator
//! as the provider (wrapped as each test needs), and a clock the tests move. Each test requests a
//! reservation as the command API would, drives its saga as the worker would, and checks what the
//! saga recorded, where the reservation and its nights ended, and that money was conserved in
//! Stay's ledger and in the provider's.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{NaiveDate, TimeDelta, TimeZone};
use cqrs_es::Aggregate;
use stay_domain::reservation::ReservationDetails;
use stay_domain::room::EntryState;
use stay_domain::{
    Currency, DomainServices, FixedClock, Money, RejectionReason, ReservationCommand, ReservationId, RoomId, UserId,
};
use stay_store::{EventStore, ExecutorConfig};
use tempfile::TempDir;
use tokio::sync::Notify;

use super::*;
use crate::instance::{Deadline, Outcome, SagaStatus, StepOutcome};
use crate::provider::resilient::{ResilienceConfig, Resilient};
use crate::provider::simulator::{cards, Simulator};
use crate::provider::{
    ChargeOutcome, ChargeRequest, LedgerEntry, LedgerStatus, ProviderError, RefundOutcome, RefundRequest, VoidOutcome,
    VoidRequest,
};
use crate::testing;

/// Three nights at 120.00 EUR.
const PRICE_MINOR: i64 = 36_000;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 15, 12, 0, 0).single().unwrap()
}

fn guest() -> UserId {
    UserId::new("guest-1").unwrap()
}

fn price() -> Money {
    Money::new(PRICE_MINOR, Currency::new("EUR").unwrap()).unwrap()
}

/// A store, the executors, the saga's driver and the provider, on a clock standing at [`start`].
struct World {
    _drives: tokio::sync::MutexGuard<'static, ()>,
    _dir: TempDir,
    store: EventStore,
    executors: Arc<Executors>,
    ledger: PaymentLedger,
    clock: Arc<FixedClock>,
    simulator: Arc<Simulator>,
    driver: Arc<Driver>,
    room_id: RoomId,
}

impl World {
    /// The driver calls the simulator directly.
    async fn new() -> Self {
        Self::with(SagaConfig::default(), |simulator| simulator).await
    }

    /// The driver calls whatever `provider` makes of the simulator.
    async fn with(config: SagaConfig, provider: impl FnOnce(Arc<Simulator>) -> Arc<dyn PaymentProvider>) -> Self {
        let drives = testing::DRIVES.lock().await;
        let (dir, store, db) = testing::fresh_store().await;

        let clock = Arc::new(FixedClock::at(start()));
        let time: Arc<dyn Clock> = clock.clone();
        let executors = Arc::new(Executors::new(&store, time.clone(), ExecutorConfig::default()));
        let services = Arc::new(DomainServices::new(time.clone()));
        let sagas = Arc::new(Executor::<SagaInstance>::new(store.clone(), services, time.clone()));
        let simulator = Arc::new(Simulator::new());
        let schedule = Schedule::new(db.clone());
        let driver = Driver::new(executors.clone(), sagas, provider(simulator.clone()), schedule, time, config);

        let room_id = testing::register_room(&executors).await;
        Self {
            _drives: drives,
            _dir: dir,
            store,
            executors,
            ledger: PaymentLedger::new(db),
            clock,
            simulator,
            driver: Arc::new(driver),
            room_id,
        }
    }

    /// A guest asks for three nights in July, paying with `card`.
    async fn request(&self, card: &str) -> ReservationId {
        let check_in = NaiveDate::from_ymd_opt(2030, 7, 1).unwrap();
        testing::request(&self.executors, self.room_id, check_in, card).await
    }

    /// The guest asks to cancel.
    async fn cancel(&self, id: ReservationId) {
        let command = ReservationCommand::RequestCancellation { actor: guest(), actor_is_admin: false };
        let context = CommandContext::new("guest-1");
        self.executors.reservations.execute(&id.to_string(), command, &context).await.unwrap();
    }

    /// Drives the saga until it has to wait, as the worker would (the lease always renews).
    async fn drive(&self, id: ReservationId) -> Settled {
        self.driver.drive(&id.to_string(), || async { Ok(true) }).await.unwrap()
    }

    /// Drives the saga, losing the lease after `steps` steps (before anything is recorded when
    /// they are fewer than a drive records at once), as a driver that dies there would.
    async fn lose_the_lease_after(&self, id: ReservationId, steps: usize) {
        let renewals = Arc::new(Mutex::new(0));
        let renew = || {
            let renewals = renewals.clone();
            async move {
                let mut renewals = renewals.lock().unwrap();
                *renewals += 1;
                Ok(*renewals <= steps)
            }
        };
        let lost = self.driver.drive(&id.to_string(), renew).await;
        assert!(matches!(lost, Err(DriveError::LeaseLost)), "{lost:?}");
    }

    /// Moves the clock to when the saga asked to be looked at again.
    fn wait_for(&self, settled: &Settled) {
        let due = settled.due.expect("the saga waits for a time");
        assert!(due > self.clock.now(), "the saga waits for a time to come");
        self.clock.set(due);
    }

    async fn saga_events(&self, id: ReservationId) -> Vec<SagaEvent> {
        let recorded = self.store.read_stream(SagaInstance::TYPE, &id.to_string()).await.unwrap();
        recorded.iter().map(|event| event.decode::<SagaInstance>().unwrap()).collect()
    }

    async fn failures(&self, id: ReservationId) -> Vec<(Step, String, u32, Option<DateTime<Utc>>)> {
        let events = self.saga_events(id).await;
        events
            .into_iter()
            .filter_map(|event| match event {
                SagaEvent::StepFailed { step, error, attempt, retry_at } => Some((step, error, attempt, retry_at)),
                _ => None,
            })
            .collect()
    }

    async fn reservation(&self, id: ReservationId) -> ReservationDetails {
        let (reservation, _) = self.executors.reservations.load(&id.to_string()).await.unwrap();
        reservation.details().cloned().unwrap()
    }

    /// Where the room's calendar has the reservation's nights.
    async fn nights(&self, id: ReservationId) -> Option<EntryState> {
        let (room, _) = self.executors.rooms.load(&self.room_id.to_string()).await.unwrap();
        room.calendar().entry(id).map(|entry| entry.state)
    }

    /// What Stay's ledger says it kept: succeeded charges − refunds − voids.
    async fn kept_by_stay(&self, id: ReservationId) -> i64 {
        let rows = self.ledger.payments(Some(&id.to_string()), 0, 100).await.unwrap();
        rows.iter()
            .filter(|row| row.status == "succeeded")
            .map(|row| if row.kind == "charge" { row.amount_minor } else { -row.amount_minor })
            .sum()
    }

    /// What the provider's ledger says it kept.
    async fn kept_by_provider(&self, id: ReservationId) -> i64 {
        let entries = self.simulator.ledger().await.unwrap();
        kept(entries.iter().filter(|entry| entry.reservation_id == id))
    }
}

fn kept<'a>(entries: impl Iterator<Item = &'a LedgerEntry>) -> i64 {
    entries
        .filter(|entry| entry.status == LedgerStatus::Succeeded)
        .map(|entry| match entry.kind {
            crate::provider::LedgerKind::Charge => entry.amount.amount_minor(),
            crate::provider::LedgerKind::Refund | crate::provider::LedgerKind::Void => -entry.amount.amount_minor(),
        })
        .sum()
}

fn ms(millis: i64) -> TimeDelta {
    TimeDelta::milliseconds(millis)
}

#[tokio::test]
async fn a_card_that_is_accepted_confirms_the_reservation_and_keeps_the_price() {
    let world = World::new().await;
    let id = world.request(cards::VISA).await;

    let settled = world.drive(id).await;

    assert_eq!((settled.saga.status(), settled.due), (SagaStatus::Completed, None));
    assert_eq!(world.reservation(id).await.status, ReservationStatus::Confirmed);
    assert_eq!(world.nights(id).await, Some(EntryState::Booked));
    assert_eq!((world.kept_by_stay(id).await, world.kept_by_provider(id).await), (PRICE_MINOR, PRICE_MINOR));
    assert!(world.failures(id).await.is_empty());
}

#[tokio::test]
async fn a_declined_card_rejects_the_reservation_and_releases_the_nights() {
    let world = World::new().await;
    let id = world.request(cards::DECLINED).await;

    let settled = world.drive(id).await;

    let declined = RejectionReason::PaymentDeclined;
    assert_eq!(settled.saga.outcome(), Some(&Outcome::Rejected { reason: declined.clone() }));
    assert_eq!((settled.saga.status(), settled.due), (SagaStatus::Compensated, None));
    let reservation = world.reservation(id).await;
    assert_eq!((reservation.status, reservation.rejection), (ReservationStatus::Rejected, Some(declined)));
    assert_eq!(world.nights(id).await, Some(EntryState::Released));
    assert_eq!((world.kept_by_stay(id).await, world.kept_by_provider(id).await), (0, 0));
    assert!(world.failures(id).await.is_empty(), "a decline is an answer, not a failure");
}

#[tokio::test]
async fn a_provider_error_is_retried_after_a_backoff_until_the_charge_is_approved() {
    let world = World::new().await;
    // The simulator fails the first two attempts of a tok_error payment, then approves.
    let id = world.request(cards::ERROR).await;

    let first = world.drive(id).await;
    assert_eq!((first.saga.status(), first.step, first.saga.failures()), (SagaStatus::Running, Step::Charge, 1));
    world.wait_for(&first);
    let second = world.drive(id).await;
    assert_eq!(second.saga.failures(), 2);
    world.wait_for(&second);
    let third = world.drive(id).await;

    assert_eq!((third.saga.status(), third.due), (SagaStatus::Completed, None));
    assert_eq!(world.reservation(id).await.status, ReservationStatus::Confirmed);
    assert_eq!(world.kept_by_stay(id).await, PRICE_MINOR);
    let failures = world.failures(id).await;
    assert_eq!(failures.len(), 2, "{failures:?}");
    let first_retry = start() + ms(200)..=start() + ms(400);
    let (step, error, attempt, retry_at) = &failures[0];
    assert_eq!((*step, *attempt), (Step::Charge, 1));
    assert!(error.starts_with("the payment provider is unavailable: simulated provider error"), "{error}");
    assert!(retry_at.is_some_and(|at| first_retry.contains(&at)), "{retry_at:?}");
    let retried_at = retry_at.unwrap();
    let (_, _, attempt, retry_at) = &failures[1];
    assert_eq!(*attempt, 2);
    assert!(retry_at.is_some_and(|at| at >= retried_at + ms(400) && at <= retried_at + ms(800)), "{retry_at:?}");
}

#[tokio::test]
async fn a_provider_unreachable_past_the_payment_deadline_rejects_and_voids_the_charge() {
    // tok_timeout: the money is taken but the answer never comes; one short attempt per call.
    let config = ResilienceConfig {
        call_timeout: Duration::from_millis(50),
        max_attempts: 1,
        failure_threshold: 100,
        ..ResilienceConfig::default()
    };
    let world = World::with(SagaConfig::default(), |simulator| Arc::new(Resilient::new(simulator, config))).await;
    let id = world.request(cards::TIMEOUT).await;

    let waiting = world.drive(id).await;
    assert_eq!((waiting.saga.status(), waiting.step), (SagaStatus::Running, Step::Charge));
    let deadline = waiting.saga.payment_deadline().unwrap();
    assert_eq!(deadline, start() + TimeDelta::seconds(60));
    let failures = world.failures(id).await;
    assert_eq!(failures[0].1, ProviderError::Timeout.to_string());
    assert_eq!(world.kept_by_provider(id).await, PRICE_MINOR, "the charge went through unanswered");

    world.clock.set(deadline + TimeDelta::seconds(1));
    let settled = world.drive(id).await;

    let unavailable = RejectionReason::PaymentUnavailable;
    assert_eq!(settled.saga.outcome(), Some(&Outcome::Rejected { reason: unavailable.clone() }));
    let reservation = world.reservation(id).await;
    assert_eq!((reservation.status, reservation.rejection), (ReservationStatus::Rejected, Some(unavailable)));
    assert_eq!(world.nights(id).await, Some(EntryState::Released));
    let events = world.saga_events(id).await;
    assert!(events.contains(&SagaEvent::DeadlineFired { deadline: Deadline::Payment }), "{events:?}");
    let voided = StepOutcome::Voided { amount: Some(price()) };
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SagaEvent::StepSucceeded { step: Step::Void, outcome, .. } if *outcome == voided)),
        "{events:?}"
    );
    assert_eq!((world.kept_by_stay(id).await, world.kept_by_provider(id).await), (0, 0));
}

/// A provider whose charges stop at a gate until the test opens it.
#[derive(Debug)]
struct Gated {
    inner: Arc<Simulator>,
    reached: Arc<Notify>,
    open: Arc<Notify>,
}

#[async_trait]
impl PaymentProvider for Gated {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderError> {
        self.reached.notify_one();
        self.open.notified().await;
        self.inner.charge(request).await
    }
    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProviderError> {
        self.inner.refund(request).await
    }
    async fn void(&self, request: &VoidRequest) -> Result<VoidOutcome, ProviderError> {
        self.inner.void(request).await
    }
    async fn ledger(&self) -> Result<Vec<LedgerEntry>, ProviderError> {
        self.inner.ledger().await
    }
}

#[tokio::test]
async fn a_cancellation_while_the_charge_is_in_flight_refunds_it_and_ends_cancelled() {
    let (reached, open) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let gate = (reached.clone(), open.clone());
    let world = World::with(SagaConfig::default(), move |simulator| {
        Arc::new(Gated { inner: simulator, reached: gate.0, open: gate.1 })
    })
    .await;
    let id = world.request(cards::VISA).await;
    let driver = world.driver.clone();
    let drive = tokio::spawn(async move { driver.drive(&id.to_string(), || async { Ok(true) }).await });

    reached.notified().await;
    world.cancel(id).await;
    open.notify_one();
    let settled = drive.await.unwrap().unwrap();

    assert_eq!(settled.saga.outcome(), Some(&Outcome::Cancelled));
    assert_eq!((settled.saga.status(), settled.due), (SagaStatus::Compensated, None));
    assert_eq!(world.reservation(id).await.status, ReservationStatus::Cancelled);
    assert_eq!(world.nights(id).await, Some(EntryState::Released));
    let refunded = StepOutcome::Refunded { amount: price() };
    let events = world.saga_events(id).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SagaEvent::StepSucceeded { step: Step::Refund, outcome, .. } if *outcome == refunded)),
        "the approved charge is given back: {events:?}"
    );
    assert_eq!((world.kept_by_stay(id).await, world.kept_by_provider(id).await), (0, 0));
}

#[tokio::test]
async fn a_cancellation_while_the_charge_waits_for_its_retry_voids_it_and_ends_cancelled() {
    let world = World::new().await;
    let id = world.request(cards::ERROR).await;
    let waiting = world.drive(id).await;
    assert_eq!((waiting.step, waiting.saga.failures()), (Step::Charge, 1));

    world.cancel(id).await;
    let settled = world.drive(id).await;

    assert_eq!(settled.saga.outcome(), Some(&Outcome::Cancelled));
    assert_eq!(world.reservation(id).await.status, ReservationStatus::Cancelled);
    assert_eq!(world.nights(id).await, Some(EntryState::Released));
    let events = world.saga_events(id).await;
    let nothing = StepOutcome::Voided { amount: None };
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SagaEvent::StepSucceeded { step: Step::Void, outcome, .. } if *outcome == nothing)),
        "no charge had gone through: {events:?}"
    );
    assert_eq!((world.kept_by_stay(id).await, world.kept_by_provider(id).await), (0, 0));
}

/// A provider that can be switched off: every call then fails without an answer.
#[derive(Debug)]
struct Switch {
    inner: Arc<Simulator>,
    down: Arc<AtomicBool>,
}

impl Switch {
    fn check(&self) -> Result<(), ProviderError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ProviderError::Unavailable("switched off".to_owned()));
        }
        Ok(())
    }
}

#[async_trait]
impl PaymentProvider for Switch {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderError> {
        self.check()?;
        self.inner.charge(request).await
    }
    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProviderError> {
        self.check()?;
        self.inner.refund(request).await
    }
    async fn void(&self, request: &VoidRequest) -> Result<VoidOutcome, ProviderError> {
        self.check()?;
        self.inner.void(request).await
    }
    async fn ledger(&self) -> Result<Vec<LedgerEntry>, ProviderError> {
        self.inner.ledger().await
    }
}

#[tokio::test]
async fn a_refund_that_keeps_failing_parks_the_saga_with_its_error() {
    let down = Arc::new(AtomicBool::new(false));
    let switch = down.clone();
    let config = SagaConfig { max_step_failures: 3, ..SagaConfig::default() };
    let world = World::with(config, move |simulator| Arc::new(Switch { inner: simulator, down: switch })).await;
    let id = world.request(cards::VISA).await;
    assert_eq!(world.drive(id).await.saga.status(), SagaStatus::Completed);

    down.store(true, Ordering::SeqCst);
    world.cancel(id).await;
    let mut settled = world.drive(id).await;
    for _ in 0..2 {
        world.wait_for(&settled);
        settled = world.drive(id).await;
    }

    assert_eq!((settled.saga.status(), settled.step, settled.due), (SagaStatus::Parked, Step::Refund, None));
    let attempts: Vec<u32> = world.failures(id).await.iter().map(|(_, _, attempt, _)| *attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    let error = ProviderError::Unavailable("switched off".to_owned()).to_string();
    assert!(world.saga_events(id).await.contains(&SagaEvent::SagaParked { step: Step::Refund, error }));
    assert_eq!(world.reservation(id).await.status, ReservationStatus::Cancelling, "waiting for an operator");
}

#[tokio::test]
async fn an_open_circuit_is_waited_for_without_counting_a_failure() {
    let down = Arc::new(AtomicBool::new(true));
    let switch = down.clone();
    let config = ResilienceConfig {
        max_attempts: 1,
        failure_threshold: 1,
        cool_down: Duration::from_secs(600),
        ..ResilienceConfig::default()
    };
    let world = World::with(SagaConfig::default(), move |simulator| {
        Arc::new(Resilient::new(Switch { inner: simulator, down: switch }, config))
    })
    .await;
    let id = world.request(cards::VISA).await;

    // The first failure opens the circuit; the retry finds it open and waits for it.
    let failed = world.drive(id).await;
    world.wait_for(&failed);
    let waiting = world.drive(id).await;

    let failures = world.failures(id).await;
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!((failures[0].2, failures[1].2), (1, 1), "the wait is not counted");
    assert!(failures[1].1.starts_with("the payment provider is failing; calls resume in"), "{}", failures[1].1);
    let until = failures[1].3.unwrap();
    assert!(until > world.clock.now() + TimeDelta::seconds(590), "until the breaker lets a call through: {until}");
    assert_eq!(waiting.due, Some(waiting.saga.payment_deadline().unwrap()), "the deadline comes first");
    assert_eq!(waiting.saga.status(), SagaStatus::Running);
}

/// The fields of every span opened while it is the default subscriber, by span.
#[derive(Debug, Default)]
struct Spans {
    spans: Mutex<Vec<BTreeMap<&'static str, String>>>,
}

impl Spans {
    fn named(&self, name: &str) -> Vec<BTreeMap<&'static str, String>> {
        let spans = self.spans.lock().unwrap();
        spans.iter().filter(|fields| fields.get("name").is_some_and(|n| n == name)).cloned().collect()
    }
}

/// Writes the fields it visits into a span's map.
struct Fields<'a>(&'a mut BTreeMap<&'static str, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = BTreeMap::from([("name", span.metadata().name().to_owned())]);
        span.record(&mut Fields(&mut fields));
        let mut spans = self.spans.lock().unwrap();
        spans.push(fields);
        tracing::span::Id::from_u64(u64::try_from(spans.len()).unwrap())
    }
    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut spans = self.spans.lock().unwrap();
        let index = usize::try_from(span.into_u64()).unwrap() - 1;
        values.record(&mut Fields(&mut spans[index]));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn each_step_runs_in_a_span_and_a_confirmed_saga_is_recorded_in_two_commits() {
    let world = World::new().await;
    let id = world.request(cards::VISA).await;
    let spans = Arc::new(Spans::default());

    let settled = {
        let _default = tracing::subscriber::set_default(spans.clone());
        // Another test thread may have cached these call sites as unwanted before this subscriber existed.
        tracing::callsite::rebuild_interest_cache();
        world.drive(id).await
    };

    assert_eq!(settled.saga.status(), SagaStatus::Completed);
    let steps = spans.named("saga_step");
    let actions: Vec<&str> = steps.iter().map(|span| span["action"].as_str()).collect();
    assert_eq!(actions, ["start", "hold", "request_charge", "charge", "confirm", "complete"]);
    for span in &steps {
        assert_eq!((span["saga_id"].as_str(), span["correlation_id"].as_str()), (&*id.to_string(), &*id.to_string()));
    }
    // Each step is decided on the saga with the events of the steps before it, recorded or not.
    let versions: Vec<&str> = steps.iter().map(|span| span["version"].as_str()).collect();
    assert_eq!(versions, ["0", "1", "2", "4", "5", "6"]);

    // Two commits: everything up to the charge's request and deadline, before the provider is
    // called; then the charge's answer, the confirmation and the end.
    let recorded = world.store.read_stream(SagaInstance::TYPE, &id.to_string()).await.unwrap();
    let records = spans.named("saga_record");
    let shape: Vec<(&str, &str)> =
        records.iter().map(|span| (span["version"].as_str(), span["events"].as_str())).collect();
    assert_eq!(shape, [("0", "4"), ("4", "3")]);
    let positions: Vec<String> = records.iter().map(|span| span["position"].clone()).collect();
    let last_of_each = [recorded[3].position.to_string(), recorded[6].position.to_string()];
    assert_eq!(positions, last_of_each);
    assert_eq!(recorded.len(), 7);
    // The same two records as the store has them: the events of one record share its command id.
    let commands: Vec<String> = recorded.iter().map(|event| event.metadata["command_id"].to_string()).collect();
    let first = format!("\"saga:{id}:0\"");
    let second = format!("\"saga:{id}:4\"");
    assert_eq!(commands, [&*first, &first, &first, &first, &second, &second, &second]);
    assert!(matches!(recorded[3].event_type.as_str(), "DeadlineSet"), "{:?}", recorded[3].event_type);
}

#[tokio::test]
async fn steps_whose_record_was_lost_are_done_again_with_the_same_outcome() {
    // The lease is lost before the third step (after the start and the hold, none recorded) and
    // before the fifth (after the charge was approved, recorded only as requested).
    for steps_done in [2, 4] {
        let world = World::new().await;
        let id = world.request(cards::VISA).await;
        world.lose_the_lease_after(id, steps_done).await;

        let settled = world.drive(id).await;

        assert_eq!(settled.saga.status(), SagaStatus::Completed, "after {steps_done} steps");
        assert_eq!(world.reservation(id).await.status, ReservationStatus::Confirmed);
        assert_eq!(world.nights(id).await, Some(EntryState::Booked));
        assert_eq!(settled.saga.price(), Some(price()), "the repeated hold found the price it held");
        let charges = world.simulator.ledger().await.unwrap();
        let charges = charges.iter().filter(|e| e.reservation_id == id && e.status == LedgerStatus::Succeeded).count();
        assert_eq!(charges, 1, "the card was charged once");
        assert_eq!((world.kept_by_stay(id).await, world.kept_by_provider(id).await), (PRICE_MINOR, PRICE_MINOR));
        let events = world.saga_events(id).await;
        let started = events.iter().filter(|e| matches!(e, SagaEvent::SagaStarted { .. })).count();
        assert_eq!((started, events.len()), (1, 7), "each step is on record once: {events:?}");
    }
}

#[tokio::test]
async fn a_charge_approved_before_a_crash_is_confirmed_when_the_saga_resumes_past_its_deadline() {
    let world = World::new().await;
    let id = world.request(cards::VISA).await;
    // Start, hold, request the charge, charge (approved): then the process dies before recording.
    world.lose_the_lease_after(id, 4).await;

    // The outage outlasts the payment deadline.
    world.clock.set(start() + TimeDelta::minutes(10));
    let settled = world.drive(id).await;

    assert_eq!(settled.saga.status(), SagaStatus::Completed);
    assert_eq!(world.reservation(id).await.status, ReservationStatus::Confirmed);
    assert_eq!((world.kept_by_stay(id).await, world.kept_by_provider(id).await), (PRICE_MINOR, PRICE_MINOR));
    let events = world.saga_events(id).await;
    assert!(!events.iter().any(|e| matches!(e, SagaEvent::DeadlineFired { .. })), "{events:?}");
}

#[tokio::test]
async fn each_record_names_the_event_it_follows_from_as_its_cause() {
    let world = World::new().await;
    let id = world.request(cards::VISA).await;
    world.drive(id).await;
    world.cancel(id).await;
    world.drive(id).await;

    let saga = world.store.read_stream(SagaInstance::TYPE, &id.to_string()).await.unwrap();
    let causes: Vec<(u64, String)> =
        saga.iter().map(|e| (e.sequence, e.metadata_field("causation_id").unwrap_or("").to_owned())).collect();
    // The first record follows from the request; the first after the cancellation from that.
    assert_eq!(causes[0], (1, format!("Reservation:{id}@1")), "{causes:?}");
    let reservation = world.store.read_stream("Reservation", &id.to_string()).await.unwrap();
    let cancel_requested = reservation.iter().find(|e| e.event_type == "CancellationRequested").unwrap();
    let from_cancel = format!("Reservation:{id}@{}", cancel_requested.sequence);
    assert!(causes.iter().any(|(_, cause)| *cause == from_cancel), "{causes:?}");
    // Every other record follows from the saga's own last event before it: the version the
    // record was decided on, which its command id carries.
    for event in &saga {
        let command = event.metadata_field("command_id").unwrap_or("");
        let version = command.rsplit(':').next().unwrap_or("");
        let cause = event.metadata_field("causation_id").unwrap_or("");
        if cause != from_cancel && version != "0" {
            assert_eq!(cause, format!("ReservationSaga:{id}@{version}"), "{causes:?}");
        }
    }
}
