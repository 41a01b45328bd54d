//! Hearing of checkpoint moves made by other processes (PostgreSQL).
//!
//! A query that waits for `min_position` waits for a read model's checkpoint. The projector of the
//! same process tells it when it commits; a projector in another process (the roles split across
//! processes) could not, so the waiter polled. On PostgreSQL every checkpoint move also queues a
//! `NOTIFY` on [`CHECKPOINT_CHANNEL`] with the checkpoint's name, in the moving transaction (see
//! `checkpoint.rs`), so it is sent exactly when the move commits. [`CheckpointMoves`] listens on
//! one connection per process and wakes whoever watches a name.
//!
//! A notification can still be missed (the listening connection drops and is made again): every
//! watcher is woken then, and watchers keep a slow fallback look of their own. SQLite has no such
//! channel; there a process hears only its own projector.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checkpoint::CHECKPOINT_CHANNEL;
use crate::database::SqlDatabase;

/// Wakes watchers of checkpoints when any process moves one. Cheap to clone; the listening task
/// stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct CheckpointMoves {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    watchers: Arc<Watchers>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Who watches which names: a counter per name prefix, moved on every move of a matching name.
#[derive(Debug, Default)]
struct Watchers(Mutex<Vec<(String, watch::Sender<u64>)>>);

impl Watchers {
    /// Wakes the watchers of `name` (of every name when `None`: notifications may have been missed).
    fn moved(&self, name: Option<&str>) {
        let watchers = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (prefix, sender) in watchers.iter() {
            if name.is_none_or(|name| name.starts_with(prefix.as_str())) {
                sender.send_modify(|moves| *moves = moves.wrapping_add(1));
            }
        }
    }

    fn watch(&self, prefix: &str) -> watch::Receiver<u64> {
        let mut watchers = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, sender)) = watchers.iter().find(|(p, _)| p == prefix) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(0);
        watchers.push((prefix.to_owned(), sender));
        receiver
    }
}

impl CheckpointMoves {
    /// Listens for checkpoint moves in `db`: `None` where the database cannot announce them (SQLite).
    /// Must be called within a Tokio runtime.
    pub fn listen(db: &SqlDatabase) -> Option<Self> {
        let SqlDatabase::Postgres(pool) = db else { return None };
        let watchers = Arc::new(Watchers::default());
        let task = tokio::spawn(listen(pool.clone(), Arc::clone(&watchers)));
        Some(Self { inner: Arc::new(Inner { watchers, task }) })
    }

    /// A counter that moves whenever a checkpoint whose name starts with `prefix` moves, in any
    /// process (and whenever moves may have been missed).
    pub fn watch(&self, prefix: &str) -> watch::Receiver<u64> {
        self.inner.watchers.watch(prefix)
    }
}

async fn listen(pool: PgPool, watchers: Arc<Watchers>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => {
                tracing::debug!(error = %err, "cannot listen for checkpoint moves; waiters poll meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(err) = listener.listen(CHECKPOINT_CHANNEL).await {
            tracing::debug!(error = %err, "cannot listen for checkpoint moves; waiters poll meanwhile");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Moves made before the LISTEN took effect were not announced to us.
        watchers.moved(None);
        loop {
            match listener.recv().await {
                Ok(notification) => watchers.moved(Some(notification.payload())),
                Err(sqlx::Error::PoolClosed) => return,
                Err(err) => {
                    tracing::debug!(error = %err, "checkpoint notifications interrupted; listening again");
                    watchers.moved(None);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_wakes_the_watchers_of_its_prefix_only() {
        let watchers = Watchers::default();
        let mut rooms = watchers.watch("projection:roomview:");
        let sagas = watchers.watch("projection:sagas:");

        watchers.moved(Some("projection:roomview:v2"));

        assert!(rooms.has_changed().expect("open"));
        assert!(!sagas.has_changed().expect("open"));
        rooms.borrow_and_update();

        watchers.moved(None);

        assert!(rooms.has_changed().expect("open"), "a possible miss wakes everyone");
        assert!(sagas.has_changed().expect("open"));
    }

    #[test]
    fn watchers_of_one_prefix_share_a_counter() {
        let watchers = Watchers::default();
        let first = watchers.watch("a:");
        let second = watchers.watch("a:");

        watchers.moved(Some("a:v1"));

        assert_eq!(*first.borrow(), 1);
        assert_eq!(*second.borrow(), 1);
        assert_eq!(watchers.0.lock().expect("lock").len(), 1);
    }
}
