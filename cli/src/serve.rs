//! `stay serve`: run Stay.
//!
//! [`Application::build`] opens the stores, applies migrations, wires the roles' routers and binds
//! the listener; [`Application::run`] serves until SIGTERM or Ctrl-C, then stops accepting
//! connections, lets requests in flight finish (bounded by the grace period) and exits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use stay_command_api::service::{self, Readiness, ServiceConfig};
use stay_command_api::{CommandApi, CommandConfig, IdempotencyStore, JwtKeys};
use stay_domain::Clock;
use stay_store::{EventStore, ExecutorConfig, Executors, StoreOptions, SystemClock};
use tokio::net::TcpListener;

use crate::settings::{component_migrations, SecretArgs, StoreArgs};

/// Which parts of Stay this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServeRole {
    /// Every role built so far, in one process.
    All,
    /// The command routes only.
    CommandApi,
}

/// Arguments of `stay serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,

    #[command(flatten)]
    secret: SecretArgs,

    /// Address to listen on (port 0 picks a free port; the address chosen is printed).
    #[arg(long, env = "STAY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,

    /// Which role to run.
    #[arg(long, env = "STAY_ROLE", value_enum, default_value = "all")]
    role: ServeRole,

    /// Requests under /v1 in flight at once; past it, 503 with Retry-After.
    #[arg(long, env = "STAY_MAX_IN_FLIGHT", default_value_t = 512)]
    max_in_flight: usize,

    /// The largest request body, in bytes (larger: 413).
    #[arg(long, env = "STAY_MAX_BODY_BYTES", default_value_t = stay_command_api::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,

    /// How long requests in flight may take to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "STAY_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,

    /// Do not apply migrations at start-up (run `stay migrate` first); /readyz reports any pending.
    #[arg(long, env = "STAY_NO_MIGRATE")]
    no_migrate: bool,
}

/// A built server, bound and ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    grace: Duration,
}

impl Application {
    /// Opens the stores, migrates, wires the routes and binds the listener.
    pub async fn build(args: ServeArgs, metrics: PrometheusHandle) -> anyhow::Result<Self> {
        let url = args.store.store_url()?;
        let store = EventStore::open(&url, StoreOptions::default())
            .await
            .with_context(|| format!("cannot open the store at {url}"))?;
        let read_db = args.store.read_database(&store).await?;
        let migrations = component_migrations();
        if !args.no_migrate {
            store.migrate().await.with_context(|| format!("migrating {url}"))?;
            for set in &migrations {
                read_db.migrate(set).await.with_context(|| format!("migrating the {} tables", set.component))?;
            }
        }
        let keys = JwtKeys::new(&args.secret.secret(&args.store.data_dir)?);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let executors = Arc::new(Executors::new(&store, clock.clone(), ExecutorConfig::default()));

        let mut v1 = Vec::new();
        if matches!(args.role, ServeRole::All | ServeRole::CommandApi) {
            let config = CommandConfig {
                keys,
                idempotency: IdempotencyStore::new(read_db.clone()),
                max_body_bytes: args.max_body_bytes,
            };
            v1.push(stay_command_api::router(CommandApi::new(executors.clone(), clock), config));
        }
        let service = ServiceConfig {
            max_in_flight: args.max_in_flight,
            readiness: Readiness { store, sql: Some((read_db, migrations)) },
            render_metrics: Arc::new(move || metrics.render()),
            executors: Some(executors),
        };
        let (router, _openapi) = service::assemble(v1, service);
        let listener =
            TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
        Ok(Self { listener, router, grace: args.shutdown_grace })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes, then drains requests in flight for up to the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; finishing requests in flight");
            let _ = stopping_tx.send(true);
        };
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(signal);
        let grace = self.grace;
        let deadline = async move {
            let _ = stopping_rx.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            served = server => served.context("the server failed"),
            () = deadline => {
                tracing::warn!(grace = ?grace, "requests still in flight after the grace period; stopping anyway");
                Ok(())
            }
        }
    }
}

/// Installs the Prometheus recorder for this process.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    const LATENCY_BUCKETS: &[f64] =
        &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// `stay serve`.
#[allow(clippy::print_stdout)] // the command's own output: where it listens
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let metrics = install_metrics()?;
    let app = Application::build(args, metrics).await?;
    let addr = app.local_addr()?;
    println!("stay: listening on http://{addr}");
    app.run(shutdown_signal()).await?;
    println!("stay: stopped");
    Ok(())
}
