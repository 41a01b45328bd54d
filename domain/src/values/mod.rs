//! Value types that parse instead of validate: a `RoomName` or a `StayDates` that exists is valid.
//!
//! Each type refuses bad input in its constructor and, through `#[serde(try_from = ...)]`, in
//! deserialization too, with a [`ValidationError`] naming the API field at fault. Texts are trimmed
//! and measured in characters, not bytes.

use crate::validation::ValidationError;

/// Defines a trimmed text newtype with a length range, serialized as a plain JSON string.
macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident { field: $field:literal, min: $min:expr, max: $max:expr }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The fewest characters allowed after trimming.
            pub const MIN_CHARS: usize = $min;
            /// The most characters allowed after trimming.
            pub const MAX_CHARS: usize = $max;

            /// Parses `text`, trimmed of surrounding whitespace.
            pub fn new(text: impl Into<String>) -> Result<Self, $crate::validation::ValidationError> {
                $crate::values::parse_text($field, text.into(), Self::MIN_CHARS, Self::MAX_CHARS)
                    .map(Self)
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::validation::ValidationError;

            fn try_from(text: String) -> Result<Self, Self::Error> {
                Self::new(text)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = $crate::validation::ValidationError;

            fn try_from(text: &str) -> Result<Self, Self::Error> {
                Self::new(text)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// Defines an integer newtype with an inclusive range, serialized as a plain JSON number.
macro_rules! bounded_number {
    ($(#[$doc:meta])* $name:ident($inner:ty) { field: $field:literal, min: $min:expr, max: $max:expr }) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize,
        )]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name($inner);

        impl $name {
            /// The smallest value allowed.
            pub const MIN: $inner = $min;
            /// The largest value allowed.
            pub const MAX: $inner = $max;

            /// Parses `value`, refused outside `MIN..=MAX`.
            pub fn new(value: i64) -> Result<Self, $crate::validation::ValidationError> {
                let out_of_range = || $crate::validation::ValidationError::OutOfRange {
                    field: $field,
                    min: i64::from(Self::MIN),
                    max: i64::from(Self::MAX),
                    actual: value,
                };
                let value = <$inner>::try_from(value).map_err(|_| out_of_range())?;
                if (Self::MIN..=Self::MAX).contains(&value) {
                    Ok(Self(value))
                } else {
                    Err(out_of_range())
                }
            }

            /// The number.
            pub const fn get(&self) -> $inner {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = $crate::validation::ValidationError;

            fn try_from(value: i64) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for i64 {
            fn from(value: $name) -> Self {
                i64::from(value.0)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

mod address;
mod booking_horizon;
mod calendar_date;
mod capacity;
mod card_token;
mod description;
mod guest_count;
mod rating;
mod review_comment;
mod room_name;
mod stay_dates;

pub use address::Address;
pub use booking_horizon::BookingHorizon;
pub use calendar_date::parse_date;
pub use capacity::Capacity;
pub use card_token::CardToken;
pub use description::Description;
pub use guest_count::GuestCount;
pub use rating::Rating;
pub use review_comment::ReviewComment;
pub use room_name::RoomName;
pub use stay_dates::StayDates;

/// Trims `text` and checks its length in characters against `min..=max`.
pub(crate) fn parse_text(field: &'static str, text: String, min: usize, max: usize) -> Result<String, ValidationError> {
    if text.contains('\0') {
        return Err(ValidationError::NulCharacter { field });
    }
    let trimmed = text.trim();
    let chars = trimmed.chars().count();
    if chars == 0 && min > 0 {
        return Err(ValidationError::Empty { field });
    }
    if chars > max {
        return Err(ValidationError::TooLong { field, max, actual: chars });
    }
    if chars < min {
        return Err(ValidationError::OutOfRange {
            field,
            min: i64::try_from(min).unwrap_or(i64::MAX),
            max: i64::try_from(max).unwrap_or(i64::MAX),
            actual: i64::try_from(chars).unwrap_or(i64::MAX),
        });
    }
    if trimmed.len() == text.len() {
        Ok(text)
    } else {
        Ok(trimmed.to_owned())
    }
}
