//! The aggregates' business refusals as HTTP answers: the one place where a domain error gets its
//! status, so the mapping can be read (and changed) in one sitting. Each refusal keeps the
//! domain's own stable code.

use axum::http::StatusCode;
use stay_domain::{ReservationError, ReviewError, RoomError};
use stay_http::ApiError;
use stay_store::ExecuteError;

/// A business refusal of an aggregate, with the status it is answered with.
pub trait Refusal: std::error::Error {
    /// The HTTP status.
    fn status(&self) -> StatusCode;
    /// The stable problem code.
    fn code(&self) -> &'static str;
}

/// The answer to a refusal.
pub fn refused<E: Refusal>(err: E) -> ApiError {
    ApiError::new(err.status(), err.code(), err.to_string())
}

/// The answer to a failed command: its refusal, or what a conflict or a store failure means.
pub fn failed<E: Refusal>(err: ExecuteError<E>) -> ApiError {
    ApiError::from_execute(err, refused)
}

impl Refusal for RoomError {
    fn status(&self) -> StatusCode {
        match self {
            RoomError::RoomNotFound | RoomError::HoldNotFound => StatusCode::NOT_FOUND,
            RoomError::NotOwner => StatusCode::FORBIDDEN,
            RoomError::CurrencyChange { .. } | RoomError::PriceOverflow => StatusCode::UNPROCESSABLE_ENTITY,
            RoomError::AlreadyRegistered
            | RoomError::RoomDelisted
            | RoomError::HasUpcomingStays
            | RoomError::DatesUnavailable
            | RoomError::TooManyGuests { .. }
            | RoomError::StayInPast { .. }
            | RoomError::HoldAlreadyReleased => StatusCode::CONFLICT,
        }
    }

    fn code(&self) -> &'static str {
        RoomError::code(self)
    }
}

impl Refusal for ReservationError {
    fn status(&self) -> StatusCode {
        match self {
            ReservationError::ReservationNotFound => StatusCode::NOT_FOUND,
            ReservationError::NotOwner => StatusCode::FORBIDDEN,
            ReservationError::AlreadyRequested
            | ReservationError::WrongStatus { .. }
            | ReservationError::PaymentMismatch { .. }
            | ReservationError::StayAlreadyBegun { .. } => StatusCode::CONFLICT,
        }
    }

    fn code(&self) -> &'static str {
        ReservationError::code(self)
    }
}

impl Refusal for ReviewError {
    fn status(&self) -> StatusCode {
        match self {
            ReviewError::ReviewNotFound => StatusCode::NOT_FOUND,
            ReviewError::NotReservationGuest | ReviewError::NotRoomHost => StatusCode::FORBIDDEN,
            ReviewError::ReviewIdMismatch { .. } | ReviewError::WrongRoom => StatusCode::UNPROCESSABLE_ENTITY,
            ReviewError::AlreadyReviewed | ReviewError::ReservationNotConfirmed | ReviewError::AlreadyReplied => {
                StatusCode::CONFLICT
            }
        }
    }

    fn code(&self) -> &'static str {
        ReviewError::code(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_refusal_maps_to_a_4xx() {
        let refusals: Vec<ApiError> = vec![
            refused(RoomError::DatesUnavailable),
            refused(RoomError::NotOwner),
            refused(RoomError::RoomNotFound),
            refused(ReservationError::ReservationNotFound),
            refused(ReservationError::NotOwner),
            refused(ReviewError::AlreadyReviewed),
            refused(ReviewError::NotRoomHost),
        ];
        for refusal in refusals {
            assert!(refusal.status().is_client_error(), "{refusal:?}");
        }
    }

    #[test]
    fn a_refusal_keeps_the_domain_code() {
        let err = refused(RoomError::HasUpcomingStays);
        assert_eq!((err.status(), err.code()), (StatusCode::CONFLICT, "room_has_upcoming_stays"));
        let err = refused(ReviewError::NotRoomHost);
        assert_eq!((err.status(), err.code()), (StatusCode::FORBIDDEN, "not_room_host"));
    }

    #[test]
    fn a_refused_command_answers_its_refusal_and_a_conflict_answers_409() {
        let err = failed(ExecuteError::Rejected(RoomError::DatesUnavailable));
        assert_eq!((err.status(), err.code()), (StatusCode::CONFLICT, "dates_unavailable"));
        let err = failed(ExecuteError::<RoomError>::Conflict { attempts: 25 });
        assert_eq!(err.code(), "concurrent_modification");
    }
}
