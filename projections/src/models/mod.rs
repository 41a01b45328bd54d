//! The read models of Stay.

pub mod correlations;
pub mod notifications;
mod registrations;
pub mod reservations;
pub mod reviews;
pub mod roomview;
pub mod sagas;

use std::sync::Arc;

use crate::model::ReadModel;

/// Every read model, in the order the admin list shows them.
pub fn all() -> Vec<Arc<dyn ReadModel>> {
    vec![
        Arc::new(roomview::RoomView),
        Arc::new(reservations::Reservations),
        Arc::new(notifications::Notifications),
        Arc::new(reviews::Reviews),
        Arc::new(sagas::Sagas),
        Arc::new(correlations::Correlations),
    ]
}
