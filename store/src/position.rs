//! Positions in the global event feed: opaque, totally ordered tokens.
//!
//! Each backend fills the two parts in its own way (SQLite: the gap-free global position; PostgreSQL:
//! the writing transaction's `xid8` and the identity value; EventStoreDB: commit and prepare
//! positions). Callers only compare, print and parse them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in the global event feed. `Position::START` lies before every event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    major: u64,
    minor: u64,
}

impl Position {
    /// The position before the first event.
    pub const START: Position = Position { major: 0, minor: 0 };

    /// A position from its two parts, compared major first.
    pub const fn new(major: u64, minor: u64) -> Self {
        Self { major, minor }
    }

    /// The first part: SQLite's global position, PostgreSQL's transaction id, EventStoreDB's commit.
    pub const fn major(&self) -> u64 {
        self.major
    }

    /// The second part: PostgreSQL's global position, EventStoreDB's prepare position, 0 on SQLite.
    pub const fn minor(&self) -> u64 {
        self.minor
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.minor == 0 {
            write!(f, "{}", self.major)
        } else {
            write!(f, "{}-{}", self.major, self.minor)
        }
    }
}

/// How far the feed runs ahead of a position, read from positions and one row's time: no event
/// is read whole or decoded (`EventStore::distance_after`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedDistance {
    /// Events in the feed after the position, at most the cap asked for. Exact on SQLite (the
    /// difference of gap-free positions); counted over the feed's index on PostgreSQL; counted by
    /// reading `$all` on EventStoreDB, whose positions are byte offsets, not counts.
    pub events: u64,
    /// When the first of them was recorded (`None` when there are none).
    pub first_recorded_at: Option<DateTime<Utc>>,
}

/// A string that is not a feed position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a feed position (expected digits, or digits-digits)")]
pub struct InvalidPosition(pub String);

impl FromStr for Position {
    type Err = InvalidPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidPosition(s.chars().take(64).collect());
        let parse = |part: &str| -> Result<u64, InvalidPosition> {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            part.parse().map_err(|_| invalid())
        };
        match s.split_once('-') {
            None => Ok(Position::new(parse(s)?, 0)),
            Some((major, minor)) => Ok(Position::new(parse(major)?, parse(minor)?)),
        }
    }
}

impl Serialize for Position {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn start_is_zero_and_before_everything() {
        assert_eq!(Position::START.to_string(), "0");
        assert!(Position::START < Position::new(0, 1));
        assert!(Position::START < Position::new(1, 0));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "-", "1-", "-1", "a", "1-2-3", "+1", " 1", "1.5", "99999999999999999999999"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?} parsed");
        }
    }

    proptest! {
        #[test]
        fn string_form_round_trips_and_keeps_order(a in any::<(u64, u64)>(), b in any::<(u64, u64)>()) {
            let (pa, pb) = (Position::new(a.0, a.1), Position::new(b.0, b.1));
            let (ra, rb): (Position, Position) = (pa.to_string().parse().unwrap(), pb.to_string().parse().unwrap());
            prop_assert_eq!(ra, pa);
            prop_assert_eq!(ra.cmp(&rb), a.cmp(&b));
            let json = serde_json::to_string(&pa).unwrap();
            prop_assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), pa);
        }
    }
}
