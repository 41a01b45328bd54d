//! The baseline app's aggregate: a room registered once, written as a minimal cqrs-es 0.5 app
//! writes one — one command, one event, `handle` deciding, `apply` folding.
//!
//! It carries the same fields as Stay's `POST /v1/rooms`, so that both apps read, store and
//! answer payloads of the same size.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// A room of the baseline app: all it knows is whether it is registered.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DemoRoom {
    registered: bool,
}

/// What a room is registered with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    /// The room's name.
    pub name: String,
    /// Where it is.
    pub address: String,
    /// Its price per night.
    pub nightly_price: Price,
    /// How many guests it sleeps.
    pub capacity: u32,
}

/// An amount of money in minor units (cents) and its currency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// What can be asked of a room.
#[derive(Debug)]
pub enum DemoRoomCommand {
    /// Register a new room.
    Register(Listing),
}

/// What happened to a room.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DemoRoomEvent {
    /// The room was registered.
    Registered(Listing),
}

impl DomainEvent for DemoRoomEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Registered(_) => "DemoRoomRegistered".to_owned(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// Why a room refused a command.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DemoRoomError {
    /// It is registered already.
    #[error("the room is already registered")]
    AlreadyRegistered,
}

impl Aggregate for DemoRoom {
    const TYPE: &'static str = "DemoRoom";
    type Command = DemoRoomCommand;
    type Event = DemoRoomEvent;
    type Error = DemoRoomError;
    type Services = ();

    async fn handle(&mut self, command: DemoRoomCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DemoRoomError> {
        match command {
            DemoRoomCommand::Register(listing) => {
                if self.registered {
                    return Err(DemoRoomError::AlreadyRegistered);
                }
                sink.write(DemoRoomEvent::Registered(listing), self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: DemoRoomEvent) {
        match event {
            DemoRoomEvent::Registered(_) => self.registered = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn listing() -> Listing {
        Listing {
            name: "Sea view".to_owned(),
            address: "1 Harbour Lane".to_owned(),
            nightly_price: Price { amount_minor: 9_900, currency: "EUR".to_owned() },
            capacity: 2,
        }
    }

    #[test]
    fn a_new_room_is_registered() {
        TestFramework::<DemoRoom>::with(())
            .given_no_previous_events()
            .when(DemoRoomCommand::Register(listing()))
            .then_expect_events(vec![DemoRoomEvent::Registered(listing())]);
    }

    #[test]
    fn a_registered_room_is_not_registered_again() {
        TestFramework::<DemoRoom>::with(())
            .given(vec![DemoRoomEvent::Registered(listing())])
            .when(DemoRoomCommand::Register(listing()))
            .then_expect_error(DemoRoomError::AlreadyRegistered);
    }

    #[test]
    fn the_stored_event_type_and_version_are_pinned() {
        let event = DemoRoomEvent::Registered(listing());
        assert_eq!((event.event_type(), event.event_version()), ("DemoRoomRegistered".to_owned(), "1".to_owned()));
    }
}
