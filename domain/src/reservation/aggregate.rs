//! The reservation's state and its rules.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::commands::ReservationCommand;
use super::error::ReservationError;
use super::events::{RejectionReason, ReservationEvent};
use super::status::ReservationStatus;
use crate::ids::{PaymentId, ReservationId, RoomId, UserId};
use crate::money::Money;
use crate::services::DomainServices;
use crate::values::{CardToken, GuestCount, StayDates};

/// A guest's reservation.
///
/// Repeats, so saga retries are safe:
///
/// | command | no-op (no events) when | error when |
/// |---|---|---|
/// | `RequestReservation` | requested already with the same facts | requested already with other facts (`AlreadyRequested`) |
/// | `Confirm` | confirmed already | rejected, cancelling or cancelled (`WrongStatus`) |
/// | `Reject` | rejected already (whatever the reason) | confirmed, cancelling or cancelled (`WrongStatus`) |
/// | `RequestCancellation` | cancelling or cancelled already | rejected (`WrongStatus`); the stay has begun (`StayAlreadyBegun`); not the guest nor an admin (`NotOwner`, checked first) |
/// | `CompleteCancellation` | cancelled already | pending, confirmed or rejected (`WrongStatus`) |
///
/// Every command but `RequestReservation` on an unknown reservation is `ReservationNotFound`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    details: Option<ReservationDetails>,
}

/// A requested reservation's facts and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationDetails {
    /// The reservation.
    pub reservation_id: ReservationId,
    /// The room.
    pub room_id: RoomId,
    /// The guest.
    pub guest_id: UserId,
    /// The nights.
    pub stay: StayDates,
    /// How many guests.
    pub guests: GuestCount,
    /// The card to charge.
    pub card_token: CardToken,
    /// Where it stands.
    pub status: ReservationStatus,
    /// What the guest paid, once confirmed.
    pub total_price: Option<Money>,
    /// The approved payment, once confirmed.
    pub payment_id: Option<PaymentId>,
    /// Why it was rejected, if it was.
    pub rejection: Option<RejectionReason>,
    /// Whether it was ever confirmed (stays true through a cancellation).
    pub was_confirmed: bool,
}

impl Reservation {
    /// The reservation's facts and status, once requested.
    pub fn details(&self) -> Option<&ReservationDetails> {
        self.details.as_ref()
    }

    /// The reservation's status, once requested.
    pub fn status(&self) -> Option<ReservationStatus> {
        self.details.as_ref().map(|details| details.status)
    }

    /// Decides the events a command leads to, without changing the reservation.
    fn decide(
        &self,
        command: ReservationCommand,
        services: &DomainServices,
    ) -> Result<Vec<ReservationEvent>, ReservationError> {
        match command {
            ReservationCommand::RequestReservation { reservation_id, room_id, guest_id, stay, guests, card_token } => {
                match &self.details {
                    None => Ok(vec![ReservationEvent::ReservationRequested {
                        reservation_id,
                        room_id,
                        guest_id,
                        stay,
                        guests,
                        card_token,
                    }]),
                    Some(details)
                        if details.room_id == room_id
                            && details.guest_id == guest_id
                            && details.stay == stay
                            && details.guests == guests
                            && details.card_token == card_token =>
                    {
                        Ok(vec![])
                    }
                    Some(_) => Err(ReservationError::AlreadyRequested),
                }
            }
            ReservationCommand::Confirm { total_price, payment_id } => {
                let details = self.requested()?;
                let expected = PaymentId::for_reservation(details.reservation_id);
                if payment_id != expected {
                    return Err(ReservationError::PaymentMismatch { expected, actual: payment_id });
                }
                match details.status {
                    ReservationStatus::Confirmed => Ok(vec![]),
                    ReservationStatus::Pending => Ok(vec![ReservationEvent::ReservationConfirmed {
                        reservation_id: details.reservation_id,
                        room_id: details.room_id,
                        guest_id: details.guest_id.clone(),
                        stay: details.stay,
                        total_price,
                        payment_id,
                    }]),
                    status => Err(ReservationError::WrongStatus { status }),
                }
            }
            ReservationCommand::Reject { reason } => {
                let details = self.requested()?;
                match details.status {
                    ReservationStatus::Rejected => Ok(vec![]),
                    ReservationStatus::Pending => Ok(vec![ReservationEvent::ReservationRejected {
                        reservation_id: details.reservation_id,
                        room_id: details.room_id,
                        guest_id: details.guest_id.clone(),
                        reason,
                    }]),
                    status => Err(ReservationError::WrongStatus { status }),
                }
            }
            ReservationCommand::RequestCancellation { actor, actor_is_admin } => {
                let details = self.requested()?;
                if actor != details.guest_id && !actor_is_admin {
                    return Err(ReservationError::NotOwner);
                }
                match details.status {
                    ReservationStatus::Cancelling | ReservationStatus::Cancelled => Ok(vec![]),
                    ReservationStatus::Pending | ReservationStatus::Confirmed => {
                        let today = services.clock.today();
                        let check_in = details.stay.check_in();
                        if check_in <= today {
                            return Err(ReservationError::StayAlreadyBegun { check_in, today });
                        }
                        Ok(vec![ReservationEvent::CancellationRequested {
                            reservation_id: details.reservation_id,
                            room_id: details.room_id,
                            guest_id: details.guest_id.clone(),
                            requested_by: actor,
                            by_admin: actor_is_admin,
                            was_confirmed: details.status == ReservationStatus::Confirmed,
                        }])
                    }
                    status => Err(ReservationError::WrongStatus { status }),
                }
            }
            ReservationCommand::CompleteCancellation => {
                let details = self.requested()?;
                match details.status {
                    ReservationStatus::Cancelled => Ok(vec![]),
                    ReservationStatus::Cancelling => Ok(vec![ReservationEvent::ReservationCancelled {
                        reservation_id: details.reservation_id,
                        room_id: details.room_id,
                        guest_id: details.guest_id.clone(),
                        was_confirmed: details.was_confirmed,
                    }]),
                    status => Err(ReservationError::WrongStatus { status }),
                }
            }
        }
    }

    fn requested(&self) -> Result<&ReservationDetails, ReservationError> {
        self.details.as_ref().ok_or(ReservationError::ReservationNotFound)
    }
}

impl Aggregate for Reservation {
    const TYPE: &'static str = "Reservation";
    type Command = ReservationCommand;
    type Event = ReservationEvent;
    type Error = ReservationError;
    type Services = DomainServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command, services)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ReservationEvent::ReservationRequested { reservation_id, room_id, guest_id, stay, guests, card_token } => {
                self.details = Some(ReservationDetails {
                    reservation_id,
                    room_id,
                    guest_id,
                    stay,
                    guests,
                    card_token,
                    status: ReservationStatus::Pending,
                    total_price: None,
                    payment_id: None,
                    rejection: None,
                    was_confirmed: false,
                });
            }
            ReservationEvent::ReservationConfirmed { total_price, payment_id, .. } => {
                if let Some(details) = &mut self.details {
                    details.status = ReservationStatus::Confirmed;
                    details.total_price = Some(total_price);
                    details.payment_id = Some(payment_id);
                    details.was_confirmed = true;
                }
            }
            ReservationEvent::ReservationRejected { reason, .. } => {
                if let Some(details) = &mut self.details {
                    details.status = ReservationStatus::Rejected;
                    details.rejection = Some(reason);
                }
            }
            ReservationEvent::CancellationRequested { .. } => {
                if let Some(details) = &mut self.details {
                    details.status = ReservationStatus::Cancelling;
                }
            }
            ReservationEvent::ReservationCancelled { .. } => {
                if let Some(details) = &mut self.details {
                    details.status = ReservationStatus::Cancelled;
                }
            }
        }
    }
}
