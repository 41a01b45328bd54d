//! The Payment aggregate: the one charge of a reservation, its outcome and its refunds.
//!
//! Its id is `PaymentId::for_reservation`, so there is one payment per reservation by
//! construction. It records what the payment provider said; it never calls the provider itself.

mod aggregate;
mod commands;
mod error;
mod events;
mod status;

pub use aggregate::{Payment, PaymentDetails};
pub use commands::PaymentCommand;
pub use error::PaymentError;
pub use events::PaymentEvent;
pub use status::PaymentStatus;

#[cfg(test)]
mod tests;
