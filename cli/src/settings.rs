//! Settings shared by several commands: where the data lives, which stores to use, the token secret.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use secrecy::SecretString;
use stay_command_api::IDEMPOTENCY_MIGRATIONS;
use stay_projections::PROJECTION_MIGRATIONS;
use stay_saga::schedule::SAGA_MIGRATIONS;
use stay_store::{EventStore, MigrationSet, SqlDatabase, StoreUrl};

/// Where Stay keeps its data.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory for the SQLite store (and generated secrets) when no --store is given.
    #[arg(long, env = "STAY_DATA_DIR", default_value = "./stay-data")]
    pub data_dir: PathBuf,

    /// Event store URL: a SQLite path (sqlite://PATH), postgres://USER@HOST/DB, or esdb://HOST:2113.
    /// Default: the SQLite file stay.db under --data-dir.
    #[arg(long, env = "STAY_STORE")]
    pub store: Option<String>,

    /// SQL database for the tables beside the log (idempotency keys, read models): SQLite or
    /// PostgreSQL. Default: the event store's own database; with EventStoreDB, read.db under --data-dir.
    #[arg(long, env = "STAY_READ_STORE")]
    pub read_store: Option<String>,
}

impl StoreArgs {
    /// The store to open.
    pub fn store_url(&self) -> anyhow::Result<StoreUrl> {
        match &self.store {
            Some(url) => url.parse().context("--store"),
            None => Ok(StoreUrl::Sqlite(self.data_dir.join("stay.db"))),
        }
    }

    /// The SQL database beside the log: `--read-store`, else the event store's own.
    pub async fn read_database(&self, store: &EventStore) -> anyhow::Result<SqlDatabase> {
        let url = match (&self.read_store, store.sql_database()) {
            (Some(url), _) => url.parse::<StoreUrl>().context("--read-store")?,
            (None, Some(own)) => return Ok(own),
            (None, None) => StoreUrl::Sqlite(self.data_dir.join("read.db")),
        };
        SqlDatabase::open(&url).await.with_context(|| format!("cannot open the read store at {url}"))
    }
}

/// The schemas every component keeps in the SQL database beside the log.
pub fn component_migrations() -> Vec<MigrationSet> {
    vec![IDEMPOTENCY_MIGRATIONS, SAGA_MIGRATIONS, PROJECTION_MIGRATIONS]
}

/// The token secret, configured or kept in the data directory.
#[derive(Debug, Clone, Args)]
pub struct SecretArgs {
    /// HS256 secret for bearer tokens. Default: one generated once into DATA_DIR/jwt-secret.
    /// Processes sharing a PostgreSQL store must share this secret.
    #[arg(long, env = "STAY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

impl SecretArgs {
    /// The keys that sign and check tokens: the secret (see [`Self::secret`]), and `previous`
    /// (still accepted, never used to sign) while a rotation is under way.
    pub fn keys(&self, data_dir: &Path, previous: Option<&str>) -> anyhow::Result<stay_http::JwtKeys> {
        let keys = stay_http::JwtKeys::new(&self.secret(data_dir)?);
        match previous {
            None => Ok(keys),
            Some(previous) => {
                anyhow::ensure!(
                    !previous.trim().is_empty(),
                    "--jwt-previous-secret (STAY_JWT_PREVIOUS_SECRET) must not be empty; unset it instead"
                );
                Ok(keys.with_previous_secret(&SecretString::from(previous.to_owned())))
            }
        }
    }

    /// The configured secret, or the one in `data_dir` (generated on first use).
    pub fn secret(&self, data_dir: &Path) -> anyhow::Result<SecretString> {
        if let Some(secret) = &self.jwt_secret {
            anyhow::ensure!(!secret.trim().is_empty(), "--jwt-secret (STAY_JWT_SECRET) must not be empty");
            return Ok(SecretString::from(secret.clone()));
        }
        let path = data_dir.join("jwt-secret");
        if let Some(secret) = read_secret(&path)? {
            return Ok(secret);
        }
        std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        let fresh: [u8; 32] = rand::random();
        let fresh = hex::encode(fresh);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                file.write_all(fresh.as_bytes())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("cannot write the token secret to {}", path.display()))?;
                Ok(SecretString::from(fresh))
            }
            // Another process generated it first: use theirs.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                read_secret(&path)?.with_context(|| format!("{} is empty", path.display()))
            }
            Err(err) => Err(err).with_context(|| format!("cannot create {}", path.display())),
        }
    }
}

fn read_secret(path: &Path) -> anyhow::Result<Option<SecretString>> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(SecretString::from(text.trim().to_owned()))),
        Ok(_) => Ok(None),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}
