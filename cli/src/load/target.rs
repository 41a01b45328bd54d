//! The server under load: one `stay load` starts itself (this same binary, its own data directory,
//! a fresh PostgreSQL database if asked), or one already running at `--url`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use secrecy::SecretString;
use stay_domain::UserId;
use stay_http::{JwtKeys, Role};

use crate::settings::SecretArgs;

/// Which server to load.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// A running server to load. Without it, `stay load` starts `stay serve` itself (this binary,
    /// a temporary data directory) and stops it afterwards.
    #[arg(long)]
    pub url: Option<String>,

    /// With --url: the server's data directory, for its token secret.
    #[arg(long, env = "STAY_DATA_DIR", default_value = "./stay-data")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub secret: SecretArgs,

    /// With --url: the server's process id, to read its memory (else its /metrics are asked).
    #[arg(long)]
    pub pid: Option<u32>,

    /// The store of the server it starts: a SQLite path, or a PostgreSQL URL. For PostgreSQL a
    /// fresh database is created beside the one named (and dropped afterwards) unless --keep-data.
    #[arg(long)]
    pub store: Option<String>,

    /// Keep the started server's data (its directory, or its PostgreSQL database) and print where.
    #[arg(long)]
    pub keep_data: bool,

    /// Extra flags for the server it starts, e.g. --serve-arg=--saga-concurrency=128 (repeatable).
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    pub serve_args: Vec<String>,
}

/// A server to send requests to.
#[derive(Debug)]
pub struct Target {
    /// Its base URL.
    pub base: String,
    keys: JwtKeys,
    pid: Option<u32>,
    child: Option<Child>,
    /// Where its data is: a SQLite directory or a PostgreSQL URL (for `--ceiling`). For a server at
    /// `--url`, `--store`, else its `--data-dir`.
    pub store: StoreLocation,
    data_dir: Option<tempfile::TempDir>,
    fresh_database: Option<(String, String)>,
    keep: bool,
    /// One HTTP client for every request: connections are reused.
    pub client: reqwest::Client,
}

/// Where the server under load keeps its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// The SQLite default under this data directory.
    Sqlite(PathBuf),
    /// This PostgreSQL database.
    Postgres(String),
}

impl Target {
    /// The server `args` name, started if need be and ready for requests.
    pub async fn open(args: &TargetArgs, clients: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(clients.max(1))
            .timeout(Duration::from_secs(60))
            .build()?;
        if let Some(url) = &args.url {
            let keys = JwtKeys::new(&args.secret.secret(&args.data_dir)?);
            let store = match &args.store {
                Some(store) if store.starts_with("postgres") => StoreLocation::Postgres(store.clone()),
                Some(path) => StoreLocation::Sqlite(PathBuf::from(path)),
                None => StoreLocation::Sqlite(args.data_dir.clone()),
            };
            let target = Self {
                base: url.trim_end_matches('/').to_owned(),
                keys,
                pid: args.pid,
                child: None,
                store,
                data_dir: None,
                fresh_database: None,
                keep: true,
                client,
            };
            target.wait_ready().await?;
            return Ok(target);
        }
        let dir = tempfile::Builder::new().prefix("stay-load-").tempdir().context("a temporary data directory")?;
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let mut command = Command::new(std::env::current_exe().context("this program's path")?);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(["--jwt-secret", &secret])
            .env_remove("STAY_STORE")
            .env_remove("STAY_LISTEN")
            .env("STAY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let (store, fresh_database) = match &args.store {
            Some(url) if url.starts_with("postgres") => {
                let (admin, used) = create_database(url).await?;
                command.args(["--store", &used]);
                (StoreLocation::Postgres(used), Some(admin))
            }
            Some(path) => {
                command.args(["--store", path]);
                (StoreLocation::Sqlite(PathBuf::from(path)), None)
            }
            None => (StoreLocation::Sqlite(dir.path().to_path_buf()), None),
        };
        command.args(&args.serve_args);
        let mut child = command.spawn().context("starting stay serve")?;
        let stdout = child.stdout.take().context("stay serve's output")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("stay: listening on ") {
                    let _ = tx.send(address.to_owned());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                bail!("stay serve did not start within 60 s");
            }
        };
        let target = Self {
            base,
            keys: JwtKeys::new(&SecretString::from(secret)),
            pid: Some(child.id()),
            child: Some(child),
            store,
            data_dir: Some(dir),
            fresh_database,
            keep: args.keep_data,
            client,
        };
        target.wait_ready().await?;
        Ok(target)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        for _ in 0..100 {
            if let Ok(answer) = self.client.get(format!("{}/readyz", self.base)).send().await {
                if answer.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{} is not ready (GET /readyz)", self.base)
    }

    /// A bearer token for `user` as `role`, valid for the run.
    pub fn token(&self, user: &str, role: Role) -> anyhow::Result<String> {
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let user = UserId::new(user).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(self.keys.sign(&user, role, Duration::from_secs(24 * 3600), now)?)
    }

    /// The server's resident memory in MB, if it can be read.
    pub async fn rss_mb(&self) -> Option<f64> {
        rss_mb(self.pid, &self.client, &format!("{}/metrics", self.base)).await
    }

    /// The server's process id, when known.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Stops a server it started (SIGTERM, then its grace) and drops a fresh database.
    #[allow(clippy::print_stdout)] // the command's own output: where kept data is
    pub async fn close(mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
        if self.keep {
            match (&self.store, self.data_dir.take()) {
                (StoreLocation::Postgres(url), _) => println!("kept the data: {url}"),
                (_, Some(dir)) => println!("kept the data: {}", dir.keep().display()),
                _ => {}
            }
            return Ok(());
        }
        if let Some((admin_url, name)) = self.fresh_database.take() {
            drop_database(&admin_url, &name).await?;
        }
        Ok(())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

fn terminate(child: &mut Child) {
    #[cfg(unix)]
    {
        // SIGTERM lets it drain; the wait is bounded by its grace period.
        let _ = Command::new("kill").arg(child.id().to_string()).status();
    }
    for _ in 0..150 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Creates a fresh database beside the one `url` names; answers (the URL to administer it from,
/// its name) and, second, the URL to use it.
pub(super) async fn create_database(url: &str) -> anyhow::Result<((String, String), String)> {
    use sqlx::Connection;
    let name = format!("stay_load_{}_{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(url).await.with_context(|| format!("cannot connect to {url}"))?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.context("creating a database")?;
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    Ok(((url.to_owned(), name.clone()), format!("{server}/{name}{query}")))
}

/// Drops the database `name` (its connections too) from `admin_url`.
pub(super) async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await?;
    Ok(())
}

/// The CPU time (user and system) process `pid` has used so far, in seconds, from /proc.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_seconds(&stat)
}

/// utime and stime of a /proc/PID/stat line. They count USER_HZ ticks, which Linux fixes at 100
/// for /proc whatever the kernel's own tick. The name in parentheses may hold spaces and
/// parentheses, so the fields are counted from the last `)`: state is the first after it, utime
/// the 12th, stime the 13th.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// A server's resident memory in MB: from /proc when its process id is known, else from the
/// `stay_process_resident_memory_bytes` gauge of its /metrics.
pub async fn rss_mb(pid: Option<u32>, client: &reqwest::Client, metrics_url: &str) -> Option<f64> {
    if let Some(pid) = pid {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: f64 =
            status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
        return Some((kb / 1024.0 * 10.0).round() / 10.0);
    }
    let text = client.get(metrics_url).send().await.ok()?.text().await.ok()?;
    let bytes: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("stay_process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())?;
    Some((bytes / 1_048_576.0 * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_process_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
        let stat = "4242 (stay (serve) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 566 0 0 20 0 9 0 100";
        assert_eq!(parse_cpu_seconds(stat), Some(18.0));
        assert_eq!(parse_cpu_seconds("4242 (truncated"), None);
        assert_eq!(parse_cpu_seconds("4242 (stay) S 1 2"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu_time() {
        let spent: u64 = (0..2_000_000u64).map(|n| n.wrapping_mul(n) % 7).sum();
        assert!(spent > 0);
        let seconds = cpu_seconds(std::process::id()).expect("/proc/self/stat is readable");
        assert!(seconds > 0.0, "{seconds}");
    }
}
