//! Room registrations written a run at a time, for the models that keep a room directory of their
//! own (`reservations`, `notifications`).
//!
//! Those models insert one row per `RoomRegistered` event and nothing more. Applied event by
//! event, that was one statement (one round trip) per registration; a batch of registrations now
//! becomes one multi-row `INSERT … ON CONFLICT (room_id) DO NOTHING` per run of consecutive
//! registrations. Any other event ends the run: the run is written first, then that event is
//! applied by the model as before, so the order of effects is the feed's.

use stay_domain::{Room, RoomEvent};
use stay_store::{Arg, RecordedEvent, SqlTransaction};

use crate::model::{decode, ApplyError, ReadModel};

/// Rows per statement (well below both databases' limits on bound parameters).
const ROWS_PER_INSERT: usize = 500;

/// A room directory table and the columns a registration fills.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Directory<'a> {
    /// The table (its key is `room_id`).
    pub table: &'a str,
    /// Its columns, `room_id` first.
    pub columns: &'a [&'a str],
}

/// Applies `events` in order with `model`, writing runs of room registrations together; `row`
/// gives a registration's values for the directory's columns.
pub(crate) async fn apply_in_runs<M, F>(
    model: &M,
    tx: &mut SqlTransaction,
    v: i64,
    events: &[&RecordedEvent],
    directory: Directory<'_>,
    row: F,
) -> Result<(), ApplyError>
where
    M: ReadModel + ?Sized,
    F: Fn(&RoomEvent) -> Option<Vec<Arg>>,
{
    let mut run: Vec<Vec<Arg>> = Vec::new();
    for event in events {
        let values = if event.aggregate_type == "Room" && event.event_type == "RoomRegistered" {
            row(&decode::<Room>(event)?)
        } else {
            None
        };
        match values {
            Some(values) => run.push(values),
            None => {
                write_run(tx, directory, &mut run).await?;
                model.apply(tx, v, event).await?;
            }
        }
    }
    write_run(tx, directory, &mut run).await
}

async fn write_run(
    tx: &mut SqlTransaction,
    directory: Directory<'_>,
    run: &mut Vec<Vec<Arg>>,
) -> Result<(), ApplyError> {
    let width = directory.columns.len();
    for chunk in run.chunks(ROWS_PER_INSERT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|r| {
                let params: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {} ON CONFLICT (room_id) DO NOTHING",
            directory.table,
            directory.columns.join(", "),
            rows.join(", ")
        );
        let args: Vec<Arg> = chunk.iter().flatten().cloned().collect();
        tx.run(&sql, &args).await?;
    }
    run.clear();
    Ok(())
}
