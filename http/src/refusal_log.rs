//! Refusals under load are logged in aggregate: at most one line per second says how many
//! requests were turned away (503) since the last, instead of one line per request, which under
//! overload wrote tens of thousands of lines a second. Each refusal is still counted: by the
//! request histogram's `status="503"` label, and one shed for load in `stay_http_shed_total`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The shortest time between two lines.
const EVERY: Duration = Duration::from_secs(1);

/// Counts refusals and says when a line is due.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    pending: AtomicU64,
    last_line: Mutex<Option<Instant>>,
}

impl RefusalLog {
    pub(crate) const fn new() -> Self {
        Self { pending: AtomicU64::new(0), last_line: Mutex::new(None) }
    }

    /// Notes one refusal at `now`; the number of refusals to report when a line is due (this
    /// one and those since the last line), else `None`.
    pub(crate) fn note(&self, now: Instant) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_line.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| now.saturating_duration_since(at) < EVERY) {
            return None;
        }
        *last = Some(now);
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

/// Notes a request answered 503, and logs the refusals in aggregate.
pub(crate) fn refused() {
    static LOG: OnceLock<RefusalLog> = OnceLock::new();
    if let Some(count) = LOG.get_or_init(RefusalLog::new).note(Instant::now()) {
        tracing::warn!(
            refused = count,
            "requests answered 503 (overloaded, stopping or payments unavailable) since the last report"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_of_refusals_makes_one_line_a_second_with_the_count() {
        let log = RefusalLog::new();
        let start = Instant::now();

        let mut lines = Vec::new();
        for n in 0..10_000u32 {
            // 10,000 refusals over 2.5 s.
            let at = start + Duration::from_micros(u64::from(n) * 250);
            if let Some(count) = log.note(at) {
                lines.push(count);
            }
        }

        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], 1, "the first refusal is reported at once");
        assert_eq!(lines.iter().sum::<u64>() + log.pending.load(Ordering::Relaxed), 10_000, "none is lost");
        let left = log.pending.load(Ordering::Relaxed);
        assert_eq!(log.note(start + Duration::from_secs(10)), Some(left + 1), "the rest come with the next line");
    }
}
