//! Pins the stored JSON of every event, so history written today stays readable tomorrow.
//!
//! Each test writes the JSON out literally. If one fails, a change would alter stored events:
//! keep the old shape, or add a new event version with an upcaster, never edit the literal.

use chrono::NaiveDate;
use cqrs_es::DomainEvent;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use stay_domain::*;

const ROOM: &str = "0190c7a2-0000-7000-8000-000000000001";
const RESERVATION: &str = "0190c7a2-0000-7000-8000-000000000002";
const REFUND: &str = "0190c7a2-0000-7000-8000-000000000003";

fn room_id() -> RoomId {
    ROOM.parse().expect("valid uuid")
}

fn reservation_id() -> ReservationId {
    RESERVATION.parse().expect("valid uuid")
}

fn payment_id() -> PaymentId {
    PaymentId::for_reservation(reservation_id())
}

fn review_id() -> ReviewId {
    ReviewId::for_reservation(reservation_id())
}

fn user(id: &str) -> UserId {
    UserId::new(id).expect("valid user id")
}

fn usd(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::USD).expect("valid money")
}

fn usd_positive(amount_minor: i64) -> PositiveMoney {
    PositiveMoney::new(usd(amount_minor)).expect("positive")
}

fn stay() -> StayDates {
    let date = |d| NaiveDate::from_ymd_opt(2030, 7, d).expect("valid date");
    StayDates::new(date(1), date(4)).expect("valid stay")
}

fn stay_json() -> Value {
    json!({"check_in": "2030-07-01", "check_out": "2030-07-04"})
}

/// Asserts the event's JSON, its type and version, and that the JSON reads back as the event.
fn pin<E: DomainEvent>(event: E, event_type: &str, expected: Value) {
    pin_version(event, event_type, "1.0", expected);
}

fn pin_version<E: DomainEvent>(event: E, event_type: &str, version: &str, expected: Value) {
    assert_eq!(serde_json::to_value(&event).expect("serializes"), expected, "{event_type}");
    assert_eq!(event.event_type(), event_type);
    assert_eq!(event.event_version(), version, "{event_type}");
    // The externally tagged key is the event type, so the payload names itself.
    let keys: Vec<&String> = expected.as_object().expect("an object").keys().collect();
    assert_eq!(keys, vec![event_type]);
    assert_eq!(read::<E>(expected), event, "{event_type} round trip");
}

fn read<E: DeserializeOwned>(json: Value) -> E {
    serde_json::from_value(json).expect("deserializes")
}

// --- Room ----------------------------------------------------------------------------------------

#[test]
fn room_registered_json_is_pinned() {
    pin(
        RoomEvent::RoomRegistered {
            room_id: room_id(),
            host_id: user("host-1"),
            name: RoomName::new("Sea view loft").expect("valid"),
            description: Description::new("Bright and quiet.").expect("valid"),
            address: Address::new("1 Harbour Road").expect("valid"),
            nightly_price: usd_positive(12000),
            capacity: Capacity::new(2).expect("valid"),
        },
        "RoomRegistered",
        json!({"RoomRegistered": {
            "room_id": ROOM,
            "host_id": "host-1",
            "name": "Sea view loft",
            "description": "Bright and quiet.",
            "address": "1 Harbour Road",
            "nightly_price": {"amount_minor": 12000, "currency": "USD"},
            "capacity": 2
        }}),
    );
}

#[test]
fn room_details_changed_json_is_pinned_with_only_changed_fields() {
    pin(
        RoomEvent::RoomDetailsChanged {
            room_id: room_id(),
            name: Some(RoomName::new("Loft").expect("valid")),
            description: None,
            address: None,
            capacity: Some(Capacity::new(3).expect("valid")),
        },
        "RoomDetailsChanged",
        json!({"RoomDetailsChanged": {"room_id": ROOM, "name": "Loft", "capacity": 3}}),
    );
    pin(
        RoomEvent::RoomDetailsChanged {
            room_id: room_id(),
            name: None,
            description: Some(Description::new("New paint.").expect("valid")),
            address: Some(Address::new("2 Harbour Road").expect("valid")),
            capacity: None,
        },
        "RoomDetailsChanged",
        json!({"RoomDetailsChanged": {
            "room_id": ROOM,
            "description": "New paint.",
            "address": "2 Harbour Road"
        }}),
    );
}

#[test]
fn nightly_price_changed_json_is_pinned() {
    pin(
        RoomEvent::NightlyPriceChanged { room_id: room_id(), price: usd_positive(9900) },
        "NightlyPriceChanged",
        json!({"NightlyPriceChanged": {
            "room_id": ROOM,
            "price": {"amount_minor": 9900, "currency": "USD"}
        }}),
    );
}

#[test]
fn room_delisted_json_is_pinned() {
    pin(RoomEvent::RoomDelisted { room_id: room_id() }, "RoomDelisted", json!({"RoomDelisted": {"room_id": ROOM}}));
}

#[test]
fn nights_held_json_is_pinned() {
    pin(
        RoomEvent::NightsHeld {
            room_id: room_id(),
            reservation_id: reservation_id(),
            guest_id: user("guest-1"),
            stay: stay(),
            guests: GuestCount::new(2).expect("valid"),
            price: usd(36000),
        },
        "NightsHeld",
        json!({"NightsHeld": {
            "room_id": ROOM,
            "reservation_id": RESERVATION,
            "guest_id": "guest-1",
            "stay": stay_json(),
            "guests": 2,
            "price": {"amount_minor": 36000, "currency": "USD"}
        }}),
    );
}

#[test]
fn booking_confirmed_json_is_pinned() {
    pin(
        RoomEvent::BookingConfirmed {
            room_id: room_id(),
            reservation_id: reservation_id(),
            guest_id: user("guest-1"),
            stay: stay(),
        },
        "BookingConfirmed",
        json!({"BookingConfirmed": {
            "room_id": ROOM,
            "reservation_id": RESERVATION,
            "guest_id": "guest-1",
            "stay": stay_json()
        }}),
    );
}

#[test]
fn hold_released_json_is_pinned() {
    pin(
        RoomEvent::HoldReleased { room_id: room_id(), reservation_id: reservation_id(), stay: stay() },
        "HoldReleased",
        json!({"HoldReleased": {
            "room_id": ROOM,
            "reservation_id": RESERVATION,
            "stay": stay_json()
        }}),
    );
}

#[test]
fn booking_released_json_is_pinned() {
    pin(
        RoomEvent::BookingReleased { room_id: room_id(), reservation_id: reservation_id(), stay: stay() },
        "BookingReleased",
        json!({"BookingReleased": {
            "room_id": ROOM,
            "reservation_id": RESERVATION,
            "stay": stay_json()
        }}),
    );
}

// --- Reservation ---------------------------------------------------------------------------------

#[test]
fn reservation_requested_json_is_pinned() {
    pin(
        ReservationEvent::ReservationRequested {
            reservation_id: reservation_id(),
            room_id: room_id(),
            guest_id: user("guest-1"),
            stay: stay(),
            guests: GuestCount::new(2).expect("valid"),
            card_token: CardToken::new("tok_visa").expect("valid"),
        },
        "ReservationRequested",
        json!({"ReservationRequested": {
            "reservation_id": RESERVATION,
            "room_id": ROOM,
            "guest_id": "guest-1",
            "stay": stay_json(),
            "guests": 2,
            "card_token": "tok_visa"
        }}),
    );
}

#[test]
fn reservation_confirmed_json_is_pinned() {
    pin(
        ReservationEvent::ReservationConfirmed {
            reservation_id: reservation_id(),
            room_id: room_id(),
            guest_id: user("guest-1"),
            stay: stay(),
            total_price: usd(36000),
            payment_id: payment_id(),
        },
        "ReservationConfirmed",
        json!({"ReservationConfirmed": {
            "reservation_id": RESERVATION,
            "room_id": ROOM,
            "guest_id": "guest-1",
            "stay": stay_json(),
            "total_price": {"amount_minor": 36000, "currency": "USD"},
            "payment_id": payment_id().to_string()
        }}),
    );
}

#[test]
fn reservation_rejected_json_is_pinned_for_every_reason() {
    let reasons = [
        (RejectionReason::DatesUnavailable, json!({"code": "dates_unavailable"})),
        (RejectionReason::RoomUnavailable, json!({"code": "room_unavailable"})),
        (RejectionReason::TooManyGuests, json!({"code": "too_many_guests"})),
        (RejectionReason::StayInPast, json!({"code": "stay_in_past"})),
        (RejectionReason::PaymentDeclined, json!({"code": "payment_declined"})),
        (RejectionReason::PaymentUnavailable, json!({"code": "payment_unavailable"})),
        (
            RejectionReason::Other { detail: "room closed for repairs".to_owned() },
            json!({"code": "other", "detail": "room closed for repairs"}),
        ),
    ];
    for (reason, reason_json) in reasons {
        pin_version(
            ReservationEvent::ReservationRejected {
                reservation_id: reservation_id(),
                room_id: room_id(),
                guest_id: user("guest-1"),
                reason,
            },
            "ReservationRejected",
            "1.1",
            json!({"ReservationRejected": {
                "reservation_id": RESERVATION,
                "room_id": ROOM,
                "guest_id": "guest-1",
                "reason": reason_json
            }}),
        );
    }
}

#[test]
fn cancellation_requested_json_is_pinned() {
    pin(
        ReservationEvent::CancellationRequested {
            reservation_id: reservation_id(),
            room_id: room_id(),
            guest_id: user("guest-1"),
            requested_by: user("admin-1"),
            by_admin: true,
            was_confirmed: true,
        },
        "CancellationRequested",
        json!({"CancellationRequested": {
            "reservation_id": RESERVATION,
            "room_id": ROOM,
            "guest_id": "guest-1",
            "requested_by": "admin-1",
            "by_admin": true,
            "was_confirmed": true
        }}),
    );
}

#[test]
fn reservation_cancelled_json_is_pinned() {
    pin(
        ReservationEvent::ReservationCancelled {
            reservation_id: reservation_id(),
            room_id: room_id(),
            guest_id: user("guest-1"),
            was_confirmed: false,
        },
        "ReservationCancelled",
        json!({"ReservationCancelled": {
            "reservation_id": RESERVATION,
            "room_id": ROOM,
            "guest_id": "guest-1",
            "was_confirmed": false
        }}),
    );
}

// --- Payment -------------------------------------------------------------------------------------

#[test]
fn charge_requested_json_is_pinned() {
    pin(
        PaymentEvent::ChargeRequested {
            payment_id: payment_id(),
            reservation_id: reservation_id(),
            amount: usd_positive(36000),
            card_token: CardToken::new("tok_visa").expect("valid"),
        },
        "ChargeRequested",
        json!({"ChargeRequested": {
            "payment_id": payment_id().to_string(),
            "reservation_id": RESERVATION,
            "amount": {"amount_minor": 36000, "currency": "USD"},
            "card_token": "tok_visa"
        }}),
    );
}

#[test]
fn charge_approved_json_is_pinned() {
    pin(
        PaymentEvent::ChargeApproved {
            payment_id: payment_id(),
            reservation_id: reservation_id(),
            amount: usd_positive(36000),
            provider_ref: "ch_123".to_owned(),
        },
        "ChargeApproved",
        json!({"ChargeApproved": {
            "payment_id": payment_id().to_string(),
            "reservation_id": RESERVATION,
            "amount": {"amount_minor": 36000, "currency": "USD"},
            "provider_ref": "ch_123"
        }}),
    );
}

#[test]
fn charge_declined_json_is_pinned() {
    pin(
        PaymentEvent::ChargeDeclined {
            payment_id: payment_id(),
            reservation_id: reservation_id(),
            amount: usd_positive(36000),
            reason: "insufficient_funds".to_owned(),
        },
        "ChargeDeclined",
        json!({"ChargeDeclined": {
            "payment_id": payment_id().to_string(),
            "reservation_id": RESERVATION,
            "amount": {"amount_minor": 36000, "currency": "USD"},
            "reason": "insufficient_funds"
        }}),
    );
}

#[test]
fn charge_failed_json_is_pinned() {
    pin(
        PaymentEvent::ChargeFailed {
            payment_id: payment_id(),
            reservation_id: reservation_id(),
            amount: usd_positive(36000),
            reason: "timeout".to_owned(),
        },
        "ChargeFailed",
        json!({"ChargeFailed": {
            "payment_id": payment_id().to_string(),
            "reservation_id": RESERVATION,
            "amount": {"amount_minor": 36000, "currency": "USD"},
            "reason": "timeout"
        }}),
    );
}

#[test]
fn payment_refunded_json_is_pinned() {
    pin(
        PaymentEvent::PaymentRefunded {
            payment_id: payment_id(),
            reservation_id: reservation_id(),
            refund_id: REFUND.parse().expect("valid uuid"),
            amount: usd_positive(6000),
            refunded_total: usd(16000),
        },
        "PaymentRefunded",
        json!({"PaymentRefunded": {
            "payment_id": payment_id().to_string(),
            "reservation_id": RESERVATION,
            "refund_id": REFUND,
            "amount": {"amount_minor": 6000, "currency": "USD"},
            "refunded_total": {"amount_minor": 16000, "currency": "USD"}
        }}),
    );
}

#[test]
fn charge_voided_json_is_pinned() {
    pin(
        PaymentEvent::ChargeVoided {
            payment_id: payment_id(),
            reservation_id: reservation_id(),
            amount: usd_positive(36000),
            reason: "deadline passed".to_owned(),
        },
        "ChargeVoided",
        json!({"ChargeVoided": {
            "payment_id": payment_id().to_string(),
            "reservation_id": RESERVATION,
            "amount": {"amount_minor": 36000, "currency": "USD"},
            "reason": "deadline passed"
        }}),
    );
}

// --- Review --------------------------------------------------------------------------------------

#[test]
fn review_posted_json_is_pinned() {
    pin(
        ReviewEvent::ReviewPosted {
            review_id: review_id(),
            room_id: room_id(),
            reservation_id: reservation_id(),
            guest_id: user("guest-1"),
            rating: Rating::new(4).expect("valid"),
            comment: ReviewComment::new("Great view.").expect("valid"),
        },
        "ReviewPosted",
        json!({"ReviewPosted": {
            "review_id": review_id().to_string(),
            "room_id": ROOM,
            "reservation_id": RESERVATION,
            "guest_id": "guest-1",
            "rating": 4,
            "comment": "Great view."
        }}),
    );
}

#[test]
fn reply_posted_json_is_pinned() {
    pin(
        ReviewEvent::ReplyPosted {
            review_id: review_id(),
            room_id: room_id(),
            reservation_id: reservation_id(),
            host_id: user("host-1"),
            comment: ReviewComment::new("Thanks!").expect("valid"),
        },
        "ReplyPosted",
        json!({"ReplyPosted": {
            "review_id": review_id().to_string(),
            "room_id": ROOM,
            "reservation_id": RESERVATION,
            "host_id": "host-1",
            "comment": "Thanks!"
        }}),
    );
}

// --- Derived ids and aggregate types ---------------------------------------------------------------

#[test]
fn derived_ids_are_pinned() {
    // Stored payment and review streams are keyed by these; the namespaces must never change.
    // Values computed independently (Python's uuid5 over the reservation id's 16 bytes).
    assert_eq!(payment_id().to_string(), "020a3045-6e22-5a92-9f12-58fff6a3b6dd");
    assert_eq!(review_id().to_string(), "d2fea31b-e476-51bc-beaf-5906b035fff1");
    assert_eq!(RefundId::for_cancellation(reservation_id()).to_string(), "755b26ec-c748-533d-a028-08a5f094989f");
}

#[test]
fn aggregate_types_are_pinned() {
    use cqrs_es::Aggregate;
    assert_eq!(Room::TYPE, "Room");
    assert_eq!(Reservation::TYPE, "Reservation");
    assert_eq!(Payment::TYPE, "Payment");
    assert_eq!(Review::TYPE, "Review");
}

// --- Stored JSON that must never be accepted -----------------------------------------------------

#[test]
fn events_with_invalid_values_do_not_deserialize() {
    let bad = [
        // Zero nightly price.
        json!({"NightlyPriceChanged": {"room_id": ROOM, "price": {"amount_minor": 0, "currency": "USD"}}}),
        // Empty stay.
        json!({"HoldReleased": {"room_id": ROOM, "reservation_id": RESERVATION,
            "stay": {"check_in": "2030-07-01", "check_out": "2030-07-01"}}}),
        // Capacity out of range.
        json!({"RoomDetailsChanged": {"room_id": ROOM, "capacity": 17}}),
        // Unknown event type.
        json!({"RoomRenamed": {"room_id": ROOM}}),
    ];
    for json in bad {
        assert!(serde_json::from_value::<RoomEvent>(json.clone()).is_err(), "{json}");
    }
    let bad_rating = json!({"ReviewPosted": {
        "review_id": review_id().to_string(), "room_id": ROOM, "reservation_id": RESERVATION,
        "guest_id": "guest-1", "rating": 6, "comment": ""
    }});
    assert!(serde_json::from_value::<ReviewEvent>(bad_rating).is_err());
}
