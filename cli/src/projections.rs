//! `stay projections status|rebuild NAME`: read-model lag and rebuilds without downtime.
//!
//! A rebuild builds the next version of the model beside the live one and switches when it has
//! caught up. The projector of a running `stay serve` does the work when one holds the model's
//! lease; otherwise this command runs the model's worker itself until the switch.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use stay_projections::runner::{checkpoint_name, request_rebuild, statuses, versions, ProjectionStatus};
use stay_projections::{models, Projector, ReadModel, RunnerConfig};
use stay_store::{EventStore, Position, SqlDatabase, StoreOptions};
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
}

/// Runs `stay projections`.
pub async fn run(args: ProjectionsArgs) -> anyhow::Result<()> {
    let common = match &args.command {
        ProjectionsCommand::Status { common } | ProjectionsCommand::Rebuild { common, .. } => common,
    };
    let url = common.store.store_url()?;
    let store = EventStore::open(&url, StoreOptions::default())
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
    }
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
