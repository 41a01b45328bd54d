//! Given/when/then tests of every reservation rule (DESIGN.md §5.1).

use cqrs_es::test::TestFramework;

use super::*;
use crate::ids::{PaymentId, UserId};
use crate::test_fixtures::{guest, other_room_id, reservation, room_id, services, stay, today, usd, user};
use crate::values::{CardToken, GuestCount, StayDates};

type ReservationTest = TestFramework<Reservation>;

/// The test reservation starts in ten days.
fn the_stay() -> StayDates {
    stay(10, 3)
}

fn card() -> CardToken {
    CardToken::new("tok_visa").expect("valid token")
}

fn two_guests() -> GuestCount {
    GuestCount::new(2).expect("valid count")
}

fn payment_id() -> PaymentId {
    PaymentId::for_reservation(reservation(1))
}

fn request() -> ReservationCommand {
    ReservationCommand::RequestReservation {
        reservation_id: reservation(1),
        room_id: room_id(),
        guest_id: guest(),
        stay: the_stay(),
        guests: two_guests(),
        card_token: card(),
    }
}

fn requested_at(stay: StayDates) -> ReservationEvent {
    ReservationEvent::ReservationRequested {
        reservation_id: reservation(1),
        room_id: room_id(),
        guest_id: guest(),
        stay,
        guests: two_guests(),
        card_token: card(),
    }
}

fn requested() -> ReservationEvent {
    requested_at(the_stay())
}

fn confirmed() -> ReservationEvent {
    ReservationEvent::ReservationConfirmed {
        reservation_id: reservation(1),
        room_id: room_id(),
        guest_id: guest(),
        stay: the_stay(),
        total_price: usd(30_000),
        payment_id: payment_id(),
    }
}

fn rejected() -> ReservationEvent {
    ReservationEvent::ReservationRejected {
        reservation_id: reservation(1),
        room_id: room_id(),
        guest_id: guest(),
        reason: RejectionReason::DatesUnavailable,
    }
}

fn cancellation_requested(was_confirmed: bool) -> ReservationEvent {
    ReservationEvent::CancellationRequested {
        reservation_id: reservation(1),
        room_id: room_id(),
        guest_id: guest(),
        requested_by: guest(),
        by_admin: false,
        was_confirmed,
    }
}

fn cancelled(was_confirmed: bool) -> ReservationEvent {
    ReservationEvent::ReservationCancelled {
        reservation_id: reservation(1),
        room_id: room_id(),
        guest_id: guest(),
        was_confirmed,
    }
}

fn confirm() -> ReservationCommand {
    ReservationCommand::Confirm { total_price: usd(30_000), payment_id: payment_id() }
}

fn reject() -> ReservationCommand {
    ReservationCommand::Reject { reason: RejectionReason::DatesUnavailable }
}

fn cancel_by(actor: UserId) -> ReservationCommand {
    ReservationCommand::RequestCancellation { actor, actor_is_admin: false }
}

fn wrong_status(status: ReservationStatus) -> ReservationError {
    ReservationError::WrongStatus { status }
}

// --- request -------------------------------------------------------------------------------------

#[tokio::test]
async fn requesting_a_reservation_records_the_request() {
    ReservationTest::with(services())
        .given_no_previous_events()
        .when_async(request())
        .await
        .then_expect_events(vec![requested()]);
}

#[tokio::test]
async fn requesting_the_same_reservation_again_records_nothing() {
    ReservationTest::with(services())
        .given(vec![requested(), confirmed()])
        .when_async(request())
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn requesting_a_different_reservation_under_a_used_id_is_refused() {
    ReservationTest::with(services())
        .given(vec![requested()])
        .when_async(ReservationCommand::RequestReservation {
            reservation_id: reservation(1),
            room_id: other_room_id(),
            guest_id: guest(),
            stay: the_stay(),
            guests: two_guests(),
            card_token: card(),
        })
        .await
        .then_expect_error(ReservationError::AlreadyRequested);
}

#[tokio::test]
async fn every_command_on_an_unknown_reservation_is_reservation_not_found() {
    for command in [confirm(), reject(), cancel_by(guest()), ReservationCommand::CompleteCancellation] {
        ReservationTest::with(services())
            .given_no_previous_events()
            .when_async(command)
            .await
            .then_expect_error(ReservationError::ReservationNotFound);
    }
}

// --- confirm -------------------------------------------------------------------------------------

#[tokio::test]
async fn confirming_a_pending_reservation_records_price_and_payment() {
    ReservationTest::with(services())
        .given(vec![requested()])
        .when_async(confirm())
        .await
        .then_expect_events(vec![confirmed()]);
}

#[tokio::test]
async fn confirming_a_confirmed_reservation_records_nothing() {
    ReservationTest::with(services())
        .given(vec![requested(), confirmed()])
        .when_async(confirm())
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn confirming_a_rejected_cancelling_or_cancelled_reservation_is_refused() {
    let cases = [
        (vec![requested(), rejected()], ReservationStatus::Rejected),
        (vec![requested(), cancellation_requested(false)], ReservationStatus::Cancelling),
        (vec![requested(), cancellation_requested(false), cancelled(false)], ReservationStatus::Cancelled),
    ];
    for (history, status) in cases {
        ReservationTest::with(services())
            .given(history)
            .when_async(confirm())
            .await
            .then_expect_error(wrong_status(status));
    }
}

#[tokio::test]
async fn confirming_with_another_reservations_payment_is_refused() {
    ReservationTest::with(services())
        .given(vec![requested()])
        .when_async(ReservationCommand::Confirm {
            total_price: usd(30_000),
            payment_id: PaymentId::for_reservation(reservation(2)),
        })
        .await
        .then_expect_error(ReservationError::PaymentMismatch {
            expected: payment_id(),
            actual: PaymentId::for_reservation(reservation(2)),
        });
}

// --- reject --------------------------------------------------------------------------------------

#[tokio::test]
async fn rejecting_a_pending_reservation_records_the_reason() {
    let reason = RejectionReason::Other { detail: "the host closed the room for repairs".to_owned() };
    ReservationTest::with(services())
        .given(vec![requested()])
        .when_async(ReservationCommand::Reject { reason: reason.clone() })
        .await
        .then_expect_events(vec![ReservationEvent::ReservationRejected {
            reservation_id: reservation(1),
            room_id: room_id(),
            guest_id: guest(),
            reason,
        }]);
}

#[tokio::test]
async fn rejecting_a_rejected_reservation_records_nothing() {
    ReservationTest::with(services())
        .given(vec![requested(), rejected()])
        .when_async(ReservationCommand::Reject { reason: RejectionReason::PaymentDeclined })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn rejecting_a_confirmed_cancelling_or_cancelled_reservation_is_refused() {
    let cases = [
        (vec![requested(), confirmed()], ReservationStatus::Confirmed),
        (vec![requested(), cancellation_requested(false)], ReservationStatus::Cancelling),
        (vec![requested(), cancellation_requested(false), cancelled(false)], ReservationStatus::Cancelled),
    ];
    for (history, status) in cases {
        ReservationTest::with(services())
            .given(history)
            .when_async(reject())
            .await
            .then_expect_error(wrong_status(status));
    }
}

// --- cancellation --------------------------------------------------------------------------------

#[tokio::test]
async fn the_guest_may_cancel_a_pending_reservation() {
    ReservationTest::with(services())
        .given(vec![requested()])
        .when_async(cancel_by(guest()))
        .await
        .then_expect_events(vec![cancellation_requested(false)]);
}

#[tokio::test]
async fn the_guest_may_cancel_a_confirmed_reservation_and_a_refund_is_flagged_due() {
    ReservationTest::with(services())
        .given(vec![requested(), confirmed()])
        .when_async(cancel_by(guest()))
        .await
        .then_expect_events(vec![cancellation_requested(true)]);
}

#[tokio::test]
async fn an_admin_may_cancel_someone_elses_reservation() {
    ReservationTest::with(services())
        .given(vec![requested(), confirmed()])
        .when_async(ReservationCommand::RequestCancellation { actor: user("admin-1"), actor_is_admin: true })
        .await
        .then_expect_events(vec![ReservationEvent::CancellationRequested {
            reservation_id: reservation(1),
            room_id: room_id(),
            guest_id: guest(),
            requested_by: user("admin-1"),
            by_admin: true,
            was_confirmed: true,
        }]);
}

#[tokio::test]
async fn nobody_else_may_cancel_a_reservation() {
    for history in [vec![requested()], vec![requested(), confirmed()], vec![requested(), cancellation_requested(true)]]
    {
        ReservationTest::with(services())
            .given(history)
            .when_async(cancel_by(user("guest-2")))
            .await
            .then_expect_error(ReservationError::NotOwner);
    }
}

#[tokio::test]
async fn a_stay_that_has_begun_cannot_be_cancelled() {
    for (check_in, nights) in [(0, 3), (-1, 3)] {
        let began = stay(check_in, nights);
        ReservationTest::with(services())
            .given(vec![
                requested_at(began),
                ReservationEvent::ReservationConfirmed {
                    reservation_id: reservation(1),
                    room_id: room_id(),
                    guest_id: guest(),
                    stay: began,
                    total_price: usd(30_000),
                    payment_id: payment_id(),
                },
            ])
            .when_async(cancel_by(guest()))
            .await
            .then_expect_error(ReservationError::StayAlreadyBegun { check_in: began.check_in(), today: today() });
    }
}

#[tokio::test]
async fn a_stay_starting_tomorrow_can_still_be_cancelled() {
    ReservationTest::with(services())
        .given(vec![requested_at(stay(1, 2))])
        .when_async(cancel_by(guest()))
        .await
        .then_expect_events(vec![cancellation_requested(false)]);
}

#[tokio::test]
async fn asking_again_to_cancel_records_nothing() {
    for history in [
        vec![requested(), cancellation_requested(false)],
        vec![requested(), cancellation_requested(false), cancelled(false)],
    ] {
        ReservationTest::with(services())
            .given(history)
            .when_async(cancel_by(guest()))
            .await
            .then_expect_events(vec![]);
    }
}

#[tokio::test]
async fn a_rejected_reservation_cannot_be_cancelled() {
    ReservationTest::with(services())
        .given(vec![requested(), rejected()])
        .when_async(cancel_by(guest()))
        .await
        .then_expect_error(wrong_status(ReservationStatus::Rejected));
}

#[tokio::test]
async fn completing_a_cancellation_records_whether_it_had_been_confirmed() {
    for was_confirmed in [false, true] {
        let mut history = vec![requested()];
        if was_confirmed {
            history.push(confirmed());
        }
        history.push(cancellation_requested(was_confirmed));
        ReservationTest::with(services())
            .given(history)
            .when_async(ReservationCommand::CompleteCancellation)
            .await
            .then_expect_events(vec![cancelled(was_confirmed)]);
    }
}

#[tokio::test]
async fn completing_a_completed_cancellation_records_nothing() {
    ReservationTest::with(services())
        .given(vec![requested(), cancellation_requested(false), cancelled(false)])
        .when_async(ReservationCommand::CompleteCancellation)
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn completing_a_cancellation_nobody_asked_for_is_refused() {
    let cases = [
        (vec![requested()], ReservationStatus::Pending),
        (vec![requested(), confirmed()], ReservationStatus::Confirmed),
        (vec![requested(), rejected()], ReservationStatus::Rejected),
    ];
    for (history, status) in cases {
        ReservationTest::with(services())
            .given(history)
            .when_async(ReservationCommand::CompleteCancellation)
            .await
            .then_expect_error(wrong_status(status));
    }
}

// --- state ---------------------------------------------------------------------------------------

#[test]
fn the_reservation_remembers_its_price_payment_and_status() {
    let mut reservation = Reservation::default();
    assert_eq!(reservation.status(), None);
    for event in [requested(), confirmed(), cancellation_requested(true)] {
        cqrs_es::Aggregate::apply(&mut reservation, event);
    }
    let details = reservation.details().expect("requested");
    assert_eq!(details.status, ReservationStatus::Cancelling);
    assert_eq!(details.total_price, Some(usd(30_000)));
    assert_eq!(details.payment_id, Some(payment_id()));
    assert!(details.was_confirmed);
    let json = serde_json::to_value(&reservation).expect("serializes");
    assert_eq!(serde_json::from_value::<Reservation>(json).expect("parses"), reservation);
}
