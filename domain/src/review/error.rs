//! Why a review refused a command.

use crate::ids::ReviewId;

/// A review's refusal. Variants are stable so callers (and tests) match on them, never on text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The review id is not the one derived from the reservation.
    #[error("review {actual} is not the review of this reservation ({expected})")]
    ReviewIdMismatch {
        /// `ReviewId::for_reservation` of the reservation.
        expected: ReviewId,
        /// The id given.
        actual: ReviewId,
    },
    /// This reservation was reviewed already.
    #[error("this reservation has been reviewed already")]
    AlreadyReviewed,
    /// The reservation is not the reviewing guest's.
    #[error("only the reservation's guest may review it")]
    NotReservationGuest,
    /// The reservation is of another room.
    #[error("the reservation is for another room")]
    WrongRoom,
    /// Only a confirmed reservation can be reviewed.
    #[error("only a confirmed reservation can be reviewed")]
    ReservationNotConfirmed,
    /// No review was posted under this id.
    #[error("no such review")]
    ReviewNotFound,
    /// Only the room's host may reply.
    #[error("only the room's host may reply to its reviews")]
    NotRoomHost,
    /// The host has replied already.
    #[error("the host has already replied to this review")]
    AlreadyReplied,
}

impl ReviewError {
    /// A stable snake_case code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ReviewIdMismatch { .. } => "review_id_mismatch",
            Self::AlreadyReviewed => "already_reviewed",
            Self::NotReservationGuest => "not_owner",
            Self::WrongRoom => "reservation_for_another_room",
            Self::ReservationNotConfirmed => "reservation_not_confirmed",
            Self::ReviewNotFound => "review_not_found",
            Self::NotRoomHost => "not_room_host",
            Self::AlreadyReplied => "already_replied",
        }
    }
}
