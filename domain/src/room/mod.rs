//! The Room aggregate: a host's listing and the calendar of its nights.
//!
//! The room is the consistency boundary for its calendar and the authority on price: the saga
//! holds nights here, confirms the hold into a booking once paid, and releases it on compensation.

mod aggregate;
mod calendar;
mod commands;
mod error;
mod events;

pub use aggregate::{Listing, Room};
pub use calendar::{Calendar, CalendarEntry, EntryState};
pub use commands::RoomCommand;
pub use error::RoomError;
pub use events::RoomEvent;

#[cfg(test)]
mod tests;
