//! What `stay seed` will make, decided before the first request from the seed alone: the same
//! seed, sizes and first day give the same hosts, rooms, stays, cards, cancellations and reviews,
//! whatever order the requests then complete in.
//!
//! Stays never overlap within a room, so every hold succeeds and each reservation's end follows
//! from its card alone (and its planned fate): the demo data is what the plan says.

use anyhow::ensure;
use chrono::{Days, NaiveDate};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// A payment card of the simulator; its token decides the charge's outcome (API.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Card {
    /// Approved.
    Visa,
    /// Approved after two seconds.
    Slow,
    /// Declined.
    Declined,
    /// Declined for insufficient funds.
    InsufficientFunds,
    /// The provider answers 500 until the payment deadline rejects the reservation.
    Error,
    /// The provider never answers; the payment deadline rejects the reservation.
    Timeout,
}

impl Card {
    /// Every card, each of which the plan uses at least once when there are enough reservations.
    pub const ALL: [Card; 6] =
        [Card::Visa, Card::Slow, Card::Declined, Card::InsufficientFunds, Card::Error, Card::Timeout];

    /// The simulator's token for it.
    pub fn token(self) -> &'static str {
        match self {
            Card::Visa => "tok_visa",
            Card::Slow => "tok_slow",
            Card::Declined => "tok_declined",
            Card::InsufficientFunds => "tok_insufficient_funds",
            Card::Error => "tok_error",
            Card::Timeout => "tok_timeout",
        }
    }

    /// Whether the charge is approved, so the reservation is confirmed unless cancelled.
    pub fn approves(self) -> bool {
        matches!(self, Card::Visa | Card::Slow)
    }

    /// Whether the reservation only ends at the payment deadline (the provider errs or is silent).
    pub fn waits_for_the_deadline(self) -> bool {
        matches!(self, Card::Error | Card::Timeout)
    }

    /// How often the rest of the reservations use it, in percent.
    fn weight(self) -> u32 {
        match self {
            Card::Visa => 80,
            Card::Slow => 5,
            Card::Declined => 6,
            Card::InsufficientFunds => 5,
            Card::Error => 2,
            Card::Timeout => 2,
        }
    }
}

/// What happens to a reservation after it is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Nothing more.
    Keep,
    /// Its guest cancels it at once, while the (slow) charge is still pending.
    CancelWhilePending,
    /// Its guest cancels it once it is confirmed (the charge is refunded).
    CancelOnceConfirmed,
    /// Its guest reviews the room; the host may reply.
    Review { rating: u8, comment: String, reply: Option<String> },
}

/// A room to register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomPlan {
    /// Index into the plan's hosts.
    pub host: usize,
    pub name: String,
    pub description: String,
    pub address: String,
    pub nightly_price_minor: i64,
    pub currency: &'static str,
    pub capacity: u32,
}

/// A reservation to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationPlan {
    /// Index into the plan's rooms.
    pub room: usize,
    /// Index into the plan's guests.
    pub guest: usize,
    pub check_in: NaiveDate,
    pub check_out: NaiveDate,
    pub guests: u32,
    pub card: Card,
    pub fate: Fate,
}

/// Everything `stay seed` makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub hosts: Vec<String>,
    pub guests: Vec<String>,
    pub rooms: Vec<RoomPlan>,
    pub reservations: Vec<ReservationPlan>,
}

/// How much to make.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub hosts: usize,
    pub guests: usize,
    pub rooms: usize,
    pub reservations: usize,
}

const ADJECTIVES: [&str; 12] =
    ["Quiet", "Sunny", "Old", "Bright", "Little", "Green", "Blue", "Hidden", "Tall", "Warm", "Stone", "Painted"];
const PLACES: [&str; 10] =
    ["loft", "cabin", "flat", "studio", "cottage", "attic", "townhouse", "houseboat", "barn", "garden room"];
const SETTINGS: [&str; 10] = [
    "by the river",
    "near the market",
    "under the castle",
    "on the harbour",
    "in the old town",
    "by the park",
    "above the bakery",
    "at the lighthouse",
    "in the vineyard",
    "on the square",
];
const STREETS: [&str; 8] = [
    "Quay Street",
    "Rua das Flores",
    "Harbour Road",
    "Mill Lane",
    "Rue du Pont",
    "Canal Walk",
    "Hill Street",
    "Via Roma",
];
const CITIES: [&str; 8] = ["Porto", "Lisbon", "Bruges", "Galway", "Lyon", "Bologna", "Utrecht", "Tallinn"];
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
const COMMENTS: [&str; 8] = [
    "Lovely place, would stay again.",
    "Clean and quiet; the bed was a little hard.",
    "Great location, tiny kitchen.",
    "The host was very helpful.",
    "Noisy at night, but the view made up for it.",
    "Exactly as described.",
    "Cold shower two mornings out of three.",
    "Perfect for a weekend.",
];
const REPLIES: [&str; 4] = [
    "Thank you for staying with us!",
    "Sorry about that — it is fixed now.",
    "Glad you enjoyed it; come back soon.",
    "Thanks for the honest review.",
];

impl Plan {
    /// The plan for `sizes`, from `seed`, with stays starting no earlier than `first_day` and
    /// ending no later than `last_day` (the booking horizon).
    pub fn new(seed: u64, sizes: Sizes, first_day: NaiveDate, last_day: NaiveDate) -> anyhow::Result<Self> {
        let horizon = u64::try_from((last_day - first_day).num_days()).unwrap_or(0);
        ensure!(horizon >= 1, "--from {first_day} leaves no night before the booking horizon ends on {last_day}");
        ensure!(sizes.hosts >= 1, "--hosts must be at least 1");
        ensure!(sizes.guests >= 1, "--guests must be at least 1");
        ensure!(sizes.rooms >= 1 || sizes.reservations == 0, "--rooms must be at least 1 to make reservations");
        let mut rng = StdRng::seed_from_u64(seed);
        let hosts = (1..=sizes.hosts).map(|n| format!("host-{n}")).collect();
        let guests = (1..=sizes.guests).map(|n| format!("guest-{n}")).collect();
        let rooms: Vec<RoomPlan> = (0..sizes.rooms).map(|index| room(&mut rng, index, sizes.hosts)).collect();

        // Each room's calendar: the next night free, so stays within a room never overlap.
        let mut next_free: Vec<u64> = (0..rooms.len()).map(|_| rng.gen_range(0..14)).collect();
        let mut reservations = Vec::with_capacity(sizes.reservations);
        for card in cards(&mut rng, sizes.reservations) {
            let nights = rng.gen_range(1..=7u64);
            let first_choice = rng.gen_range(0..rooms.len());
            // The chosen room, or the next one with room in its calendar for the stay.
            let room = (0..rooms.len())
                .map(|step| (first_choice + step) % rooms.len())
                .find(|&r| next_free[r] + nights <= horizon);
            let Some(room) = room else {
                anyhow::bail!(
                    "{} reservations do not fit into {} rooms between {first_day} and the booking horizon ({last_day}): ask for more --rooms",
                    sizes.reservations,
                    rooms.len()
                );
            };
            let start = next_free[room];
            next_free[room] = start + nights + rng.gen_range(0..5);
            let day = |offset: u64| {
                first_day
                    .checked_add_days(Days::new(offset))
                    .ok_or_else(|| anyhow::anyhow!("{first_day} plus {offset} days is past the calendar's end"))
            };
            reservations.push(ReservationPlan {
                room,
                guest: rng.gen_range(0..sizes.guests),
                check_in: day(start)?,
                check_out: day(start + nights)?,
                guests: rng.gen_range(1..=rooms[room].capacity),
                card,
                fate: Fate::Keep,
            });
        }
        decide_fates(&mut rng, &mut reservations);
        Ok(Self { hosts, guests, rooms, reservations })
    }
}

/// A room of host `index % hosts`, named, placed and priced at random.
fn room(rng: &mut StdRng, index: usize, hosts: usize) -> RoomPlan {
    let pick = |rng: &mut StdRng, words: &[&'static str]| words[rng.gen_range(0..words.len())];
    let name = format!("{} {} {}", pick(rng, &ADJECTIVES), pick(rng, &PLACES), pick(rng, &SETTINGS));
    let city = pick(rng, &CITIES);
    let address = format!("{} {}, {city}", rng.gen_range(1..200), pick(rng, &STREETS));
    let capacity = rng.gen_range(1..=6);
    RoomPlan {
        host: index % hosts,
        description: format!("Sleeps {capacity}. {name}, a short walk from the centre of {city}."),
        name,
        address,
        // 35.00 to 400.00 in whole units: prices people recognise.
        nightly_price_minor: rng.gen_range(35..=400) * 100,
        currency: CURRENCIES[index % CURRENCIES.len()],
        capacity,
    }
}

/// `count` cards: each kind once (when there are enough), the rest by weight, in random order.
fn cards(rng: &mut StdRng, count: usize) -> Vec<Card> {
    let total: u32 = Card::ALL.iter().map(|card| card.weight()).sum();
    let mut cards: Vec<Card> = Card::ALL.iter().copied().take(count).collect();
    while cards.len() < count {
        let mut roll = rng.gen_range(0..total);
        let card = Card::ALL
            .iter()
            .copied()
            .find(|card| match roll.checked_sub(card.weight()) {
                Some(rest) => {
                    roll = rest;
                    false
                }
                None => true,
            })
            .unwrap_or(Card::Visa);
        cards.push(card);
    }
    cards.shuffle(rng);
    cards
}

/// Cancellations and reviews: about one slow-card reservation in two cancelled while pending, one
/// approved in seven cancelled once confirmed, and half the rest reviewed (half of those replied
/// to). The first of each kind is forced, so a plan with enough reservations always shows them.
fn decide_fates(rng: &mut StdRng, reservations: &mut [ReservationPlan]) {
    let mut forced_pending = false;
    let mut forced_confirmed = false;
    let mut forced_review = false;
    for reservation in reservations.iter_mut() {
        let rating = rng.gen_range(1..=5u8);
        let comment = COMMENTS[rng.gen_range(0..COMMENTS.len())].to_owned();
        let reply = REPLIES[rng.gen_range(0..REPLIES.len())].to_owned();
        let roll = rng.gen_range(0..100u32);
        reservation.fate = match reservation.card {
            Card::Slow if !forced_pending || roll < 50 => {
                forced_pending = true;
                Fate::CancelWhilePending
            }
            card if card.approves() && (!forced_confirmed || roll < 15) => {
                forced_confirmed = true;
                Fate::CancelOnceConfirmed
            }
            card if card.approves() && (!forced_review || roll < 60) => {
                let reply = (!forced_review || roll % 2 == 0).then_some(reply);
                forced_review = true;
                Fate::Review { rating, comment, reply }
            }
            _ => Fate::Keep,
        };
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn sizes(rooms: usize, reservations: usize) -> Sizes {
        Sizes { hosts: 3, guests: 10, rooms, reservations }
    }

    fn first_day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2030, 1, 1).expect("a date")
    }

    fn last_day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2031, 12, 1).expect("a date")
    }

    #[test]
    fn the_same_seed_makes_the_same_plan_and_another_seed_another() {
        let plan = |seed| Plan::new(seed, sizes(8, 80), first_day(), last_day()).expect("a plan");
        assert_eq!(plan(7), plan(7));
        assert_ne!(plan(7), plan(8));
    }

    #[test]
    fn no_two_stays_of_a_room_share_a_night_and_every_stay_fits_the_room() {
        let plan = Plan::new(3, sizes(5, 400), first_day(), last_day()).expect("a plan");
        for (index, room) in plan.rooms.iter().enumerate() {
            let mut nights = BTreeSet::new();
            for stay in plan.reservations.iter().filter(|r| r.room == index) {
                assert!(stay.check_in < stay.check_out && stay.check_in >= first_day());
                assert!(stay.check_out <= last_day());
                assert!((1..=room.capacity).contains(&stay.guests));
                for night in stay.check_in.iter_days().take_while(|day| *day < stay.check_out) {
                    assert!(nights.insert(night), "room {index}: {night} is booked twice");
                }
            }
        }
    }

    #[test]
    fn a_plan_with_enough_reservations_shows_every_card_cancellation_and_a_replied_review() {
        for seed in 0..20 {
            let plan = Plan::new(seed, sizes(4, 12), first_day(), last_day()).expect("a plan");
            let cards: BTreeSet<Card> = plan.reservations.iter().map(|r| r.card).collect();
            assert_eq!(cards.len(), Card::ALL.len(), "seed {seed}: {cards:?}");
            let fates = |wanted: fn(&Fate) -> bool| plan.reservations.iter().filter(|r| wanted(&r.fate)).count();
            assert!(fates(|f| *f == Fate::CancelWhilePending) >= 1, "seed {seed}");
            assert!(fates(|f| *f == Fate::CancelOnceConfirmed) >= 1, "seed {seed}");
            assert!(fates(|f| matches!(f, Fate::Review { reply: Some(_), .. })) >= 1, "seed {seed}");
        }
    }

    #[test]
    fn only_approved_reservations_are_cancelled_once_confirmed_or_reviewed() {
        let plan = Plan::new(11, sizes(10, 300), first_day(), last_day()).expect("a plan");
        for reservation in &plan.reservations {
            match reservation.fate {
                Fate::CancelOnceConfirmed | Fate::Review { .. } => assert!(reservation.card.approves()),
                Fate::CancelWhilePending => assert_eq!(reservation.card, Card::Slow),
                Fate::Keep => {}
            }
        }
    }

    #[test]
    fn more_stays_than_the_rooms_can_hold_are_refused_before_anything_is_sent() {
        let error = Plan::new(1, sizes(1, 1_000), first_day(), last_day()).expect_err("too many for one room");
        assert!(error.to_string().contains("--rooms"), "{error}");
        assert!(Plan::new(1, sizes(0, 5), first_day(), last_day()).is_err());
        assert!(Plan::new(1, Sizes { hosts: 0, ..sizes(1, 1) }, first_day(), last_day()).is_err());
        assert!(Plan::new(1, sizes(1, 1), last_day(), last_day()).is_err(), "no night left");
    }
}
