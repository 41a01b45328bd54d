//! What the black-box tests send most: a day counted from today, and a room to register.

use chrono::{Days, NaiveDate, Utc};
use serde_json::{json, Value};

/// The day `offset` days from today (UTC).
pub fn day(offset: u64) -> NaiveDate {
    Utc::now().date_naive().checked_add_days(Days::new(offset)).expect("a date within chrono's range")
}

/// A room a host can register: two guests, 120.00 EUR a night.
pub fn room_body() -> Value {
    json!({
        "name": "Loft by the river",
        "description": "Quiet, bright, two windows.",
        "address": "1 Quay Street, Porto",
        "nightly_price": {"amount_minor": 12000, "currency": "EUR"},
        "capacity": 2
    })
}
