//! `stay`: run, migrate and inspect Stay.
//!
//! A thin shell over the library crates: parse the command line (flags, or `STAY_*` environment
//! variables), run the chosen command, and report its error chain once, here at the edge.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod load;
mod migrate;
mod settings;

/// Stay, an event-sourced accommodation-reservation platform.
#[derive(Debug, Parser)]
#[command(name = "stay", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade the event store's schema, then exit (safe to run again).
    Migrate(migrate::MigrateArgs),
    /// Generate load and measure it (the figures in docs/benchmarks.md).
    Load(load::LoadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STAY_LOG").unwrap_or_else(|_| "warn,stay=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Migrate(args) => migrate::run(args).await,
            Command::Load(args) => load::run(args).await,
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
