//! Why a room refused a command.

use chrono::NaiveDate;

use crate::money::Currency;

/// A room's refusal. Variants are stable so callers (and tests) match on them, never on text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// The room was registered already.
    #[error("this room is already registered")]
    AlreadyRegistered,
    /// No room was registered under this id.
    #[error("no such room")]
    RoomNotFound,
    /// Only the room's host may change it.
    #[error("only the room's host may change it")]
    NotOwner,
    /// The room is delisted and takes no more changes or holds.
    #[error("the room is delisted")]
    RoomDelisted,
    /// The room still has holds or bookings that have not ended.
    #[error("the room has upcoming stays")]
    HasUpcomingStays,
    /// Some night of the stay is held or booked for another reservation.
    #[error("some of those nights are not available")]
    DatesUnavailable,
    /// More guests than the room sleeps.
    #[error("the room sleeps {capacity} guests, {guests} were asked for")]
    TooManyGuests {
        /// The room's capacity.
        capacity: u8,
        /// The guests asked for.
        guests: u8,
    },
    /// The stay starts before today.
    #[error("the stay starts on {check_in}, which is before today ({today})")]
    StayInPast {
        /// The first night asked for.
        check_in: NaiveDate,
        /// Today, by the clock.
        today: NaiveDate,
    },
    /// The reservation holds no nights here.
    #[error("no hold for this reservation")]
    HoldNotFound,
    /// The reservation's hold was released and can no longer be confirmed.
    #[error("the hold for this reservation was released")]
    HoldAlreadyReleased,
    /// A new price must be in the room's currency.
    #[error("the room is priced in {current}, not {requested}")]
    CurrencyChange {
        /// The room's currency.
        current: Currency,
        /// The currency asked for.
        requested: Currency,
    },
    /// Nights × nightly price does not fit in an amount of money.
    #[error("the price of the stay is too large")]
    PriceOverflow,
}

impl RoomError {
    /// A stable snake_case code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AlreadyRegistered => "room_already_registered",
            Self::RoomNotFound => "room_not_found",
            Self::NotOwner => "not_owner",
            Self::RoomDelisted => "room_delisted",
            Self::HasUpcomingStays => "room_has_upcoming_stays",
            Self::DatesUnavailable => "dates_unavailable",
            Self::TooManyGuests { .. } => "too_many_guests",
            Self::StayInPast { .. } => "stay_in_past",
            Self::HoldNotFound => "hold_not_found",
            Self::HoldAlreadyReleased => "hold_released",
            Self::CurrencyChange { .. } => "currency_change",
            Self::PriceOverflow => "price_overflow",
        }
    }
}
