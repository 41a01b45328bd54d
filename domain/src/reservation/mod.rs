//! The Reservation aggregate: a guest's request for a stay and where it stands.
//!
//! requested → confirmed | rejected(reason); pending or confirmed → cancelling → cancelled.
//! The saga drives it: it confirms once the room holds the nights and the charge is approved,
//! rejects on any failure, and completes a cancellation once the refund and release are done.

mod aggregate;
mod commands;
mod error;
mod events;
mod status;

pub use aggregate::{Reservation, ReservationDetails};
pub use commands::ReservationCommand;
pub use error::ReservationError;
pub use events::{RejectionReason, ReservationEvent, REJECTION_VERSION};
pub use status::ReservationStatus;

#[cfg(test)]
mod tests;
