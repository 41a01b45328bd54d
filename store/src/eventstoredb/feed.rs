//! What feed reads remember between calls, so that polling does not rescan `$all`.
//!
//! `$all` holds many events that are not in the feed: EventStoreDB's own (`$stats-…` every 30
//! seconds, projections, metadata), snapshots, other applications' streams. `read_all` cannot
//! filter them on the server, and a feed reader's checkpoint only moves with events it is
//! given, so a caught-up reader polling from the same position would read the same foreign
//! events again on every poll, more of them every minute. `$all` only ever grows at its end, so
//! a stretch found without feed events stays so: it is remembered and jumped over.

use std::collections::BTreeMap;

use crate::position::Position;

/// Remembered stretches at most; the oldest (lowest) go first.
const MAX_RANGES: usize = 256;

/// Stretches of `$all` known to hold no feed event: `from → to` means none in `(from, to]`.
/// Every `to` is the position of an event, so a read may start there.
#[derive(Debug, Default)]
pub(super) struct EmptyRanges {
    ranges: BTreeMap<Position, Position>,
}

impl EmptyRanges {
    /// The furthest position a read for events after `after` can start from.
    pub(super) fn skip(&self, after: Position) -> Position {
        let mut at = after;
        // Ranges may chain; each step moves strictly forward, and there are at most MAX_RANGES.
        for _ in 0..=MAX_RANGES {
            match self.ranges.range(..=at).next_back() {
                Some((_, &to)) if to > at => at = to,
                _ => break,
            }
        }
        at
    }

    /// Notes that `(from, to]` holds no feed event.
    pub(super) fn record(&mut self, from: Position, to: Position) {
        if to <= from {
            return;
        }
        let end = self.ranges.entry(from).or_insert(to);
        *end = (*end).max(to);
        while self.ranges.len() > MAX_RANGES {
            self.ranges.pop_first();
        }
    }
}

/// The last answer of `head`: no feed event lies in `(head, top]`, `top` being the newest event
/// of `$all` then. A later `head` scans back only to `top`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct KnownHead {
    pub(super) top: Position,
    pub(super) head: Position,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> Position {
        Position::new(n, n)
    }

    #[test]
    fn an_empty_stretch_is_jumped_over() {
        let mut ranges = EmptyRanges::default();
        assert_eq!(ranges.skip(p(10)), p(10));
        ranges.record(p(10), p(50));
        assert_eq!(ranges.skip(p(10)), p(50));
        assert_eq!(ranges.skip(p(30)), p(50));
        assert_eq!(ranges.skip(p(50)), p(50));
        assert_eq!(ranges.skip(p(5)), p(5));
        assert_eq!(ranges.skip(p(60)), p(60));
    }

    #[test]
    fn stretches_chain_and_only_grow() {
        let mut ranges = EmptyRanges::default();
        ranges.record(p(10), p(50));
        ranges.record(p(50), p(90));
        assert_eq!(ranges.skip(p(10)), p(90));
        ranges.record(p(10), p(20));
        assert_eq!(ranges.skip(p(10)), p(90));
        ranges.record(p(90), p(90));
        ranges.record(p(95), p(91));
        assert_eq!(ranges.skip(p(95)), p(95));
    }

    #[test]
    fn memory_is_bounded_and_keeps_the_newest() {
        let mut ranges = EmptyRanges::default();
        for n in 0..(MAX_RANGES as u64 + 10) {
            ranges.record(p(n * 10), p(n * 10 + 5));
        }
        assert_eq!(ranges.ranges.len(), MAX_RANGES);
        assert_eq!(ranges.skip(p(0)), p(0));
        let newest = (MAX_RANGES as u64 + 9) * 10;
        assert_eq!(ranges.skip(p(newest)), p(newest + 5));
    }
}
