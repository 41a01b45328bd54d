//! `Tally`: the smallest aggregate that exercises the event store — it counts.
//!
//! Its event `Added` once had another shape (`{"Added": {"n": 3}}`, version 0.1); the upcaster
//! below lifts such stored events to version 1.0, as a real schema change would need.

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stay_store::NewEvent;

/// Counts what was added to it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// The sum so far.
    pub total: i64,
    /// How many additions.
    pub additions: u64,
}

/// Adds to a tally.
#[derive(Debug, Clone, PartialEq)]
pub enum TallyCommand {
    /// Add `amount` (must not be zero).
    Add(i64),
    /// Add every amount, one event each.
    AddAll(Vec<i64>),
}

/// Something was added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TallyEvent {
    /// `amount` was added.
    Added {
        /// The amount.
        amount: i64,
    },
}

impl DomainEvent for TallyEvent {
    fn event_type(&self) -> String {
        "Added".to_owned()
    }
    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// The tally refuses to add nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TallyError {
    /// Adding zero changes nothing and is refused.
    #[error("nothing to add")]
    NothingToAdd,
}

impl Aggregate for Tally {
    const TYPE: &'static str = "Tally";
    type Command = TallyCommand;
    type Event = TallyEvent;
    type Error = TallyError;
    type Services = ();

    async fn handle(&mut self, command: TallyCommand, _: &(), sink: &EventSink<Self>) -> Result<(), TallyError> {
        let amounts = match command {
            TallyCommand::Add(amount) => vec![amount],
            TallyCommand::AddAll(amounts) => amounts,
        };
        if amounts.contains(&0) {
            return Err(TallyError::NothingToAdd);
        }
        for amount in amounts {
            sink.write(TallyEvent::Added { amount }, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: TallyEvent) {
        match event {
            TallyEvent::Added { amount } => {
                self.total += amount;
                self.additions += 1;
            }
        }
    }
}

/// Lifts `Added` 0.1 (`{"Added": {"n": N}}`) to 1.0 (`{"Added": {"amount": N}}`).
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    fn lift(payload: Value) -> Value {
        let n = payload.pointer("/Added/n").cloned().unwrap_or(Value::Null);
        json!({ "Added": { "amount": n } })
    }
    vec![Box::new(SemanticVersionEventUpcaster::new("Added", "1.0", Box::new(lift)))]
}

/// A Tally's `Added` event as the store takes it.
pub fn added(amount: i64) -> NewEvent {
    NewEvent::from_domain(&TallyEvent::Added { amount }).expect("serialise")
}
