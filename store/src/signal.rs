//! In-process wake-ups for feed readers.

use std::sync::Arc;

use tokio::sync::watch;

use crate::position::Position;

/// Tells waiting feed readers that new events may be readable. Cheap to clone; readers subscribe
/// before they look, so no wake-up is lost between a look and a wait.
#[derive(Clone, Debug)]
pub(crate) struct FeedSignal {
    latest: Arc<watch::Sender<Position>>,
}

impl FeedSignal {
    pub(crate) fn new() -> Self {
        Self { latest: Arc::new(watch::channel(Position::START).0) }
    }

    /// Something committed at (or up to) `position`.
    pub(crate) fn advance(&self, position: Position) {
        self.latest.send_modify(|latest| *latest = position.max(*latest));
    }

    /// Something may have committed, position unknown (a notification from another process).
    pub(crate) fn poke(&self) {
        self.latest.send_modify(|_| {});
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Position> {
        self.latest.subscribe()
    }
}
