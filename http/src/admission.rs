//! Admission under load: a bound on requests in flight under `/v1`, and a `Retry-After` that
//! says when the backlog should have cleared.
//!
//! A request that finds every slot taken is refused at once with 503 `overloaded`. Its
//! `Retry-After` is the time the requests in flight take at the rate requests completed over the
//! last second or so, rounded up to whole seconds and kept within
//! [`RETRY_AFTER_MIN`]..=[`RETRY_AFTER_MAX`] seconds ([`RETRY_AFTER_MIN`] when nothing completed
//! lately, so there is no estimate).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::problem::ApiError;

/// The shortest `Retry-After`, in seconds.
pub const RETRY_AFTER_MIN: u32 = 1;

/// The longest `Retry-After`, in seconds.
pub const RETRY_AFTER_MAX: u32 = 30;

/// How long the completion rate is counted over before it is taken again.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The bound on requests in flight, and what refused clients are told to wait.
#[derive(Debug)]
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    capacity: usize,
    completions: Completions,
}

impl Admission {
    /// `capacity` requests in flight at once.
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { slots: Arc::new(Semaphore::new(capacity)), capacity, completions: Completions::new(Instant::now()) }
    }

    /// The seconds a refused client should wait: the backlog at the recent completion rate.
    fn retry_after(&self, now: Instant) -> u32 {
        let in_flight = self.capacity.saturating_sub(self.slots.available_permits());
        retry_after_secs(in_flight, self.completions.rate(now))
    }

    fn refuse(&self) -> Response {
        metrics::counter!("stay_http_shed_total").increment(1);
        ApiError::overloaded(self.retry_after(Instant::now())).into_response()
    }
}

/// The backlog's time to clear at `per_second`, in whole seconds within the bounds.
fn retry_after_secs(backlog: usize, per_second: Option<f64>) -> u32 {
    let Some(rate) = per_second.filter(|rate| *rate > 0.0) else {
        // Nothing completed lately, so no estimate: the shortest wait, as before there was one.
        return RETRY_AFTER_MIN;
    };
    let seconds = (backlog as f64 / rate).ceil();
    if seconds >= f64::from(RETRY_AFTER_MAX) {
        RETRY_AFTER_MAX
    } else {
        (seconds as u32).max(RETRY_AFTER_MIN)
    }
}

/// Admits the request to a slot, or refuses it at once (503).
pub(crate) async fn admit(State(admission): State<Arc<Admission>>, request: Request, next: Next) -> Response {
    let Ok(slot) = admission.slots.clone().try_acquire_owned() else { return admission.refuse() };
    let response = next.run(request).await;
    drop(slot);
    admission.completions.note();
    response
}

/// Requests completed, and their rate over the last window.
#[derive(Debug)]
struct Completions {
    count: AtomicU64,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    count_at_start: u64,
    last_rate: Option<f64>,
}

impl Completions {
    fn new(now: Instant) -> Self {
        Self {
            count: AtomicU64::new(0),
            window: Mutex::new(Window { started: now, count_at_start: 0, last_rate: None }),
        }
    }

    fn note(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Completions per second over the last full window (taken afresh once one has passed), or
    /// over the current one while there is none yet.
    fn rate(&self, now: Instant) -> Option<f64> {
        let count = self.count.load(Ordering::Relaxed);
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(window.started);
        if elapsed >= RATE_WINDOW {
            window.last_rate = Some(count.saturating_sub(window.count_at_start) as f64 / elapsed.as_secs_f64());
            window.started = now;
            window.count_at_start = count;
        }
        window.last_rate.or_else(|| {
            (elapsed >= Duration::from_millis(100))
                .then(|| count.saturating_sub(window.count_at_start) as f64 / elapsed.as_secs_f64())
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{header, StatusCode};

    use super::*;

    #[test]
    fn retry_after_is_the_backlog_at_the_recent_rate_within_bounds() {
        assert_eq!(retry_after_secs(512, Some(3_000.0)), 1, "a fast server: come back in a second");
        assert_eq!(retry_after_secs(1_024, Some(200.0)), 6, "a slow one: when the backlog has cleared");
        assert_eq!(retry_after_secs(100_000, Some(10.0)), RETRY_AFTER_MAX);
        assert_eq!(retry_after_secs(10, None), RETRY_AFTER_MIN, "no estimate: the shortest");
        assert_eq!(retry_after_secs(10, Some(0.0)), RETRY_AFTER_MIN, "no estimate: the shortest");
    }

    #[test]
    fn the_completion_rate_is_counted_over_the_last_window() {
        let start = Instant::now();
        let completions = Completions::new(start);
        assert_eq!(completions.rate(start), None, "too early to say");
        for _ in 0..300 {
            completions.note();
        }
        let rate = completions.rate(start + Duration::from_millis(500)).expect("a rate");
        assert!((rate - 600.0).abs() < 1.0, "{rate}");
        let rate = completions.rate(start + Duration::from_secs(1)).expect("a rate");
        assert!((rate - 300.0).abs() < 1.0, "{rate}");
        // Quiet since: the next window says so.
        assert_eq!(completions.rate(start + Duration::from_secs(3)), Some(0.0));
    }

    #[tokio::test]
    async fn a_refusal_says_when_the_backlog_should_have_cleared() {
        let admission = Admission::new(4);
        let _held: Vec<_> = (0..4).map(|_| admission.slots.clone().try_acquire_owned().expect("a slot")).collect();
        let response = admission.refuse();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1", "no completions yet: no estimate");
        // Three completions over the last second, four in flight: 1.33 s, so two seconds.
        let later = Instant::now() + Duration::from_secs(1);
        for _ in 0..3 {
            admission.completions.note();
        }
        assert_eq!(admission.retry_after(later), 2);
    }
}
