//! `stay load queries`: query latency under concurrent load.
//!
//! It lists `--rooms` rooms through the API (as a host), waits until roomview shows them, then
//! sends reads — alternately `GET /v1/rooms?limit=20` and `GET /v1/rooms/{id}` of a room picked by
//! the request number — and reports each route on its own.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use futures::stream::{self, StreamExt, TryStreamExt};
use stay_http::Role;

use super::engine::{Outcome, Run, Sample};
use super::report::Report;
use super::target::{Target, TargetArgs};
use super::{finish, measure, Measured, OutputArgs, PaceArgs};

/// Arguments of `stay load queries`.
#[derive(Debug, Args)]
pub struct QueriesArgs {
    #[command(flatten)]
    target: TargetArgs,

    #[command(flatten)]
    pace: PaceArgs,

    /// Rooms to list before measuring.
    #[arg(long, default_value_t = 200)]
    rooms: usize,

    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `stay load queries`.
pub async fn run(args: QueriesArgs) -> anyhow::Result<()> {
    let target = Target::open(&args.target, args.pace.clients).await?;
    let room_ids = Arc::new(list_rooms(&target, args.rooms).await?);
    // Which route each request took, by request number (the engine records outcomes only).
    let routes = Arc::new(Mutex::new(Vec::new()));
    let (client, base) = (target.client.clone(), target.base.clone());
    let request = {
        let routes = routes.clone();
        move |n: u64| {
            let (client, base, room_ids, routes) = (client.clone(), base.clone(), room_ids.clone(), routes.clone());
            async move {
                let listing = n.is_multiple_of(2);
                let path = if listing {
                    "/v1/rooms?limit=20".to_owned()
                } else {
                    format!("/v1/rooms/{}", room_ids[(n as usize / 2) % room_ids.len()])
                };
                let started = Instant::now();
                let outcome = match client.get(format!("{base}{path}")).send().await {
                    Ok(answer) => {
                        let status = answer.status().as_u16();
                        match answer.bytes().await {
                            Ok(_) => Outcome::Status(status),
                            Err(_) => Outcome::NoAnswer,
                        }
                    }
                    Err(_) => Outcome::NoAnswer,
                };
                routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((listing, started.elapsed()));
                outcome
            }
        }
    };
    let idle = Duration::from_secs(args.output.idle_seconds);
    let Measured { run, memory, cpu_seconds } = measure(&target, &args.pace, idle, request).await;
    target.close().await?;
    let mut report = Report::of("GET /v1/rooms?limit=20 and GET /v1/rooms/{room_id}", args.pace.describe(), &run);
    report.memory = memory;
    report = report.with_server_cpu(cpu_seconds);
    // Each route's own figures (service time, without open-loop queueing).
    let per_route = std::mem::take(&mut *routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    for (listing, name) in [(true, "GET /v1/rooms?limit=20"), (false, "GET /v1/rooms/{room_id}")] {
        let samples: Vec<Sample> = per_route
            .iter()
            .filter(|(l, _)| *l == listing)
            .map(|(_, latency)| Sample { due: Duration::ZERO, latency: *latency, outcome: Outcome::Status(200) })
            .collect();
        let route = Report::of(name, String::new(), &Run { samples, elapsed: run.elapsed });
        report.extra.insert(name.to_owned(), serde_json::to_value(&route.latency)?);
    }
    finish(&report, &run, &args.output)
}

/// Lists `count` rooms and waits until roomview shows the last of them.
async fn list_rooms(target: &Target, count: usize) -> anyhow::Result<Vec<String>> {
    let host = target.token("load-host", Role::Host)?;
    let answers: Vec<(String, String)> = stream::iter(0..count.max(1))
        .map(|i| {
            let (client, base, host) = (target.client.clone(), target.base.clone(), host.clone());
            async move {
                let body = serde_json::json!({"name": format!("Load room {i}"), "address": format!("{i} Bench Street"),
                    "nightly_price": {"amount_minor": 9_900, "currency": "EUR"}, "capacity": 4});
                let answer: serde_json::Value =
                    client.post(format!("{base}/v1/rooms")).bearer_auth(&host).json(&body).send().await?.json().await?;
                match (answer["room_id"].as_str(), answer["position"].as_str()) {
                    (Some(id), Some(position)) => Ok((id.to_owned(), position.to_owned())),
                    _ => bail!("listing a room failed: {answer}"),
                }
            }
        })
        .buffered(16)
        .try_collect()
        .await?;
    // Read-your-writes: positions only grow, so the highest one covers every room.
    let newest = answers.iter().map(|(_, p)| p.parse::<stay_store::Position>()).collect::<Result<Vec<_>, _>>()?;
    let newest = newest.into_iter().max().context("no room was listed")?;
    let fresh = target
        .client
        .get(format!("{}/v1/rooms?limit=1&min_position={newest}&wait_ms=30000", target.base))
        .send()
        .await?;
    if !fresh.status().is_success() {
        bail!("roomview did not catch up: {}", fresh.status());
    }
    Ok(answers.into_iter().map(|(id, _)| id).collect())
}
