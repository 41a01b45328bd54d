//! `GET /v1/admin/sagas`: the saga overview from the `sagas` read model, filtered by status and
//! paged by cursor (admin).
//!
//! Pages run in saga id order, descending. That is not time order: a saga's id is its reservation's,
//! time-ordered (UUID v7) only when the reservation came without an `Idempotency-Key` (a keyed one
//! gets an id derived from the key, UUID v5). What the order buys is stability: a saga keeps its place
//! whatever happens to it, so following `next_cursor` neither repeats nor skips one while sagas
//! move on (see `stay_projections::queries::sagas`). One saga's timeline, and the resumes, are the
//! saga's own routes (`/v1/admin/sagas/{saga_id}`).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use stay_domain::ReservationId;
use stay_http::auth::{Admins, Caller};
use stay_http::{ApiError, Problem, QueryParams};
use stay_projections::queries::sagas::{self, SagaRow, SagaStatus};
use utoipa::{IntoParams, ToSchema};

use crate::wait::Freshness;
use crate::QueryState;

/// The default page size.
pub const DEFAULT_LIMIT: i64 = 100;
/// The largest page.
pub const MAX_LIMIT: i64 = 1000;

/// `?status&limit&cursor` of the saga list (read by hand: `status` may repeat).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SagaWindow {
    /// Only sagas of these statuses: `running`, `completed`, `compensated`, `parked`; several
    /// separated by commas (`parked,running`), or the parameter repeated. All, without it.
    #[param(pattern = "^(running|completed|compensated|parked)(,(running|completed|compensated|parked))*$")]
    pub status: Option<String>,
    /// At most this many, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page (a saga id).
    #[param(pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$")]
    pub cursor: Option<String>,
}

/// A saga in the list (API.md).
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaSummary {
    saga_id: String,
    reservation_id: String,
    /// `running`, `completed`, `compensated` or `parked`.
    status: String,
    step: String,
    /// When its last event was recorded.
    updated_at: String,
    /// How it ended (`confirmed`, `rejected`, `cancelled`), once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<String>,
    /// The feed position of its last event.
    position: String,
}

impl From<SagaRow> for SagaSummary {
    fn from(row: SagaRow) -> Self {
        Self {
            reservation_id: row.saga_id.clone(),
            saga_id: row.saga_id,
            status: row.status.as_str().to_owned(),
            step: row.step,
            updated_at: row.updated_at,
            outcome: row.outcome,
            position: row.position,
        }
    }
}

/// A page of the saga list.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaList {
    items: Vec<SagaSummary>,
    /// The `cursor` of the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// What a saga list asks for, checked.
#[derive(Debug, PartialEq, Eq)]
struct Asked {
    statuses: Vec<SagaStatus>,
    limit: i64,
    cursor: Option<String>,
}

/// Reads `status` (repeated, or comma-separated), `limit` and `cursor` from the query's pairs;
/// anything that does not fit is a 422 naming it. Other parameters are left to their readers.
fn asked(pairs: &[(String, String)]) -> Result<Asked, ApiError> {
    let mut asked = Asked { statuses: Vec::new(), limit: DEFAULT_LIMIT, cursor: None };
    for (name, value) in pairs {
        match name.as_str() {
            "status" => {
                for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                    let status =
                        word.parse::<SagaStatus>().map_err(|err| ApiError::invalid_field("status", err.to_string()))?;
                    if !asked.statuses.contains(&status) {
                        asked.statuses.push(status);
                    }
                }
            }
            "limit" => {
                asked.limit = value.parse::<i64>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                    ApiError::invalid_field("limit", format!("must be a whole number from 1 to {MAX_LIMIT}"))
                })?;
            }
            "cursor" if value.is_empty() => asked.cursor = None,
            "cursor" => {
                // A cursor is a saga id from a page; anything else is refused, not read as "from the top".
                let id = Some(value)
                    .filter(|v| v.len() == 36)
                    .and_then(|v| v.parse::<ReservationId>().ok())
                    .ok_or_else(ApiError::invalid_cursor)?;
                asked.cursor = Some(id.to_string());
            }
            _ => {}
        }
    }
    asked.statuses.sort();
    Ok(asked)
}

/// Sagas by id (a stable order, not time order), optionally of some statuses, one page at a time (admin).
#[utoipa::path(
    get, path = "/v1/admin/sagas", tag = "admin", params(SagaWindow, Freshness), security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the sagas", body = SagaList),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad parameters: an unknown `status`, a `limit` outside 1 to 1000, a `cursor` not from this list", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`projection_behind`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_sagas(
    State(state): State<QueryState>,
    _caller: Caller<Admins>,
    QueryParams(pairs): QueryParams<Vec<(String, String)>>,
    QueryParams(freshness): QueryParams<Freshness>,
) -> Result<Json<SagaList>, ApiError> {
    let asked = asked(&pairs)?;
    let version = state.read_at("sagas", &freshness).await?.version;
    let page = sagas::page(&state.db, version, &asked.statuses, asked.cursor.as_deref(), asked.limit).await?;
    Ok(Json(SagaList { items: page.rows.into_iter().map(SagaSummary::from).collect(), next_cursor: page.next }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    }

    #[test]
    fn statuses_come_comma_separated_or_repeated_and_each_counts_once() {
        let both = asked(&pairs("status=parked,running")).expect("asked");
        let repeated = asked(&pairs("status=running&status=parked&status=parked")).expect("asked");
        assert_eq!(both.statuses, vec![SagaStatus::Running, SagaStatus::Parked]);
        assert_eq!(repeated, both);
        assert_eq!(asked(&[]).expect("asked"), Asked { statuses: vec![], limit: DEFAULT_LIMIT, cursor: None });
    }

    #[test]
    fn bad_statuses_limits_and_cursors_are_422s_naming_the_parameter() {
        for (query, field) in [
            ("status=done", "status"),
            ("status=running,Parked", "status"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=ten", "limit"),
            ("cursor=42", "cursor"),
            ("cursor=not-a-saga", "cursor"),
            ("cursor=0190a0b2c3d47e8f9a0b1c2d3e4f5a6b", "cursor"),
        ] {
            let err = asked(&pairs(query)).expect_err(query);
            assert_eq!(err.status().as_u16(), 422, "{query}");
            let body = serde_json::to_value(err.problem()).expect("problem");
            assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
        }
    }
}
