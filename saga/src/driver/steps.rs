//! The saga's steps: what each action does to the aggregates and the provider, and the events
//! that say what came of it. A step that cannot complete answers a [`StepError`]; the driver
//! decides what follows.

use chrono::{DateTime, Utc};
use stay_domain::{
    Money, PaymentCommand, PaymentError, PaymentId, PaymentStatus, PositiveMoney, RefundId, RejectionReason,
    ReservationCommand, ReservationError, ReservationStatus, RoomCommand, RoomError, RoomEvent,
};
use stay_store::{CommandContext, ExecuteError};

use super::{Driver, StepError};
use crate::instance::{CompensationReason, Deadline, Facts, SagaEvent, SagaInstance, Step, StepOutcome};
use crate::provider::{
    ChargeOutcome, ChargeRequest, LedgerKind, LedgerStatus, RefundOutcome, RefundRequest, VoidOutcome, VoidRequest,
};

/// What the step needs to know of the saga before it can act.
fn facts(saga: &SagaInstance) -> Result<&Facts, StepError> {
    saga.facts().ok_or(StepError::NotStarted)
}

fn price(saga: &SagaInstance) -> Result<Money, StepError> {
    saga.price().ok_or(StepError::NoPrice)
}

fn positive(amount: Money) -> Result<PositiveMoney, StepError> {
    PositiveMoney::new(amount).map_err(StepError::InvalidAmount)
}

impl Driver {
    fn context(&self, saga: &SagaInstance, saga_id: &str, step: &str) -> CommandContext {
        CommandContext::new("saga")
            .with_command_id(format!("saga:{saga_id}:{step}"))
            .correlated_to(saga_id)
            .caused_by(format!("ReservationSaga:{saga_id}@{}", saga.version()))
    }

    pub(super) async fn start(&self, saga_id: &str) -> Result<Vec<SagaEvent>, StepError> {
        let (reservation, _) = self.executors.reservations.load(saga_id).await?;
        let details = reservation.details().ok_or(StepError::ReservationMissing)?;
        Ok(vec![SagaEvent::SagaStarted {
            reservation_id: details.reservation_id,
            room_id: details.room_id,
            guest_id: details.guest_id.clone(),
            stay: details.stay,
            guests: details.guests,
            card_token: details.card_token.clone(),
        }])
    }

    pub(super) async fn hold(
        &self,
        saga: &SagaInstance,
        started_at: DateTime<Utc>,
    ) -> Result<Vec<SagaEvent>, StepError> {
        let facts = facts(saga)?;
        let room_id = facts.room_id.to_string();
        let command = RoomCommand::HoldNights {
            reservation_id: facts.reservation_id,
            guest_id: facts.guest_id.clone(),
            stay: facts.stay,
            guests: facts.guests,
        };
        let context = self.context(saga, &facts.reservation_id.to_string(), "hold");
        let refused = |reason: RejectionReason| {
            let outcome = StepOutcome::HoldRefused { reason: reason.clone() };
            vec![
                SagaEvent::StepSucceeded { step: Step::Hold, outcome, started_at },
                SagaEvent::CompensationStarted { reason: CompensationReason::Rejected { reason } },
            ]
        };
        match self.executors.rooms.execute(&room_id, command, &context).await {
            Ok(committed) => {
                let held = committed.events.iter().find_map(|e| match &e.event {
                    RoomEvent::NightsHeld { price, .. } => Some(*price),
                    _ => None,
                });
                // Held by an earlier attempt: the room's calendar still has the price.
                let price = match held {
                    Some(price) => price,
                    None => {
                        let (room, _) = self.executors.rooms.load(&room_id).await?;
                        room.calendar()
                            .entry(facts.reservation_id)
                            .map(|entry| entry.price)
                            .ok_or(StepError::HoldVanished)?
                    }
                };
                Ok(vec![SagaEvent::StepSucceeded {
                    step: Step::Hold,
                    outcome: StepOutcome::Held { price },
                    started_at,
                }])
            }
            // The room's refusals are answers: the reservation is rejected.
            Err(ExecuteError::Rejected(err)) => Ok(refused(match err {
                RoomError::DatesUnavailable => RejectionReason::DatesUnavailable,
                RoomError::RoomNotFound | RoomError::RoomDelisted => RejectionReason::RoomUnavailable,
                RoomError::TooManyGuests { .. } => RejectionReason::TooManyGuests,
                RoomError::StayInPast { .. } => RejectionReason::StayInPast,
                other => RejectionReason::Other { detail: other.to_string() },
            })),
            Err(other) => Err(other.into()),
        }
    }

    pub(super) async fn request_charge(
        &self,
        saga: &SagaInstance,
        now: DateTime<Utc>,
    ) -> Result<Vec<SagaEvent>, StepError> {
        let facts = facts(saga)?;
        let amount = positive(price(saga)?)?;
        let payment_id = PaymentId::for_reservation(facts.reservation_id);
        let command = PaymentCommand::RequestCharge {
            payment_id,
            reservation_id: facts.reservation_id,
            amount,
            card_token: facts.card_token.clone(),
        };
        let context = self.context(saga, &facts.reservation_id.to_string(), "request_charge");
        self.executors.payments.execute(&payment_id.to_string(), command, &context).await?;
        // A deadline too far out to represent (a mistyped flag) is no deadline, not a panic.
        let at = chrono::Duration::from_std(self.config.payment_deadline)
            .ok()
            .and_then(|deadline| now.checked_add_signed(deadline))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        Ok(vec![
            SagaEvent::StepRequested { step: Step::Charge },
            SagaEvent::DeadlineSet { deadline: Deadline::Payment, at },
        ])
    }

    /// The payment aggregate's own word on the charge, when it already has one (recorded by an
    /// earlier attempt that died before the saga recorded it).
    async fn known_outcome(&self, saga: &SagaInstance) -> Result<Option<StepOutcome>, StepError> {
        let facts = facts(saga)?;
        let payment_id = PaymentId::for_reservation(facts.reservation_id).to_string();
        let (payment, _) = self.executors.payments.load(&payment_id).await?;
        let Some(details) = payment.details() else { return Ok(None) };
        Ok(match details.status {
            PaymentStatus::Approved | PaymentStatus::Refunded => {
                Some(StepOutcome::ChargeApproved { provider_ref: details.provider_ref.clone().unwrap_or_default() })
            }
            PaymentStatus::Declined => Some(StepOutcome::ChargeDeclined { reason: "declined".into() }),
            PaymentStatus::Pending | PaymentStatus::Failed | PaymentStatus::Voided => None,
        })
    }

    pub(super) async fn charge(
        &self,
        saga: &SagaInstance,
        started_at: DateTime<Utc>,
    ) -> Result<Vec<SagaEvent>, StepError> {
        let facts = facts(saga)?;
        let declined = |reason: String| {
            vec![
                SagaEvent::StepSucceeded {
                    step: Step::Charge,
                    outcome: StepOutcome::ChargeDeclined { reason },
                    started_at,
                },
                SagaEvent::CompensationStarted {
                    reason: CompensationReason::Rejected { reason: RejectionReason::PaymentDeclined },
                },
            ]
        };
        let price = price(saga)?;
        let reservation_id = facts.reservation_id;
        let payment_id = PaymentId::for_reservation(reservation_id);
        let key = format!("charge:{payment_id}");
        match self.known_outcome(saga).await? {
            Some(StepOutcome::ChargeDeclined { reason }) => {
                self.ledger(&key, saga, LedgerKind::Charge, price, LedgerStatus::Failed, None).await?;
                return Ok(declined(reason));
            }
            Some(outcome) => {
                self.note_known_charge(saga, &outcome).await?;
                return Ok(vec![SagaEvent::StepSucceeded { step: Step::Charge, outcome, started_at }]);
            }
            None => {}
        }
        self.ledger(&key, saga, LedgerKind::Charge, price, LedgerStatus::Pending, None).await?;
        let request = ChargeRequest {
            payment_id,
            reservation_id,
            amount: price,
            card_token: facts.card_token.as_str().to_owned(),
        };
        let outcome = self.provider.charge(&request).await?;
        let context = self.context(saga, &reservation_id.to_string(), "record_charge");
        let payment = payment_id.to_string();
        match outcome {
            ChargeOutcome::Approved { provider_ref } => {
                let command = PaymentCommand::RecordApproval { provider_ref: provider_ref.clone() };
                self.executors.payments.execute(&payment, command, &context).await?;
                self.ledger(&key, saga, LedgerKind::Charge, price, LedgerStatus::Succeeded, Some(&provider_ref))
                    .await?;
                let outcome = StepOutcome::ChargeApproved { provider_ref };
                Ok(vec![SagaEvent::StepSucceeded { step: Step::Charge, outcome, started_at }])
            }
            ChargeOutcome::Declined { reason } => {
                let command = PaymentCommand::RecordDecline { reason: reason.clone() };
                self.executors.payments.execute(&payment, command, &context).await?;
                self.ledger(&key, saga, LedgerKind::Charge, price, LedgerStatus::Failed, None).await?;
                Ok(declined(reason))
            }
        }
    }

    pub(super) async fn fire_deadline(&self, saga: &SagaInstance) -> Result<Vec<SagaEvent>, StepError> {
        let facts = facts(saga)?;
        let payment_id = PaymentId::for_reservation(facts.reservation_id).to_string();
        let command =
            PaymentCommand::RecordFailure { reason: "no answer from the provider before the deadline".into() };
        let context = self.context(saga, &facts.reservation_id.to_string(), "record_failure");
        match self.executors.payments.execute(&payment_id, command, &context).await {
            // The charge was answered after all (by an attempt that died before recording it): the
            // compensation's void step learns of it from the Payment and refunds instead.
            Err(ExecuteError::Rejected(_)) | Ok(_) => {}
            Err(other) => return Err(other.into()),
        }
        Ok(vec![
            SagaEvent::DeadlineFired { deadline: Deadline::Payment },
            SagaEvent::CompensationStarted {
                reason: CompensationReason::Rejected { reason: RejectionReason::PaymentUnavailable },
            },
        ])
    }

    pub(super) async fn confirm(
        &self,
        saga: &SagaInstance,
        started_at: DateTime<Utc>,
    ) -> Result<Vec<SagaEvent>, StepError> {
        let facts = facts(saga)?;
        let price = price(saga)?;
        let id = facts.reservation_id.to_string();
        let booking = RoomCommand::ConfirmBooking { reservation_id: facts.reservation_id };
        let context = self.context(saga, &id, "confirm_booking");
        self.executors.rooms.execute(&facts.room_id.to_string(), booking, &context).await?;
        let confirm = ReservationCommand::Confirm {
            total_price: price,
            payment_id: PaymentId::for_reservation(facts.reservation_id),
        };
        let context = self.context(saga, &id, "confirm");
        match self.executors.reservations.execute(&id, confirm, &context).await {
            Ok(_) => {
                Ok(vec![SagaEvent::StepSucceeded { step: Step::Confirm, outcome: StepOutcome::Confirmed, started_at }])
            }
            Err(ExecuteError::Rejected(ReservationError::WrongStatus {
                status: ReservationStatus::Cancelling | ReservationStatus::Cancelled,
            })) => Ok(vec![
                SagaEvent::StepSucceeded {
                    step: Step::Confirm,
                    outcome: StepOutcome::CancelledBeforeConfirm,
                    started_at,
                },
                SagaEvent::CompensationStarted { reason: CompensationReason::Cancelled },
            ]),
            Err(other) => Err(other.into()),
        }
    }

    pub(super) async fn void(
        &self,
        saga: &SagaInstance,
        started_at: DateTime<Utc>,
    ) -> Result<Vec<SagaEvent>, StepError> {
        let facts = facts(saga)?;
        // An answer recorded on the payment but not in the saga settles what is to be undone.
        if let Some(outcome) = self.known_outcome(saga).await? {
            self.note_known_charge(saga, &outcome).await?;
            return Ok(vec![SagaEvent::StepSucceeded { step: Step::Charge, outcome, started_at }]);
        }
        let price = price(saga)?;
        let reservation_id = facts.reservation_id;
        let payment_id = PaymentId::for_reservation(reservation_id);
        let key = format!("void:{payment_id}");
        self.ledger(&key, saga, LedgerKind::Void, price, LedgerStatus::Pending, None).await?;
        let outcome = self.provider.void(&VoidRequest { payment_id, reservation_id }).await?;
        let reason = "the charge's outcome was unknown when the reservation was undone".to_owned();
        let context = self.context(saga, &reservation_id.to_string(), "void");
        match self
            .executors
            .payments
            .execute(&payment_id.to_string(), PaymentCommand::VoidCharge { reason }, &context)
            .await
        {
            Ok(_) | Err(ExecuteError::Rejected(PaymentError::PaymentNotFound)) => {}
            Err(other) => return Err(other.into()),
        }
        let charge_key = format!("charge:{payment_id}");
        let amount = match outcome {
            VoidOutcome::Voided { amount, provider_ref } => {
                self.ledger(&charge_key, saga, LedgerKind::Charge, price, LedgerStatus::Succeeded, None).await?;
                self.ledger(&key, saga, LedgerKind::Void, amount, LedgerStatus::Succeeded, Some(&provider_ref)).await?;
                Some(amount)
            }
            VoidOutcome::NothingToVoid => {
                self.ledger(&charge_key, saga, LedgerKind::Charge, price, LedgerStatus::Failed, None).await?;
                let zero = Money::zero(price.currency());
                self.ledger(&key, saga, LedgerKind::Void, zero, LedgerStatus::Failed, None).await?;
                None
            }
        };
        Ok(vec![SagaEvent::StepSucceeded { step: Step::Void, outcome: StepOutcome::Voided { amount }, started_at }])
    }

    pub(super) async fn refund(
        &self,
        saga: &SagaInstance,
        started_at: DateTime<Utc>,
    ) -> Result<Vec<SagaEvent>, StepError> {
        let facts = facts(saga)?;
        let price = price(saga)?;
        let reservation_id = facts.reservation_id;
        let payment_id = PaymentId::for_reservation(reservation_id);
        let refund_id = RefundId::for_cancellation(reservation_id);
        let key = format!("refund:{refund_id}");
        self.ledger(&key, saga, LedgerKind::Refund, price, LedgerStatus::Pending, None).await?;
        let request = RefundRequest { refund_id, payment_id, reservation_id, amount: price };
        match self.provider.refund(&request).await? {
            RefundOutcome::Refunded { provider_ref } => {
                let amount = positive(price)?;
                let context = self.context(saga, &reservation_id.to_string(), "refund");
                let command = PaymentCommand::Refund { refund_id, amount };
                self.executors.payments.execute(&payment_id.to_string(), command, &context).await?;
                self.ledger(&key, saga, LedgerKind::Refund, price, LedgerStatus::Succeeded, Some(&provider_ref))
                    .await?;
                Ok(vec![SagaEvent::StepSucceeded {
                    step: Step::Refund,
                    outcome: StepOutcome::Refunded { amount: price },
                    started_at,
                }])
            }
            RefundOutcome::Refused { reason } => {
                self.ledger(&key, saga, LedgerKind::Refund, price, LedgerStatus::Failed, None).await?;
                Err(StepError::RefundRefused { reason })
            }
        }
    }

    pub(super) async fn release(
        &self,
        saga: &SagaInstance,
        started_at: DateTime<Utc>,
    ) -> Result<Vec<SagaEvent>, StepError> {
        let facts = facts(saga)?;
        let command = RoomCommand::ReleaseNights { reservation_id: facts.reservation_id };
        let context = self.context(saga, &facts.reservation_id.to_string(), "release");
        match self.executors.rooms.execute(&facts.room_id.to_string(), command, &context).await {
            // A room that does not exist holds nothing.
            Ok(_) | Err(ExecuteError::Rejected(RoomError::RoomNotFound)) => {}
            Err(other) => return Err(other.into()),
        }
        Ok(vec![SagaEvent::StepSucceeded { step: Step::Release, outcome: StepOutcome::Released, started_at }])
    }

    pub(super) async fn reject(
        &self,
        saga: &SagaInstance,
        reason: RejectionReason,
        started_at: DateTime<Utc>,
    ) -> Result<Vec<SagaEvent>, StepError> {
        let facts = facts(saga)?;
        let id = facts.reservation_id.to_string();
        let context = self.context(saga, &id, "reject");
        match self.executors.reservations.execute(&id, ReservationCommand::Reject { reason }, &context).await {
            Ok(_) => {
                Ok(vec![SagaEvent::StepSucceeded { step: Step::Reject, outcome: StepOutcome::Rejected, started_at }])
            }
            // The guest cancelled while the saga was undoing: finish as a cancellation.
            Err(ExecuteError::Rejected(ReservationError::WrongStatus {
                status: ReservationStatus::Cancelling | ReservationStatus::Cancelled,
            })) => Ok(vec![SagaEvent::CompensationStarted { reason: CompensationReason::Cancelled }]),
            Err(other) => Err(other.into()),
        }
    }

    pub(super) async fn complete_cancellation(
        &self,
        saga: &SagaInstance,
        started_at: DateTime<Utc>,
    ) -> Result<Vec<SagaEvent>, StepError> {
        let facts = facts(saga)?;
        let id = facts.reservation_id.to_string();
        let context = self.context(saga, &id, "complete_cancellation");
        self.executors.reservations.execute(&id, ReservationCommand::CompleteCancellation, &context).await?;
        let outcome = StepOutcome::CancellationCompleted;
        Ok(vec![SagaEvent::StepSucceeded { step: Step::CompleteCancellation, outcome, started_at }])
    }

    /// Brings the ledger's charge row up to what the Payment recorded (a driver may have died
    /// between recording the provider's answer on the Payment and in the ledger).
    async fn note_known_charge(&self, saga: &SagaInstance, outcome: &StepOutcome) -> Result<(), StepError> {
        let (Some(facts), Some(price)) = (saga.facts(), saga.price()) else { return Ok(()) };
        let key = format!("charge:{}", PaymentId::for_reservation(facts.reservation_id));
        match outcome {
            StepOutcome::ChargeApproved { provider_ref } => {
                let provider_ref = Some(provider_ref.as_str()).filter(|r| !r.is_empty());
                self.ledger(&key, saga, LedgerKind::Charge, price, LedgerStatus::Succeeded, provider_ref).await
            }
            StepOutcome::ChargeDeclined { .. } => {
                self.ledger(&key, saga, LedgerKind::Charge, price, LedgerStatus::Failed, None).await
            }
            _ => Ok(()),
        }
    }

    /// Notes a provider call in the ledger. A failure fails the step, whose retry (every step is
    /// idempotent) writes the row again, so the ledger never stays behind the Payment.
    async fn ledger(
        &self,
        key: &str,
        saga: &SagaInstance,
        kind: LedgerKind,
        amount: Money,
        status: LedgerStatus,
        provider_ref: Option<&str>,
    ) -> Result<(), StepError> {
        let Some(facts) = saga.facts() else { return Ok(()) };
        let payment_id = PaymentId::for_reservation(facts.reservation_id).to_string();
        let now = self.clock.now().timestamp_millis();
        self.ledger
            .record_payment(
                key,
                &payment_id,
                &facts.reservation_id.to_string(),
                kind,
                amount.amount_minor(),
                amount.currency().as_str(),
                status,
                provider_ref,
                now,
            )
            .await
            .map_err(StepError::Ledger)
    }
}
