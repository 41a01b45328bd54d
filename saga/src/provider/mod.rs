//! The payment-provider port: what the saga asks of the outside system that moves money.
//!
//! Every call carries an idempotency key (the payment id for a charge or void, the refund id for a
//! refund): asked twice, the provider answers the first outcome again and moves money once.
//! Adapters: [`simulator::Simulator`] in process (the default), [`http::HttpProvider`] over HTTP
//! to `stay payment-sim`; [`resilient::Resilient`] wraps either with a timeout, retries with
//! jittered backoff and a circuit breaker ([`breaker`]).

pub mod breaker;
pub mod http;
pub mod resilient;
pub mod simulator;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stay_domain::{Money, PaymentId, RefundId, ReservationId};

/// Take money for a reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// The idempotency key of the charge.
    pub payment_id: PaymentId,
    /// What it is for.
    pub reservation_id: ReservationId,
    /// How much.
    pub amount: Money,
    /// The card, as a provider token (`tok_visa`, …).
    pub card_token: String,
}

/// What a charge came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ChargeOutcome {
    /// The money was taken.
    Approved {
        /// The provider's reference for the charge.
        provider_ref: String,
    },
    /// The card was refused; no money moved.
    Declined {
        /// Why, in the provider's words (`card_declined`, `insufficient_funds`).
        reason: String,
    },
}

/// Give back (part of) an approved charge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The idempotency key of the refund.
    pub refund_id: RefundId,
    /// The charge refunded.
    pub payment_id: PaymentId,
    /// What it is for.
    pub reservation_id: ReservationId,
    /// How much.
    pub amount: Money,
}

/// What a refund came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RefundOutcome {
    /// The money went back.
    Refunded {
        /// The provider's reference for the refund.
        provider_ref: String,
    },
    /// Refused (no such charge, or more than was charged); no money moved.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Cancel a charge whose outcome Stay does not know (it timed out): if it went through, it is
/// reversed in full; if it never did, nothing happens — and later attempts of that charge fail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidRequest {
    /// The charge voided (also the void's idempotency key).
    pub payment_id: PaymentId,
    /// What it is for.
    pub reservation_id: ReservationId,
}

/// What a void came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum VoidOutcome {
    /// The charge had gone through and was reversed: `amount` went back.
    Voided {
        /// What went back.
        amount: Money,
        /// The provider's reference for the void.
        provider_ref: String,
    },
    /// No charge had gone through; none will now.
    NothingToVoid,
}

/// A call that did not get an answer. Every one of these may be retried with the same key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// No answer in time; the call may or may not have taken effect.
    #[error("the payment provider did not answer in time")]
    Timeout,
    /// The provider could not be reached or answered with a server error.
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
    /// The circuit breaker is open: calls are not being made until `retry_in` has passed.
    #[error("the payment provider is failing; calls resume in {retry_in_ms} ms")]
    CircuitOpen {
        /// Milliseconds until the breaker lets a trial call through.
        retry_in_ms: u64,
    },
    /// The provider refused the request itself (a bug on our side, not a decline).
    #[error("the payment provider refused the request: {0}")]
    Protocol(String),
}

/// What kind of money movement a ledger entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// Money taken.
    Charge,
    /// Money given back.
    Refund,
    /// A charge reversed.
    Void,
}

/// Whether a ledger entry moved money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerStatus {
    /// It moved money.
    Succeeded,
    /// It did not (declined, refused, nothing to void).
    Failed,
    /// Asked, not answered yet.
    Pending,
}

/// One movement in the provider's ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The idempotency key the movement was asked with.
    pub key: String,
    /// The charge it belongs to.
    pub payment_id: PaymentId,
    /// The reservation it is for.
    pub reservation_id: ReservationId,
    /// Charge, refund or void.
    pub kind: LedgerKind,
    /// How much (zero for a failed void).
    pub amount: Money,
    /// Whether it moved money.
    pub status: LedgerStatus,
    /// The provider's reference.
    pub provider_ref: Option<String>,
    /// When the provider recorded it.
    pub recorded_at: DateTime<Utc>,
}

/// The outside system that moves money.
#[async_trait]
pub trait PaymentProvider: Send + Sync + fmt::Debug {
    /// Charges a card, once per `payment_id`.
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderError>;
    /// Refunds (part of) an approved charge, once per `refund_id`.
    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProviderError>;
    /// Voids a charge whose outcome is unknown, once per `payment_id`.
    async fn void(&self, request: &VoidRequest) -> Result<VoidOutcome, ProviderError>;
    /// Every movement the provider has recorded, oldest first.
    async fn ledger(&self) -> Result<Vec<LedgerEntry>, ProviderError>;
}
