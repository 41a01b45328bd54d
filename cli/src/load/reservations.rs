//! `stay load reservations`: full reservations, request to confirmation.
//!
//! Before measuring, `--rooms` rooms are listed (as a host). Each request then asks for one night
//! nobody else asks for — request n takes room n mod R, the n/R-th night from 30 days ahead — with
//! `tok_visa` and `Prefer: wait`, so its answer comes once the saga has held the night, charged
//! the card and confirmed the reservation. Only a `200` whose reservation is `confirmed` counts;
//! a `202` (still pending at the end of the wait) or any other status does not. Every
//! `--lag-every`-th confirmation is followed by a read of its room in roomview at the
//! confirmation's position: the projection lag of the last step.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{Days, Utc};
use clap::Args;
use futures::stream::{self, StreamExt, TryStreamExt};
use stay_http::Role;

use super::ceiling::{self, CeilingSettings};
use super::engine::Outcome;
use super::report::{Latency, Report};
use super::target::{Target, TargetArgs};
use super::{finish, measure, Lags, Measured, OutputArgs, PaceArgs};

/// Nights per room that requests may use: the booking horizon is two years, starting 30 days out.
const NIGHTS_PER_ROOM: u64 = 690;

/// Arguments of `stay load reservations`.
#[derive(Debug, Args)]
pub struct ReservationsArgs {
    #[command(flatten)]
    target: TargetArgs,

    #[command(flatten)]
    pace: PaceArgs,

    /// Rooms to spread the reservations over (each request takes a night of its own).
    #[arg(long, default_value_t = 256)]
    rooms: u64,

    /// How long each request waits for its reservation to be final (Prefer: wait), in seconds.
    #[arg(long, default_value_t = 30)]
    wait: u64,

    /// Follow one confirmation in this many with a read of its room at its position (0: never).
    /// At most 16 such reads wait at once; others are skipped.
    #[arg(long, default_value_t = 20)]
    lag_every: u64,

    /// Also measure the database's own rate in the same run (`stay load ceiling`, same clients).
    #[arg(long)]
    ceiling: bool,

    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `stay load reservations`.
pub async fn run(args: ReservationsArgs) -> anyhow::Result<()> {
    if args.rooms == 0 {
        bail!("--rooms must be at least 1");
    }
    let target = Target::open(&args.target, args.pace.clients).await?;
    let rooms = Arc::new(list_rooms(&target, args.rooms, args.pace.clients).await?);
    let guest = target.token("load-guest", Role::Guest)?;
    let lags = Lags::default();
    let first_night = Utc::now().date_naive() + Days::new(30);
    let (client, base, lag_every, wait) = (target.client.clone(), target.base.clone(), args.lag_every, args.wait);
    let request = {
        let lags = lags.clone();
        move |n: u64| {
            let (client, base, guest, rooms, lags) =
                (client.clone(), base.clone(), guest.clone(), rooms.clone(), lags.clone());
            async move {
                let count = rooms.len() as u64;
                let night = n / count;
                if night >= NIGHTS_PER_ROOM {
                    // Every night of every room is asked for: more rooms are needed, not more load.
                    return Outcome::Unexpected(0);
                }
                let room = &rooms[(n % count) as usize];
                let check_in = first_night + Days::new(night);
                let body = serde_json::json!({
                    "room_id": room,
                    "check_in": check_in.to_string(),
                    "check_out": (check_in + Days::new(1)).to_string(),
                    "guests": 1,
                    "payment": {"card_token": "tok_visa"},
                });
                let sent = client
                    .post(format!("{base}/v1/reservations"))
                    .bearer_auth(&guest)
                    .header("Prefer", format!("wait={wait}"))
                    .json(&body)
                    .send()
                    .await;
                let Ok(answer) = sent else { return Outcome::NoAnswer };
                let status = answer.status().as_u16();
                let Ok(reservation) = answer.json::<serde_json::Value>().await else {
                    return Outcome::Unexpected(status);
                };
                match (status, reservation["status"].as_str()) {
                    (200, Some("confirmed")) => {}
                    (200 | 202, _) => return Outcome::Unexpected(status),
                    _ => return Outcome::Status(status),
                }
                if lag_every > 0 && n.is_multiple_of(lag_every) {
                    let Some(position) = reservation["position"].as_str() else { return Outcome::Unexpected(status) };
                    lags.follow(client, format!("{base}/v1/rooms/{room}?min_position={position}&wait_ms=30000"));
                }
                Outcome::Status(200)
            }
        }
    };
    let idle = Duration::from_secs(args.output.idle_seconds);
    let Measured { run, memory, cpu_seconds } = measure(&target, &args.pace, idle, request).await;
    let mut report = Report::of("full reservations (POST /v1/reservations, Prefer: wait)", args.pace.describe(), &run);
    report.memory = memory;
    report = report.with_server_cpu(cpu_seconds);
    report.extra.insert("rooms".into(), args.rooms.into());
    if args.lag_every > 0 {
        report.projection_lag = Some(Latency::of(lags.take()));
    }
    if args.ceiling {
        let settings = CeilingSettings::same_run(&target.store, &args.pace)?;
        let (per_second, latency) = ceiling::measure(&settings).await?;
        report = report.with_ceiling(per_second, latency);
    }
    target.close().await?;
    finish(&report, &run, &args.output)
}

/// Lists `count` rooms as a host, `clients` at a time; answers their ids.
async fn list_rooms(target: &Target, count: u64, clients: usize) -> anyhow::Result<Vec<String>> {
    let host = target.token("load-host", Role::Host)?;
    stream::iter(0..count)
        .map(|i| {
            let (client, base, host) = (target.client.clone(), target.base.clone(), host.clone());
            async move {
                let body = serde_json::json!({
                    "name": format!("Load room {i}"),
                    "address": format!("{i} Bench Street"),
                    "nightly_price": {"amount_minor": 9_900, "currency": "EUR"},
                    "capacity": 4,
                });
                let answer: serde_json::Value =
                    client.post(format!("{base}/v1/rooms")).bearer_auth(&host).json(&body).send().await?.json().await?;
                answer["room_id"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("listing a room failed: {answer}"))
            }
        })
        .buffer_unordered(clients.clamp(1, 64))
        .try_collect()
        .await
}
