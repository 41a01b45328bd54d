//! `stay projections status|rebuild NAME|dead-letters NAME|retry NAME POSITION|skip NAME POSITION`:
//! read-model lag, rebuilds without downtime, and dead letters one by one.
//!
//! A rebuild builds the next version of the model beside the live one and switches when it has
//! caught up. A retry or skip of a dead letter is recorded on it and carried out by the model's
//! worker. The projector of a running `stay serve` does the work when one holds the model's lease;
//! otherwise these commands run the model's worker themselves until it is done.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use stay_projections::runner::{
    checkpoint_name, dead_letters, request_dead_letter, request_rebuild, settled, skipped_count, statuses, versions,
    Action, ProjectionStatus, RequestError,
};
use stay_projections::{models, Projector, ReadModel, RunnerConfig};
use stay_store::{EventStore, Position, SqlDatabase};
use tokio::sync::watch;

use crate::output;
use crate::settings::StoreArgs;

/// Arguments of `stay projections`.
#[derive(Debug, Args)]
pub struct ProjectionsArgs {
    #[command(subcommand)]
    command: ProjectionsCommand,
}

/// What every `stay projections` command takes.
#[derive(Debug, Args)]
struct Common {
    #[command(flatten)]
    store: StoreArgs,

    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Each read model's version, position, lag, status and parked events.
    Status {
        #[command(flatten)]
        common: Common,
    },
    /// Rebuild a read model from the start of the feed beside the live one; switch when caught up.
    Rebuild {
        /// The read model: roomview, reservations, notifications, reviews or sagas.
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Rebuild every read model, one after another (after `stay import`).
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// Start the rebuild and return at once (progress shows in `status`).
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        common: Common,
    },
    /// A read model's dead letters: refused events (retrying or parked) with their error,
    /// attempts and the held events of their aggregate behind them.
    DeadLetters {
        /// The read model.
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Apply a dead letter again; on success its held followers are applied in order.
    Retry {
        /// The read model.
        name: String,
        /// The dead letter's feed position.
        position: String,
        #[command(flatten)]
        common: Common,
    },
    /// Skip a dead letter for good (a rebuild passes over it too); its held followers are applied in order.
    Skip {
        /// The read model.
        name: String,
        /// The dead letter's feed position.
        position: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Runs `stay projections`.
pub async fn run(args: ProjectionsArgs) -> anyhow::Result<()> {
    let common = match &args.command {
        ProjectionsCommand::Status { common }
        | ProjectionsCommand::Rebuild { common, .. }
        | ProjectionsCommand::DeadLetters { common, .. }
        | ProjectionsCommand::Retry { common, .. }
        | ProjectionsCommand::Skip { common, .. } => common,
    };
    let url = common.store.store_url()?;
    let store = EventStore::open(&url, crate::aggregate_types::store_options())
        .await
        .with_context(|| format!("cannot open the store at {url}"))?;
    let db = common.store.read_database(&store).await?;
    let json = common.json;
    let all = models::all();
    match args.command {
        ProjectionsCommand::Status { .. } => status(&store, &db, &all, json).await,
        ProjectionsCommand::Rebuild { all: true, no_wait, .. } => rebuild_all(store, db, all, no_wait, json).await,
        ProjectionsCommand::Rebuild { name, no_wait, .. } => {
            let name = name.unwrap_or_default();
            let model = all
                .iter()
                .find(|m| m.name() == name)
                .cloned()
                .with_context(|| format!("no read model is called {name:?}; try stay projections status"))?;
            rebuild(store, db, model, no_wait, json).await
        }
        ProjectionsCommand::DeadLetters { name, .. } => list_dead_letters(&db, model_named(&all, &name)?, json).await,
        ProjectionsCommand::Retry { name, position, .. } => {
            settle_dead_letter(store, db, model_named(&all, &name)?, &position, Action::Retry, json).await
        }
        ProjectionsCommand::Skip { name, position, .. } => {
            settle_dead_letter(store, db, model_named(&all, &name)?, &position, Action::Skip, json).await
        }
    }
}

/// The read model called `name`.
fn model_named(all: &[Arc<dyn ReadModel>], name: &str) -> anyhow::Result<Arc<dyn ReadModel>> {
    all.iter()
        .find(|m| m.name() == name)
        .cloned()
        .with_context(|| format!("no read model is called {name:?}; try stay projections status"))
}

#[allow(clippy::print_stdout)] // the command's own output
async fn list_dead_letters(db: &SqlDatabase, model: Arc<dyn ReadModel>, json: bool) -> anyhow::Result<()> {
    let name = model.name();
    let version = versions(db, name).await?.live;
    let items = dead_letters(db, name, version).await?;
    let skipped = skipped_count(db, name).await?;
    if json {
        let list = serde_json::json!({"name": name, "version": version, "items": items, "skipped": skipped});
        println!("{list}");
        return Ok(());
    }
    let mut table = output::table(
        &["position", "aggregate", "event", "state", "attempts", "next retry", "followers", "error"],
        &["position", "attempts"],
    );
    for letter in &items {
        table.add_row(vec![
            letter.position.clone(),
            format!("{} {}", letter.aggregate_type, letter.aggregate_id),
            letter.event_type.clone(),
            letter.state.clone(),
            letter.attempts.to_string(),
            letter.next_retry_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            letter.followers.join(" "),
            letter.error.clone(),
        ]);
    }
    println!("{table}");
    println!("{name} v{version}: {} dead letters, {skipped} skipped", items.len());
    Ok(())
}

/// How long a retry or skip waits for the model's worker.
const SETTLE_WAIT: Duration = Duration::from_secs(15);

/// Records a retry or skip of a dead letter and waits for the model's worker to carry it out
/// (running the worker here when no process holds the model's lease). A retry refused again is
/// printed and fails the command.
#[allow(clippy::print_stdout)] // the command's own output
async fn settle_dead_letter(
    store: EventStore,
    db: SqlDatabase,
    model: Arc<dyn ReadModel>,
    position: &str,
    action: Action,
    json: bool,
) -> anyhow::Result<()> {
    let name = model.name();
    let at: Position = position.parse().map_err(|_| anyhow::anyhow!("{position:?} is not a feed position"))?;
    let requested = match request_dead_letter(&db, name, at, action).await {
        Ok(requested) => requested,
        Err(RequestError::UnknownPosition) => anyhow::bail!("the {name} read model keeps no dead letter at {position}"),
        Err(RequestError::Held(head)) => anyhow::bail!(
            "the event at {position} is held behind {}; retry or skip that one",
            head.unwrap_or_else(|| "an earlier dead letter of its aggregate".to_owned())
        ),
        Err(RequestError::Store(err)) => return Err(err.into()),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let local = if projector_running(&db, name).await? {
        None
    } else {
        let projector = Arc::new(Projector::new(store, db.clone(), vec![model.clone()], RunnerConfig::default()));
        Some(tokio::spawn(projector.run(stop_rx)))
    };
    let done = settled(&db, &requested, SETTLE_WAIT).await;
    let _ = stop_tx.send(true);
    if let Some(local) = local {
        let _ = local.await;
    }
    let done = done?;
    if json {
        println!("{}", serde_json::to_string(&done)?);
    } else {
        match done.outcome.as_str() {
            "applied" | "skipped" => {
                let released = if done.released.is_empty() {
                    String::new()
                } else {
                    format!("; released after it: {}", done.released.join(", "))
                };
                println!("{name}: the event at {position} is {}{released}", done.outcome);
            }
            "requested" => {
                println!("{name}: {} of {position} recorded; the model's worker carries it out", action.as_str())
            }
            _ => {}
        }
    }
    if done.outcome == "parked" {
        anyhow::bail!(
            "{name}: the event at {position} was refused again and stays parked ({} attempts): {}",
            done.attempts.unwrap_or_default(),
            done.error.unwrap_or_default()
        );
    }
    Ok(())
}

#[allow(clippy::print_stdout)] // the command's own output
async fn status(store: &EventStore, db: &SqlDatabase, all: &[Arc<dyn ReadModel>], json: bool) -> anyhow::Result<()> {
    let list: Vec<ProjectionStatus> = statuses(store, db, all).await?;
    if json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    let mut table = output::table(
        &["name", "version", "position", "lag", "lag ms", "status", "parked", "rebuild"],
        &["version", "position", "lag", "lag ms", "parked"],
    );
    for p in list {
        let rebuild = p
            .rebuild
            .map(|r| format!("v{} at {} ({} behind)", r.version, r.position, r.lag_events))
            .unwrap_or_default();
        table.add_row(vec![
            p.name,
            p.version.to_string(),
            p.position,
            p.lag_events.to_string(),
            p.lag_ms.to_string(),
            p.status,
            p.dead_letters.len().to_string(),
            rebuild,
        ]);
    }
    println!("{table}");
    Ok(())
}

/// Whether a projector in some process holds the model's lease now.
async fn projector_running(db: &SqlDatabase, name: &str) -> anyhow::Result<bool> {
    let now = chrono::Utc::now().timestamp_millis();
    let rows = db
        .rows("SELECT owner FROM projection_leases WHERE name = $1 AND until_ms > $2", &[name.into(), now.into()])
        .await?;
    Ok(!rows.is_empty())
}

#[allow(clippy::print_stdout)] // the command's own output
async fn rebuild(
    store: EventStore,
    db: SqlDatabase,
    model: Arc<dyn ReadModel>,
    no_wait: bool,
    json: bool,
) -> anyhow::Result<()> {
    let name = model.name();
    let started = Instant::now();
    let target = request_rebuild(&db, model.as_ref()).await?;
    if no_wait {
        if json {
            println!("{}", serde_json::json!({"name": name, "version": target, "status": "rebuilding"}));
        } else {
            println!("{name}: rebuilding as version {target}; see stay projections status");
        }
        return Ok(());
    }
    // With no projector running anywhere, build it here.
    let (stop_tx, stop_rx) = watch::channel(false);
    let local = if projector_running(&db, name).await? {
        None
    } else {
        let projector =
            Arc::new(Projector::new(store.clone(), db.clone(), vec![model.clone()], RunnerConfig::default()));
        Some(tokio::spawn(projector.run(stop_rx)))
    };
    let head = store.head().await?;
    // Counting reads the whole feed: a --json run (used for benchmarks) counts once the rebuild is
    // timed, so the count does not compete with the rebuild for the same cores.
    let total = if json { 0 } else { count_events(&store, head).await? };
    let terminal = std::io::stdout().is_terminal() && !json;
    let bar = terminal.then(|| output::event_bar(total, format!("{name} v{target}")));
    let mut last_line = Instant::now();
    loop {
        let versions = versions(&db, name).await?;
        let at = db.checkpoint(&checkpoint_name(name, target)).await?;
        let done = versions.live == target;
        // Counting costs reads; a --json run (used for benchmarks) only watches for the switch.
        let applied =
            if done || json { total } else { total.saturating_sub(count_events_until(&store, at, head).await?) };
        if let Some(bar) = &bar {
            bar.set_position(applied);
        } else if !json && (done || last_line.elapsed() >= Duration::from_secs(1)) {
            last_line = Instant::now();
            println!("{name} v{target}: {applied}/{total} events, at {at}");
        }
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(if json { 50 } else { 500 })).await;
    }
    let _ = stop_tx.send(true);
    if let Some(local) = local {
        let _ = local.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = if json { count_events(&store, head).await? } else { total };
    let rate = if seconds > 0.0 { total as f64 / seconds } else { 0.0 };
    if json {
        println!(
            "{}",
            serde_json::json!({"name": name, "version": target, "events": total, "seconds": seconds, "events_per_second": rate.round()})
        );
    } else {
        if let Some(bar) = bar {
            bar.finish();
        }
        println!("{name}: version {target} is live ({total} events in {seconds:.1} s, {rate:.0} events/s)");
    }
    Ok(())
}

/// Rebuilds every read model in turn, each switched before the next starts (`--no-wait`: all
/// requested at once).
async fn rebuild_all(
    store: EventStore,
    db: SqlDatabase,
    all: Vec<Arc<dyn ReadModel>>,
    no_wait: bool,
    json: bool,
) -> anyhow::Result<()> {
    for model in all {
        rebuild(store.clone(), db.clone(), model, no_wait, json).await?;
    }
    Ok(())
}

/// Events in the feed up to `head`.
async fn count_events(store: &EventStore, head: Position) -> anyhow::Result<u64> {
    count_events_until(store, Position::START, head).await
}

/// Events after `from` up to `head`.
async fn count_events_until(store: &EventStore, from: Position, head: Position) -> anyhow::Result<u64> {
    let mut after = from;
    let mut count = 0u64;
    while after < head {
        let batch = store.read_feed(after, 5_000).await?;
        let Some(last) = batch.last() else { break };
        count += batch.iter().filter(|e| e.position <= head).count() as u64;
        after = last.position;
    }
    Ok(count)
}
