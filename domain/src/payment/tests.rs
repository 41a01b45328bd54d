//! Given/when/then tests of every payment rule (DESIGN.md §5.1).

use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;
use crate::ids::{PaymentId, RefundId};
use crate::money::{Currency, PositiveMoney};
use crate::test_fixtures::{reservation, services, usd, usd_positive};
use crate::values::CardToken;

type PaymentTest = TestFramework<Payment>;

fn payment_id() -> PaymentId {
    PaymentId::for_reservation(reservation(1))
}

fn card() -> CardToken {
    CardToken::new("tok_visa").expect("valid token")
}

fn refund_id(n: u128) -> RefundId {
    RefundId::from_uuid(Uuid::from_u128(0xaaaa_0000 + n))
}

fn request_charge() -> PaymentCommand {
    PaymentCommand::RequestCharge {
        payment_id: payment_id(),
        reservation_id: reservation(1),
        amount: usd_positive(30_000),
        card_token: card(),
    }
}

fn charge_requested() -> PaymentEvent {
    PaymentEvent::ChargeRequested {
        payment_id: payment_id(),
        reservation_id: reservation(1),
        amount: usd_positive(30_000),
        card_token: card(),
    }
}

fn approved() -> PaymentEvent {
    PaymentEvent::ChargeApproved {
        payment_id: payment_id(),
        reservation_id: reservation(1),
        amount: usd_positive(30_000),
        provider_ref: "ch_123".to_owned(),
    }
}

fn declined() -> PaymentEvent {
    PaymentEvent::ChargeDeclined {
        payment_id: payment_id(),
        reservation_id: reservation(1),
        amount: usd_positive(30_000),
        reason: "insufficient_funds".to_owned(),
    }
}

fn failed() -> PaymentEvent {
    PaymentEvent::ChargeFailed {
        payment_id: payment_id(),
        reservation_id: reservation(1),
        amount: usd_positive(30_000),
        reason: "provider unreachable".to_owned(),
    }
}

fn voided() -> PaymentEvent {
    PaymentEvent::ChargeVoided {
        payment_id: payment_id(),
        reservation_id: reservation(1),
        amount: usd_positive(30_000),
        reason: "deadline passed".to_owned(),
    }
}

fn refunded(n: u128, amount: i64, total: i64) -> PaymentEvent {
    PaymentEvent::PaymentRefunded {
        payment_id: payment_id(),
        reservation_id: reservation(1),
        refund_id: refund_id(n),
        amount: usd_positive(amount),
        refunded_total: usd(total),
    }
}

fn approve() -> PaymentCommand {
    PaymentCommand::RecordApproval { provider_ref: "ch_123".to_owned() }
}

fn decline() -> PaymentCommand {
    PaymentCommand::RecordDecline { reason: "insufficient_funds".to_owned() }
}

fn fail() -> PaymentCommand {
    PaymentCommand::RecordFailure { reason: "provider unreachable".to_owned() }
}

fn void() -> PaymentCommand {
    PaymentCommand::VoidCharge { reason: "deadline passed".to_owned() }
}

fn refund(n: u128, amount: i64) -> PaymentCommand {
    PaymentCommand::Refund { refund_id: refund_id(n), amount: usd_positive(amount) }
}

/// A history ending in each status.
fn history(status: PaymentStatus) -> Vec<PaymentEvent> {
    match status {
        PaymentStatus::Pending => vec![charge_requested()],
        PaymentStatus::Approved => vec![charge_requested(), approved()],
        PaymentStatus::Declined => vec![charge_requested(), declined()],
        PaymentStatus::Failed => vec![charge_requested(), failed()],
        PaymentStatus::Voided => vec![charge_requested(), failed(), voided()],
        PaymentStatus::Refunded => vec![charge_requested(), approved(), refunded(1, 30_000, 30_000)],
    }
}

async fn expect_no_op(status: PaymentStatus, command: PaymentCommand) {
    PaymentTest::with(services()).given(history(status)).when_async(command).await.then_expect_events(vec![]);
}

async fn expect_error(status: PaymentStatus, command: PaymentCommand, error: PaymentError) {
    PaymentTest::with(services()).given(history(status)).when_async(command).await.then_expect_error(error);
}

// --- charge --------------------------------------------------------------------------------------

#[tokio::test]
async fn requesting_a_charge_records_it() {
    PaymentTest::with(services())
        .given_no_previous_events()
        .when_async(request_charge())
        .await
        .then_expect_events(vec![charge_requested()]);
}

#[tokio::test]
async fn a_second_charge_for_the_same_reservation_records_nothing() {
    for status in [PaymentStatus::Pending, PaymentStatus::Approved] {
        PaymentTest::with(services())
            .given(history(status))
            .when_async(PaymentCommand::RequestCharge {
                payment_id: payment_id(),
                reservation_id: reservation(1),
                amount: usd_positive(99_999),
                card_token: CardToken::new("tok_other").expect("valid"),
            })
            .await
            .then_expect_events(vec![]);
    }
}

#[tokio::test]
async fn a_charge_under_an_id_not_derived_from_the_reservation_is_refused() {
    PaymentTest::with(services())
        .given_no_previous_events()
        .when_async(PaymentCommand::RequestCharge {
            payment_id: PaymentId::for_reservation(reservation(2)),
            reservation_id: reservation(1),
            amount: usd_positive(30_000),
            card_token: card(),
        })
        .await
        .then_expect_error(PaymentError::PaymentIdMismatch {
            expected: payment_id(),
            actual: PaymentId::for_reservation(reservation(2)),
        });
}

#[tokio::test]
async fn every_command_on_an_unknown_payment_is_payment_not_found() {
    for command in [approve(), decline(), fail(), void(), refund(1, 100)] {
        PaymentTest::with(services())
            .given_no_previous_events()
            .when_async(command)
            .await
            .then_expect_error(PaymentError::PaymentNotFound);
    }
}

// --- outcomes ------------------------------------------------------------------------------------

#[tokio::test]
async fn an_approval_records_the_provider_reference() {
    PaymentTest::with(services())
        .given(history(PaymentStatus::Pending))
        .when_async(approve())
        .await
        .then_expect_events(vec![approved()]);
}

#[tokio::test]
async fn a_decline_records_the_reason() {
    PaymentTest::with(services())
        .given(history(PaymentStatus::Pending))
        .when_async(decline())
        .await
        .then_expect_events(vec![declined()]);
}

#[tokio::test]
async fn a_failure_records_that_the_provider_was_unreachable() {
    PaymentTest::with(services())
        .given(history(PaymentStatus::Pending))
        .when_async(fail())
        .await
        .then_expect_events(vec![failed()]);
}

#[tokio::test]
async fn recording_the_same_outcome_again_records_nothing() {
    expect_no_op(PaymentStatus::Approved, approve()).await;
    expect_no_op(PaymentStatus::Approved, PaymentCommand::RecordApproval { provider_ref: "ch_retry".to_owned() }).await;
    expect_no_op(PaymentStatus::Refunded, approve()).await;
    expect_no_op(PaymentStatus::Declined, decline()).await;
    expect_no_op(PaymentStatus::Failed, fail()).await;
    expect_no_op(PaymentStatus::Voided, fail()).await;
}

#[tokio::test]
async fn recording_a_contradicting_outcome_is_refused() {
    use PaymentStatus::{Approved, Declined, Failed, Refunded, Voided};
    let cases = [
        (Declined, approve()),
        (Failed, approve()),
        (Voided, approve()),
        (Approved, decline()),
        (Refunded, decline()),
        (Failed, decline()),
        (Voided, decline()),
        (Approved, fail()),
        (Refunded, fail()),
        (Declined, fail()),
    ];
    for (recorded, command) in cases {
        expect_error(recorded, command, PaymentError::ContradictoryOutcome { recorded }).await;
    }
}

// --- void ----------------------------------------------------------------------------------------

#[tokio::test]
async fn a_charge_of_unknown_or_failed_outcome_can_be_voided() {
    for status in [PaymentStatus::Pending, PaymentStatus::Failed] {
        PaymentTest::with(services())
            .given(history(status))
            .when_async(void())
            .await
            .then_expect_events(vec![voided()]);
    }
}

#[tokio::test]
async fn voiding_a_voided_or_declined_charge_records_nothing() {
    expect_no_op(PaymentStatus::Voided, void()).await;
    expect_no_op(PaymentStatus::Declined, void()).await;
}

#[tokio::test]
async fn an_approved_charge_cannot_be_voided() {
    for status in [PaymentStatus::Approved, PaymentStatus::Refunded] {
        expect_error(status, void(), PaymentError::CannotVoid { status }).await;
    }
}

// --- refunds -------------------------------------------------------------------------------------

#[tokio::test]
async fn refunds_are_only_made_after_approval() {
    use PaymentStatus::{Declined, Failed, Pending, Voided};
    for status in [Pending, Declined, Failed, Voided] {
        expect_error(status, refund(1, 100), PaymentError::NotApproved { status }).await;
    }
}

#[tokio::test]
async fn a_refund_records_the_amount_and_the_running_total() {
    PaymentTest::with(services())
        .given(vec![charge_requested(), approved(), refunded(1, 10_000, 10_000)])
        .when_async(refund(2, 5_000))
        .await
        .then_expect_events(vec![refunded(2, 5_000, 15_000)]);
}

#[tokio::test]
async fn the_whole_charge_can_be_refunded() {
    PaymentTest::with(services())
        .given(history(PaymentStatus::Approved))
        .when_async(refund(1, 30_000))
        .await
        .then_expect_events(vec![refunded(1, 30_000, 30_000)]);
}

#[tokio::test]
async fn a_refund_larger_than_the_charge_is_refused() {
    expect_error(
        PaymentStatus::Approved,
        refund(1, 30_001),
        PaymentError::RefundExceedsCharge { charged: usd(30_000), refunded: usd(0), requested: usd(30_001) },
    )
    .await;
}

#[tokio::test]
async fn refunds_together_never_exceed_the_charge() {
    PaymentTest::with(services())
        .given(vec![charge_requested(), approved(), refunded(1, 20_000, 20_000)])
        .when_async(refund(2, 10_001))
        .await
        .then_expect_error(PaymentError::RefundExceedsCharge {
            charged: usd(30_000),
            refunded: usd(20_000),
            requested: usd(10_001),
        });
    expect_error(
        PaymentStatus::Refunded,
        refund(2, 1),
        PaymentError::RefundExceedsCharge { charged: usd(30_000), refunded: usd(30_000), requested: usd(1) },
    )
    .await;
}

#[tokio::test]
async fn retrying_a_refund_records_nothing() {
    expect_no_op(PaymentStatus::Refunded, refund(1, 30_000)).await;
    PaymentTest::with(services())
        .given(vec![charge_requested(), approved(), refunded(1, 10_000, 10_000)])
        .when_async(refund(1, 10_000))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn reusing_a_refund_id_for_another_amount_is_refused() {
    PaymentTest::with(services())
        .given(vec![charge_requested(), approved(), refunded(1, 10_000, 10_000)])
        .when_async(refund(1, 12_000))
        .await
        .then_expect_error(PaymentError::RefundIdReused { refund_id: refund_id(1) });
}

#[tokio::test]
async fn a_refund_in_another_currency_is_refused() {
    PaymentTest::with(services())
        .given(history(PaymentStatus::Approved))
        .when_async(PaymentCommand::Refund {
            refund_id: refund_id(1),
            amount: PositiveMoney::from_minor(100, Currency::EUR).expect("valid"),
        })
        .await
        .then_expect_error(PaymentError::CurrencyMismatch { charged: Currency::USD, requested: Currency::EUR });
}

// --- state ---------------------------------------------------------------------------------------

#[test]
fn a_fully_refunded_payment_says_so() {
    let mut payment = Payment::default();
    assert_eq!(payment.status(), None);
    for event in [charge_requested(), approved(), refunded(1, 10_000, 10_000)] {
        cqrs_es::Aggregate::apply(&mut payment, event);
    }
    assert_eq!(payment.status(), Some(PaymentStatus::Approved));
    cqrs_es::Aggregate::apply(&mut payment, refunded(2, 20_000, 30_000));
    let details = payment.details().expect("requested");
    assert_eq!(details.status, PaymentStatus::Refunded);
    assert_eq!(details.refunded, usd(30_000));
    assert_eq!(details.provider_ref.as_deref(), Some("ch_123"));
    let json = serde_json::to_value(&payment).expect("serializes");
    assert_eq!(serde_json::from_value::<Payment>(json).expect("parses"), payment);
}
