//! `stay`: run, migrate and inspect Stay.
//!
//! A thin shell over the library crates: parse the command line (flags, or `STAY_*` environment
//! variables), run the chosen command, and report its error chain once, here at the edge.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin_server;
mod aggregate_types;
mod events;
mod export;
mod import;
mod load;
mod log_file;
mod memory;
mod migrate;
mod output;
mod payment_sim;
mod probe;
mod projections;
mod readiness;
mod saga;
mod seed;
mod serve;
mod settings;
mod token;

/// The two settings every command reads outside its flags.
const LOGGING_HELP: &str = "Logging (every command):
  STAY_LOG         which logs to write, as a tracing filter such as `info` or `warn,stay_saga=debug` [env: STAY_LOG=]
  STAY_LOG_FORMAT  `json` for one JSON object per line, for log collectors [env: STAY_LOG_FORMAT=]";

/// Stay, an event-sourced accommodation-reservation platform.
#[derive(Debug, Parser)]
#[command(name = "stay", version, about, long_about = None, after_help = LOGGING_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Stay: the HTTP API on the SQLite store under --data-dir unless --store says otherwise.
    Serve(serve::ServeArgs),
    /// The event log for audit, through a running server: a stream's history and state, a correlation's causation tree, the feed.
    Events(events::EventsArgs),
    /// Saga debugging through a running server: list, show a timeline, retry or skip a parked step.
    Saga(saga::SagaArgs),
    /// Read-model lag and rebuilds (with a progress bar on a terminal).
    Projections(projections::ProjectionsArgs),
    /// Fill a running server with demo data through its public API (repeatable with --seed).
    Seed(seed::SeedArgs),
    /// Print a bearer token signed with the secret `stay serve` uses.
    Token(token::TokenArgs),
    /// Create or upgrade the event store's schema, then exit (safe to run again).
    Migrate(migrate::MigrateArgs),
    /// Generate load and measure it (the figures in docs/benchmarks.md).
    Load(load::LoadArgs),
    /// Ask a running Stay whether it is alive (/healthz) or ready (--path /readyz): exit 0 or 1, for health checks.
    Probe(probe::ProbeArgs),
    /// Serve the payment simulator over HTTP (card tokens decide the outcome).
    PaymentSim(payment_sim::PaymentSimArgs),
    /// Write the whole event log as JSON Lines with a closing digest (works beside a running server).
    Export(export::ExportArgs),
    /// Write an export into an empty store (any SQL backend), checked first; resumes if interrupted.
    Import(import::ImportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("STAY_LOG")
        .unwrap_or_else(|_| "warn,stay=info,stay_http=info,stay_command_api=info,stay_query_api=info,stay_store=info,stay_saga=info,stay_projections=info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // STAY_LOG_FORMAT=json: one JSON object per line, for log collectors.
    if std::env::var("STAY_LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json")) {
        logs.json().init();
    } else {
        logs.init();
    }
    memory::give_back_freed_memory();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Token(args) => token::run(args),
            Command::Seed(args) => seed::run(args).await,
            Command::Projections(args) => projections::run(args).await,
            Command::Saga(args) => saga::run(args).await,
            Command::Events(args) => events::run(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Load(args) => load::run(args).await,
            Command::PaymentSim(args) => payment_sim::run(args).await,
            Command::Probe(args) => probe::run(args).await,
            Command::Export(args) => export::run(args).await,
            Command::Import(args) => import::run(args).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
