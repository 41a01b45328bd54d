//! `stay load commands`: single-event commands over HTTP.
//!
//! Each request registers a new room (`POST /v1/rooms`: one command, one `RoomRegistered` event,
//! one commit), as a host. Every `--lag-every`-th answered command is followed by a read of that
//! room at the command's position (`min_position`), timed from the answer: the projection lag, how
//! long until the write is visible in roomview.

use std::time::Duration;

use clap::Args;
use stay_http::Role;

use super::ceiling::{self, CeilingSettings};
use super::engine::Outcome;
use super::report::{Latency, Report};
use super::target::{Target, TargetArgs};
use super::{finish, measure, Lags, Measured, OutputArgs, PaceArgs};

/// Arguments of `stay load commands`.
#[derive(Debug, Args)]
pub struct CommandsArgs {
    #[command(flatten)]
    target: TargetArgs,

    #[command(flatten)]
    pace: PaceArgs,

    /// Follow one answered command in this many with a read at its position, to time the
    /// projection lag (0: never). At most 16 such reads wait at once; others are skipped.
    #[arg(long, default_value_t = 20)]
    lag_every: u64,

    /// Also measure the database's own rate in the same run (`stay load ceiling`, same clients).
    #[arg(long)]
    ceiling: bool,

    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `stay load commands`.
pub async fn run(args: CommandsArgs) -> anyhow::Result<()> {
    let target = Target::open(&args.target, args.pace.clients).await?;
    let host = target.token("load-host", Role::Host)?;
    let lags = Lags::default();
    let (client, base, lag_every) = (target.client.clone(), target.base.clone(), args.lag_every);
    let request = {
        let lags = lags.clone();
        move |n: u64| {
            let (client, base, host, lags) = (client.clone(), base.clone(), host.clone(), lags.clone());
            async move {
                let body = serde_json::json!({
                    "name": format!("Load room {n}"),
                    "address": format!("{n} Bench Street"),
                    "nightly_price": {"amount_minor": 9_900, "currency": "EUR"},
                    "capacity": 2,
                });
                let answer = match client.post(format!("{base}/v1/rooms")).bearer_auth(&host).json(&body).send().await {
                    Ok(answer) => answer,
                    Err(_) => return Outcome::NoAnswer,
                };
                let status = answer.status().as_u16();
                let Ok(body) = answer.json::<serde_json::Value>().await else { return Outcome::Unexpected(status) };
                if status != 201 {
                    return Outcome::Status(status);
                }
                if lag_every > 0 && n.is_multiple_of(lag_every) {
                    let (Some(room), Some(position)) = (body["room_id"].as_str(), body["position"].as_str()) else {
                        return Outcome::Unexpected(status);
                    };
                    lags.follow(client, format!("{base}/v1/rooms/{room}?min_position={position}&wait_ms=30000"));
                }
                Outcome::Status(status)
            }
        }
    };
    let idle = Duration::from_secs(args.output.idle_seconds);
    let Measured { run, memory, cpu_seconds } = measure(&target, &args.pace, idle, request).await;
    let mut report = Report::of("POST /v1/rooms (one event per command)", args.pace.describe(), &run);
    report.memory = memory;
    report = report.with_server_cpu(cpu_seconds);
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
