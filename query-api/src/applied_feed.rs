//! The feed in batches that read models have applied, for the live signals of the dashboard.
//!
//! `GET /v1/live/rooms` and `GET /v1/me/live` tell a client *that* something changed; the client
//! then reads the JSON routes again. So a signal must come only once those routes show the change:
//! [`AppliedFeed`] hands out the feed's events a batch at a time, each batch only once the read
//! models named have applied its last event. A client resumes after the last signal it saw
//! (`Last-Event-ID`, or `?after=`), which is a feed position like any other.

use std::time::Duration;

use axum::http::HeaderMap;
use stay_http::ApiError;
use stay_store::{Position, RecordedEvent};

use crate::progress::{Progress, Waited};
use crate::QueryState;

/// Events read from the feed at a time.
const BATCH: usize = 200;

/// How long one wait for a model lasts before it is logged and taken up again.
const MODEL_WAIT: Duration = Duration::from_secs(10);

/// Where a live stream starts: after `Last-Event-ID` (which wins) or `?after=`; without either, at
/// the feed's head (only what happens from now on).
pub(crate) async fn resume_after(
    state: &QueryState,
    headers: &HeaderMap,
    after: Option<String>,
) -> Result<Position, ApiError> {
    let last_event_id = headers.get("last-event-id").map(|value| {
        value.to_str().map(str::to_owned).map_err(|_| ApiError::invalid_field("Last-Event-ID", "not a feed position"))
    });
    match last_event_id.transpose()? {
        Some(text) => text.trim().parse().map_err(|_| ApiError::invalid_field("Last-Event-ID", "not a feed position")),
        None => match after.as_deref() {
            Some(text) => text.parse().map_err(|_| ApiError::invalid_field("after", "not a feed position")),
            None => Ok(state.store.head().await?),
        },
    }
}

/// The progress of `model` once it has applied `position`, waiting as long as that takes.
pub(crate) async fn applied(state: &QueryState, model: &'static str, position: Position) -> Progress {
    let watch = state.progress(model);
    loop {
        match watch.reached(position, tokio::time::Instant::now() + MODEL_WAIT).await {
            Waited::Reached(progress) => return progress,
            Waited::TimedOut(last) => {
                let at = last.map_or_else(|| "unknown".to_owned(), |p| p.checkpoint.to_string());
                tracing::debug!(model, %position, at, "a live stream waits for a read model to apply the feed");
            }
        }
    }
}

/// The feed after a position, a batch at a time, each once `models` have applied it.
#[derive(Debug)]
pub(crate) struct AppliedFeed {
    state: QueryState,
    models: &'static [&'static str],
    after: Position,
}

/// One batch: its events, and the progress of each model (in the order named) that applied them.
#[derive(Debug)]
pub(crate) struct AppliedBatch {
    pub(crate) events: Vec<RecordedEvent>,
    pub(crate) progress: Vec<Progress>,
}

impl AppliedFeed {
    /// The feed after `after`, applied by `models`.
    pub(crate) fn new(state: QueryState, models: &'static [&'static str], after: Position) -> Self {
        Self { state, models, after }
    }

    /// What the stream shares with its handlers.
    pub(crate) fn state(&self) -> &QueryState {
        &self.state
    }

    /// The next batch, waiting for events and for the models as long as it takes. A store that
    /// fails is logged and read again after a second: a live stream outlasts a passing failure.
    pub(crate) async fn next_batch(&mut self) -> AppliedBatch {
        loop {
            match self.state.store.read_feed(self.after, BATCH).await {
                Ok(events) if !events.is_empty() => {
                    let last = events.last().map_or(self.after, |e| e.position);
                    let mut progress = Vec::with_capacity(self.models.len());
                    for model in self.models {
                        progress.push(applied(&self.state, model, last).await);
                    }
                    self.after = last;
                    return AppliedBatch { events, progress };
                }
                Ok(_) => {
                    let _ = self.state.store.wait_for_events(self.after, MODEL_WAIT).await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "a live stream could not read the feed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
