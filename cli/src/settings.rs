//! Settings shared by several commands: where the data lives and which store to use.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use stay_store::StoreUrl;

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
}

impl StoreArgs {
    /// The store to open.
    pub fn store_url(&self) -> anyhow::Result<StoreUrl> {
        match &self.store {
            Some(url) => url.parse().context("--store"),
            None => Ok(StoreUrl::Sqlite(self.data_dir.join("stay.db"))),
        }
    }
}
