//! Query strings: parsed into a plain type, with anything that does not fit named in a 422.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// Query parameters of type `T`; anything that does not fit is 422 naming the parameter.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(QueryParams)
            .map_err(|err| ApiError::invalid_field("query", format!("the query string does not fit: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Page {
        limit: Option<i64>,
    }

    async fn extract(uri: &str) -> Result<Page, ApiError> {
        let (mut parts, ()) = Request::get(uri).body(()).expect("request").into_parts();
        QueryParams::<Page>::from_request_parts(&mut parts, &()).await.map(|QueryParams(page)| page)
    }

    #[tokio::test]
    async fn parameters_parse_into_their_types() {
        assert_eq!(extract("/x?limit=7").await.expect("parses").limit, Some(7));
        assert_eq!(extract("/x").await.expect("parses").limit, None);
    }

    #[tokio::test]
    async fn a_parameter_that_does_not_fit_is_a_422() {
        let err = extract("/x?limit=seven").await.expect_err("refused");
        assert_eq!((err.status().as_u16(), err.code()), (422, "validation_failed"));
    }
}
