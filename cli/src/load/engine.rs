//! The load engine: keeps requests going at a pace and records when each was due, how long it
//! took and how it ended.
//!
//! Two paces, as benchmarks need both:
//! - closed loop: N clients, each sending its next request when the last one answered (the rate
//!   follows the server: this finds the throughput);
//! - open loop: requests due at a fixed rate whatever the server does, each timed from when it
//!   was *due*, so a server that stalls shows its stall in the latencies instead of hiding it by
//!   slowing the clients down (coordinated omission).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// This many clients, each waiting for its answer before the next request.
    Closed {
        /// Clients at once.
        clients: usize,
    },
    /// Requests due at this rate, at most `in_flight` outstanding (more wait, and their wait counts).
    Open {
        /// Requests per second.
        rate: f64,
        /// The most requests outstanding at once.
        in_flight: usize,
    },
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// It got an answer with this HTTP status.
    Status(u16),
    /// It got no answer (connection refused or reset, timeout).
    NoAnswer,
    /// It was answered as the scenario wanted, with this status, but the answer's content was not
    /// what the scenario checks for (a reservation answered 200 but not confirmed, say).
    Unexpected(u16),
}

impl Outcome {
    /// Whether the request did what it should.
    pub fn ok(self) -> bool {
        matches!(self, Outcome::Status(status) if (200..300).contains(&status))
    }

    /// Its label in reports: the status, `no answer`, or the status and `unexpected`.
    pub fn label(self) -> String {
        match self {
            Outcome::Status(status) => status.to_string(),
            Outcome::NoAnswer => "no answer".to_owned(),
            Outcome::Unexpected(status) => format!("{status} unexpected"),
        }
    }
}

/// One request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// When it was due, from the start of the run.
    pub due: Duration,
    /// From due to answered.
    pub latency: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

/// A run's samples, the warm-up left out.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// The measured requests, in the order they ended.
    pub samples: Vec<Sample>,
    /// How long the measured part lasted.
    pub elapsed: Duration,
}

/// Sends requests made by `request(n)` (n counts from 0 across the whole run) at `pace` for
/// `warmup + duration`, and keeps the samples of requests due after the warm-up.
pub async fn drive<F, Fut>(pace: Pace, warmup: Duration, duration: Duration, request: F) -> Run
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let request = Arc::new(request);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let end = start + warmup + duration;
    let mut tasks = JoinSet::new();
    match pace {
        Pace::Closed { clients } => {
            let counter = Arc::new(AtomicU64::new(0));
            for _ in 0..clients.max(1) {
                let (request, samples, counter) = (request.clone(), samples.clone(), counter.clone());
                tasks.spawn(async move {
                    while Instant::now() < end {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let due = Instant::now();
                        let outcome = request(n).await;
                        record(&samples, start, warmup, due, outcome);
                    }
                });
            }
        }
        Pace::Open { rate, in_flight } => {
            let permits = Arc::new(Semaphore::new(in_flight.max(1)));
            let every = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut n = 0u64;
            loop {
                let due = start + every.mul_f64(n as f64);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due).await;
                let (request, samples, permits) = (request.clone(), samples.clone(), permits.clone());
                tasks.spawn(async move {
                    // Waiting for a free slot is part of the latency: the request was due.
                    let Ok(_permit) = permits.acquire_owned().await else { return };
                    let outcome = request(n).await;
                    record(&samples, start, warmup, due, outcome);
                });
                n += 1;
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = duration.min(Instant::now().saturating_duration_since(start + warmup)).max(Duration::from_millis(1));
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    Run { samples, elapsed }
}

fn record(samples: &Mutex<Vec<Sample>>, start: Instant, warmup: Duration, due: Instant, outcome: Outcome) {
    let since_start = due.saturating_duration_since(start);
    if since_start < warmup {
        return;
    }
    let sample = Sample { due: since_start - warmup, latency: due.elapsed(), outcome };
    samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(sample);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_loop_clients_wait_for_their_answers() {
        let run = drive(Pace::Closed { clients: 4 }, Duration::ZERO, Duration::from_millis(300), |_| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Outcome::Status(200)
        })
        .await;
        // 4 clients × about 15 requests of 20 ms each in 300 ms.
        assert!((40..=64).contains(&run.samples.len()), "{} requests", run.samples.len());
        assert!(run.samples.iter().all(|s| s.latency >= Duration::from_millis(20)));
    }

    #[tokio::test]
    async fn open_loop_keeps_its_rate_and_counts_waiting_for_a_slot_as_latency() {
        // 100/s for 300 ms, one slot, 30 ms per request: the server cannot keep up.
        let run =
            drive(Pace::Open { rate: 100.0, in_flight: 1 }, Duration::ZERO, Duration::from_millis(300), |_| async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Outcome::Status(200)
            })
            .await;
        assert_eq!(run.samples.len(), 30, "every due request is sent");
        let worst = run.samples.iter().map(|s| s.latency).max().unwrap_or_default();
        assert!(worst >= Duration::from_millis(500), "the queue shows in the latency: {worst:?}");
    }

    #[tokio::test]
    async fn the_warm_up_is_not_measured() {
        let run = drive(
            Pace::Open { rate: 100.0, in_flight: 8 },
            Duration::from_millis(100),
            Duration::from_millis(100),
            |n| async move { Outcome::Status(if n < 10 { 500 } else { 200 }) },
        )
        .await;
        assert!(run.samples.iter().all(|s| s.outcome.ok()), "only requests after the warm-up count");
        assert_eq!(run.samples.len(), 10);
    }
}
