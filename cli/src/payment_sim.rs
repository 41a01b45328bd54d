//! `stay payment-sim`: the payment simulator over HTTP, so the HTTP adapter and network faults can
//! be exercised against a separate process that can be killed and restarted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use stay_saga::provider::http::router;
use stay_saga::provider::simulator::Simulator;
use tokio::net::TcpListener;

use crate::serve::shutdown_signal;

/// How long requests in flight may finish after SIGTERM: past a `tok_slow` charge (2 s), while a
/// `tok_timeout` charge, which never answers, does not hold up the exit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Arguments of `stay payment-sim`.
#[derive(Debug, Args)]
pub struct PaymentSimArgs {
    /// Address to listen on (port 0 picks a free port; the address chosen is printed).
    #[arg(long, env = "STAY_PAYMENT_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    listen: String,

    /// Keep the ledger in this JSON-lines file, reloaded at start-up, so a restarted simulator
    /// keeps its ledger and never charges a payment twice (default: in memory only).
    #[arg(long, env = "STAY_PAYMENT_SIM_LEDGER")]
    ledger: Option<PathBuf>,
}

/// `stay payment-sim`.
#[allow(clippy::print_stdout)] // the command's own output: where it listens
pub async fn run(args: PaymentSimArgs) -> anyhow::Result<()> {
    let sim = match &args.ledger {
        Some(path) => Simulator::with_ledger_file(path)?,
        None => Simulator::new(),
    };
    let listener =
        TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("stay payment-sim: listening on http://{addr}");

    let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(true);
    };
    let server = axum::serve(listener, router(Arc::new(sim))).with_graceful_shutdown(signal);
    let deadline = async move {
        let _ = stopping_rx.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served.context("the payment simulator failed")?,
        () = deadline => tracing::info!("requests still unanswered after the grace period; stopping anyway"),
    }
    println!("stay payment-sim: stopped");
    Ok(())
}
