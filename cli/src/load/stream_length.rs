//! `stay load stream-length` answers one design question (DESIGN.md §4.1): does a command's cost
//! grow with the length of its aggregate's stream? It builds a Room with a long history and a
//! fresh Room, runs the same commands on both through the executor, and compares per-command
//! times — warm (the executor's cache holds the aggregate) and cold (a new executor per command,
//! so each load starts from the newest snapshot).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use stay_domain::{
    Address, Capacity, Currency, Description, DomainServices, PositiveMoney, Room, RoomCommand, RoomEvent, RoomId,
    RoomName, UserId,
};
use stay_store::{Append, CommandContext, EventStore, Executor, ExecutorConfig, NewEvent, StoreOptions, SystemClock};

use crate::output;
use crate::settings::StoreArgs;

/// Arguments of `stay load stream-length`.
#[derive(Debug, Args)]
pub struct StreamLengthArgs {
    #[command(flatten)]
    store: StoreArgs,

    /// Events in the long Room's stream before measuring.
    #[arg(long, default_value_t = 10_000)]
    events: u64,

    /// Commands measured on each Room, per mode.
    #[arg(long, default_value_t = 1_000)]
    commands: u32,

    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

struct Timings {
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

impl Timings {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
        Self { mean, p50: at(0.50), p99: at(0.99) }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mean_us": self.mean.as_micros(),
            "p50_us": self.p50.as_micros(),
            "p99_us": self.p99.as_micros(),
        })
    }
}

/// Runs `stay load stream-length`.
#[allow(clippy::print_stdout)] // the command's own output
pub async fn run(args: StreamLengthArgs) -> anyhow::Result<()> {
    if args.commands == 0 || args.events < 2 {
        bail!("--commands must be at least 1 and --events at least 2");
    }
    let url = args.store.store_url()?;
    let store = EventStore::open(
        &url,
        StoreOptions { upcasters: Arc::new(stay_domain::upcasters()), ..crate::aggregate_types::store_options() },
    )
    .await
    .with_context(|| format!("cannot open {url}"))?;
    store.migrate().await?;
    let services = Arc::new(DomainServices::new(Arc::new(SystemClock)));
    let host = UserId::new("bench-host")?;

    let long_room = RoomId::from_uuid(uuid::Uuid::now_v7());
    let fresh_room = RoomId::from_uuid(uuid::Uuid::now_v7());
    let setup = executor(&store, &services);
    for room in [long_room, fresh_room] {
        setup.execute(&room.to_string(), register(room, &host)?, &CommandContext::new("bench")).await?;
    }
    let started = Instant::now();
    grow(&store, long_room, args.events).await?;
    let grown_in = started.elapsed();

    // Warm: one executor, its cache holds each room after the first command.
    let warm = executor(&store, &services);
    let warm_long = measure(&warm, long_room, &host, args.commands).await?;
    let warm_fresh = measure(&warm, fresh_room, &host, args.commands).await?;

    // Cold: a new executor per command; the long room loads from its newest snapshot (taken by the
    // warm run as the stream passed each multiple of the snapshot interval).
    tokio::time::sleep(Duration::from_millis(200)).await; // let the last snapshot land
    let cold_long = measure_cold(&store, &services, long_room, &host, args.commands).await?;
    let cold_fresh = measure_cold(&store, &services, fresh_room, &host, args.commands).await?;

    let ratio = |long: &Timings, fresh: &Timings| long.mean.as_secs_f64() / fresh.mean.as_secs_f64().max(1e-9);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "store": store.kind(),
                "long_stream_events": args.events,
                "commands": args.commands,
                "warm": { "long": warm_long.json(), "fresh": warm_fresh.json(), "ratio": ratio(&warm_long, &warm_fresh) },
                "cold": { "long": cold_long.json(), "fresh": cold_fresh.json(), "ratio": ratio(&cold_long, &cold_fresh) },
            })
        );
    } else {
        println!("store: {} ({url})", store.kind());
        println!("long room: {} events appended in {:.1?}; {} commands per case", args.events, grown_in, args.commands);
        let mut table = output::table(&["case", "mean", "p50", "p99"], &["mean", "p50", "p99"]);
        for (name, t) in [
            ("warm, long stream", &warm_long),
            ("warm, fresh stream", &warm_fresh),
            ("cold, long stream", &cold_long),
            ("cold, fresh stream", &cold_fresh),
        ] {
            table.add_row(vec![
                name.to_owned(),
                format!("{:.1?}", t.mean),
                format!("{:.1?}", t.p50),
                format!("{:.1?}", t.p99),
            ]);
        }
        println!("{table}");
        println!(
            "long / fresh (mean): warm {:.2}x, cold {:.2}x",
            ratio(&warm_long, &warm_fresh),
            ratio(&cold_long, &cold_fresh)
        );
    }
    Ok(())
}

fn executor(store: &EventStore, services: &Arc<DomainServices>) -> Executor<Room> {
    Executor::with_config(store.clone(), services.clone(), Arc::new(SystemClock), ExecutorConfig::default())
}

fn register(room: RoomId, host: &UserId) -> anyhow::Result<RoomCommand> {
    Ok(RoomCommand::RegisterRoom {
        room_id: room,
        host_id: host.clone(),
        name: RoomName::new("Benchmark room")?,
        description: Description::default(),
        address: Address::new("1 Load Street")?,
        nightly_price: price(10_000)?,
        capacity: Capacity::new(2)?,
    })
}

fn price(amount_minor: i64) -> anyhow::Result<PositiveMoney> {
    Ok(PositiveMoney::from_minor(amount_minor, Currency::USD)?)
}

/// Appends price changes straight to the room's stream (setup, not measured) until it holds
/// `events` events.
async fn grow(store: &EventStore, room: RoomId, events: u64) -> anyhow::Result<()> {
    let id = room.to_string();
    let mut version = 1;
    while version < events {
        let batch = (events - version).min(500);
        let new_events = (0..batch)
            .map(|i| {
                let event = RoomEvent::NightlyPriceChanged {
                    room_id: room,
                    price: price(10_001 + ((version + i) % 1000) as i64)?,
                };
                Ok(NewEvent::from_domain(&event)?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let append = Append {
            aggregate_type: "Room".to_owned(),
            aggregate_id: id.clone(),
            expected_version: version,
            events: new_events,
            metadata: CommandContext::new("bench").metadata(chrono::Utc::now()),
        };
        store.append(append).await?;
        version += batch;
    }
    Ok(())
}

fn change_price(host: &UserId, i: u32) -> anyhow::Result<RoomCommand> {
    // Alternate so every command changes something (an unchanged price records nothing).
    Ok(RoomCommand::ChangeNightlyPrice { actor: host.clone(), price: price(20_000 + i64::from(i % 2))? })
}

async fn measure(executor: &Executor<Room>, room: RoomId, host: &UserId, commands: u32) -> anyhow::Result<Timings> {
    let id = room.to_string();
    let mut samples = Vec::with_capacity(commands as usize);
    for i in 0..commands {
        let started = Instant::now();
        let committed = executor.execute(&id, change_price(host, i)?, &CommandContext::new("bench")).await?;
        samples.push(started.elapsed());
        if committed.events.is_empty() {
            bail!("a measured command changed nothing");
        }
    }
    Ok(Timings::of(samples))
}

async fn measure_cold(
    store: &EventStore,
    services: &Arc<DomainServices>,
    room: RoomId,
    host: &UserId,
    commands: u32,
) -> anyhow::Result<Timings> {
    let id = room.to_string();
    let mut samples = Vec::with_capacity(commands as usize);
    for i in 0..commands {
        let executor = executor(store, services);
        let started = Instant::now();
        executor.execute(&id, change_price(host, i)?, &CommandContext::new("bench")).await?;
        samples.push(started.elapsed());
    }
    Ok(Timings::of(samples))
}
