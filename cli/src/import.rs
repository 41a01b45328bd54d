//! `stay import FILE`: writes an export (`stay export`) into an empty store of any backend.
//!
//! 1. Migrates the target, as `stay migrate` does.
//! 2. Reads the whole file once and checks it (every line's JSON and fields, the chain that names
//!    a changed line, each aggregate's sequences, the closing line's count and digest) before
//!    writing anything: the digest is only known at the end, and a file found damaged halfway
//!    must not leave half an import behind. A damaged or truncated file is refused with the line.
//! 3. Starts the import in the store (refused unless the store is empty or holds exactly the
//!    committed part of an earlier run of the same file), then reads the file again and writes
//!    its events in batches, in file order: every aggregate keeps its sequences, the feed keeps
//!    the source's order, and metadata and recorded times are kept. On SQLite and PostgreSQL a
//!    batch is one transaction with the progress; on EventStoreDB each aggregate's run of events
//!    is one append, between progress records (`stay_store`'s `eventstoredb/import.rs`). After an
//!    interruption the same command resumes after the last event the store holds (having checked
//!    that the store's last event is the file's line where it stopped).
//!
//! Read models are not imported; rebuild them with `stay projections rebuild --all`.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use stay_store::{EventKey, EventStore, ImportProgress, ImportedEvent};

use crate::log_file::{stderr_progress, Line, LogReader};
use crate::settings::{component_migrations, StoreArgs};

/// Arguments of `stay import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    store: StoreArgs,

    /// The export file written by `stay export`.
    file: PathBuf,

    /// Events written per batch (per transaction on SQLite and PostgreSQL).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    batch: u64,

    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// Checks the file, then imports it (or resumes an interrupted import of it).
#[allow(clippy::print_stdout)] // the command's own output
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let url = args.store.store_url()?;
    let store = EventStore::open(&url, crate::aggregate_types::store_options())
        .await
        .with_context(|| format!("cannot open the store at {url}"))?;
    store.migrate().await.with_context(|| format!("migrating {url}"))?;
    let read_db = args.store.read_database(&store).await?;
    for set in component_migrations() {
        read_db.migrate(&set).await.with_context(|| format!("migrating the {} tables", set.component))?;
    }

    let file = args.file.as_path();
    let (total, digest) =
        verify(file).with_context(|| format!("{} is refused; nothing was imported", file.display()))?;
    let progress = store.begin_import(&digest, total).await.with_context(|| format!("cannot import into {url}"))?;
    if progress.is_complete() {
        if args.json {
            println!(
                "{}",
                serde_json::json!({"store": url.to_string(), "sha256": digest, "events": total, "imported": 0, "already_complete": true})
            );
        } else {
            println!("{url}: this file ({total} events, sha256 {digest}) was imported already; nothing to do");
        }
        return Ok(());
    }
    let resumed_after = progress.imported;
    let started = Instant::now();
    let done = import(&store, file, progress, args.batch).await.with_context(|| format!("importing into {url}"))?;
    let imported = done.imported - resumed_after;
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 { imported as f64 / seconds } else { 0.0 };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "store": url.to_string(), "sha256": digest, "events": total, "imported": imported,
                "resumed_after": resumed_after, "seconds": seconds, "events_per_second": rate.round(),
            })
        );
    } else {
        let resumed = if resumed_after > 0 { format!(" (resumed after {resumed_after})") } else { String::new() };
        println!("{url}: imported {imported} events{resumed} in {seconds:.1} s ({rate:.0} events/s); {total} in all");
        println!("next: stay projections rebuild --all, with the same --store, builds the read models");
    }
    Ok(())
}

/// The first pass: every line checked; answers the event count and the file's digest.
fn verify(file: &Path) -> anyhow::Result<(u64, String)> {
    let input = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut reader = LogReader::new(BufReader::with_capacity(1 << 16, input), true);
    let bar = stderr_progress(None, "check");
    let mut events = 0u64;
    while let Some(line) = reader.next_line()? {
        match line {
            Line::Event(_) => {
                events += 1;
                if let Some(bar) = bar.as_ref().filter(|_| events.is_multiple_of(1_000)) {
                    bar.set_position(events);
                }
            }
            Line::End(closing) => {
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                return Ok((closing.count, closing.sha256.to_ascii_lowercase()));
            }
        }
    }
    anyhow::bail!("the export file has no closing line: it is truncated")
}

/// The second pass: the events after `progress.imported`, in batches.
async fn import(
    store: &EventStore,
    file: &Path,
    mut progress: ImportProgress,
    batch_size: u64,
) -> anyhow::Result<ImportProgress> {
    let input = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut reader = LogReader::new(BufReader::with_capacity(1 << 16, input), false);
    let last_in_store = if progress.imported > 0 { store.last_event().await? } else { None };
    let bar = stderr_progress(Some(progress.total), "import");
    if let Some(bar) = &bar {
        bar.set_position(progress.imported);
    }
    let mut line = 0u64;
    let mut batch: Vec<ImportedEvent> = Vec::with_capacity(batch_size as usize);
    while let Some(next) = reader.next_line()? {
        let Line::Event(event) = next else { continue };
        line += 1;
        if line <= progress.imported {
            if line == progress.imported {
                let key = EventKey {
                    aggregate_type: event.aggregate_type.clone(),
                    aggregate_id: event.aggregate_id.clone(),
                    sequence: event.sequence,
                };
                anyhow::ensure!(
                    last_in_store.as_ref() == Some(&key),
                    "the store's last event ({last_in_store:?}) is not the file's line {line} ({key:?}), where the interrupted import stopped; start again with an empty store"
                );
            }
            continue;
        }
        batch.push(*event);
        if batch.len() as u64 >= batch_size {
            progress = store.import_batch(&progress, &batch).await?;
            batch.clear();
            if let Some(bar) = &bar {
                bar.set_position(progress.imported);
            }
        }
    }
    progress = store.import_batch(&progress, &batch).await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    anyhow::ensure!(
        progress.is_complete(),
        "the file holds fewer events than when it was checked ({} of {}): it changed during the import",
        progress.imported,
        progress.total
    );
    Ok(progress)
}
