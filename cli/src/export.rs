//! `stay export`: the whole event log as JSON Lines (format: `log_file.rs`).
//!
//! Reads the global feed in pages (bounded memory) up to the head taken at the start, so it can
//! run beside a server: the feed is gap-free and appends only after the head, so every event up
//! to it is there and none after it is taken — a consistent copy of the log as it stood. Events
//! are written as stored (no upcasters). Snapshots are not exported: they are caches that loads
//! rebuild.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use stay_store::{EventStore, Position};

use crate::log_file::{stderr_progress, LogWriter};
use crate::settings::StoreArgs;

/// Events read from the feed at a time.
const PAGE: usize = 1_000;

/// Arguments of `stay export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    store: StoreArgs,

    /// Write the export to this file (replaced only once complete) instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// Writes the log up to its current head.
pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let url = args.store.store_url()?;
    let store = EventStore::open(&url, crate::aggregate_types::store_options())
        .await
        .with_context(|| format!("cannot open the store at {url}"))?;
    let pending = store.pending_migrations().await?;
    anyhow::ensure!(
        pending.is_empty(),
        "the store at {url} is not migrated ({}); run stay migrate",
        pending.join(", ")
    );
    let started = Instant::now();
    let count = match &args.output {
        None => {
            let stdout = std::io::stdout();
            export(&store, BufWriter::with_capacity(1 << 16, stdout.lock())).await?
        }
        Some(path) => {
            // Written beside the target and renamed when complete: a file at `path` is whole.
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            let temporary = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot create a file in {}", dir.display()))?;
            let count = export(&store, BufWriter::with_capacity(1 << 16, temporary.as_file())).await?;
            temporary.as_file().sync_all().context("cannot sync the export file")?;
            temporary.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
            count
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 { count as f64 / seconds } else { 0.0 };
    let to = args.output.as_ref().map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
    eprintln!("stay export: {count} events from {url} to {to} in {seconds:.1} s ({rate:.0} events/s)");
    Ok(())
}

/// Writes every event up to the head as it is now, then the closing line; answers the count.
async fn export<W: Write>(store: &EventStore, out: W) -> anyhow::Result<u64> {
    let head = store.head().await?;
    let mut writer = LogWriter::new(out);
    let bar = stderr_progress(None, "export");
    let mut after = Position::START;
    'pages: while after < head {
        let page = store.read_feed(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in &page {
            if event.position > head {
                break 'pages;
            }
            writer.event(event).context("cannot write the export")?;
        }
        if let Some(bar) = &bar {
            bar.set_position(writer.count());
        }
    }
    let count = writer.count();
    writer.finish().context("cannot write the export")?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(count)
}
