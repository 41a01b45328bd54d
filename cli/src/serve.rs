//! `stay serve`: run Stay.
//!
//! [`Application::build`] opens the stores, applies migrations, wires the roles' routers and binds
//! the listener; [`Application::run`] serves until SIGTERM or Ctrl-C, then stops accepting
//! connections, lets requests in flight finish (bounded by the grace period) and exits.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use stay_command_api::{CommandApi, CommandConfig, IdempotencyStore, PaymentsGate};
use stay_domain::{BookingHorizon, Clock};
use stay_http::service::{self, Readiness, RoleReadiness, ServiceConfig};
use stay_projections::runner::initialize;
use stay_projections::{Projector, RunnerConfig};
use stay_query_api::QueryState;
use stay_saga::admin::AdminState;
use stay_saga::driver::{Driver, SagaConfig};
use stay_saga::instance::SagaInstance;
use stay_saga::provider::http::{HttpProvider, HttpProviderConfig};
use stay_saga::provider::resilient::{CircuitHandle, CircuitState, ResilienceConfig, Resilient};
use stay_saga::provider::simulator::Simulator;
use stay_saga::provider::PaymentProvider;
use stay_saga::schedule::Schedule;
use stay_saga::worker::SagaWorker;
use stay_store::{EventStore, Executor, ExecutorConfig, Executors, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::readiness::{publish_held_back, CommandsReady, ProjectorReady, QueriesReady, SagaReady};
use crate::settings::{component_migrations, SecretArgs, StoreArgs};

/// Which parts of Stay this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServeRole {
    /// Every role built so far, in one process.
    All,
    /// The command routes only.
    CommandApi,
    /// The reservation saga (and its admin routes) only.
    Saga,
    /// The projection workers only (no HTTP routes but the service endpoints).
    Projector,
    /// The query routes only.
    QueryApi,
}

impl ServeRole {
    fn runs_commands(self) -> bool {
        matches!(self, ServeRole::All | ServeRole::CommandApi)
    }

    fn runs_saga(self) -> bool {
        matches!(self, ServeRole::All | ServeRole::Saga)
    }

    fn runs_projector(self) -> bool {
        matches!(self, ServeRole::All | ServeRole::Projector)
    }

    fn runs_queries(self) -> bool {
        matches!(self, ServeRole::All | ServeRole::QueryApi)
    }
}

/// Arguments of `stay serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,

    #[command(flatten)]
    secret: SecretArgs,

    /// While rotating the token secret: the secret being replaced. Tokens signed with it are still
    /// accepted (new ones are signed with --jwt-secret); drop it once they have expired.
    #[arg(long, env = "STAY_JWT_PREVIOUS_SECRET", hide_env_values = true)]
    jwt_previous_secret: Option<String>,

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
    #[arg(long, env = "STAY_MAX_BODY_BYTES", default_value_t = stay_http::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,

    /// How long requests in flight may take to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "STAY_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,

    /// How long an answered Idempotency-Key is remembered.
    #[arg(long, env = "STAY_IDEMPOTENCY_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    idempotency_retention: Duration,

    /// How far ahead a stay may end, in whole days (730d = 2 years); a stay ending later is refused (422).
    #[arg(long, env = "STAY_BOOKING_HORIZON", default_value = "730d", value_parser = parse_booking_horizon)]
    booking_horizon: BookingHorizon,

    /// The longest a bearer token may live (`exp` minus `iat`, or minus now without `iat`); longer: 401.
    #[arg(long, env = "STAY_MAX_TOKEN_LIFETIME", default_value = "24h", value_parser = humantime::parse_duration)]
    max_token_lifetime: Duration,

    /// Do not apply migrations at start-up (run `stay migrate` first); /readyz reports any pending.
    #[arg(long, env = "STAY_NO_MIGRATE")]
    no_migrate: bool,

    /// A development aid: serve the dashboard's files from this folder, read at each request,
    /// instead of the copies built into the binary, so they can be edited without rebuilding
    /// (`STAY_DASHBOARD_DIR=$PWD/query-api/dashboard stay serve`).
    #[arg(long, env = "STAY_DASHBOARD_DIR")]
    dashboard_dir: Option<std::path::PathBuf>,

    #[command(flatten)]
    saga: SagaArgs,
}

/// How the saga reaches the payment provider and paces itself.
#[derive(Debug, Args)]
pub struct SagaArgs {
    /// `simulator` (in process, its ledger kept in DATA_DIR/payment-simulator.jsonl) or the URL of a
    /// provider such as `stay payment-sim` (http://HOST:PORT).
    #[arg(long, env = "STAY_PAYMENT_PROVIDER", default_value = "simulator")]
    payment_provider: String,

    /// How long a charge may go unanswered before the reservation is rejected and the charge voided.
    #[arg(long, env = "STAY_PAYMENT_DEADLINE", default_value = "60s", value_parser = humantime::parse_duration)]
    payment_deadline: Duration,

    /// How long one call to the provider may take.
    #[arg(long, env = "STAY_PAYMENT_CALL_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    payment_call_timeout: Duration,

    /// Consecutive failed provider calls that open the circuit breaker.
    #[arg(long, env = "STAY_PAYMENT_BREAKER_THRESHOLD", default_value_t = 5)]
    payment_breaker_threshold: u32,

    /// How long the breaker stays open before a trial call.
    #[arg(long, env = "STAY_PAYMENT_BREAKER_COOL_DOWN", default_value = "5s", value_parser = humantime::parse_duration)]
    payment_breaker_cool_down: Duration,

    /// Saga instances driven at once by this process.
    #[arg(long, env = "STAY_SAGA_CONCURRENCY", default_value_t = 64)]
    saga_concurrency: usize,

    /// Failures in a row after which a saga step (other than the charge) is parked for an operator.
    #[arg(long, env = "STAY_SAGA_MAX_STEP_FAILURES", default_value_t = 10)]
    saga_max_step_failures: u32,

    /// The first delay before a failed saga step is retried; it doubles per failure (with jitter), up to 30s.
    #[arg(long, env = "STAY_SAGA_RETRY_BASE", default_value = "200ms", value_parser = humantime::parse_duration)]
    saga_retry_base: Duration,
}

/// `--booking-horizon`: a duration such as `730d` or `2years`, counted in whole days.
fn parse_booking_horizon(text: &str) -> Result<BookingHorizon, String> {
    let duration = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    let days = u32::try_from(duration.as_secs() / 86_400).unwrap_or(u32::MAX);
    BookingHorizon::days(days).map_err(|_| "a booking horizon is 1 day to 100 years (36500d)".to_owned())
}

/// The saga's circuit breaker as the command side's gate for new reservations.
#[derive(Debug)]
struct BreakerGate(CircuitHandle);

impl PaymentsGate for BreakerGate {
    fn unavailable_for(&self) -> Option<Duration> {
        match self.0.state() {
            CircuitState::Open { retry_in } => Some(retry_in),
            CircuitState::Closed | CircuitState::HalfOpen => None,
        }
    }
}

/// The in-process simulator's ledger file, in the data directory.
pub const SIMULATOR_LEDGER_FILE: &str = "payment-simulator.jsonl";

/// The provider the saga calls, wrapped in timeouts, retries and a breaker.
///
/// The in-process simulator keeps its ledger in `data_dir` when this process drives sagas, so a
/// crash loses nothing it answered (a refund after a restart finds the charge). A process that
/// does not drive sagas never calls it, and leaves the file to the one that does.
fn payment_provider(
    args: &SagaArgs,
    data_dir: &Path,
    drives_sagas: bool,
) -> anyhow::Result<(Arc<dyn PaymentProvider>, CircuitHandle)> {
    let resilience = ResilienceConfig {
        call_timeout: args.payment_call_timeout,
        failure_threshold: args.payment_breaker_threshold,
        cool_down: args.payment_breaker_cool_down,
        ..ResilienceConfig::default()
    };
    if args.payment_provider == "simulator" {
        let simulator = if drives_sagas {
            std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
            Simulator::with_ledger_file(data_dir.join(SIMULATOR_LEDGER_FILE))?
        } else {
            Simulator::new()
        };
        let provider = Resilient::new(simulator, resilience);
        let circuit = provider.circuit_handle();
        return Ok((Arc::new(provider), circuit));
    }
    // The HTTP client's own timeout stays above the per-call one, which is the one that counts.
    let config = HttpProviderConfig { base_url: args.payment_provider.clone(), timeout: args.payment_call_timeout * 2 };
    let http = HttpProvider::new(config).with_context(|| format!("--payment-provider {}", args.payment_provider))?;
    let provider = Resilient::new(http, resilience);
    let circuit = provider.circuit_handle();
    Ok((Arc::new(provider), circuit))
}

/// A built server, bound and ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    grace: Duration,
    saga: Option<Arc<SagaWorker>>,
    projector: Option<Arc<Projector>>,
    /// The command side's keys (when this process takes commands): their heartbeat, and the
    /// purge of answers older than the retention.
    idempotency: Option<(IdempotencyStore, Duration)>,
    /// The store whose feed's hold-back this process reports (`stay_feed_held_back_events`).
    feed: Option<EventStore>,
}

impl Application {
    /// Opens the stores, migrates, wires the routes and binds the listener.
    pub async fn build(args: ServeArgs, metrics: PrometheusHandle) -> anyhow::Result<Self> {
        let url = args.store.store_url()?;
        let store = EventStore::open(&url, crate::aggregate_types::store_options())
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
        anyhow::ensure!(args.max_token_lifetime.as_secs() > 0, "--max-token-lifetime must be at least one second");
        let keys = args
            .secret
            .keys(&args.store.data_dir, args.jwt_previous_secret.as_deref())?
            .with_max_lifetime(args.max_token_lifetime);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let executors = Arc::new(Executors::new(&store, clock.clone(), ExecutorConfig::default()));
        let (provider, circuit) = payment_provider(&args.saga, &args.store.data_dir, args.role.runs_saga())?;

        let mut v1 = Vec::new();
        let mut roles: Vec<Arc<dyn RoleReadiness>> = Vec::new();
        let mut saga = None;
        if args.role.runs_saga() {
            let schedule = Schedule::new(read_db.clone());
            let services = Arc::new(stay_domain::DomainServices::new(clock.clone()));
            let sagas = Arc::new(Executor::<SagaInstance>::new(store.clone(), services, clock.clone()));
            let config = SagaConfig {
                payment_deadline: args.saga.payment_deadline,
                concurrency: args.saga.saga_concurrency,
                max_step_failures: args.saga.saga_max_step_failures.max(1),
                retry_base: args.saga.saga_retry_base,
                ..SagaConfig::default()
            };
            let lease = config.lease;
            let driver =
                Driver::new(executors.clone(), sagas.clone(), provider, schedule.clone(), clock.clone(), config);
            let worker = SagaWorker::new(
                store.clone(),
                schedule.clone(),
                Arc::new(driver),
                clock.clone(),
                args.saga.saga_concurrency,
                lease,
            );
            roles.push(Arc::new(SagaReady { schedule: schedule.clone(), circuit: circuit.clone() }));
            let admin =
                AdminState { schedule, sagas, store: store.clone(), waker: worker.waker(), clock: clock.clone() };
            v1.push(stay_saga::admin::router(admin, keys.clone()));
            saga = Some(Arc::new(worker));
        }
        let models = stay_projections::models::all();
        // Without migrations there are no tables to set up; /readyz says so, and the projector
        // sets them up once they exist.
        if !args.no_migrate && (args.role.runs_projector() || args.role.runs_queries()) {
            for model in &models {
                initialize(&read_db, model.as_ref())
                    .await
                    .with_context(|| format!("setting up the {} read model", model.name()))?;
            }
        }
        let projector = args
            .role
            .runs_projector()
            .then(|| Arc::new(Projector::new(store.clone(), read_db.clone(), models.clone(), RunnerConfig::default())));
        if let Some(projector) = &projector {
            roles.push(Arc::new(ProjectorReady(projector.clone())));
        }
        if args.role.runs_queries() {
            roles.push(Arc::new(QueriesReady { db: read_db.clone(), models: models.clone() }));
            let mut state = QueryState::new(store.clone(), read_db.clone(), models, keys.clone());
            if let Some(projector) = &projector {
                state = state.woken_by(projector.committed());
            }
            if let Some(dir) = args.dashboard_dir {
                anyhow::ensure!(dir.is_dir(), "--dashboard-dir {}: not a folder", dir.display());
                tracing::info!(dir = %dir.display(), "serving the dashboard's files from a folder, not the binary");
                state = state.serving_dashboard_from(dir);
            }
            v1.push(stay_query_api::router(state));
        }
        let mut kept_keys = None;
        if args.role.runs_commands() {
            let idempotency = IdempotencyStore::new(read_db.clone());
            // Alive before the first claim, so no other process takes this one's claims for dead.
            // Not fatal: with --no-migrate the table may not be there yet (/readyz says so), and
            // the heartbeat keeps trying every second.
            if let Err(err) = idempotency.beat().await {
                tracing::warn!(error = %err, "cannot write this process's idempotency heartbeat yet");
            }
            kept_keys = Some((idempotency.clone(), args.idempotency_retention));
            roles.push(Arc::new(CommandsReady(idempotency.clone())));
            let config = CommandConfig { keys, idempotency, max_body_bytes: args.max_body_bytes };
            let mut api = CommandApi::new(executors.clone(), clock).with_booking_horizon(args.booking_horizon);
            if args.role.runs_saga() {
                api = api.with_payments_gate(Arc::new(BreakerGate(circuit)));
            }
            v1.push(stay_command_api::router(api, config));
        }
        let service = ServiceConfig {
            max_in_flight: args.max_in_flight,
            readiness: Readiness { store: store.clone(), sql: Some((read_db, migrations)), roles },
            render_metrics: Arc::new(move || {
                crate::memory::record_allocator_gauges();
                metrics.render()
            }),
            executors: Some(executors),
        };
        let (router, _openapi) = service::assemble(v1, service);
        let listener =
            TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
        // The process that reads the feed for the read models watches how much of it is held back.
        let feed = projector.as_ref().map(|_| store);
        Ok(Self { listener, router, grace: args.shutdown_grace, saga, projector, idempotency: kept_keys, feed })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes, then drains requests in flight for up to the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stopping_tx, mut stopping_rx) = watch::channel(false);
        let workers = self.saga.map(|saga| tokio::spawn(saga.run(stopping_rx.clone())));
        let projector = self.projector.map(|projector| tokio::spawn(projector.run(stopping_rx.clone())));
        // Claims stay alive until the last request is answered, not just until the stop begins.
        let (served_tx, served_rx) = watch::channel(false);
        let heartbeat = self.idempotency.as_ref().map(|(keys, _)| {
            let keys = keys.clone();
            tokio::spawn(async move { keys.keep_alive(served_rx).await })
        });
        let held_back = self.feed.map(|store| tokio::spawn(publish_held_back(store, stopping_rx.clone())));
        let purge = self
            .idempotency
            .map(|(keys, retention)| tokio::spawn(purge_idempotency_keys(keys, retention, stopping_rx.clone())));
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; finishing requests in flight");
            let _ = stopping_tx.send(true);
        };
        let server = stay_http::serve::serve(self.listener, self.router, signal);
        let grace = self.grace;
        let deadline = async move {
            let _ = stopping_rx.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
        };
        let stopped = async move {
            let served = server.await.context("the server failed");
            let _ = served_tx.send(true);
            if let Some(heartbeat) = heartbeat {
                let _ = heartbeat.await;
            }
            served?;
            // The saga finishes the steps it is in (each ends at a recorded boundary).
            if let Some(workers) = workers {
                let _ = workers.await;
            }
            // Projection workers commit their current batch and checkpoint, then stop.
            if let Some(projector) = projector {
                let _ = projector.await;
            }
            if let Some(purge) = purge {
                let _ = purge.await;
            }
            if let Some(held_back) = held_back {
                let _ = held_back.await;
            }
            anyhow::Ok(())
        };
        tokio::select! {
            stopped = stopped => stopped,
            () = deadline => {
                tracing::warn!(grace = ?grace, "work still in flight after the grace period; stopping anyway");
                Ok(())
            }
        }
    }
}

/// Forgets answered idempotency keys past their retention, every ten minutes, until the server stops.
async fn purge_idempotency_keys(keys: IdempotencyStore, retention: Duration, mut stopping: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping.wait_for(|stopping| *stopping) => return,
        }
        match keys.purge(retention).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::info!(forgotten, "forgot answered idempotency keys past their retention"),
            Err(err) => tracing::warn!(error = %err, "could not forget old idempotency keys"),
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

#[cfg(test)]
mod tests {
    use stay_command_api::IDEMPOTENCY_MIGRATIONS;
    use stay_store::{SqlDatabase, StoreUrl};

    use super::*;

    #[test]
    fn a_booking_horizon_is_read_in_whole_days() {
        let days = |text| parse_booking_horizon(text).map(|horizon| horizon.in_days());
        assert_eq!(days("730d"), Ok(730));
        assert_eq!(days("2years"), Ok(730));
        assert_eq!(days("36h"), Ok(1));
        assert!(days("12h").is_err(), "less than a day");
        assert!(days("1000years").is_err(), "more than a hundred years");
        assert!(days("soon").is_err());
    }

    #[tokio::test]
    async fn the_idempotency_purge_stops_with_the_server() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = SqlDatabase::open(&StoreUrl::Sqlite(dir.path().join("read.db"))).await.expect("open");
        db.migrate(&IDEMPOTENCY_MIGRATIONS).await.expect("migrate");
        let (stopping_tx, stopping_rx) = watch::channel(false);
        let purge =
            tokio::spawn(purge_idempotency_keys(IdempotencyStore::new(db), Duration::from_secs(1), stopping_rx));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!purge.is_finished(), "it runs while the server does");
        stopping_tx.send(true).expect("the purge listens");
        tokio::time::timeout(Duration::from_secs(2), purge).await.expect("stops at once").expect("no panic");
    }
}
