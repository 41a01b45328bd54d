//! Given these saga events, when the driver asks, then this is the next action.

use std::sync::Arc;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use stay_domain::{Currency, FixedClock, GuestCount, Money, RejectionReason, StayDates, UserId};

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).single().unwrap()
}

/// Services whose clock stands at [`now`].
fn services() -> DomainServices {
    DomainServices::new(Arc::new(FixedClock::at(now())))
}

fn price() -> Money {
    Money::new(36_000, Currency::new("EUR").unwrap()).unwrap()
}

fn started() -> SagaEvent {
    let check_in = NaiveDate::from_ymd_opt(2030, 2, 1).unwrap();
    SagaEvent::SagaStarted {
        reservation_id: uuid::Uuid::nil().into(),
        room_id: uuid::Uuid::max().into(),
        guest_id: UserId::new("guest-1").unwrap(),
        stay: StayDates::new(check_in, check_in + Duration::days(3)).unwrap(),
        guests: GuestCount::new(2).unwrap(),
        card_token: stay_domain::CardToken::new("tok_visa").unwrap(),
    }
}

fn ok(step: Step, outcome: StepOutcome) -> SagaEvent {
    SagaEvent::StepSucceeded { step, outcome, started_at: now() }
}

fn given(events: Vec<SagaEvent>) -> SagaInstance {
    let mut saga = SagaInstance::default();
    for event in events {
        saga.apply(event);
    }
    saga
}

fn charging() -> Vec<SagaEvent> {
    vec![
        started(),
        ok(Step::Hold, StepOutcome::Held { price: price() }),
        SagaEvent::StepRequested { step: Step::Charge },
        SagaEvent::DeadlineSet { deadline: Deadline::Payment, at: now() + Duration::seconds(30) },
    ]
}

#[test]
fn the_happy_path_holds_charges_confirms_and_completes() {
    assert_eq!(given(vec![]).next_action(now(), false), Action::Start);
    assert_eq!(given(vec![started()]).next_action(now(), false), Action::Hold);
    let held = vec![started(), ok(Step::Hold, StepOutcome::Held { price: price() })];
    assert_eq!(given(held).next_action(now(), false), Action::RequestCharge);
    assert_eq!(given(charging()).next_action(now(), false), Action::Charge);
    let mut events = charging();
    events.push(ok(Step::Charge, StepOutcome::ChargeApproved { provider_ref: "ch_1".into() }));
    assert_eq!(given(events.clone()).next_action(now(), false), Action::Confirm);
    events.push(ok(Step::Confirm, StepOutcome::Confirmed));
    assert_eq!(given(events.clone()).next_action(now(), false), Action::Complete(Outcome::Confirmed));
    events.push(SagaEvent::SagaCompleted { outcome: Outcome::Confirmed });
    let saga = given(events);
    assert_eq!(saga.next_action(now(), false), Action::Idle);
    assert_eq!(saga.status(), SagaStatus::Completed);
}

#[test]
fn unavailable_dates_reject_without_undoing_anything() {
    let reason = CompensationReason::Rejected { reason: RejectionReason::DatesUnavailable };
    let mut events = vec![
        started(),
        ok(Step::Hold, StepOutcome::HoldRefused { reason: RejectionReason::DatesUnavailable }),
        SagaEvent::CompensationStarted { reason },
    ];
    assert_eq!(given(events.clone()).next_action(now(), false), Action::Reject(RejectionReason::DatesUnavailable));
    events.push(ok(Step::Reject, StepOutcome::Rejected));
    let outcome = Outcome::Rejected { reason: RejectionReason::DatesUnavailable };
    assert_eq!(given(events.clone()).next_action(now(), false), Action::Complete(outcome.clone()));
    events.push(SagaEvent::SagaCompleted { outcome });
    assert_eq!(given(events).status(), SagaStatus::Compensated);
}

#[test]
fn a_declined_card_releases_the_nights_then_rejects() {
    let mut events = charging();
    events.push(ok(Step::Charge, StepOutcome::ChargeDeclined { reason: "card_declined".into() }));
    let declined = CompensationReason::Rejected { reason: RejectionReason::PaymentDeclined };
    assert_eq!(given(events.clone()).next_action(now(), false), Action::Compensate(declined.clone()));
    events.push(SagaEvent::CompensationStarted { reason: declined });
    assert_eq!(given(events.clone()).next_action(now(), false), Action::Release);
    events.push(ok(Step::Release, StepOutcome::Released));
    assert_eq!(given(events).next_action(now(), false), Action::Reject(RejectionReason::PaymentDeclined));
}

#[test]
fn a_failing_provider_is_retried_until_the_deadline_then_voided_released_rejected() {
    let mut events = charging();
    let retry_at = now() + Duration::seconds(2);
    events.push(SagaEvent::StepFailed {
        step: Step::Charge,
        error: "timeout".into(),
        attempt: 1,
        retry_at: Some(retry_at),
    });
    assert_eq!(given(events.clone()).next_action(now(), false), Action::WaitUntil(retry_at));
    assert_eq!(given(events.clone()).next_action(retry_at, false), Action::Charge);
    let after_deadline = now() + Duration::seconds(31);
    // The last failure left a retry due before the deadline: the provider is asked once more.
    assert_eq!(given(events.clone()).next_action(after_deadline, false), Action::Charge);
    events.push(SagaEvent::StepFailed {
        step: Step::Charge,
        error: "timeout".into(),
        attempt: 2,
        retry_at: Some(after_deadline + Duration::seconds(1)),
    });
    assert_eq!(given(events.clone()).next_action(after_deadline, false), Action::FireDeadline);
    let unavailable = CompensationReason::Rejected { reason: RejectionReason::PaymentUnavailable };
    events.push(SagaEvent::DeadlineFired { deadline: Deadline::Payment });
    events.push(SagaEvent::CompensationStarted { reason: unavailable });
    assert_eq!(given(events.clone()).next_action(after_deadline, false), Action::Void);
    events.push(ok(Step::Void, StepOutcome::Voided { amount: Some(price()) }));
    assert_eq!(given(events.clone()).next_action(after_deadline, false), Action::Release);
    events.push(ok(Step::Release, StepOutcome::Released));
    assert_eq!(given(events).next_action(after_deadline, false), Action::Reject(RejectionReason::PaymentUnavailable));
}

#[test]
fn a_deadline_passed_while_no_process_drove_the_saga_asks_the_provider_once_more_before_firing() {
    // The charge was asked for, then the process died (no attempt recorded) and came back late.
    let events = charging();
    let long_after = now() + Duration::seconds(600);
    assert_eq!(given(events.clone()).next_action(long_after, false), Action::Charge);

    // The provider answers what it answered before the crash.
    let mut approved = events.clone();
    approved.push(ok(Step::Charge, StepOutcome::ChargeApproved { provider_ref: "ch_1".into() }));
    assert_eq!(given(approved).next_action(long_after, false), Action::Confirm);

    // Or it fails again, with its retry after the deadline: now the deadline fires.
    let mut failed = events;
    failed.push(SagaEvent::StepFailed {
        step: Step::Charge,
        error: "timeout".into(),
        attempt: 1,
        retry_at: Some(long_after + Duration::seconds(1)),
    });
    assert_eq!(given(failed).next_action(long_after, false), Action::FireDeadline);
}

#[test]
fn a_failure_whose_retry_falls_past_the_deadline_fires_it_when_it_falls() {
    let mut events = charging();
    let deadline = now() + Duration::seconds(30);
    events.push(SagaEvent::StepFailed {
        step: Step::Charge,
        error: "down".into(),
        attempt: 4,
        retry_at: Some(deadline + Duration::seconds(2)),
    });
    assert_eq!(given(events.clone()).next_action(now(), false), Action::WaitUntil(deadline));
    assert_eq!(given(events).next_action(deadline, false), Action::FireDeadline);
}

#[test]
fn a_wait_for_a_retry_never_outlasts_the_deadline() {
    let mut events = charging();
    let far = now() + Duration::seconds(300);
    events.push(SagaEvent::StepFailed { step: Step::Charge, error: "down".into(), attempt: 1, retry_at: Some(far) });
    assert_eq!(given(events).next_action(now(), false), Action::WaitUntil(now() + Duration::seconds(30)));
}

#[test]
fn cancelling_a_confirmed_reservation_refunds_releases_and_completes_the_cancellation() {
    let mut events = charging();
    events.push(ok(Step::Charge, StepOutcome::ChargeApproved { provider_ref: "ch_1".into() }));
    events.push(ok(Step::Confirm, StepOutcome::Confirmed));
    events.push(SagaEvent::SagaCompleted { outcome: Outcome::Confirmed });
    assert_eq!(given(events.clone()).next_action(now(), true), Action::Compensate(CompensationReason::Cancelled));
    events.push(SagaEvent::CompensationStarted { reason: CompensationReason::Cancelled });
    assert_eq!(given(events.clone()).status(), SagaStatus::Running);
    assert_eq!(given(events.clone()).next_action(now(), true), Action::Refund);
    events.push(ok(Step::Refund, StepOutcome::Refunded { amount: price() }));
    assert_eq!(given(events.clone()).next_action(now(), true), Action::Release);
    events.push(ok(Step::Release, StepOutcome::Released));
    assert_eq!(given(events.clone()).next_action(now(), true), Action::CompleteCancellation);
    events.push(ok(Step::CompleteCancellation, StepOutcome::CancellationCompleted));
    assert_eq!(given(events.clone()).next_action(now(), true), Action::Complete(Outcome::Cancelled));
    events.push(SagaEvent::SagaCompleted { outcome: Outcome::Cancelled });
    let saga = given(events);
    assert_eq!((saga.next_action(now(), true), saga.status()), (Action::Idle, SagaStatus::Compensated));
}

#[test]
fn a_cancellation_before_any_recorded_hold_still_releases_once() {
    // The hold may have committed before a crash kept the saga from recording it.
    let mut events = vec![started(), SagaEvent::CompensationStarted { reason: CompensationReason::Cancelled }];
    assert_eq!(given(events.clone()).next_action(now(), true), Action::Release);
    events.push(ok(Step::Release, StepOutcome::Released));
    assert_eq!(given(events).next_action(now(), true), Action::CompleteCancellation);
}

#[test]
fn cancelling_while_the_charge_is_unanswered_voids_it() {
    let mut events = charging();
    assert_eq!(given(events.clone()).next_action(now(), true), Action::Compensate(CompensationReason::Cancelled));
    events.push(SagaEvent::CompensationStarted { reason: CompensationReason::Cancelled });
    assert_eq!(given(events).next_action(now(), true), Action::Void);
}

#[test]
fn a_parked_saga_waits_for_an_operator_and_a_skip_of_a_forward_step_rejects() {
    let mut events = charging();
    events.push(SagaEvent::SagaParked { step: Step::Charge, error: "protocol".into() });
    let saga = given(events.clone());
    assert_eq!((saga.next_action(now(), false), saga.status()), (Action::Idle, SagaStatus::Parked));
    events.push(SagaEvent::SagaResumed { action: ResumeAction::Skip, by: "ops".into() });
    events.push(ok(Step::Charge, StepOutcome::Skipped { by: "ops".into() }));
    assert_eq!(given(events).next_action(now(), false), Action::Void);
}

#[tokio::test]
async fn recording_on_a_stale_version_is_refused() {
    let mut saga = given(vec![started()]);
    let sink = EventSink::default();
    let stale = SagaCommand::Record { version: 0, events: vec![] };
    assert_eq!(saga.handle(stale, &services(), &sink).await, Err(SagaError::Stale { expected: 0, actual: 1 }));
    let resume = SagaCommand::Resume { action: ResumeAction::Retry, by: "ops".into() };
    assert_eq!(saga.handle(resume, &services(), &sink).await, Err(SagaError::NotParked { status: "running" }));
}

#[tokio::test]
async fn an_operators_skip_is_recorded_at_the_clocks_time() {
    let mut parked = charging();
    parked.push(SagaEvent::SagaParked { step: Step::Charge, error: "protocol".into() });
    let later = now() + Duration::hours(3);

    TestFramework::<SagaInstance>::with(DomainServices::new(Arc::new(FixedClock::at(later))))
        .given(parked)
        .when_async(SagaCommand::Resume { action: ResumeAction::Skip, by: "ops".into() })
        .await
        .then_expect_events(vec![
            SagaEvent::SagaResumed { action: ResumeAction::Skip, by: "ops".into() },
            SagaEvent::StepSucceeded {
                step: Step::Charge,
                outcome: StepOutcome::Skipped { by: "ops".into() },
                started_at: later,
            },
        ]);
}

#[tokio::test]
async fn an_operators_retry_resumes_without_recording_a_step() {
    let mut parked = charging();
    parked.push(SagaEvent::SagaParked { step: Step::Charge, error: "protocol".into() });

    TestFramework::<SagaInstance>::with(services())
        .given(parked)
        .when_async(SagaCommand::Resume { action: ResumeAction::Retry, by: "ops".into() })
        .await
        .then_expect_events(vec![SagaEvent::SagaResumed { action: ResumeAction::Retry, by: "ops".into() }]);
}

#[tokio::test]
async fn only_a_parked_saga_can_be_resumed() {
    TestFramework::<SagaInstance>::with(services())
        .given_no_previous_events()
        .when_async(SagaCommand::Resume { action: ResumeAction::Retry, by: "ops".into() })
        .await
        .then_expect_error(SagaError::NotFound);
}
