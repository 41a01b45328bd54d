//! A `tracing` subscriber for tests that records spans and log events with their fields, so a test
//! can say what a person reading the logs would see.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// A span as recorded: its name and fields (as text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeenSpan {
    pub(crate) name: String,
    pub(crate) fields: BTreeMap<String, String>,
}

/// A log event as recorded: its level, target, fields (`message` among them) and the span it was in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeenEvent {
    pub(crate) level: Level,
    pub(crate) target: String,
    pub(crate) fields: BTreeMap<String, String>,
    pub(crate) span: Option<SeenSpan>,
}

impl SeenEvent {
    /// The field `name`, if the event has it.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Debug, Default)]
struct Book {
    spans: HashMap<u64, SeenSpan>,
    /// The spans entered on the recording thread, innermost last.
    entered: Vec<u64>,
    events: Vec<SeenEvent>,
    next_id: u64,
}

/// Records everything on the thread it is set as the default subscriber for.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogRecorder {
    book: Arc<Mutex<Book>>,
}

impl LogRecorder {
    /// The spans called `name`, as they stand now (fields recorded later included).
    pub(crate) fn spans(&self, name: &str) -> Vec<SeenSpan> {
        let book = self.book.lock().expect("the recorder's lock");
        let mut ids: Vec<_> = book.spans.iter().filter(|(_, s)| s.name == name).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.iter().filter_map(|id| book.spans.get(id).cloned()).collect()
    }

    /// Every event so far, oldest first.
    pub(crate) fn events(&self) -> Vec<SeenEvent> {
        self.book.lock().expect("the recorder's lock").events.clone()
    }
}

/// Writes fields into a map as text.
struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for LogRecorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut book = self.book.lock().expect("the recorder's lock");
        book.next_id += 1;
        let id = book.next_id;
        let mut fields = BTreeMap::new();
        span.record(&mut Fields(&mut fields));
        book.spans.insert(id, SeenSpan { name: span.metadata().name().to_owned(), fields });
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut book = self.book.lock().expect("the recorder's lock");
        if let Some(seen) = book.spans.get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut book = self.book.lock().expect("the recorder's lock");
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let span = book.entered.last().and_then(|id| book.spans.get(id)).cloned();
        let metadata = event.metadata();
        book.events.push(SeenEvent { level: *metadata.level(), target: metadata.target().to_owned(), fields, span });
    }

    fn enter(&self, span: &Id) {
        self.book.lock().expect("the recorder's lock").entered.push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut book = self.book.lock().expect("the recorder's lock");
        if let Some(at) = book.entered.iter().rposition(|id| *id == span.into_u64()) {
            book.entered.remove(at);
        }
    }
}
