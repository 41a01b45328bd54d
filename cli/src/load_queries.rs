//! `stay load queries`: query latency under concurrent load against a running `stay serve`.
//!
//! It lists `--rooms` rooms through the API (as a host, with a token signed by the server's
//! secret), waits until roomview shows them, then keeps `--concurrency` clients busy for
//! `--seconds`, each alternating `GET /v1/rooms?limit=20` and `GET /v1/rooms/{id}` of a random
//! room, and reports throughput and p50/p99/max latency per route.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use stay_domain::UserId;
use stay_http::{JwtKeys, Role};

use crate::output;
use crate::settings::SecretArgs;

/// Arguments of `stay load queries`.
#[derive(Debug, Args)]
pub struct QueriesArgs {
    /// The server to measure.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,

    /// The server's data directory (for its token secret).
    #[arg(long, env = "STAY_DATA_DIR", default_value = "./stay-data")]
    data_dir: std::path::PathBuf,

    #[command(flatten)]
    secret: SecretArgs,

    /// Rooms to list before measuring.
    #[arg(long, default_value_t = 200)]
    rooms: usize,

    /// Clients at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,

    /// How long to measure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,

    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Runs the measurement.
#[allow(clippy::print_stdout)] // the command's own output
pub async fn run(args: QueriesArgs) -> anyhow::Result<()> {
    let keys = JwtKeys::new(&args.secret.secret(&args.data_dir)?);
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let host = keys.sign(
        &UserId::new("load-host").map_err(|e| anyhow::anyhow!("{e}"))?,
        Role::Host,
        Duration::from_secs(3600),
        now,
    )?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let mut room_ids = Vec::with_capacity(args.rooms);
    let mut last_position = String::new();
    for i in 0..args.rooms {
        let body = serde_json::json!({"name": format!("Load room {i}"), "address": format!("{i} Bench Street"),
            "nightly_price": {"amount_minor": 9_900, "currency": "EUR"}, "capacity": 4});
        let answer: serde_json::Value = client
            .post(format!("{}/v1/rooms", args.url))
            .bearer_auth(&host)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("is stay serve running at {}?", args.url))?
            .json()
            .await?;
        let Some(id) = answer["room_id"].as_str() else { bail!("registering a room failed: {answer}") };
        room_ids.push(id.to_owned());
        last_position = answer["position"].as_str().unwrap_or_default().to_owned();
    }
    // Read-your-writes: wait until roomview has every room.
    let fresh =
        client.get(format!("{}/v1/rooms?limit=1&min_position={last_position}&wait_ms=30000", args.url)).send().await?;
    if !fresh.status().is_success() {
        bail!("roomview did not catch up: {}", fresh.status());
    }

    let room_ids = Arc::new(room_ids);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut clients = Vec::new();
    for c in 0..args.concurrency {
        let (client, url, room_ids) = (client.clone(), args.url.clone(), room_ids.clone());
        clients.push(tokio::spawn(async move {
            let (mut list, mut one, mut errors) = (Vec::new(), Vec::new(), 0u64);
            let mut i = c;
            while Instant::now() < deadline {
                let started = Instant::now();
                let listing = i % 2 == 0;
                let path = if listing {
                    "/v1/rooms?limit=20".to_owned()
                } else {
                    format!("/v1/rooms/{}", room_ids[i % room_ids.len()])
                };
                match client.get(format!("{url}{path}")).send().await {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        if listing {
                            list.push(started.elapsed())
                        } else {
                            one.push(started.elapsed())
                        }
                    }
                    _ => errors += 1,
                }
                i += 7;
            }
            (list, one, errors)
        }));
    }
    let (mut list, mut one, mut errors) = (Vec::new(), Vec::new(), 0);
    for client in clients {
        let (l, o, e) = client.await?;
        list.extend(l);
        one.extend(o);
        errors += e;
    }
    list.sort();
    one.sort();
    let figures = |name: &str, sorted: &[Duration]| {
        serde_json::json!({
            "route": name,
            "requests": sorted.len(),
            "per_second": (sorted.len() as f64 / args.seconds as f64).round(),
            "p50_ms": (percentile(sorted, 0.50) * 1000.0).round() / 1000.0,
            "p99_ms": (percentile(sorted, 0.99) * 1000.0).round() / 1000.0,
            "max_ms": (percentile(sorted, 1.0) * 1000.0).round() / 1000.0,
        })
    };
    let report = serde_json::json!({
        "rooms": args.rooms, "concurrency": args.concurrency, "seconds": args.seconds, "errors": errors,
        "routes": [figures("GET /v1/rooms?limit=20", &list), figures("GET /v1/rooms/{room_id}", &one)],
    });
    if args.json {
        println!("{report}");
    } else {
        let mut table = output::table(
            &["route", "requests", "per s", "p50 ms", "p99 ms", "max ms"],
            &["requests", "per s", "p50 ms", "p99 ms", "max ms"],
        );
        for route in report["routes"].as_array().into_iter().flatten() {
            table.add_row(vec![
                route["route"].as_str().unwrap_or("").to_owned(),
                route["requests"].to_string(),
                route["per_second"].to_string(),
                route["p50_ms"].to_string(),
                route["p99_ms"].to_string(),
                route["max_ms"].to_string(),
            ]);
        }
        println!("{table}");
        println!("errors: {errors}");
    }
    Ok(())
}
