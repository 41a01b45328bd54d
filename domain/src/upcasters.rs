//! Upcasters: how events stored in an older shape are read in today's shape.
//!
//! The store applies these to every event it reads (aggregate loads and the feed), so handlers
//! and projections only ever see current event versions. Add one here whenever an event's JSON
//! changes incompatibly, and bump that event's `event_version()` with it.

use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster};
use serde_json::{json, Value};

use crate::reservation::REJECTION_VERSION;

/// Every upcaster of the domain, in the order they apply.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(SemanticVersionEventUpcaster::new(
        "ReservationRejected",
        REJECTION_VERSION,
        Box::new(structured_rejection_reason),
    ))]
}

/// The reason codes `ReservationRejected` 1.0 wrote as bare strings.
const KNOWN_REASONS: [&str; 6] = [
    "dates_unavailable",
    "room_unavailable",
    "too_many_guests",
    "stay_in_past",
    "payment_declined",
    "payment_unavailable",
];

/// 1.0 → 1.1: `"reason": "payment_declined"` becomes `"reason": {"code": "payment_declined"}`, and
/// free text becomes `{"code": "other", "detail": TEXT}`.
fn structured_rejection_reason(mut payload: Value) -> Value {
    if let Some(reason) = payload.pointer_mut("/ReservationRejected/reason") {
        if let Value::String(text) = reason {
            *reason = if KNOWN_REASONS.contains(&text.as_str()) {
                json!({ "code": text })
            } else {
                json!({ "code": "other", "detail": text })
            };
        }
    }
    payload
}

#[cfg(test)]
mod tests {
    use cqrs_es::persist::SerializedEvent;
    use serde_json::json;

    use super::*;
    use crate::reservation::{RejectionReason, ReservationEvent};

    fn stored_1_0(reason: &str) -> SerializedEvent {
        SerializedEvent::new(
            "0190f4a4-0000-7000-8000-000000000001".to_owned(),
            2,
            "Reservation".to_owned(),
            "ReservationRejected".to_owned(),
            "1.0".to_owned(),
            json!({"ReservationRejected": {
                "reservation_id": "0190f4a4-0000-7000-8000-000000000001",
                "room_id": "0190f4a4-0000-7000-8000-000000000002",
                "guest_id": "guest-1",
                "reason": reason
            }}),
            json!({}),
        )
    }

    fn upcast(event: SerializedEvent) -> SerializedEvent {
        upcasters().iter().fold(event, |event, upcaster| {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                upcaster.upcast(event)
            } else {
                event
            }
        })
    }

    fn reason_of(event: SerializedEvent) -> RejectionReason {
        match serde_json::from_value(event.payload).expect("reads as today's event") {
            ReservationEvent::ReservationRejected { reason, .. } => reason,
            other => panic!("not a rejection: {other:?}"),
        }
    }

    #[test]
    fn a_1_0_rejection_with_a_known_code_reads_as_that_reason() {
        let event = upcast(stored_1_0("payment_declined"));
        assert_eq!(event.event_version, "1.1.0");
        assert_eq!(reason_of(event), RejectionReason::PaymentDeclined);
    }

    #[test]
    fn a_1_0_rejection_in_free_words_reads_as_other() {
        let event = upcast(stored_1_0("host closed the room"));
        assert_eq!(reason_of(event), RejectionReason::Other { detail: "host closed the room".to_owned() });
    }

    #[test]
    fn current_events_pass_untouched() {
        let mut event = stored_1_0("ignored");
        event.event_version = "1.1".to_owned();
        event.payload["ReservationRejected"]["reason"] = json!({"code": "dates_unavailable"});
        let before = event.clone();
        assert_eq!(upcast(event), before);
    }
}
