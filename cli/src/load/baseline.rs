//! `stay load baseline`: the same load as `stay load commands`, on a minimal cqrs-es 0.5 +
//! postgres-es app instead of Stay, so that Stay's command rate can be quoted as a multiple of what
//! the plain framework does on the same machine in the same run.
//!
//! The app ([`app`]) runs inside this process, on a runtime of its own, over a fresh PostgreSQL
//! database made beside the one `--store` names (dropped afterwards unless `--keep-data`). Each
//! request registers a new [`demo_room::DemoRoom`]: one command, one event, one transaction.

mod app;
mod demo_room;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use sqlx::Connection;

use self::app::App;
use super::ceiling::{self, CeilingSettings};
use super::engine::{drive, Outcome, Run};
use super::report::Report;
use super::target::{create_database, drop_database, StoreLocation};
use super::{finish, OutputArgs, PaceArgs};

/// Arguments of `stay load baseline`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// A PostgreSQL URL: the baseline app gets a fresh database beside the one it names, dropped
    /// afterwards unless --keep-data.
    #[arg(long, value_name = "POSTGRES_URL")]
    store: String,

    /// Keep the baseline app's database and say where it is.
    #[arg(long)]
    keep_data: bool,

    /// Connections in the baseline app's pool (10 is what postgres-es's `default_postgress_pool`
    /// opens).
    #[arg(long, default_value_t = 10)]
    connections: u32,

    #[command(flatten)]
    pace: PaceArgs,

    /// Also measure the database's own rate in the same run (`stay load ceiling`, same clients).
    #[arg(long)]
    ceiling: bool,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,

    /// Write SVG plots (latency over time, latency histogram) into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// The baseline app's database: made fresh beside the one `--store` names.
#[derive(Debug)]
struct FreshDatabase {
    /// The URL it was made from, and is dropped from.
    admin_url: String,
    /// Its name.
    name: String,
    /// Its own URL.
    url: String,
}

impl FreshDatabase {
    /// Makes a fresh database beside the one `store` (a PostgreSQL URL) names.
    async fn create(store: &str) -> anyhow::Result<Self> {
        if !store.starts_with("postgres") {
            bail!("stay load baseline needs --store postgres://…: its app is a postgres-es app");
        }
        let ((admin_url, name), url) = create_database(store).await?;
        Ok(Self { admin_url, name, url })
    }

    /// Drops it, and its connections.
    async fn remove(self) -> anyhow::Result<()> {
        drop_database(&self.admin_url, &self.name).await.with_context(|| format!("dropping the database {}", self.name))
    }
}

/// Runs `stay load baseline`.
pub async fn run(args: BaselineArgs) -> anyhow::Result<()> {
    let database = FreshDatabase::create(&args.store).await?;
    let (report, run) = measure(&args, database).await?;
    let output = OutputArgs { json: args.json, plot: args.plot.clone(), idle_seconds: 0 };
    finish(&report, &run, &output)
}

/// Loads the app on `database`, then drops it (unless kept) whether the load went well or not.
async fn measure(args: &BaselineArgs, database: FreshDatabase) -> anyhow::Result<(Report, Run)> {
    let loaded = load(args, &database.url).await;
    if args.keep_data {
        let (mut report, run) = loaded?;
        report.extra.insert("kept_database".to_owned(), database.url.into());
        return Ok((report, run));
    }
    let dropped = database.remove().await;
    let loaded = loaded?;
    dropped?;
    Ok(loaded)
}

/// Starts the app on the database `url`, loads it, stops it, counts the events it stored and,
/// if asked, measures the ceiling in the same database.
async fn load(args: &BaselineArgs, url: &str) -> anyhow::Result<(Report, Run)> {
    let app = App::start(url, args.connections).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.pace.clients.max(1))
        .timeout(Duration::from_secs(60))
        .build()?;
    let rooms = format!("{}/rooms", app.base);
    let request = move |n: u64| {
        let (client, rooms) = (client.clone(), rooms.clone());
        async move {
            // The body `stay load commands` sends to Stay.
            let body = serde_json::json!({
                "name": format!("Load room {n}"),
                "address": format!("{n} Bench Street"),
                "nightly_price": {"amount_minor": 9_900, "currency": "EUR"},
                "capacity": 2,
            });
            let answer = match client.post(&rooms).json(&body).send().await {
                Ok(answer) => answer,
                Err(_) => return Outcome::NoAnswer,
            };
            let status = answer.status().as_u16();
            if status != 201 {
                return Outcome::Status(status);
            }
            match answer.json::<serde_json::Value>().await {
                Ok(body) if body["room_id"].is_string() => Outcome::Status(status),
                _ => Outcome::Unexpected(status),
            }
        }
    };
    let pace = &args.pace;
    let run = drive(pace.pace(), Duration::from_secs(pace.warmup), Duration::from_secs(pace.seconds), request).await;
    app.stop().await?;
    let scenario = format!(
        "baseline POST /rooms (cqrs-es 0.5 + postgres-es, one event per command, {} connections)",
        args.connections
    );
    let mut report = Report::of(&scenario, pace.describe(), &run);
    report.extra.insert("events_stored".to_owned(), count_events(url).await?.into());
    if args.ceiling {
        let settings = CeilingSettings::same_run(&StoreLocation::Postgres(url.to_owned()), pace)?;
        let (per_second, latency) = ceiling::measure(&settings).await?;
        report = report.with_ceiling(per_second, latency);
    }
    Ok((report, run))
}

/// The events in the app's table: one per command it answered 201, warm-up included.
async fn count_events(url: &str) -> anyhow::Result<i64> {
    let mut db = sqlx::PgConnection::connect(url).await.with_context(|| format!("cannot connect to {url}"))?;
    let count =
        sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut db).await.context("counting events")?;
    let _ = db.close().await;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};
    use stay_tests::databases::postgres_admin_url;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BaselineArgs,
    }

    fn args(flags: &[&str]) -> BaselineArgs {
        Cli::parse_from(std::iter::once("baseline").chain(flags.iter().copied())).args
    }

    async fn database_exists(name: &str) -> bool {
        let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await.expect("connect");
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .expect("query pg_database")
    }

    async fn stored_events(url: &str) -> i64 {
        let mut db = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE aggregate_type = 'DemoRoom' AND event_type = 'DemoRoomRegistered'",
        )
        .fetch_one(&mut db)
        .await
        .expect("count events")
    }

    #[tokio::test]
    async fn the_baseline_app_answers_201_stores_one_event_per_command_and_its_database_is_dropped() {
        let admin = postgres_admin_url();
        let flags = ["--store", admin.as_str(), "--clients", "4", "--seconds", "1", "--warmup", "0"];

        // Kept: the test reads the events itself, then drops the database.
        let database = FreshDatabase::create(&admin).await.expect("a fresh database");
        let (admin_url, name, url) = (database.admin_url.clone(), database.name.clone(), database.url.clone());
        let kept_args = args(&[&flags[..], &["--keep-data"]].concat());
        let (report, _) = measure(&kept_args, database).await.expect("a kept baseline run");
        let answered = report.latency.count;
        assert!(answered > 0, "{report:?}");
        assert_eq!(report.outcomes.keys().collect::<Vec<_>>(), ["201"], "only 201s: {:?}", report.outcomes);
        assert_eq!(report.extra["kept_database"], url.as_str());
        let events = stored_events(&url).await;
        // No warm-up and every request waited for: each answered command is one stored event.
        assert_eq!(events, i64::try_from(answered).expect("a count"));
        assert_eq!(report.extra["events_stored"], events);
        drop_database(&admin_url, &name).await.expect("drop the kept database");

        // Not kept: dropped by the run itself.
        let database = FreshDatabase::create(&admin).await.expect("a fresh database");
        let name = database.name.clone();
        assert!(database_exists(&name).await);
        let (report, _) = measure(&args(&flags), database).await.expect("a baseline run");
        assert!(report.latency.count > 0, "{report:?}");
        assert!(!database_exists(&name).await, "{name} should have been dropped");
    }

    #[tokio::test]
    async fn a_store_that_is_not_postgres_is_refused_before_anything_is_made() {
        let error = FreshDatabase::create("/tmp/stay-data").await.expect_err("SQLite is not a baseline store");
        assert!(error.to_string().contains("postgres"), "{error}");
    }

    #[test]
    fn help_says_what_is_measured_and_why() {
        let mut stay = crate::Cli::command();
        let load = stay.find_subcommand_mut("load").expect("stay load");
        let help = load.find_subcommand_mut("baseline").expect("stay load baseline").render_long_help().to_string();
        for needle in ["cqrs-es", "postgres-es", "one event", "multiple", "--ceiling", "--rate", "--keep-data"] {
            assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
        }
    }
}
