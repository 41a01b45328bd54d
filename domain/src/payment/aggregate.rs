//! The payment's state and its rules.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::commands::PaymentCommand;
use super::error::PaymentError;
use super::events::PaymentEvent;
use super::status::PaymentStatus;
use crate::ids::{PaymentId, RefundId, ReservationId};
use crate::money::{Money, MoneyError, PositiveMoney};
use crate::services::DomainServices;
use crate::values::CardToken;

/// The one payment of a reservation.
///
/// Repeats, so saga retries are safe: a second `RequestCharge` is a no-op whatever it carries;
/// recording the outcome already on record is a no-op, recording a contradicting one is
/// `ContradictoryOutcome`; a refund whose `refund_id` is on record is a no-op (or `RefundIdReused`
/// for another amount). In full, by status (– = no-op, ✗ = error):
///
/// | status | approval | decline | failure | void | refund |
/// |---|---|---|---|---|---|
/// | pending | → approved | → declined | → failed | → voided | ✗ `NotApproved` |
/// | approved | – | ✗ | ✗ | ✗ `CannotVoid` | → refunded, up to the charge |
/// | refunded | – | ✗ | ✗ | ✗ `CannotVoid` | ✗ `RefundExceedsCharge` |
/// | declined | ✗ | – | ✗ | – (nothing moved) | ✗ `NotApproved` |
/// | failed | ✗ | ✗ | – | → voided | ✗ `NotApproved` |
/// | voided | ✗ | ✗ | – (the void covers it) | – | ✗ `NotApproved` |
///
/// Every command but `RequestCharge` on a payment never requested is `PaymentNotFound`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    details: Option<PaymentDetails>,
}

/// A requested payment's facts and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDetails {
    /// The payment.
    pub payment_id: PaymentId,
    /// The reservation paid for.
    pub reservation_id: ReservationId,
    /// How much is charged.
    pub amount: PositiveMoney,
    /// The card charged.
    pub card_token: CardToken,
    /// Where it stands.
    pub status: PaymentStatus,
    /// The provider's reference, once approved.
    pub provider_ref: Option<String>,
    /// How much has been refunded in all.
    pub refunded: Money,
    /// Each refund made, by id.
    pub refunds: BTreeMap<RefundId, PositiveMoney>,
}

impl Payment {
    /// The payment's facts and status, once requested.
    pub fn details(&self) -> Option<&PaymentDetails> {
        self.details.as_ref()
    }

    /// The payment's status, once requested.
    pub fn status(&self) -> Option<PaymentStatus> {
        self.details.as_ref().map(|details| details.status)
    }

    /// Decides the events a command leads to, without changing the payment.
    fn decide(&self, command: PaymentCommand) -> Result<Vec<PaymentEvent>, PaymentError> {
        use PaymentStatus::{Approved, Declined, Failed, Pending, Refunded, Voided};

        match command {
            PaymentCommand::RequestCharge { payment_id, reservation_id, amount, card_token } => {
                let expected = PaymentId::for_reservation(reservation_id);
                if payment_id != expected {
                    return Err(PaymentError::PaymentIdMismatch { expected, actual: payment_id });
                }
                if self.details.is_some() {
                    return Ok(vec![]);
                }
                Ok(vec![PaymentEvent::ChargeRequested { payment_id, reservation_id, amount, card_token }])
            }
            PaymentCommand::RecordApproval { provider_ref } => {
                let details = self.requested()?;
                match details.status {
                    Pending => Ok(vec![PaymentEvent::ChargeApproved {
                        payment_id: details.payment_id,
                        reservation_id: details.reservation_id,
                        amount: details.amount,
                        provider_ref,
                    }]),
                    Approved | Refunded => Ok(vec![]),
                    recorded @ (Declined | Failed | Voided) => Err(PaymentError::ContradictoryOutcome { recorded }),
                }
            }
            PaymentCommand::RecordDecline { reason } => {
                let details = self.requested()?;
                match details.status {
                    Pending => Ok(vec![PaymentEvent::ChargeDeclined {
                        payment_id: details.payment_id,
                        reservation_id: details.reservation_id,
                        amount: details.amount,
                        reason,
                    }]),
                    Declined => Ok(vec![]),
                    recorded @ (Approved | Refunded | Failed | Voided) => {
                        Err(PaymentError::ContradictoryOutcome { recorded })
                    }
                }
            }
            PaymentCommand::RecordFailure { reason } => {
                let details = self.requested()?;
                match details.status {
                    Pending => Ok(vec![PaymentEvent::ChargeFailed {
                        payment_id: details.payment_id,
                        reservation_id: details.reservation_id,
                        amount: details.amount,
                        reason,
                    }]),
                    Failed | Voided => Ok(vec![]),
                    recorded @ (Approved | Refunded | Declined) => Err(PaymentError::ContradictoryOutcome { recorded }),
                }
            }
            PaymentCommand::VoidCharge { reason } => {
                let details = self.requested()?;
                match details.status {
                    Pending | Failed => Ok(vec![PaymentEvent::ChargeVoided {
                        payment_id: details.payment_id,
                        reservation_id: details.reservation_id,
                        amount: details.amount,
                        reason,
                    }]),
                    Voided | Declined => Ok(vec![]),
                    status @ (Approved | Refunded) => Err(PaymentError::CannotVoid { status }),
                }
            }
            PaymentCommand::Refund { refund_id, amount } => self.refund(refund_id, amount),
        }
    }

    fn refund(&self, refund_id: RefundId, amount: PositiveMoney) -> Result<Vec<PaymentEvent>, PaymentError> {
        let details = self.requested()?;
        if !matches!(details.status, PaymentStatus::Approved | PaymentStatus::Refunded) {
            return Err(PaymentError::NotApproved { status: details.status });
        }
        if let Some(made) = details.refunds.get(&refund_id) {
            return if *made == amount { Ok(vec![]) } else { Err(PaymentError::RefundIdReused { refund_id }) };
        }
        let charged = details.amount.money();
        let exceeds =
            PaymentError::RefundExceedsCharge { charged, refunded: details.refunded, requested: amount.money() };
        let refunded_total = match details.refunded.checked_add(amount.money()) {
            Ok(total) => total,
            Err(MoneyError::CurrencyMismatch { .. }) => {
                return Err(PaymentError::CurrencyMismatch {
                    charged: charged.currency(),
                    requested: amount.currency(),
                })
            }
            Err(MoneyError::Overflow | MoneyError::BelowZero) => return Err(exceeds),
        };
        if refunded_total.amount_minor() > charged.amount_minor() {
            return Err(exceeds);
        }
        Ok(vec![PaymentEvent::PaymentRefunded {
            payment_id: details.payment_id,
            reservation_id: details.reservation_id,
            refund_id,
            amount,
            refunded_total,
        }])
    }

    fn requested(&self) -> Result<&PaymentDetails, PaymentError> {
        self.details.as_ref().ok_or(PaymentError::PaymentNotFound)
    }

    fn set_status(&mut self, status: PaymentStatus) {
        if let Some(details) = &mut self.details {
            details.status = status;
        }
    }
}

impl Aggregate for Payment {
    const TYPE: &'static str = "Payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
    type Services = DomainServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PaymentEvent::ChargeRequested { payment_id, reservation_id, amount, card_token } => {
                self.details = Some(PaymentDetails {
                    payment_id,
                    reservation_id,
                    amount,
                    card_token,
                    status: PaymentStatus::Pending,
                    provider_ref: None,
                    refunded: Money::zero(amount.currency()),
                    refunds: BTreeMap::new(),
                });
            }
            PaymentEvent::ChargeApproved { provider_ref, .. } => {
                if let Some(details) = &mut self.details {
                    details.status = PaymentStatus::Approved;
                    details.provider_ref = Some(provider_ref);
                }
            }
            PaymentEvent::ChargeDeclined { .. } => self.set_status(PaymentStatus::Declined),
            PaymentEvent::ChargeFailed { .. } => self.set_status(PaymentStatus::Failed),
            PaymentEvent::ChargeVoided { .. } => self.set_status(PaymentStatus::Voided),
            PaymentEvent::PaymentRefunded { refund_id, amount, refunded_total, .. } => {
                if let Some(details) = &mut self.details {
                    details.refunds.insert(refund_id, amount);
                    details.refunded = refunded_total;
                    if refunded_total == details.amount.money() {
                        details.status = PaymentStatus::Refunded;
                    }
                }
            }
        }
    }
}
