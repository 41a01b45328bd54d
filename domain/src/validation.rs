//! The error returned when raw input cannot become a domain value.
//!
//! Every newtype of this crate parses through one of these variants, both at construction and at
//! deserialization, so the HTTP layer can answer 422 with the field at fault.

use chrono::NaiveDate;

/// Why a raw value was refused as a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A required text was empty or only whitespace.
    #[error("{field} must not be empty")]
    Empty {
        /// The field that was empty.
        field: &'static str,
    },
    /// A text was longer than allowed (counted in characters, not bytes).
    #[error("{field} must be at most {max} characters long, got {actual}")]
    TooLong {
        /// The field that was too long.
        field: &'static str,
        /// The most characters allowed.
        max: usize,
        /// The characters given.
        actual: usize,
    },
    /// A number was outside its allowed range.
    #[error("{field} must be between {min} and {max}, got {actual}")]
    OutOfRange {
        /// The field that was out of range.
        field: &'static str,
        /// The smallest value allowed.
        min: i64,
        /// The largest value allowed.
        max: i64,
        /// The value given.
        actual: i64,
    },
    /// A currency code was not three upper-case letters.
    #[error("currency must be a three-letter ISO 4217 code such as USD, got {0:?}")]
    InvalidCurrency(String),
    /// A currency code of the right shape that ISO 4217 does not list as current.
    #[error("currency must be a current ISO 4217 code such as USD, EUR or JPY; {0:?} is not one")]
    UnknownCurrency(String),
    /// An amount of money was below zero.
    #[error("amount_minor must not be negative, got {0}")]
    NegativeAmount(i64),
    /// An amount that must be above zero was zero.
    #[error("{field} must be greater than zero")]
    NotPositive {
        /// The field that was zero.
        field: &'static str,
    },
    /// A stay whose check-out is not after its check-in.
    #[error("check_out ({check_out}) must be after check_in ({check_in})")]
    EmptyStay {
        /// The check-in date given.
        check_in: NaiveDate,
        /// The check-out date given.
        check_out: NaiveDate,
    },
    /// A stay longer than the longest allowed.
    #[error("a stay is at most {max} nights, got {nights}")]
    StayTooLong {
        /// The nights asked for.
        nights: i64,
        /// The most nights allowed.
        max: u32,
    },
    /// A stay that ends later than the booking horizon allows.
    #[error("check_out ({check_out}) is beyond the booking horizon: stays booked today must end by {last_check_out} ({days} days ahead)")]
    BeyondBookingHorizon {
        /// The check-out date given.
        check_out: NaiveDate,
        /// The latest check-out allowed today.
        last_check_out: NaiveDate,
        /// The horizon, in days.
        days: u32,
    },
    /// A text holding the NUL character, which no store can keep as text.
    #[error("{field} must not contain the NUL character")]
    NulCharacter {
        /// The field holding it.
        field: &'static str,
    },
    /// A date that is not `YYYY-MM-DD`.
    #[error("{field} must be a date as YYYY-MM-DD, got {value:?}")]
    InvalidDate {
        /// The field holding the date.
        field: &'static str,
        /// The text given.
        value: String,
    },
    /// An id that is not a UUID.
    #[error("{field} must be a UUID, got {value:?}")]
    InvalidUuid {
        /// The field holding the id.
        field: &'static str,
        /// The text given.
        value: String,
    },
}

impl ValidationError {
    /// The input field this error is about, as named in the HTTP API.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Empty { field }
            | Self::TooLong { field, .. }
            | Self::OutOfRange { field, .. }
            | Self::NotPositive { field }
            | Self::InvalidUuid { field, .. }
            | Self::InvalidDate { field, .. }
            | Self::NulCharacter { field } => field,
            Self::InvalidCurrency(_) | Self::UnknownCurrency(_) => "currency",
            Self::NegativeAmount(_) => "amount_minor",
            Self::EmptyStay { .. } | Self::StayTooLong { .. } | Self::BeyondBookingHorizon { .. } => "check_out",
        }
    }

    /// A stable snake_case code for API error bodies: `validation_failed`, or a more precise one.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BeyondBookingHorizon { .. } => "beyond_booking_horizon",
            _ => "validation_failed",
        }
    }
}
