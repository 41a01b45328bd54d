//! A guest's star rating of a room.

bounded_number!(
    /// A rating: 1 to 5 stars.
    Rating(u8) { field: "rating", min: 1, max: 5 }
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::ValidationError;

    #[test]
    fn rating_is_between_1_and_5() {
        for good in 1..=5 {
            assert!(Rating::new(good).is_ok());
        }
        for bad in [0, 6, -1] {
            assert_eq!(
                Rating::new(bad),
                Err(ValidationError::OutOfRange { field: "rating", min: 1, max: 5, actual: bad })
            );
            assert!(serde_json::from_value::<Rating>(json!(bad)).is_err());
        }
    }
}
