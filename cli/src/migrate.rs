//! `stay migrate`: create or upgrade the schema of a store.

use anyhow::Context;
use clap::Args;
use stay_store::EventStore;

use crate::settings::{component_migrations, StoreArgs};

/// Arguments of `stay migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    store: StoreArgs,

    /// Print what was applied as JSON.
    #[arg(long)]
    json: bool,
}

/// Applies every pending migration and reports what it did.
#[allow(clippy::print_stdout)] // the command's own output
pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let url = args.store.store_url()?;
    let store = EventStore::open(&url, crate::aggregate_types::store_options())
        .await
        .with_context(|| format!("cannot open the store at {url}"))?;
    let mut applied = store.migrate().await.with_context(|| format!("migrating {url}"))?;
    let read_db = args.store.read_database(&store).await?;
    for set in component_migrations() {
        applied.extend(read_db.migrate(&set).await.with_context(|| format!("migrating the {} tables", set.component))?);
    }
    if args.json {
        println!("{}", serde_json::json!({ "store": url.to_string(), "applied": applied }));
    } else if applied.is_empty() {
        println!("{url}: schema is up to date");
    } else {
        for name in &applied {
            println!("{url}: applied {name}");
        }
    }
    Ok(())
}
