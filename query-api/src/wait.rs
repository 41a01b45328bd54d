//! Read-your-writes: `?min_position=<token>&wait_ms=<n>` on every query.
//!
//! A command answers with the position of its last event; a query given that position answers
//! only once the read model's live version has applied the feed up to it, waiting at most
//! `wait_ms` (default 5000, at most 30000), else 504 `projection_behind`.

use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;
use stay_http::ApiError;
use stay_projections::runner::{checkpoint_name, versions};
use stay_store::{Position, SqlDatabase};
use utoipa::IntoParams;

/// The read-your-writes parameters of a query.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Freshness {
    /// Answer only once the read model has reached this position (a command's `position`).
    pub min_position: Option<String>,
    /// How long to wait for it, in milliseconds (default 5000, at most 30000).
    pub wait_ms: Option<u64>,
}

/// The default wait.
pub const DEFAULT_WAIT_MS: u64 = 5_000;
/// The longest wait.
pub const MAX_WAIT_MS: u64 = 30_000;

/// Waits until `model`'s live version has reached the position asked for, if any; answers the
/// version that reached it, so the query reads that one.
pub async fn until_fresh(db: &SqlDatabase, model: &str, freshness: &Freshness) -> Result<Option<i64>, ApiError> {
    let Some(text) = freshness.min_position.as_deref().filter(|t| !t.is_empty()) else { return Ok(None) };
    let wanted: Position =
        text.parse().map_err(|_| ApiError::invalid_field("min_position", "not a position from a command's answer"))?;
    let wait = Duration::from_millis(freshness.wait_ms.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(2);
    loop {
        let live = versions(db, model).await?.live;
        let reached = db.checkpoint(&checkpoint_name(model, live)).await?;
        if reached >= wanted {
            return Ok(Some(live));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "projection_behind",
                format!(
                    "the {model} read model is at {reached}, not yet at {wanted}; retry, or wait longer with wait_ms"
                ),
            ));
        }
        tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}
