//! Every refusal as an RFC 9457 problem document with a stable `code`.
//!
//! Handlers return [`ApiError`]. This module maps what every role shares: invalid values (422),
//! store failures (409 after retries, 503 while stopping, 500 otherwise) and the service's own
//! refusals. An aggregate's business refusals are mapped by the command API, which knows them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stay_domain::ValidationError;
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

    /// 422 for a list's `cursor` that no page of the list gave (every list answers this alike).
    pub fn invalid_cursor() -> Self {
        Self::invalid_field("cursor", "not a cursor from this list: give the next_cursor of a page, or none")
    }

    /// 503 `overloaded`, to retry after `retry_after_secs` (the server's estimate of its backlog).
    pub fn overloaded(retry_after_secs: u32) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in flight; retry after the seconds Retry-After gives",
        )
        .retry_after(retry_after_secs)
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
    /// 422 naming the field, with the error's own code (`validation_failed` unless more precise).
    fn from(err: ValidationError) -> Self {
        Self { code: err.code(), ..Self::invalid_field(err.field(), err.to_string()) }
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

impl ApiError {
    /// An executor's failure. The aggregate's refusal is the caller's to map (`rejected`); a
    /// conflict that outlasted the retries and a failing store mean the same for every aggregate.
    pub fn from_execute<E: std::error::Error>(err: ExecuteError<E>, rejected: impl FnOnce(E) -> ApiError) -> Self {
        match err {
            ExecuteError::Rejected(refusal) => rejected(refusal),
            ExecuteError::Conflict { .. } => Self::conflict_after_retries(),
            ExecuteError::Store(store) => store.into(),
        }
    }

    /// 409 `concurrent_modification`: other writers kept changing the aggregate.
    pub fn conflict_after_retries() -> Self {
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

    #[derive(Debug, thiserror::Error)]
    #[error("no")]
    struct Refusal;

    #[test]
    fn an_invalid_value_is_a_422_naming_its_field() {
        let err: ApiError = ValidationError::InvalidDate { field: "check_in", value: "x".into() }.into();
        assert_eq!((err.status(), err.code()), (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"));
        assert_eq!(err.problem().errors[0].field, "check_in");
    }

    #[test]
    fn a_stay_beyond_the_booking_horizon_is_a_422_with_its_own_code() {
        let day = |y| chrono::NaiveDate::from_ymd_opt(y, 1, 1).expect("a date");
        let err: ApiError =
            ValidationError::BeyondBookingHorizon { check_out: day(9999), last_check_out: day(2030), days: 730 }.into();
        assert_eq!((err.status(), err.code()), (StatusCode::UNPROCESSABLE_ENTITY, "beyond_booking_horizon"));
        assert_eq!(err.problem().kind, "urn:stay:problem:beyond_booking_horizon");
        assert_eq!(err.problem().errors[0].field, "check_out");
    }

    #[test]
    fn executor_failures_map_alike_for_every_aggregate() {
        let refused = ApiError::from_execute(ExecuteError::Rejected(Refusal), |_| ApiError::not_found("x", "y"));
        assert_eq!(refused.status(), StatusCode::NOT_FOUND);
        let conflict = ApiError::from_execute(ExecuteError::<Refusal>::Conflict { attempts: 3 }, |_| unreachable!());
        assert_eq!((conflict.status(), conflict.code()), (StatusCode::CONFLICT, "concurrent_modification"));
        let closed = ApiError::from_execute(ExecuteError::<Refusal>::Store(StoreError::Closed), |_| unreachable!());
        assert_eq!((closed.status(), closed.code()), (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"));
    }

    #[test]
    fn overload_says_when_to_come_back() {
        let response = ApiError::overloaded(3).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
