//! Every refusal as an RFC 9457 problem document with a stable `code`.
//!
//! Handlers return [`ApiError`]; this module is the one place where domain and store errors become
//! HTTP statuses and codes, so the mapping can be read (and changed) in one sitting.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stay_domain::{ReservationError, ReviewError, RoomError, ValidationError};
use stay_store::{ExecuteError, StoreError};
use utoipa::ToSchema;

/// The media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One field that failed validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as a JSON path (`nightly_price.amount_minor`).
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

/// An RFC 9457 problem document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:stay:problem:<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// A stable snake_case code to match on.
    pub code: String,
    /// The fields at fault, for validation failures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    retry_after_secs: Option<u32>,
}

impl ApiError {
    /// A refusal with a status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), errors: Vec::new(), retry_after_secs: None }
    }

    /// 401: no valid bearer token.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }

    /// 403: the token's role may not do this.
    pub fn wrong_role(allowed: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden_role", format!("this needs the role {allowed}"))
    }

    /// 404 with a code naming what was not found.
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    /// 422 `validation_failed` listing the fields at fault.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.detail),
            many => format!("{} fields are invalid", many.len()),
        };
        Self { errors, ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", detail) }
    }

    /// 422 for one field.
    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::validation(vec![FieldError { field: field.into(), detail: detail.into() }])
    }

    /// 503 `overloaded`, retry after a second.
    pub fn overloaded() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many requests in flight; retry shortly")
            .retry_after(1)
    }

    /// 500 for a failure that is ours, not the caller's; the cause is logged here, once.
    pub fn internal(context: &str, err: &dyn std::error::Error) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "the server failed; the request may be retried")
    }

    /// The same refusal with a `Retry-After` header.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after_secs = Some(seconds);
        self
    }

    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Its code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:stay:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
            errors: self.errors.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        Self::invalid_field(err.field(), err.to_string())
    }
}

impl From<RoomError> for ApiError {
    fn from(err: RoomError) -> Self {
        let status = match err {
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
        };
        Self::new(status, err.code(), err.to_string())
    }
}

impl From<ReservationError> for ApiError {
    fn from(err: ReservationError) -> Self {
        let status = match err {
            ReservationError::ReservationNotFound => StatusCode::NOT_FOUND,
            ReservationError::NotOwner => StatusCode::FORBIDDEN,
            ReservationError::AlreadyRequested
            | ReservationError::WrongStatus { .. }
            | ReservationError::PaymentMismatch { .. }
            | ReservationError::StayAlreadyBegun { .. } => StatusCode::CONFLICT,
        };
        Self::new(status, err.code(), err.to_string())
    }
}

impl From<ReviewError> for ApiError {
    fn from(err: ReviewError) -> Self {
        let status = match err {
            ReviewError::ReviewNotFound => StatusCode::NOT_FOUND,
            ReviewError::NotReservationGuest | ReviewError::NotRoomHost => StatusCode::FORBIDDEN,
            ReviewError::ReviewIdMismatch { .. } | ReviewError::WrongRoom => StatusCode::UNPROCESSABLE_ENTITY,
            ReviewError::AlreadyReviewed | ReviewError::ReservationNotConfirmed | ReviewError::AlreadyReplied => {
                StatusCode::CONFLICT
            }
        };
        Self::new(status, err.code(), err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict => Self::conflict_after_retries(),
            StoreError::Closed => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is stopping").retry_after(1)
            }
            other => Self::internal("event store failed", &other),
        }
    }
}

impl<E> From<ExecuteError<E>> for ApiError
where
    E: std::error::Error + Into<ApiError>,
{
    fn from(err: ExecuteError<E>) -> Self {
        match err {
            ExecuteError::Rejected(refusal) => refusal.into(),
            ExecuteError::Conflict { .. } => Self::conflict_after_retries(),
            ExecuteError::Store(store) => store.into(),
        }
    }
}

impl ApiError {
    fn conflict_after_retries() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "concurrent_modification",
            "the resource kept changing under the request; retry it",
        )
        .retry_after(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_refusal_maps_to_a_4xx() {
        let refusals: Vec<ApiError> = vec![
            RoomError::DatesUnavailable.into(),
            RoomError::NotOwner.into(),
            RoomError::RoomNotFound.into(),
            ReservationError::ReservationNotFound.into(),
            ReservationError::NotOwner.into(),
            ReviewError::AlreadyReviewed.into(),
            ReviewError::NotRoomHost.into(),
        ];
        for refusal in refusals {
            assert!(refusal.status().is_client_error(), "{refusal:?}");
        }
    }

    #[test]
    fn a_refusal_keeps_the_domain_code() {
        let err: ApiError = RoomError::HasUpcomingStays.into();
        assert_eq!((err.status(), err.code()), (StatusCode::CONFLICT, "room_has_upcoming_stays"));
        let err: ApiError = ReviewError::NotRoomHost.into();
        assert_eq!((err.status(), err.code()), (StatusCode::FORBIDDEN, "not_room_host"));
    }

    #[test]
    fn overload_says_when_to_come_back() {
        let response = ApiError::overloaded().into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
