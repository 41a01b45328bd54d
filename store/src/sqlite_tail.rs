//! The newest events of the SQLite log, kept in memory by the process that wrote them.
//!
//! In one `stay serve` every projection worker, the saga's feed follower and the `Prefer: wait`
//! watcher read the feed after each commit: seven reads of the same few events, each a statement
//! on a pooled connection (a thread hop) and a JSON parse of every payload. The writer task
//! already holds those events when it commits them, so it keeps the newest ones here, and a feed
//! read that starts inside this window is answered from memory.
//!
//! The window only ever holds a contiguous run of the log: `(floor, head]`, every event with a
//! position in it, in order. The writer pushes a group's appends after their commit, and only
//! when the first new position follows the head; if it does not, something else wrote to the
//! file (another process — the SQLite store is meant for one, but nothing forbids a second), so
//! the window restarts after the new events and readers behind it go to the database, which has
//! everything. A reader that asks for events after a position below the floor, at the head or
//! past it, or before the writer's first commit, reads the database as before: so a reader that
//! has caught up still finds what another process wrote after the head, and a read that finds
//! events (the costly kind: rows and JSON) is answered from memory. Events are built exactly as a read of
//! their rows returns them (payload and metadata through their JSON text, the time to the
//! microsecond it is stored with).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use crate::error::StoreError;
use crate::event::{parse_time, Append, RecordedEvent};
use crate::position::Position;

/// How many of the newest events are kept (a few MB; a reader further behind reads the database).
pub(crate) const CAPACITY: usize = 8_192;

/// The newest events, `(floor, head]` (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct Tail {
    window: Mutex<Option<Window>>,
}

#[derive(Debug)]
struct Window {
    /// Every event after this position is in `events` (up to the head).
    floor: u64,
    events: VecDeque<RecordedEvent>,
    capacity: usize,
}

impl Window {
    fn head(&self) -> u64 {
        self.events.back().map_or(self.floor, |e| e.position.major())
    }
}

impl Tail {
    /// Up to `limit` events after `after`, if the window covers them (`None`: read the database).
    pub(crate) fn read(&self, after: Position, limit: usize) -> Option<Vec<RecordedEvent>> {
        let window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let window = window.as_ref()?;
        let after = after.major();
        // Below the floor the window lacks events; above the head, the reader has seen events
        // this process did not write, and only the database knows what follows them.
        if after < window.floor || after > window.head() {
            return None;
        }
        // A reader that has caught up asks the database: another process may have written after
        // the head (the window learns of that only at this process's next commit).
        if after == window.head() {
            return None;
        }
        // Positions in the window are contiguous, so the first wanted event's index is arithmetic.
        let skip = usize::try_from(after - window.floor).unwrap_or(usize::MAX);
        Some(window.events.iter().skip(skip).take(limit).cloned().collect())
    }

    /// Records an append that has just committed at `positions` (in commit order, one call per
    /// append). A write by anyone else shows as a jump in positions: the window then restarts.
    pub(crate) fn committed(&self, append: &Append, positions: &[Position]) -> Result<(), StoreError> {
        self.committed_with_capacity(append, positions, CAPACITY)
    }

    fn committed_with_capacity(
        &self,
        append: &Append,
        positions: &[Position],
        capacity: usize,
    ) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (positions.first(), positions.last()) else { return Ok(()) };
        let mut guard = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let contiguous = guard.as_ref().is_some_and(|w| w.head() + 1 == first.major());
        if !contiguous {
            // Nothing known before these events: the window starts after them.
            *guard = Some(Window { floor: last.major(), events: VecDeque::new(), capacity });
            return Ok(());
        }
        let Some(window) = guard.as_mut() else { return Ok(()) };
        for event in recorded(append, positions)? {
            if window.events.len() == window.capacity {
                if let Some(oldest) = window.events.pop_front() {
                    window.floor = oldest.position.major();
                }
            }
            window.events.push_back(event);
        }
        Ok(())
    }
}

/// The events of a committed append as a read of their rows returns them. The payload is the
/// document itself (a JSON document parses back from its text unchanged), so the writer task does
/// not serialise it a second time; the time is cut to the microsecond the column keeps.
fn recorded(append: &Append, positions: &[Position]) -> Result<Vec<RecordedEvent>, StoreError> {
    let metadata = serde_json::to_value(append.metadata.to_map())?;
    let recorded_at = parse_time(&append.metadata.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))?;
    append
        .events
        .iter()
        .zip(positions)
        .enumerate()
        .map(|(i, (event, position))| {
            Ok(RecordedEvent {
                position: *position,
                aggregate_type: append.aggregate_type.clone(),
                aggregate_id: append.aggregate_id.clone(),
                sequence: append.expected_version + i as u64 + 1,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                payload: event.payload.clone(),
                metadata: metadata.clone(),
                recorded_at,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CommandContext, NewEvent};

    fn append(id: &str, expected_version: u64, events: usize) -> Append {
        Append {
            aggregate_type: "Probe".into(),
            aggregate_id: id.into(),
            expected_version,
            events: (0..events)
                .map(|i| NewEvent {
                    event_type: "Noted".into(),
                    event_version: "1".into(),
                    payload: serde_json::json!({"n": i}),
                })
                .collect(),
            metadata: CommandContext::new("tail-test").metadata(chrono::Utc::now()),
        }
    }

    fn at(range: std::ops::RangeInclusive<u64>) -> Vec<Position> {
        range.map(|p| Position::new(p, 0)).collect()
    }

    fn positions(events: &[RecordedEvent]) -> Vec<u64> {
        events.iter().map(|e| e.position.major()).collect()
    }

    #[test]
    fn nothing_is_answered_before_the_first_commit() {
        assert!(Tail::default().read(Position::START, 10).is_none());
    }

    #[test]
    fn the_window_starts_after_the_first_commit_and_grows_with_contiguous_ones() {
        let tail = Tail::default();
        tail.committed(&append("a", 0, 2), &at(5..=6)).expect("commit");
        assert!(tail.read(Position::new(4, 0), 10).is_none(), "events 5 and 6 came before the window");
        assert!(tail.read(Position::new(6, 0), 10).is_none(), "a caught-up reader asks the database");

        tail.committed(&append("b", 0, 3), &at(7..=9)).expect("commit");

        let read = tail.read(Position::new(6, 0), 10).expect("in the window");
        assert_eq!(positions(&read), vec![7, 8, 9]);
        assert_eq!(read.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(positions(&tail.read(Position::new(7, 0), 1).expect("in the window")), vec![8], "the limit holds");
    }

    #[test]
    fn a_jump_in_positions_restarts_the_window_so_no_foreign_event_is_skipped() {
        let tail = Tail::default();
        tail.committed(&append("a", 0, 1), &at(1..=1)).expect("commit");
        tail.committed(&append("a", 1, 1), &at(2..=2)).expect("commit");
        // Another process wrote 3 and 4.
        tail.committed(&append("a", 2, 1), &at(5..=5)).expect("commit");

        assert!(tail.read(Position::new(2, 0), 10).is_none(), "a reader at 2 must read 3 and 4 from the database");
        assert!(tail.read(Position::new(6, 0), 10).is_none(), "a reader past the head asks the database");
    }

    #[test]
    fn the_oldest_events_leave_the_window_and_their_readers_go_to_the_database() {
        let tail = Tail::default();
        tail.committed_with_capacity(&append("a", 0, 1), &at(1..=1), 3).expect("commit");
        for p in 2..=6 {
            tail.committed_with_capacity(&append("a", p - 1, 1), &at(p..=p), 3).expect("commit");
        }

        assert!(tail.read(Position::new(2, 0), 10).is_none(), "4 is the oldest kept");
        assert_eq!(positions(&tail.read(Position::new(3, 0), 10).expect("in the window")), vec![4, 5, 6]);
    }
}
