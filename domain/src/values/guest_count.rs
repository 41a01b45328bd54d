//! How many guests a reservation is for.

bounded_number!(
    /// The number of guests of a stay: at least 1, and no more than any room can sleep (16).
    GuestCount(u8) { field: "guests", min: 1, max: 16 }
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::ValidationError;
    use crate::values::Capacity;

    #[test]
    fn guest_count_is_at_least_one() {
        assert_eq!(
            GuestCount::new(0),
            Err(ValidationError::OutOfRange { field: "guests", min: 1, max: 16, actual: 0 })
        );
        assert!(GuestCount::new(-3).is_err());
        assert!(serde_json::from_value::<GuestCount>(json!(0)).is_err());
        assert_eq!(GuestCount::new(3).map(|g| g.get()), Ok(3));
    }

    #[test]
    fn guest_count_never_exceeds_the_largest_capacity() {
        assert_eq!(GuestCount::MAX, Capacity::MAX);
        assert!(GuestCount::new(17).is_err());
        assert!(serde_json::from_value::<GuestCount>(json!(17)).is_err());
    }
}
