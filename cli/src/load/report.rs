//! What a run measured, summed up: throughput, latency percentiles, outcomes, projection lag and
//! the server's memory; as a table for people and as JSON for scripts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::engine::Run;
use crate::output;

/// Latency percentiles, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Requests measured.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The slowest.
    pub max_ms: f64,
    /// The mean.
    pub mean_ms: f64,
}

impl Latency {
    /// Percentiles of `samples` (nearest rank).
    pub fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((samples.len() as f64) * q).ceil() as usize;
            ms(samples[rank.clamp(1, samples.len()) - 1])
        };
        let mean = samples.iter().sum::<Duration>().as_secs_f64() * 1000.0 / samples.len() as f64;
        Self {
            count: samples.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: ms(samples[samples.len() - 1]),
            mean_ms: round(mean),
        }
    }
}

fn ms(duration: Duration) -> f64 {
    round(duration.as_secs_f64() * 1000.0)
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// The server's resident memory, in MB.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Memory {
    /// Before the load.
    pub before_mb: Option<f64>,
    /// The most seen during it.
    pub peak_mb: Option<f64>,
    /// After it, once idle for a while.
    pub idle_after_mb: Option<f64>,
}

/// One measured scenario.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// What was measured (`POST /v1/rooms`, …).
    pub scenario: String,
    /// How it was paced (`64 clients`, `500/s open loop`).
    pub pace: String,
    /// Seconds measured.
    pub seconds: f64,
    /// Requests sent in that time.
    pub requests: usize,
    /// Requests that did what they should, per second.
    pub per_second: f64,
    /// Latency of the requests that did what they should.
    pub latency: Latency,
    /// Requests by how they ended (`201`, `503`, `no answer`, …).
    pub outcomes: BTreeMap<String, usize>,
    /// Command answered → visible in the read model at its position, for a sample of requests.
    pub projection_lag: Option<Latency>,
    /// The server's memory, when known.
    pub memory: Memory,
    /// The CPU time the server used during the measured seconds, when its process id is known.
    pub server_cpu: Option<ServerCpu>,
    /// What the database alone did in the same run, when measured (`stay load ceiling`).
    pub ceiling: Option<Ceiling>,
    /// Anything else the scenario reports (`confirmed`, …).
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The CPU time the server process used while the load was measured (its own threads only: not
/// a PostgreSQL server's, nor the load generator's).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerCpu {
    /// CPU seconds in all.
    pub seconds: f64,
    /// Per request answered as expected, in ms: what one request costs the server, which holds
    /// better than a rate when the machine is shared.
    pub ms_per_request: f64,
    /// Cores busy on average.
    pub cores: f64,
}

/// The database's own rate in the same run, and the scenario's share of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ceiling {
    /// Durable single-insert transactions per second with the same client count.
    pub per_second: f64,
    /// Their latency.
    pub latency: Latency,
    /// The scenario's throughput as a share of it.
    pub share: f64,
}

impl Report {
    /// The report of `run`.
    pub fn of(scenario: &str, pace: String, run: &Run) -> Self {
        let mut outcomes = BTreeMap::new();
        for sample in &run.samples {
            *outcomes.entry(sample.outcome.label()).or_insert(0) += 1;
        }
        let ok: Vec<Duration> = run.samples.iter().filter(|s| s.outcome.ok()).map(|s| s.latency).collect();
        let seconds = run.elapsed.as_secs_f64();
        Self {
            scenario: scenario.to_owned(),
            pace,
            seconds: round(seconds),
            requests: run.samples.len(),
            per_second: (ok.len() as f64 / seconds).round(),
            latency: Latency::of(ok),
            outcomes,
            ..Self::default()
        }
    }

    /// Notes the ceiling measured in the same run.
    pub fn with_ceiling(mut self, per_second: f64, latency: Latency) -> Self {
        let share = if per_second > 0.0 { round(self.per_second / per_second) } else { 0.0 };
        self.ceiling = Some(Ceiling { per_second, latency, share });
        self
    }

    /// Notes the server's CPU time over the measured seconds (`None`: not known).
    pub fn with_server_cpu(mut self, seconds: Option<f64>) -> Self {
        self.server_cpu = seconds.map(|seconds| ServerCpu {
            seconds: round(seconds),
            ms_per_request: if self.latency.count > 0 {
                round(seconds * 1000.0 / self.latency.count as f64)
            } else {
                0.0
            },
            cores: if self.seconds > 0.0 { round(seconds / self.seconds) } else { 0.0 },
        });
        self
    }

    /// Prints it for people.
    #[allow(clippy::print_stdout)] // the command's own output
    pub fn print(&self) {
        println!("{} — {}, {:.1} s measured", self.scenario, self.pace, self.seconds);
        let mut table = output::table(
            &["", "per s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "count"],
            &["per s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "count"],
        );
        let row = |name: &str, rate: String, l: &Latency| {
            vec![
                name.to_owned(),
                rate,
                l.p50_ms.to_string(),
                l.p99_ms.to_string(),
                l.p999_ms.to_string(),
                l.max_ms.to_string(),
                l.count.to_string(),
            ]
        };
        table.add_row(row("answered as expected", self.per_second.to_string(), &self.latency));
        if let Some(lag) = &self.projection_lag {
            table.add_row(row("projection lag", String::new(), lag));
        }
        if let Some(ceiling) = &self.ceiling {
            table.add_row(row("database ceiling", ceiling.per_second.to_string(), &ceiling.latency));
        }
        println!("{table}");
        let outcomes: Vec<String> = self.outcomes.iter().map(|(label, n)| format!("{label}: {n}")).collect();
        println!("outcomes: {}", outcomes.join(", "));
        if let Some(ceiling) = &self.ceiling {
            println!("share of the ceiling: {:.0}%", ceiling.share * 100.0);
        }
        let mb = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.0} MB"));
        if self.memory != Memory::default() {
            println!(
                "server memory (RSS): before {}, peak {}, idle after {}",
                mb(self.memory.before_mb),
                mb(self.memory.peak_mb),
                mb(self.memory.idle_after_mb)
            );
        }
        if let Some(cpu) = &self.server_cpu {
            println!(
                "server CPU: {:.2} ms per request answered as expected ({:.2} cores busy on average)",
                cpu.ms_per_request, cpu.cores
            );
        }
        for (name, value) in &self.extra {
            println!("{name}: {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::engine::{Outcome, Sample};
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let latency = Latency::of((1..=1000).map(ms).collect());
        assert_eq!((latency.p50_ms, latency.p99_ms, latency.p999_ms, latency.max_ms), (500.0, 990.0, 999.0, 1000.0));
        assert_eq!(latency.count, 1000);
        assert_eq!(Latency::of(vec![ms(7)]).p999_ms, 7.0);
        assert_eq!(Latency::of(Vec::new()), Latency::default());
    }

    #[test]
    fn only_requests_that_did_what_they_should_count_towards_rate_and_latency() {
        let sample = |latency, outcome| Sample { due: Duration::ZERO, latency: ms(latency), outcome };
        let run = Run {
            samples: vec![
                sample(10, Outcome::Status(201)),
                sample(20, Outcome::Status(201)),
                sample(1, Outcome::Status(503)),
                sample(5_000, Outcome::NoAnswer),
                sample(30, Outcome::Unexpected(200)),
            ],
            elapsed: Duration::from_secs(2),
        };
        let report = Report::of("x", "1 client".into(), &run);
        assert_eq!(report.per_second, 1.0);
        assert_eq!(report.latency.max_ms, 20.0);
        assert_eq!(report.requests, 5);
        assert_eq!(report.outcomes["201"], 2);
        assert_eq!(report.outcomes["503"], 1);
        assert_eq!(report.outcomes["no answer"], 1);
        assert_eq!(report.outcomes["200 unexpected"], 1);
    }

    #[test]
    fn server_cpu_is_shared_among_the_requests_that_did_what_they_should() {
        let sample = |outcome| Sample { due: Duration::ZERO, latency: ms(10), outcome };
        let mut samples = vec![sample(Outcome::Status(503)); 4];
        samples.extend(vec![sample(Outcome::Status(201)); 200]);
        let run = Run { samples, elapsed: Duration::from_secs(4) };

        let report = Report::of("x", "1 client".into(), &run).with_server_cpu(Some(3.0));

        let cpu = report.server_cpu.expect("known");
        assert_eq!((cpu.seconds, cpu.ms_per_request, cpu.cores), (3.0, 15.0, 0.75));
        assert_eq!(Report::of("x", "1 client".into(), &run).with_server_cpu(None).server_cpu, None);
        let idle = Run { samples: Vec::new(), elapsed: Duration::from_secs(1) };
        let report = Report::of("x", "1 client".into(), &idle).with_server_cpu(Some(0.5));
        assert_eq!(report.server_cpu.map(|cpu| cpu.ms_per_request), Some(0.0));
    }

    #[test]
    fn the_ceiling_share_is_the_rate_over_the_ceiling() {
        let run = Run { samples: Vec::new(), elapsed: Duration::from_secs(1) };
        let mut report = Report::of("x", "p".into(), &run);
        report.per_second = 750.0;
        let report = report.with_ceiling(1000.0, Latency::default());
        assert_eq!(report.ceiling.map(|c| c.share), Some(0.75));
    }
}
