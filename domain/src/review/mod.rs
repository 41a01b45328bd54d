//! The Review aggregate: a guest's rating and comment on a stay, and the host's one reply.
//!
//! Its id is `ReviewId::for_reservation`, so there is one review per reservation by construction.
//! The review cannot read the reservation or the room itself: the command API loads them and
//! passes their facts in the command, and the review checks them.

mod aggregate;
mod commands;
mod error;
mod events;

pub use aggregate::{Reply, Review, ReviewDetails};
pub use commands::{ReservationFacts, ReviewCommand};
pub use error::ReviewError;
pub use events::ReviewEvent;

#[cfg(test)]
mod tests;
