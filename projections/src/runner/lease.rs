//! One active worker per model across processes: a lease in `projection_leases`.
//!
//! The worker that holds a model's lease renews it every round; the others stand by. A lease that
//! is not renewed lapses after its term, and a standby takes it over; a worker that stops cleanly
//! hands it back at once.

use std::time::Duration;

use chrono::Utc;
use stay_store::{SqlDatabase, StoreError};

/// This process's claim on one model's worker.
#[derive(Debug)]
pub(crate) struct Lease {
    /// The model.
    name: &'static str,
    /// This process's worker.
    owner: String,
    /// How long the lease lasts without renewal.
    term: Duration,
    /// Whether the last attempt held it, to tell a take-over from a renewal.
    held: bool,
}

impl Lease {
    /// A claim on `name`'s lease for `owner`, not yet taken.
    pub(crate) fn new(name: &'static str, owner: &str, term: Duration) -> Self {
        Self { name, owner: owner.to_owned(), term, held: false }
    }

    /// Takes the lease if it is free or has lapsed, renews it if this owner holds it; answers
    /// whether this owner holds it now.
    pub(crate) async fn hold(&mut self, db: &SqlDatabase) -> Result<bool, StoreError> {
        let now = Utc::now().timestamp_millis();
        let until = now + i64::try_from(self.term.as_millis()).unwrap_or(5_000);
        let held = db
            .run(
                "INSERT INTO projection_leases (name, owner, until_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms \
                 WHERE projection_leases.owner = excluded.owner OR projection_leases.until_ms < $4",
                &[self.name.into(), self.owner.as_str().into(), until.into(), now.into()],
            )
            .await?
            == 1;
        match (self.held, held) {
            (false, true) => tracing::info!(projection = self.name, owner = %self.owner, "took the projection's lease"),
            (true, false) => tracing::warn!(
                projection = self.name,
                owner = %self.owner,
                "another process took the projection's lease (it was not renewed in time); standing by"
            ),
            _ => {}
        }
        self.held = held;
        Ok(held)
    }

    /// Hands the lease back, so a standby takes over at once rather than after the term.
    pub(crate) async fn give_up(&mut self, db: &SqlDatabase) -> Result<(), StoreError> {
        // Whether or not the last attempt said so: a renewal may have committed after its answer was lost.
        db.run(
            "DELETE FROM projection_leases WHERE name = $1 AND owner = $2",
            &[self.name.into(), self.owner.as_str().into()],
        )
        .await?;
        self.held = false;
        Ok(())
    }
}

/// Who holds each model's lease, and until when (ms since the epoch), as last written.
pub(crate) async fn holders(db: &SqlDatabase) -> Result<Vec<(String, String, i64)>, StoreError> {
    let rows = db.rows("SELECT name, owner, until_ms FROM projection_leases", &[]).await?;
    rows.iter().map(|row| Ok((row.text("name")?, row.text("owner")?, row.int("until_ms")?))).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::watch;

    use super::*;
    use crate::runner::log_recorder::LogRecorder;
    use crate::runner::testing::Fixture;
    use crate::runner::RunnerConfig;

    const TERM: Duration = Duration::from_millis(300);

    async fn holder(f: &Fixture) -> Option<(String, i64)> {
        let rows =
            f.db.rows("SELECT owner, until_ms FROM projection_leases WHERE name = 'probe'", &[]).await.expect("rows");
        rows.first().map(|row| (row.text("owner").expect("owner"), row.int("until_ms").expect("until_ms")))
    }

    #[tokio::test]
    async fn one_owner_holds_the_lease_and_renews_it_while_another_is_refused() {
        let f = Fixture::new().await;
        let mut first = Lease::new("probe", "first", TERM);
        let mut second = Lease::new("probe", "second", TERM);

        assert!(first.hold(&f.db).await.expect("hold"), "a free lease is taken");
        let (owner, until) = holder(&f).await.expect("a lease row");
        assert_eq!(owner, "first");
        assert!(!second.hold(&f.db).await.expect("hold"), "a held lease is refused to another");

        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(first.hold(&f.db).await.expect("renew"), "its holder renews it");
        let (owner, renewed) = holder(&f).await.expect("a lease row");
        assert_eq!(owner, "first");
        assert!(renewed > until, "the renewal moves the end: {renewed} after {until}");
    }

    #[tokio::test]
    async fn a_lapsed_lease_goes_to_the_standby_and_its_old_holder_stands_by() {
        let f = Fixture::new().await;
        let mut first = Lease::new("probe", "first", TERM);
        let mut second = Lease::new("probe", "second", TERM);
        assert!(first.hold(&f.db).await.expect("hold"));

        tokio::time::sleep(TERM + Duration::from_millis(50)).await;

        assert!(second.hold(&f.db).await.expect("take over"), "a lapsed lease is taken over");
        assert_eq!(holder(&f).await.map(|(owner, _)| owner).as_deref(), Some("second"));
        assert!(!first.hold(&f.db).await.expect("hold"), "the old holder is refused now");
    }

    #[tokio::test]
    async fn a_lease_given_up_is_free_at_once_and_only_its_holder_can_give_it_up() {
        let f = Fixture::new().await;
        let mut first = Lease::new("probe", "first", Duration::from_secs(60));
        let mut second = Lease::new("probe", "second", Duration::from_secs(60));
        assert!(first.hold(&f.db).await.expect("hold"));

        second.give_up(&f.db).await.expect("give up what it does not hold");
        assert!(!second.hold(&f.db).await.expect("hold"), "still held by the first");

        first.give_up(&f.db).await.expect("give up");
        assert!(second.hold(&f.db).await.expect("hold"), "free at once, long before the term");
    }

    #[tokio::test]
    async fn a_projector_that_stops_hands_its_lease_back() {
        let f = Fixture::new().await;
        let projector =
            Arc::new(f.projector(RunnerConfig { lease: Duration::from_secs(60), ..RunnerConfig::default() }));
        let (stop, stopped) = watch::channel(false);
        let running = tokio::spawn(projector.run(stopped));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while holder(&f).await.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the projector never took the lease");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        stop.send(true).expect("stop");
        running.await.expect("the projector stops");

        assert_eq!(holder(&f).await, None, "the lease is handed back rather than left to lapse");
        let mut standby = Lease::new("probe", "standby", Duration::from_secs(60));
        assert!(standby.hold(&f.db).await.expect("hold"), "a standby takes over at once");
    }

    #[tokio::test]
    async fn taking_a_lease_is_logged_once_and_renewing_it_is_not() {
        let logs = LogRecorder::default();
        let _recording = tracing::subscriber::set_default(logs.clone());
        // Another test thread may have cached these call sites as unwanted before this subscriber existed.
        tracing::callsite::rebuild_interest_cache();
        let f = Fixture::new().await;
        let mut lease = Lease::new("probe", "first", TERM);

        for _ in 0..3 {
            assert!(lease.hold(&f.db).await.expect("hold"));
        }

        let lines: Vec<_> = logs
            .events()
            .into_iter()
            .filter(|e| e.target.starts_with("stay_projections"))
            .map(|e| (e.level, e.field("message").map(str::to_owned), e.field("owner").map(str::to_owned)))
            .collect();
        let took = (tracing::Level::INFO, Some("took the projection's lease".to_owned()), Some("first".to_owned()));
        assert_eq!(lines, vec![took]);
    }
}
