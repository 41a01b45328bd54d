//! roomview's answers kept in memory while the model stands still: one room, and the first page of
//! the room list per filter, as the JSON they were answered with.
//!
//! Why it is safe: roomview's rows change only in a projector batch, and a batch moves the
//! model's checkpoint in the same transaction. A row read after the watcher published progress `P`
//! (version and checkpoint) shows the room as of `P` or later. The cache holds answers of one
//! [`Stamp`] only, the progress their rows were read at and the day they were rendered on (a
//! room's `booked` leaves out the stays that have ended by then); a query is answered from it only
//! when its own stamp is that very one. So
//! - a query with `min_position` waits until the published checkpoint covers its position, and an
//!   answer it is then given was read at that progress or later: never older than it asked;
//! - when the watcher publishes a new progress (or the day changes), the next query carries the
//!   new stamp and everything cached is dropped: an answer of the old progress may be out of date,
//!   and telling which rooms an event touched would mean redoing the projector's work. A plain
//!   query is so at most as stale as the watcher's reading: one look, a few milliseconds while the
//!   projector is busy.
//!
//! Size is bounded by bytes (`MAX_BYTES` over all answers); when full, new answers are not kept
//! until the next stamp empties it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use chrono::NaiveDate;
use stay_store::Position;

use crate::progress::Progress;

/// Bytes of JSON kept at most, rooms and pages together.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;

/// What cached answers were made at: the model's progress their rows were read at, and the day
/// they were rendered on. Ordered by progress, then day: a later stamp never compares lower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    /// The progress the rows were read at (or after).
    pub progress: Progress,
    /// The day `booked` was filtered on.
    pub today: NaiveDate,
}

/// Which first page of the room list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FirstPage {
    /// Only this host's rooms.
    pub host_id: Option<String>,
    /// At most this many.
    pub limit: i64,
}

/// One room's answer, ready to send.
#[derive(Clone, Debug)]
pub struct RoomAnswer {
    /// The room.
    pub room_id: String,
    /// The feed position of the room's last change (its row's `position`).
    pub position: Option<Position>,
    /// Its `RoomView` as JSON.
    pub json: Bytes,
}

/// How often the cache answered, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Rooms answered from memory.
    pub room_hits: u64,
    /// Rooms read from the database (and kept).
    pub room_misses: u64,
    /// First pages answered from memory.
    pub page_hits: u64,
    /// First pages read from the database (and kept).
    pub page_misses: u64,
}

/// roomview's answers of one stamp.
#[derive(Debug, Default)]
pub struct RoomCache {
    held: Mutex<Held>,
    room_hits: AtomicU64,
    room_misses: AtomicU64,
    page_hits: AtomicU64,
    page_misses: AtomicU64,
}

#[derive(Debug, Default)]
struct Held {
    /// The stamp of every answer here.
    at: Option<Stamp>,
    rooms: HashMap<String, RoomAnswer>,
    pages: HashMap<FirstPage, Bytes>,
    /// JSON bytes held.
    bytes: usize,
}

impl Held {
    /// Whether answers made at `at` may be kept: empties the cache when `at` is newer than what
    /// it holds; false when `at` is older (a query that started before the latest reading).
    fn move_to(&mut self, at: Stamp) -> bool {
        match self.at {
            Some(held) if held == at => true,
            Some(held) if held > at => false,
            _ => {
                *self = Held { at: Some(at), ..Held::default() };
                true
            }
        }
    }

    fn has_room_for(&self, bytes: usize) -> bool {
        self.bytes + bytes <= MAX_BYTES
    }

    /// Keeps a room's answer unless a newer one of the same room is held (two queries of the same
    /// stamp may have read the room before and after a batch the watcher had not yet seen).
    fn keep_room(&mut self, answer: &RoomAnswer) {
        let held = self.rooms.get(&answer.room_id).map(|held| (held.position, held.json.len()));
        let freed = match held {
            Some((position, _)) if position > answer.position => return,
            Some((_, len)) => len,
            None => 0,
        };
        if !self.has_room_for(answer.json.len().saturating_sub(freed)) {
            return;
        }
        self.bytes = self.bytes - freed + answer.json.len();
        self.rooms.insert(answer.room_id.clone(), answer.clone());
    }
}

impl RoomCache {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The room's answer if it was made at `at`.
    pub fn room(&self, at: Stamp, room_id: &str) -> Option<Bytes> {
        let found = {
            let held = self.held();
            if held.at == Some(at) {
                held.rooms.get(room_id).map(|answer| answer.json.clone())
            } else {
                None
            }
        };
        count(found.is_some(), &self.room_hits, &self.room_misses, "room");
        found
    }

    /// Keeps a room's answer made at `at`.
    pub fn keep_room(&self, at: Stamp, answer: &RoomAnswer) {
        let mut held = self.held();
        if held.move_to(at) {
            held.keep_room(answer);
        }
    }

    /// A first page of the room list if it was made at `at`.
    pub fn first_page(&self, at: Stamp, page: &FirstPage) -> Option<Bytes> {
        let found = {
            let held = self.held();
            if held.at == Some(at) {
                held.pages.get(page).cloned()
            } else {
                None
            }
        };
        count(found.is_some(), &self.page_hits, &self.page_misses, "first_page");
        found
    }

    /// Keeps a first page made at `at`, and the answers of its rooms one by one.
    pub fn keep_first_page(&self, at: Stamp, page: FirstPage, json: &Bytes, rooms: &[RoomAnswer]) {
        let mut held = self.held();
        if !held.move_to(at) {
            return;
        }
        if !held.pages.contains_key(&page) && held.has_room_for(json.len()) {
            held.bytes += json.len();
            held.pages.insert(page, json.clone());
        }
        for room in rooms {
            held.keep_room(room);
        }
    }

    /// How often it answered so far.
    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            room_hits: self.room_hits.load(Ordering::Relaxed),
            room_misses: self.room_misses.load(Ordering::Relaxed),
            page_hits: self.page_hits.load(Ordering::Relaxed),
            page_misses: self.page_misses.load(Ordering::Relaxed),
        }
    }
}

fn count(hit: bool, hits: &AtomicU64, misses: &AtomicU64, kind: &'static str) {
    let (counter, outcome) = if hit { (hits, "hit") } else { (misses, "miss") };
    counter.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("stay_query_roomview_cache_total", "kind" => kind, "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: i64, checkpoint: u64) -> Stamp {
        let today = NaiveDate::from_ymd_opt(2030, 1, 1).expect("a date");
        Stamp { progress: Progress { version, checkpoint: Position::new(checkpoint, 0) }, today }
    }

    fn answer(room_id: &str, name: &str, position: u64) -> RoomAnswer {
        RoomAnswer {
            room_id: room_id.into(),
            position: Some(Position::new(position, 0)),
            json: Bytes::from(format!(r#"{{"room_id":"{room_id}","name":"{name}"}}"#)),
        }
    }

    fn text(json: Option<Bytes>) -> Option<String> {
        json.map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    #[test]
    fn a_room_is_answered_only_at_the_stamp_it_was_made_at() {
        let cache = RoomCache::default();
        cache.keep_room(at(1, 10), &answer("a", "A", 7));

        assert_eq!(text(cache.room(at(1, 10), "a")), Some(r#"{"room_id":"a","name":"A"}"#.into()));
        assert!(cache.room(at(1, 11), "a").is_none(), "the model moved on");
        assert!(cache.room(at(2, 10), "a").is_none(), "another version");
        let tomorrow = Stamp { today: NaiveDate::from_ymd_opt(2030, 1, 2).expect("a date"), ..at(1, 10) };
        assert!(cache.room(tomorrow, "a").is_none(), "another day");
        assert_eq!(cache.counts(), CacheCounts { room_hits: 1, room_misses: 3, ..CacheCounts::default() });
    }

    #[test]
    fn a_newer_stamp_empties_the_cache_and_an_older_one_keeps_nothing() {
        let cache = RoomCache::default();
        cache.keep_room(at(1, 10), &answer("a", "A", 7));
        cache.keep_room(at(1, 12), &answer("b", "B", 12));
        assert!(cache.room(at(1, 10), "a").is_none());
        assert!(cache.room(at(1, 12), "a").is_none(), "answers of the older stamp are gone");

        // A query that read at 10 ends after one that read at 12: its answer is not kept.
        cache.keep_room(at(1, 10), &answer("a", "A", 7));
        assert!(cache.room(at(1, 12), "a").is_none());
        assert!(cache.room(at(1, 10), "a").is_none());
        assert!(cache.room(at(1, 12), "b").is_some());
    }

    #[test]
    fn of_two_reads_of_a_room_at_the_same_stamp_the_newer_answer_stays() {
        let cache = RoomCache::default();
        cache.keep_room(at(1, 10), &answer("a", "Newer", 11));
        cache.keep_room(at(1, 10), &answer("a", "Older", 9));
        assert_eq!(text(cache.room(at(1, 10), "a")), Some(r#"{"room_id":"a","name":"Newer"}"#.into()));
    }

    #[test]
    fn a_first_page_is_kept_with_its_rooms_and_the_bytes_are_bounded() {
        let cache = RoomCache::default();
        let page = FirstPage { host_id: None, limit: 2 };
        let rooms = [answer("a", "A", 1), answer("b", "B", 2)];
        cache.keep_first_page(at(1, 5), page.clone(), &Bytes::from_static(b"{}"), &rooms);

        assert_eq!(text(cache.first_page(at(1, 5), &page)), Some("{}".into()));
        assert!(cache.first_page(at(1, 5), &FirstPage { host_id: Some("host".into()), limit: 2 }).is_none());
        assert!(cache.room(at(1, 5), "b").is_some(), "a page's rooms are kept one by one too");

        let big = RoomAnswer { json: Bytes::from(vec![b' '; MAX_BYTES / 3]), ..answer("big-1", "", 1) };
        for id in ["big-1", "big-2", "big-3", "big-4"] {
            cache.keep_room(at(1, 5), &RoomAnswer { room_id: id.into(), ..big.clone() });
        }
        assert!(cache.room(at(1, 5), "big-2").is_some());
        assert!(cache.room(at(1, 5), "big-3").is_none(), "past the bound nothing more is kept");
        assert!(cache.held().bytes <= MAX_BYTES);
    }
}
