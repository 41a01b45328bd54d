//! Identifiers: UUID newtypes for aggregates and the user id taken from the JWT `sub`.
//!
//! A payment and a review are one per reservation by construction: their ids are derived from the
//! reservation id (UUID v5 under fixed namespaces), so a retried "charge" or "review" lands on the
//! same aggregate instead of creating a second one.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Clock;
use crate::validation::ValidationError;

/// Namespace of payment ids derived from reservation ids. Never change it: stored ids depend on it.
const PAYMENT_NAMESPACE: Uuid = Uuid::from_u128(0x7616_8b2d_295a_4ba5_911e_72ae_378b_989b);
/// Namespace of review ids derived from reservation ids. Never change it: stored ids depend on it.
const REVIEW_NAMESPACE: Uuid = Uuid::from_u128(0x4218_36be_1273_4e5c_b136_9efd_a2c5_e8e3);
/// Namespace of refund ids derived from reservation ids. Never change it: stored ids depend on it.
const REFUND_NAMESPACE: Uuid = Uuid::from_u128(0xb1fb_6be7_0c80_4c4d_81a2_f12e_1146_00b0);

/// Defines a UUID newtype: plain UUID string in JSON, `Display`, `FromStr`.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, field = $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// A new time-ordered id (UUID v7) stamped with the clock's time.
            pub fn generate(clock: &dyn Clock) -> Self {
                Self(uuid_v7_at(clock.now()))
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text)
                    .map(Self)
                    .map_err(|_| ValidationError::InvalidUuid {
                        field: $field,
                        value: text.to_owned(),
                    })
            }
        }
    };
}

uuid_id!(
    /// Identifies a room.
    RoomId,
    field = "room_id"
);
uuid_id!(
    /// Identifies a reservation; also the correlation key of its saga.
    ReservationId,
    field = "reservation_id"
);
uuid_id!(
    /// Identifies the one payment of a reservation; see [`PaymentId::for_reservation`].
    PaymentId,
    field = "payment_id"
);
uuid_id!(
    /// Identifies the one review of a reservation; see [`ReviewId::for_reservation`].
    ReviewId,
    field = "review_id"
);
uuid_id!(
    /// Identifies one refund of a payment, so a retried refund is recognised and not paid twice.
    RefundId,
    field = "refund_id"
);

impl PaymentId {
    /// The payment id of a reservation: the same reservation always gives the same payment.
    pub fn for_reservation(reservation_id: ReservationId) -> Self {
        Self(Uuid::new_v5(&PAYMENT_NAMESPACE, reservation_id.0.as_bytes()))
    }
}

impl ReviewId {
    /// The review id of a reservation: the same reservation always gives the same review.
    pub fn for_reservation(reservation_id: ReservationId) -> Self {
        Self(Uuid::new_v5(&REVIEW_NAMESPACE, reservation_id.0.as_bytes()))
    }
}

impl RefundId {
    /// The id of the refund that follows a reservation's cancellation, so the saga can retry it.
    pub fn for_cancellation(reservation_id: ReservationId) -> Self {
        Self(Uuid::new_v5(&REFUND_NAMESPACE, reservation_id.0.as_bytes()))
    }
}

fn uuid_v7_at(now: DateTime<Utc>) -> Uuid {
    // Instants before 1970 cannot be v7 timestamps; they only occur in odd test setups.
    let seconds = u64::try_from(now.timestamp()).unwrap_or(0);
    let timestamp = uuid::Timestamp::from_unix(uuid::NoContext, seconds, now.timestamp_subsec_nanos());
    Uuid::new_v7(timestamp)
}

/// A user: the JWT `sub` of a guest, host or admin. Non-empty, at most 200 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// The most characters a user id may have.
    pub const MAX_CHARS: usize = 200;

    /// Parses a user id; it is kept exactly as given, since it must match the token's `sub`.
    pub fn new(id: impl Into<String>) -> Result<Self, ValidationError> {
        let id = id.into();
        if id.trim().is_empty() {
            return Err(ValidationError::Empty { field: "user_id" });
        }
        if id.contains('\0') {
            return Err(ValidationError::NulCharacter { field: "user_id" });
        }
        let chars = id.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(ValidationError::TooLong { field: "user_id", max: Self::MAX_CHARS, actual: chars });
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = ValidationError;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl TryFrom<&str> for UserId {
    type Error = ValidationError;

    fn try_from(id: &str) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl FromStr for UserId {
    type Err = ValidationError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        Self::new(id)
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> Self {
        id.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use serde_json::json;

    use super::*;
    use crate::clock::FixedClock;

    const RESERVATION: &str = "0190c7a2-4c1e-7d3a-9f1b-2a3c4d5e6f70";

    #[test]
    fn ids_serialize_as_plain_uuid_strings() {
        let id: RoomId = RESERVATION.parse().expect("valid uuid");
        assert_eq!(serde_json::to_value(id).expect("serializes"), json!(RESERVATION));
        assert_eq!(id.to_string(), RESERVATION);
        let back: RoomId = serde_json::from_value(json!(RESERVATION)).expect("parses");
        assert_eq!(back, id);
    }

    #[test]
    fn ids_refuse_text_that_is_not_a_uuid() {
        assert_eq!(
            "not-a-uuid".parse::<ReservationId>(),
            Err(ValidationError::InvalidUuid { field: "reservation_id", value: "not-a-uuid".to_owned() })
        );
        assert!(serde_json::from_value::<RoomId>(json!("not-a-uuid")).is_err());
        assert!(serde_json::from_value::<RoomId>(json!(42)).is_err());
    }

    #[test]
    fn payment_and_review_ids_are_derived_deterministically_from_the_reservation() {
        let reservation: ReservationId = RESERVATION.parse().expect("valid uuid");
        let other: ReservationId = "0190c7a2-4c1e-7d3a-9f1b-2a3c4d5e6f71".parse().expect("valid uuid");

        let payment = PaymentId::for_reservation(reservation);
        assert_eq!(payment, PaymentId::for_reservation(reservation));
        assert_ne!(payment, PaymentId::for_reservation(other));
        assert_eq!(payment.as_uuid().get_version_num(), 5);
        // Pinned: changing the namespace would orphan every stored payment stream.
        assert_eq!(payment.as_uuid(), Uuid::new_v5(&PAYMENT_NAMESPACE, reservation.as_uuid().as_bytes()));
        assert_eq!(
            payment.to_string(),
            Uuid::new_v5(
                &Uuid::parse_str("76168b2d-295a-4ba5-911e-72ae378b989b").expect("uuid"),
                reservation.as_uuid().as_bytes()
            )
            .to_string()
        );

        let review = ReviewId::for_reservation(reservation);
        assert_eq!(review, ReviewId::for_reservation(reservation));
        assert_ne!(review.as_uuid(), payment.as_uuid());
        assert_ne!(RefundId::for_cancellation(reservation).as_uuid(), payment.as_uuid());
    }

    #[test]
    fn generated_ids_are_version_7_and_stamped_with_the_clock() {
        let day = NaiveDate::from_ymd_opt(2030, 1, 1).expect("valid date");
        let clock = FixedClock::on(day);
        let id = ReservationId::generate(&clock);
        assert_eq!(id.as_uuid().get_version_num(), 7);
        let (seconds, _) = id.as_uuid().get_timestamp().expect("v7 has a timestamp").to_unix();
        assert_eq!(i64::try_from(seconds).expect("fits"), clock.now().timestamp());
        assert_ne!(id, ReservationId::generate(&clock));
    }

    #[test]
    fn user_id_must_be_non_empty_and_at_most_200_chars() {
        assert_eq!(UserId::new(""), Err(ValidationError::Empty { field: "user_id" }));
        assert_eq!(UserId::new("  "), Err(ValidationError::Empty { field: "user_id" }));
        assert_eq!(
            UserId::new("é".repeat(201)),
            Err(ValidationError::TooLong { field: "user_id", max: 200, actual: 201 })
        );
        assert!(UserId::new("é".repeat(200)).is_ok());
        assert_eq!(UserId::new("a\0b"), Err(ValidationError::NulCharacter { field: "user_id" }));
        assert!(serde_json::from_value::<UserId>(json!("")).is_err());
        assert!(serde_json::from_value::<UserId>(json!("x".repeat(201))).is_err());
        let user: UserId = serde_json::from_value(json!("auth0|42")).expect("parses");
        assert_eq!(serde_json::to_value(&user).expect("serializes"), json!("auth0|42"));
    }
}
