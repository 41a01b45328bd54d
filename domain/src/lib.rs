//! Stay's domain model: rooms, reservations, payments and reviews as event-sourced aggregates.
//!
//! This crate is pure: it holds the commands, events, rules and value types of the write side and
//! nothing that performs I/O. Each aggregate lives in its own module with one file per concept
//! (`aggregate.rs`, `commands.rs`, `events.rs`, `error.rs`) and implements [`cqrs_es::Aggregate`]
//! with [`DomainServices`] as its services, so time comes from a [`Clock`] the caller provides.
//!
//! Raw input becomes domain values by parsing ([`values`], [`money`], [`ids`]): a value that exists
//! is valid, and serde goes through the same parsers, so stored or posted JSON cannot smuggle in an
//! invalid one. (One exception, by design: a currency read back from history is checked for its
//! shape only, so a code ISO 4217 has since withdrawn still replays; see [`money::Currency`].)

#![warn(missing_docs)]

pub mod clock;
pub mod ids;
mod iso_4217;
pub mod money;
pub mod payment;
pub mod reservation;
pub mod review;
pub mod room;
pub mod services;
pub mod upcasters;
pub mod validation;
pub mod values;

#[cfg(test)]
mod test_fixtures;

pub use clock::{Clock, FixedClock};
pub use ids::{PaymentId, RefundId, ReservationId, ReviewId, RoomId, UserId};
pub use money::{Currency, Money, MoneyError, PositiveMoney};
pub use payment::{Payment, PaymentCommand, PaymentError, PaymentEvent, PaymentStatus};
pub use reservation::{
    RejectionReason, Reservation, ReservationCommand, ReservationError, ReservationEvent, ReservationStatus,
};
pub use review::{ReservationFacts, Review, ReviewCommand, ReviewError, ReviewEvent};
pub use room::{Room, RoomCommand, RoomError, RoomEvent};

pub use services::DomainServices;
pub use upcasters::upcasters;
pub use validation::ValidationError;
pub use values::{
    parse_date, Address, BookingHorizon, Capacity, CardToken, Description, GuestCount, Rating, ReviewComment, RoomName,
    StayDates,
};

/// The schema version written with every event of this crate; bump it together with an upcaster.
pub const EVENT_VERSION: &str = "1.0";
