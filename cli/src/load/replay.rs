//! `stay load replay`: every aggregate rebuilt from the log, in memory.
//!
//! It reads the whole feed in order into memory, then decodes each event (upcast on read, as every
//! read path is) and applies it to its aggregate — Room, Reservation, Payment, Review or
//! ReservationSaga — held in memory. It reports the replay's rate (decode and apply, the in-memory
//! part) apart from the store's read rate, and both together. This is what a process does to answer "state as of"
//! questions or to warm its caches, without any table writes. `--generate N` first appends N
//! synthetic room events, for a store that holds too few.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use cqrs_es::Aggregate;
use stay_domain::{
    Address, Capacity, Currency, Description, Payment, PositiveMoney, Reservation, Review, Room, RoomEvent, RoomId,
    RoomName, UserId,
};
use stay_saga::instance::SagaInstance;
use stay_store::{Append, CommandContext, EventStore, NewEvent, Position, RecordedEvent, StoreOptions};

use crate::settings::StoreArgs;

/// Events read from the feed at a time.
const BATCH: usize = 10_000;

/// Arguments of `stay load replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    store: StoreArgs,

    /// First append this many synthetic room events (rooms of 100 events each).
    #[arg(long, default_value_t = 0)]
    generate: u64,

    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Aggregates of one type, by id.
struct Folded<A: Aggregate> {
    states: HashMap<String, A>,
}

impl<A: Aggregate> Folded<A> {
    fn new() -> Self {
        Self { states: HashMap::new() }
    }

    fn apply(&mut self, event: &RecordedEvent) -> anyhow::Result<()> {
        let decoded = event.decode::<A>()?;
        match self.states.get_mut(&event.aggregate_id) {
            Some(state) => state.apply(decoded),
            None => {
                let mut state = A::default();
                state.apply(decoded);
                self.states.insert(event.aggregate_id.clone(), state);
            }
        }
        Ok(())
    }
}

/// Runs `stay load replay`.
#[allow(clippy::print_stdout)] // the command's own output
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let url = args.store.store_url()?;
    let options =
        StoreOptions { upcasters: Arc::new(stay_domain::upcasters()), ..crate::aggregate_types::store_options() };
    let store = EventStore::open(&url, options).await.with_context(|| format!("cannot open {url}"))?;
    store.migrate().await?;
    if args.generate > 0 {
        generate(&store, args.generate).await?;
    }
    let (mut rooms, mut reservations, mut payments, mut reviews, mut sagas) = (
        Folded::<Room>::new(),
        Folded::<Reservation>::new(),
        Folded::<Payment>::new(),
        Folded::<Review>::new(),
        Folded::<SagaInstance>::new(),
    );
    // Read the whole log first, then fold it: the two are timed apart, because reading is the
    // store's work (and the disk's) while folding is what "in-memory replay" measures.
    let reading = Instant::now();
    let mut log = Vec::new();
    let mut after = Position::START;
    loop {
        let batch = store.read_feed(after, BATCH).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        log.extend(batch);
    }
    let read_seconds = reading.elapsed().as_secs_f64().max(1e-9);
    let folding = Instant::now();
    for event in &log {
        match event.aggregate_type.as_str() {
            t if t == Room::TYPE => rooms.apply(event)?,
            t if t == Reservation::TYPE => reservations.apply(event)?,
            t if t == Payment::TYPE => payments.apply(event)?,
            t if t == Review::TYPE => reviews.apply(event)?,
            t if t == SagaInstance::TYPE => sagas.apply(event)?,
            other => bail!("an event of an aggregate type this replay does not know: {other}"),
        }
    }
    let fold_seconds = folding.elapsed().as_secs_f64().max(1e-9);
    let events = log.len() as u64;
    let aggregates = rooms.states.len()
        + reservations.states.len()
        + payments.states.len()
        + reviews.states.len()
        + sagas.states.len();
    let per_second = |seconds: f64| (events as f64 / seconds).round();
    let (read_rate, fold_rate, total_rate) =
        (per_second(read_seconds), per_second(fold_seconds), per_second(read_seconds + fold_seconds));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "store": store.kind(),
                "events": events,
                "aggregates": aggregates,
                "read_seconds": read_seconds,
                "replay_seconds": fold_seconds,
                "read_events_per_second": read_rate,
                "events_per_second": fold_rate,
                "end_to_end_events_per_second": total_rate,
            })
        );
    } else {
        println!(
            "{}: {events} events into {aggregates} aggregates: replayed in memory in {fold_seconds:.2} s \
             ({fold_rate} events/s); read from the store in {read_seconds:.2} s ({read_rate} events/s); \
             end to end {total_rate} events/s",
            store.kind()
        );
    }
    Ok(())
}

/// Appends `events` synthetic events: rooms of 100 (registered, then 99 price changes).
async fn generate(store: &EventStore, events: u64) -> anyhow::Result<()> {
    let host = UserId::new("replay-host").map_err(|e| anyhow::anyhow!("{e}"))?;
    let price = |minor: i64| PositiveMoney::from_minor(minor, Currency::EUR);
    let mut left = events;
    while left > 0 {
        let room_id = RoomId::from_uuid(uuid::Uuid::now_v7());
        let count = left.min(100);
        let mut batch = vec![NewEvent::from_domain(&RoomEvent::RoomRegistered {
            room_id,
            host_id: host.clone(),
            name: RoomName::new("Replay room")?,
            description: Description::default(),
            address: Address::new("1 Replay Road")?,
            nightly_price: price(10_000)?,
            capacity: Capacity::new(2)?,
        })?];
        for i in 1..count {
            let event = RoomEvent::NightlyPriceChanged { room_id, price: price(10_000 + i as i64)? };
            batch.push(NewEvent::from_domain(&event)?);
        }
        let append = Append {
            aggregate_type: "Room".to_owned(),
            aggregate_id: room_id.to_string(),
            expected_version: 0,
            events: batch,
            metadata: CommandContext::new("replay-generator").metadata(chrono::Utc::now()),
        };
        store.append(append).await?;
        left -= count;
    }
    Ok(())
}
