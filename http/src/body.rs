//! Request bodies: JSON only, bounded in size, and every way they can be wrong named precisely.
//!
//! Bodies are parsed in two steps. [`JsonBody`] reads raw JSON into a plain request type (strings
//! and numbers): unparseable JSON is 400 `malformed_json`, a wrong type or a missing or unknown
//! field is 422 naming the field's path. The route then parses each field into its domain value
//! with a [`Check`], which collects every invalid field into one 422.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use stay_domain::ValidationError;

use crate::problem::{ApiError, FieldError};

/// The default limit on a request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// The body limit in force, set by the router as a request extension.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// A JSON request body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
            let essence =
                content_type.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the body must be JSON (Content-Type: application/json)",
                ));
            }
        }
        let limit = request.extensions().get::<BodyLimit>().map_or(DEFAULT_MAX_BODY_BYTES, |l| l.0);
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(body_too_large(limit));
        }
        let bytes = read_body(request.into_body(), limit).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// Reads a body of at most `limit` bytes; 413 past it.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(body_too_large(limit)),
        Err(_) => Err(ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", "the request body could not be read")),
    }
}

/// 413 `body_too_large`.
pub fn body_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is larger than {limit} bytes"),
    )
}

/// Parses a JSON document into `T`, naming the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                ApiError::invalid_field(field_at_fault(&path, &inner), inner.to_string())
            }
            _ => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("the body is not valid JSON: {inner}"))
            }
        }
    })?;
    deserializer.end().map_err(|err| {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("trailing characters: {err}"))
    })?;
    Ok(value)
}

/// The field an error is about: its path, or for a missing field, the path of the field itself.
fn field_at_fault(path: &str, err: &serde_json::Error) -> String {
    let message = err.to_string();
    let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split_once('`')).map(|(name, _)| name);
    match (path, missing) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "body".to_owned(),
        (path, Some(name)) => format!("{path}.{name}"),
        (path, None) => path.to_owned(),
    }
}

/// Collects the fields that fail to parse into domain values, to refuse them all at once.
#[derive(Debug, Default)]
pub struct Check {
    errors: Vec<FieldError>,
}

impl Check {
    /// The value if it parsed; otherwise notes the error against `field` and gives `None`.
    pub fn field<T>(&mut self, field: &str, parsed: Result<T, ValidationError>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(err) => {
                self.errors.push(FieldError { field: field.to_owned(), detail: err.to_string() });
                None
            }
        }
    }

    /// Notes a failure that no parser reported.
    pub fn fail(&mut self, field: &str, detail: impl Into<String>) {
        self.errors.push(FieldError { field: field.to_owned(), detail: detail.into() });
    }

    /// The 422 for everything noted (call when some field came back `None`).
    pub fn refusal(self) -> ApiError {
        if self.errors.is_empty() {
            return ApiError::invalid_field("body", "the body is invalid");
        }
        ApiError::validation(self.errors)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        price: Price,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Price {
        amount_minor: i64,
    }

    #[test]
    fn a_wrong_type_names_its_field() {
        let err = parse::<Body>(br#"{"price":{"amount_minor":"ten"}}"#).unwrap_err();
        assert_eq!((err.status(), err.code()), (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"));
        assert_eq!(err.problem().errors[0].field, "price.amount_minor");
    }

    #[test]
    fn a_number_too_big_for_its_field_is_a_validation_failure() {
        let err = parse::<Body>(br#"{"price":{"amount_minor":1e400}}"#).unwrap_err();
        assert!(err.status().is_client_error());
    }

    #[test]
    fn broken_json_is_a_bad_request() {
        let trailing = br#"{"price":{"amount_minor":1}} {}"#;
        for body in [&b"{"[..], b"", b"{\"price\":}", trailing] {
            assert_eq!(parse::<Body>(body).unwrap_err().code(), "malformed_json", "{body:?}");
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        assert_eq!(parse::<Body>(b"{}").unwrap_err().problem().errors[0].field, "price");
        assert_eq!(parse::<Body>(br#"{"price":{}}"#).unwrap_err().problem().errors[0].field, "price.amount_minor");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = parse::<Body>(br#"{"price":{"amount_minor":1},"prise":2}"#).unwrap_err();
        assert_eq!(err.code(), "validation_failed");
    }
}
