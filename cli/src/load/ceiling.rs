//! `stay load ceiling`: what the database alone does — one durable single-row insert per
//! transaction, from the same number of clients — so that Stay's figures can be quoted as a share
//! of it. On a shared, noisy machine absolute rates move from run to run; the share holds.
//!
//! SQLite: a scratch file beside the store (same disk, same journal mode and `synchronous=FULL`
//! as the store). PostgreSQL: a scratch table in the store's database, one connection per client,
//! each insert its own transaction (`synchronous_commit` as the server has it, on by default).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use sqlx::postgres::PgPoolOptions;
use stay_store::{SqlDatabase, StoreUrl};

use super::engine::{drive, Outcome, Pace};
use super::report::{Latency, Report};
use super::target::StoreLocation;
use super::PaceArgs;

/// Arguments of `stay load ceiling`.
#[derive(Debug, Args)]
pub struct CeilingArgs {
    /// The database: a directory or SQLite file path (a scratch file is made beside it), or a
    /// PostgreSQL URL (a scratch table is made in it). Default: a temporary directory.
    #[arg(long)]
    store: Option<String>,

    /// Clients at once.
    #[arg(long, default_value_t = 64)]
    clients: usize,

    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    seconds: u64,

    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Where and how hard to measure the ceiling.
#[derive(Clone, Debug)]
pub struct CeilingSettings {
    database: Database,
    clients: usize,
    seconds: u64,
}

#[derive(Clone, Debug)]
enum Database {
    /// A scratch SQLite file in this directory.
    Sqlite(PathBuf),
    /// A scratch table in this PostgreSQL database.
    Postgres(String),
}

impl CeilingSettings {
    /// The ceiling of the store a scenario ran on, with its clients and duration.
    pub fn same_run(store: &StoreLocation, pace: &PaceArgs) -> anyhow::Result<Self> {
        let database = match store {
            StoreLocation::Sqlite(dir) => Database::Sqlite(sqlite_dir(dir)),
            StoreLocation::Postgres(url) => Database::Postgres(url.clone()),
        };
        Ok(Self { database, clients: pace.clients.max(1), seconds: pace.seconds })
    }
}

fn sqlite_dir(path: &std::path::Path) -> PathBuf {
    if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf)
    }
}

/// Runs `stay load ceiling`.
#[allow(clippy::print_stdout)] // the command's own output
pub async fn run(args: CeilingArgs) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new().prefix("stay-ceiling-").tempdir()?;
    let database = match &args.store {
        Some(url) if url.starts_with("postgres") => Database::Postgres(url.clone()),
        Some(path) => Database::Sqlite(sqlite_dir(std::path::Path::new(path))),
        None => Database::Sqlite(scratch.path().to_path_buf()),
    };
    let settings = CeilingSettings { database, clients: args.clients.max(1), seconds: args.seconds };
    let (per_second, latency) = measure(&settings).await?;
    if args.json {
        println!("{}", serde_json::json!({"clients": settings.clients, "per_second": per_second, "latency": latency}));
    } else {
        let mut report = Report::of(
            "one durable single-row insert per transaction",
            format!("closed loop, {} clients", settings.clients),
            &super::engine::Run::default(),
        );
        report.per_second = per_second;
        report.latency = latency;
        report.seconds = settings.seconds as f64;
        report.requests = report.latency.count;
        report.print();
    }
    Ok(())
}

/// Transactions per second and their latency.
pub async fn measure(settings: &CeilingSettings) -> anyhow::Result<(f64, Latency)> {
    let pace = Pace::Closed { clients: settings.clients };
    let (warmup, duration) = (Duration::from_secs(1), Duration::from_secs(settings.seconds.max(1)));
    let run = match &settings.database {
        Database::Sqlite(dir) => {
            let path = dir.join("stay-load-ceiling.db");
            let db = SqlDatabase::open(&StoreUrl::Sqlite(path.clone())).await?;
            db.run("CREATE TABLE IF NOT EXISTS stay_load_ceiling (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)", &[])
                .await?;
            let db = Arc::new(db);
            let run = drive(pace, warmup, duration, move |n| {
                let db = db.clone();
                async move {
                    let sql = "INSERT INTO stay_load_ceiling (payload) VALUES ($1)";
                    match db.run(sql, &[format!("row {n}").into()]).await {
                        Ok(_) => Outcome::Status(200),
                        Err(_) => Outcome::NoAnswer,
                    }
                }
            })
            .await;
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            run
        }
        Database::Postgres(url) => {
            let pool = PgPoolOptions::new()
                .max_connections(u32::try_from(settings.clients).unwrap_or(u32::MAX))
                .min_connections(u32::try_from(settings.clients).unwrap_or(u32::MAX))
                .connect(url)
                .await
                .with_context(|| format!("cannot connect to {url}"))?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS stay_load_ceiling (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)",
            )
            .execute(&pool)
            .await?;
            let shared = pool.clone();
            let run = drive(pace, warmup, duration, move |n| {
                let pool = shared.clone();
                async move {
                    let insert =
                        sqlx::query("INSERT INTO stay_load_ceiling (payload) VALUES ($1)").bind(format!("row {n}"));
                    match insert.execute(&pool).await {
                        Ok(_) => Outcome::Status(200),
                        Err(_) => Outcome::NoAnswer,
                    }
                }
            })
            .await;
            sqlx::query("DROP TABLE IF EXISTS stay_load_ceiling").execute(&pool).await?;
            pool.close().await;
            run
        }
    };
    let report = Report::of("ceiling", String::new(), &run);
    if report.requests > 0 && report.latency.count == 0 {
        bail!("every insert of the ceiling failed: {:?}", report.outcomes);
    }
    Ok((report.per_second, report.latency))
}
