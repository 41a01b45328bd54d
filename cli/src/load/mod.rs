//! `stay load`: the load generator behind every figure in `docs/benchmarks.md`.
//!
//! Each scenario runs against a server it starts itself (this binary, a temporary data directory
//! or a fresh PostgreSQL database) or against `--url`, paces its requests in a closed loop (N
//! clients) or an open loop (a fixed rate), and reports throughput, latency percentiles, outcomes
//! by status, projection lag and the server's memory, as a table, as JSON (`--json`) and as SVG
//! plots (`--plot DIR`). `stay load ceiling` measures what the database alone does, so that a
//! figure can be quoted as a share of it on a noisy machine.
//!
//! - [`engine`] — pacing and timing; [`report`] — the summary; [`plot`] — the SVG plots;
//!   [`target`] — the server under load.
//! - [`commands`], [`reservations`], [`queries`] — HTTP scenarios; [`replay`] — rebuilding every
//!   aggregate from the log in memory; [`stream_length`] — command time against stream length;
//!   [`ceiling`] — the database's own rate; [`baseline`] — the same commands on a minimal
//!   cqrs-es + postgres-es app, to quote Stay's rate as a multiple of it.

pub mod baseline;
pub mod ceiling;
pub mod commands;
pub mod engine;
pub mod plot;
pub mod queries;
pub mod replay;
pub mod report;
pub mod reservations;
pub mod stream_length;
pub mod target;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Subcommand};

use self::engine::{drive, Outcome, Pace, Run};
use self::report::{Memory, Report};
use self::target::Target;

/// Arguments of `stay load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Single-event commands over HTTP (POST /v1/rooms): throughput, latency, projection lag.
    ///
    /// Each request registers a new room as a host: one command, one event, one durable commit
    /// (shared with concurrent commands by group commit on SQLite and PostgreSQL). Measured: commands answered per second,
    /// latency p50/p99/p99.9/max from send to answer, answers by status, projection lag (from a
    /// command's answer until a read at its position sees it, for a sample of commands), and the
    /// server's memory before, at its peak and once idle, and the server's CPU time per command
    /// (when its process id is known: a server it starts, or --pid). With --ceiling, the database's own rate
    /// (one durable insert per transaction, same clients) is measured in the same run, and the
    /// throughput is also given as a share of it.
    Commands(commands::CommandsArgs),
    /// Full reservations (POST /v1/reservations, Prefer: wait): request → held → charged → confirmed.
    ///
    /// Each request reserves a night of its own (distinct rooms and nights, so none is refused)
    /// with a card that is approved, and waits (Prefer: wait) until the saga has held the nights,
    /// charged the card and confirmed the reservation. Measured: reservations confirmed per second,
    /// latency from request to the confirmed answer (the whole saga), answers by status (202 means
    /// the wait ran out), projection lag (a sample of confirmations read back at their position in
    /// roomview), the server's memory, and the server's CPU time per confirmed reservation (when
    /// its process id is known). --ceiling adds the database's own rate from the same run.
    Reservations(reservations::ReservationsArgs),
    /// Query latency (GET /v1/rooms, GET /v1/rooms/{id}) under concurrent load.
    Queries(queries::QueriesArgs),
    /// Every aggregate rebuilt from the log, in memory: events per second.
    Replay(replay::ReplayArgs),
    /// Command time on a Room with a long stream versus a fresh Room.
    StreamLength(stream_length::StreamLengthArgs),
    /// What the database alone does: one durable single-row insert per transaction, N clients.
    Ceiling(ceiling::CeilingArgs),
    /// The same single-event commands on a minimal cqrs-es 0.5 + postgres-es app (PostgreSQL).
    ///
    /// Why: to quote Stay's command rate (`stay load commands --store postgres://…`) as a multiple
    /// of what the plain framework does on the same machine, run back to back: absolute rates move
    /// from run to run on a shared machine, the multiple holds better.
    ///
    /// What runs: inside this process, on threads of its own, an axum app with one route, POST
    /// /rooms, that executes one Register command for a new room id through a
    /// `cqrs_es::CqrsFramework` over `postgres_es::PostgresEventRepository` with the library's
    /// defaults (`postgres_cqrs`: no snapshots, no cache, no queries; a pool of --connections):
    /// one aggregate load (an empty read), then one event inserted in one transaction, per command.
    /// No authentication, idempotency or projections: only the command. Its database is made fresh
    /// beside the one --store names and dropped afterwards unless --keep-data.
    ///
    /// The load is that of `stay load commands`: the same body, the same pacing (--clients, --rate,
    /// --seconds, --warmup), over HTTP on 127.0.0.1. Measured: commands answered 201 per second,
    /// latency p50/p99/p99.9/max from send to answer, answers by status, and the events stored.
    /// With --ceiling, the database's own rate (one durable insert per transaction, same clients)
    /// in the same run, and the throughput as a share of it.
    Baseline(baseline::BaselineArgs),
}

/// Runs the chosen scenario.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Commands(args) => commands::run(args).await,
        Scenario::Reservations(args) => reservations::run(args).await,
        Scenario::Queries(args) => queries::run(args).await,
        Scenario::Replay(args) => replay::run(args).await,
        Scenario::StreamLength(args) => stream_length::run(args).await,
        Scenario::Ceiling(args) => ceiling::run(args).await,
        Scenario::Baseline(args) => baseline::run(args).await,
    }
}

/// How a scenario paces its requests and how long it measures.
#[derive(Debug, Clone, Args)]
pub struct PaceArgs {
    /// Clients at once (closed loop: each sends its next request when answered).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,

    /// Requests per second instead (open loop); --clients then bounds the requests outstanding.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,

    /// Seconds of load before measuring (not counted).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
}

impl PaceArgs {
    /// The pace.
    pub fn pace(&self) -> Pace {
        match self.rate {
            Some(rate) => Pace::Open { rate, in_flight: self.clients.max(1) },
            None => Pace::Closed { clients: self.clients.max(1) },
        }
    }

    /// The pace in words, for reports.
    pub fn describe(&self) -> String {
        match self.rate {
            Some(rate) => format!("open loop at {rate}/s, at most {} outstanding", self.clients),
            None => format!("closed loop, {} clients", self.clients),
        }
    }
}

/// How a scenario reports.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// Write SVG plots (latency over time, latency histogram) into this directory.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Seconds to wait after the load before reading the server's memory again (idle level).
    #[arg(long, default_value_t = 5)]
    pub idle_seconds: u64,
}

/// What [`measure`] saw.
pub struct Measured {
    /// The requests.
    pub run: Run,
    /// The server's memory before, at its peak and once idle.
    pub memory: Memory,
    /// The server's CPU seconds over the measured part, when its process id is known.
    pub cpu_seconds: Option<f64>,
}

/// Runs `request` against `target` at `pace`, watching the server's memory before, during and
/// after (once idle for `idle`), and its CPU time over the measured seconds.
pub async fn measure<F, Fut>(target: &Target, pace: &PaceArgs, idle: Duration, request: F) -> Measured
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let before = target.rss_mb().await;
    let peak = Arc::new(Mutex::new(before));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let watcher = {
        let peak = peak.clone();
        let rss = RssProbe::of(target);
        tokio::spawn(async move {
            loop {
                if let Some(now) = rss.read().await {
                    let mut peak = peak.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    *peak = Some(peak.map_or(now, |p: f64| p.max(now)));
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stop_rx.changed() => return,
                }
            }
        })
    };
    let (warmup, seconds) = (Duration::from_secs(pace.warmup), Duration::from_secs(pace.seconds));
    // The CPU clock is read when the warm-up ends and when the measured seconds do, as `drive` counts.
    let cpu = target.pid().map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            let start = target::cpu_seconds(pid)?;
            tokio::time::sleep(seconds).await;
            Some(target::cpu_seconds(pid)? - start)
        })
    });
    let run = drive(pace.pace(), warmup, seconds, request).await;
    let cpu_seconds = match cpu {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    let _ = stop_tx.send(true);
    let _ = watcher.await;
    tokio::time::sleep(idle).await;
    let idle_after = target.rss_mb().await;
    let peak = *peak.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Measured { run, memory: Memory { before_mb: before, peak_mb: peak, idle_after_mb: idle_after }, cpu_seconds }
}

/// Reads a server's memory from a task of its own.
struct RssProbe {
    pid: Option<u32>,
    metrics: String,
    client: reqwest::Client,
}

impl RssProbe {
    fn of(target: &Target) -> Self {
        Self { pid: target.pid(), metrics: format!("{}/metrics", target.base), client: target.client.clone() }
    }

    async fn read(&self) -> Option<f64> {
        target::rss_mb(self.pid, &self.client, &self.metrics).await
    }
}

/// Projection lag: how long after a command's answer its write is visible in a read model, timed
/// by a read at the command's position (`min_position`) sent right after the answer.
///
/// At most [`Lags::MAX_OUTSTANDING`] such reads wait at once; a sample that would exceed it is
/// skipped. Each read holds one of the server's request slots while it waits, and when the read
/// models fall seconds behind, unbounded probes would fill those slots and turn the scenario's
/// own requests away (503): the probe would change what it measures.
#[derive(Clone, Debug, Default)]
pub struct Lags {
    lags: Arc<Mutex<Vec<Duration>>>,
    outstanding: Arc<std::sync::atomic::AtomicUsize>,
}

impl Lags {
    /// Probes waiting at once, at most.
    pub const MAX_OUTSTANDING: usize = 16;

    /// Reads `url` (a query with `min_position` and a long `wait_ms`) in the background and
    /// records the time from now until it answers 2xx, unless enough probes are waiting already.
    pub fn follow(&self, client: reqwest::Client, url: String) {
        use std::sync::atomic::Ordering::SeqCst;
        let outstanding = self.outstanding.clone();
        if outstanding.fetch_add(1, SeqCst) >= Self::MAX_OUTSTANDING {
            outstanding.fetch_sub(1, SeqCst);
            return;
        }
        let (answered, lags) = (std::time::Instant::now(), self.lags.clone());
        tokio::spawn(async move {
            if let Ok(read) = client.get(url).send().await {
                if read.status().is_success() {
                    let lag = answered.elapsed();
                    lags.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(lag);
                }
            }
            outstanding.fetch_sub(1, SeqCst);
        });
    }

    /// The lags recorded so far.
    pub fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.lags.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Prints `report` (JSON or a table) and writes its plots.
#[allow(clippy::print_stdout)] // the command's own output
pub fn finish(report: &Report, run: &Run, output: &OutputArgs) -> anyhow::Result<()> {
    if let Some(dir) = &output.plot {
        let written = plot::write(dir, report, run)?;
        if !output.json {
            for path in written {
                println!("plot: {}", path.display());
            }
        }
    }
    if output.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        report.print();
    }
    Ok(())
}
