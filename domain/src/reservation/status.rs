//! Where a reservation stands, in the words of the HTTP API.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A reservation's status; JSON as in API.md (`"pending"`, ..., `"cancelling"`, `"cancelled"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    /// Requested; the saga is holding the nights and charging.
    Pending,
    /// Paid and booked.
    Confirmed,
    /// Refused; the reason is kept.
    Rejected,
    /// The guest (or an admin) asked to cancel; refund and release are under way.
    Cancelling,
    /// Cancelled, refunded and released.
    Cancelled,
}

impl ReservationStatus {
    /// The status as the API spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for ReservationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
