//! Read-your-writes: `?min_position=<token>&wait_ms=<n>` on every query.
//!
//! A command answers with the position of its last event; a query given that position answers
//! only once the read model's live version has applied the feed up to it, waiting at most
//! `wait_ms` (default 5000, at most 30000), else 504 `projection_behind`. The model's
//! [`ProgressWatch`] does the looking; a waiting query only listens to it.

use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;
use stay_http::ApiError;
use stay_store::Position;
use utoipa::IntoParams;

use crate::progress::{Progress, ProgressWatch, Waited};

/// The read-your-writes parameters of a query.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Freshness {
    /// Answer only once the read model has reached this position (a command's `position`).
    #[param(pattern = "^([0-9]+(-[0-9]+)?)?$")]
    pub min_position: Option<String>,
    /// How long to wait for it, in milliseconds (default 5000; more than 30000 counts as 30000).
    #[param(minimum = 0)]
    pub wait_ms: Option<u64>,
}

/// The default wait.
pub const DEFAULT_WAIT_MS: u64 = 5_000;
/// The longest wait.
pub const MAX_WAIT_MS: u64 = 30_000;

/// Waits until the watched model's live version has reached the position asked for, if any;
/// answers the progress that reached it, so the query reads that version (and may use answers
/// cached at that progress). The wait is on the model's progress watcher: however many queries
/// wait, one task reads the database. Only when the watcher had no reading at all by the deadline
/// (it has just started, or the database fails) does the query look once for itself, so that a
/// model that is there is not reported behind, and a failing database answers as such.
pub async fn until_fresh(watch: &ProgressWatch, freshness: &Freshness) -> Result<Option<Progress>, ApiError> {
    let Some(text) = freshness.min_position.as_deref().filter(|t| !t.is_empty()) else { return Ok(None) };
    let wanted: Position =
        text.parse().map_err(|_| ApiError::invalid_field("min_position", "not a position from a command's answer"))?;
    let wait = Duration::from_millis(freshness.wait_ms.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
    let deadline = tokio::time::Instant::now() + wait;
    let reached = match watch.reached(wanted, deadline).await {
        Waited::Reached(progress) => return Ok(Some(progress)),
        Waited::TimedOut(Some(last)) => last.checkpoint,
        Waited::TimedOut(None) => {
            let progress = watch.read_now().await?;
            if progress.checkpoint >= wanted {
                return Ok(Some(progress));
            }
            progress.checkpoint
        }
    };
    let model = watch.model();
    Err(ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "projection_behind",
        format!("the {model} read model is at {reached}, not yet at {wanted}; retry, or wait longer with wait_ms"),
    ))
}
