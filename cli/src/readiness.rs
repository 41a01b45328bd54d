//! What makes each role ready to serve: its part of `/readyz`, beside the store and migration
//! checks every process makes.
//!
//! | role | ready when | detail only (never a reason to drop out) |
//! |---|---|---|
//! | command-api | its idempotency heartbeat was written within [`DEAD_AFTER`], so no other process takes its claims for dead | |
//! | query-api | every read model's tables are set up (by a projector, or at start-up) | |
//! | saga | the saga schedule can be read | instances by status, the payment provider's circuit |
//! | projector | it can read the leases and checkpoints | each model's lease (held here, standby, free) and lag |
//!
//! A projector or saga replica on standby is ready: the leases make it a standby by design, and it
//! takes over when the holder stops.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stay_command_api::idempotency::DEAD_AFTER;
use stay_command_api::IdempotencyStore;
use stay_http::{RoleCheck, RoleReadiness};
use stay_projections::model::ReadModel;
use stay_projections::runner::not_set_up;
use stay_projections::{LeaseState, Projector};
use stay_saga::provider::resilient::{CircuitHandle, CircuitState};
use stay_saga::schedule::Schedule;
use stay_store::{EventStore, SqlDatabase};
use tokio::sync::watch;

type Checking<'a> = Pin<Box<dyn Future<Output = RoleCheck> + Send + 'a>>;

fn check(ok: bool, detail: impl Into<String>) -> RoleCheck {
    RoleCheck { ok, detail: detail.into(), report: None }
}

/// The command API: its heartbeat stands, so the keys it claims stay its own.
#[derive(Debug)]
pub struct CommandsReady(pub IdempotencyStore);

impl RoleReadiness for CommandsReady {
    fn name(&self) -> &'static str {
        "command-api"
    }

    fn check(&self) -> Checking<'_> {
        Box::pin(async move {
            match self.0.heartbeat_age().await {
                Ok(Some(age)) if age < DEAD_AFTER => {
                    check(true, format!("idempotency heartbeat written {} ms ago", age.as_millis()))
                }
                Ok(Some(age)) => check(
                    false,
                    format!(
                        "idempotency heartbeat last written {} ms ago (other processes take its claims for dead after {} ms)",
                        age.as_millis(),
                        DEAD_AFTER.as_millis()
                    ),
                ),
                Ok(None) => check(false, "idempotency heartbeat not written yet"),
                Err(err) => check(false, format!("cannot read the idempotency heartbeat: {err}")),
            }
        })
    }
}

/// The query API: every read model it serves has its tables.
#[derive(Debug)]
pub struct QueriesReady {
    pub db: SqlDatabase,
    pub models: Vec<Arc<dyn ReadModel>>,
}

impl RoleReadiness for QueriesReady {
    fn name(&self) -> &'static str {
        "query-api"
    }

    fn check(&self) -> Checking<'_> {
        Box::pin(async move {
            match not_set_up(&self.db, &self.models).await {
                Ok(missing) if missing.is_empty() => check(true, format!("{} read models set up", self.models.len())),
                Ok(missing) => check(
                    false,
                    format!("read models not set up yet (a projector sets them up): {}", missing.join(", ")),
                ),
                Err(err) => check(false, format!("cannot read the read models' state: {err}")),
            }
        })
    }
}

/// The saga: its schedule answers. The payment provider's circuit is reported, not judged: an
/// open circuit is the saga working as meant (new reservations wait or are refused with 503).
#[derive(Debug)]
pub struct SagaReady {
    pub schedule: Schedule,
    pub circuit: CircuitHandle,
}

impl RoleReadiness for SagaReady {
    fn name(&self) -> &'static str {
        "saga"
    }

    fn check(&self) -> Checking<'_> {
        Box::pin(async move {
            let circuit = match self.circuit.state() {
                CircuitState::Closed => "closed".to_owned(),
                CircuitState::HalfOpen => "half-open (a trial call is next)".to_owned(),
                CircuitState::Open { retry_in } => format!("open (a trial call in {} ms)", retry_in.as_millis()),
            };
            match self.schedule.counts().await {
                Ok(counts) => {
                    let by_status: Vec<String> = counts.iter().map(|(status, n)| format!("{n} {status}")).collect();
                    let instances = if by_status.is_empty() { "none".to_owned() } else { by_status.join(", ") };
                    let mut found = check(true, format!("instances: {instances}; payment provider circuit {circuit}"));
                    found.report = Some(json!({
                        "instances": counts.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                        "payment_circuit": circuit,
                    }));
                    found
                }
                Err(err) => check(false, format!("cannot read the saga schedule: {err}")),
            }
        })
    }
}

/// The projector: it can see its leases and checkpoints. Which models it leads and how far
/// behind they are is detail; a standby or a lagging model is still ready.
#[derive(Debug)]
pub struct ProjectorReady(pub Arc<Projector>);

impl RoleReadiness for ProjectorReady {
    fn name(&self) -> &'static str {
        "projector"
    }

    fn check(&self) -> Checking<'_> {
        Box::pin(async move {
            match self.0.report(LAG_COUNTED_WITHIN).await {
                Ok(workers) => {
                    let held = workers.iter().filter(|w| w.lease == LeaseState::Held).count();
                    let standby = workers.iter().filter(|w| w.lease == LeaseState::Standby).count();
                    let uncounted: Vec<&str> =
                        workers.iter().filter(|w| w.lag_events.is_none()).map(|w| w.name).collect();
                    let behind = workers.iter().max_by_key(|w| w.lag_events).filter(|w| w.lag_events > Some(0));
                    let lag = match (behind, uncounted.is_empty()) {
                        (_, false) => format!("lag not counted within 1 s for {}", uncounted.join(", ")),
                        (Some(w), true) => format!(
                            "most behind: {} by {} events ({} ms)",
                            w.name,
                            w.lag_events.unwrap_or_default(),
                            w.lag_ms.unwrap_or_default()
                        ),
                        (None, true) => "every model caught up".to_owned(),
                    };
                    let mut found = check(
                        true,
                        format!("{} models: {held} led here, {standby} on standby (leases); {lag}", workers.len()),
                    );
                    found.report = Some(json!({ "workers": workers }));
                    found
                }
                Err(err) => check(false, format!("cannot read the projection leases and checkpoints: {err}")),
            }
        })
    }
}

/// How long the projector's check counts its models' lag before it answers without the rest: lag
/// is detail, and counting a far-behind model (on EventStoreDB, by reading events) must not make the
/// check miss its deadline and the process look unready.
const LAG_COUNTED_WITHIN: Duration = Duration::from_secs(1);

/// How often the feed's hold-back gauge is set.
const HELD_BACK_EVERY: Duration = Duration::from_secs(5);

/// Sets `stay_feed_held_back_events` every few seconds until `stopping`: the events a PostgreSQL
/// feed holds back behind an open transaction. Other backends hold nothing back and set nothing.
pub async fn publish_held_back(store: EventStore, mut stopping: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(HELD_BACK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping.wait_for(|stopping| *stopping) => return,
        }
        match store.held_back().await {
            Ok(Some(held)) => metrics::gauge!("stay_feed_held_back_events").set(held as f64),
            Ok(None) => return,
            Err(err) => tracing::debug!(error = %err, "cannot count the events the feed holds back"),
        }
    }
}
