//! How many guests a room sleeps.

bounded_number!(
    /// A room's capacity: 1 to 16 guests.
    Capacity(u8) { field: "capacity", min: 1, max: 16 }
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::ValidationError;

    #[test]
    fn capacity_is_between_1_and_16() {
        assert_eq!(Capacity::new(1).map(|c| c.get()), Ok(1));
        assert_eq!(Capacity::new(16).map(|c| c.get()), Ok(16));
        for bad in [0, 17, -1, 256, i64::MAX] {
            assert_eq!(
                Capacity::new(bad),
                Err(ValidationError::OutOfRange { field: "capacity", min: 1, max: 16, actual: bad })
            );
            assert!(serde_json::from_value::<Capacity>(json!(bad)).is_err());
        }
        assert!(serde_json::from_value::<Capacity>(json!(2.5)).is_err());
        assert!(serde_json::from_value::<Capacity>(json!("2")).is_err());
        assert_eq!(serde_json::to_value(Capacity::new(4).expect("valid")).expect("ok"), json!(4));
    }
}
