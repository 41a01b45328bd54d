//! Where a payment stands.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A payment's status; JSON in snake_case as in API.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// The charge was asked for; the provider's answer is not known yet.
    Pending,
    /// The provider took the money (some of it may have been refunded since).
    Approved,
    /// The provider refused the card; no money moved.
    Declined,
    /// The provider could not be reached; whether money moved is unknown until voided.
    Failed,
    /// The charge was voided, so any money that may have moved is given back.
    Voided,
    /// The whole charge has been refunded.
    Refunded,
}

impl PaymentStatus {
    /// The status in snake_case.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Declined => "declined",
            Self::Failed => "failed",
            Self::Voided => "voided",
            Self::Refunded => "refunded",
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
