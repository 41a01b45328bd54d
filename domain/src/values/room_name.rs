//! The name of a room as guests see it.

bounded_text!(
    /// A room's name: 1 to 100 characters after trimming.
    RoomName { field: "name", min: 1, max: 100 }
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::ValidationError;

    #[test]
    fn room_name_is_trimmed() {
        let name = RoomName::new("  Sea view loft \n").expect("valid name");
        assert_eq!(name.as_str(), "Sea view loft");
        assert_eq!(serde_json::to_value(&name).expect("serializes"), json!("Sea view loft"));
    }

    #[test]
    fn room_name_refuses_empty_or_blank() {
        for blank in ["", "   ", "\t\n"] {
            assert_eq!(RoomName::new(blank), Err(ValidationError::Empty { field: "name" }));
            assert!(serde_json::from_value::<RoomName>(json!(blank)).is_err());
        }
    }

    #[test]
    fn room_name_counts_characters_not_bytes() {
        // 100 two-byte characters are 200 bytes but a valid name.
        assert!(RoomName::new("é".repeat(100)).is_ok());
        assert_eq!(
            RoomName::new("é".repeat(101)),
            Err(ValidationError::TooLong { field: "name", max: 100, actual: 101 })
        );
        assert!(serde_json::from_value::<RoomName>(json!("x".repeat(101))).is_err());
    }
}
