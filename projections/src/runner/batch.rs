//! Applying one batch of the feed to one version of a model: its rows and its checkpoint in one
//! transaction.
//!
//! A batch is read after the version's checkpoint (events are upcast on read) and first applied
//! straight through, all its events handed to the model at once so that it can fold them per row
//! and write each row once. Only if an event turns out to be poison is the transaction rolled back
//! and the batch applied again carefully, each event in a savepoint, so that one event can be kept
//! as a dead letter without losing the others: poison is rare, savepoints cost. A refused event is
//! tried once here; it is tried again later, with backoff, by `dead_letters`, so that it holds up
//! neither the batch nor other aggregates. Events an operator skipped are passed over. The checkpoint moves by
//! compare-and-set from the position the batch was read after, so when two workers race (a lease
//! that changed hands mid-batch) only one applies it. Effects are exactly-once although delivery
//! is at-least-once.

use stay_store::{Position, RecordedEvent, SqlTransaction, StoreError};
use tracing::field::{display, Empty};
use tracing::{Instrument, Span};

use super::dead_letters::{aggregate_of, blocked, park, skipped, Parked, Reason};
use super::versions::checkpoint_name;
use super::Projector;
use crate::model::{ApplyError, ReadModel};

/// What one batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Events read from the feed (0 when another worker had applied them first).
    pub read: usize,
    /// The checkpoint after the batch.
    pub at: Position,
}

/// A batch read from the feed for one version of a model.
struct Batch<'a> {
    model: &'a dyn ReadModel,
    v: i64,
    /// The version's checkpoint.
    checkpoint: String,
    /// The checkpoint the batch was read after.
    after: Position,
    /// The position of its last event, the checkpoint after it.
    last: Position,
    events: Vec<RecordedEvent>,
}

/// How a batch is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// The wanted events of aggregates not held behind a parked event, handed to the model at
    /// once ([`ReadModel::apply_batch`]); a poison event rolls the whole batch back.
    Straight,
    /// Each event in a savepoint, tried once, kept as a dead letter if refused.
    Careful,
}

/// How one pass over a batch ended.
enum Applied<'a> {
    /// Rows and checkpoint committed, with these events parked.
    Committed(Vec<Parked<'a>>),
    /// A straight pass met a poison event and rolled back: apply the batch carefully.
    Poisoned,
    /// Another worker had moved the checkpoint (a lease changed hands): rolled back, nothing applied.
    Superseded,
}

impl Projector {
    /// Applies the next batch to version `v` of `model`; answers how many events it read and the
    /// checkpoint after. The batch runs in a `projection_batch` span with the projection, the
    /// version, the position it starts after and, once known, the position it reaches and the
    /// number of events, so its log lines (a parked event) can be found by any of them.
    pub async fn step(&self, model: &dyn ReadModel, v: i64) -> Result<Step, StoreError> {
        let span = tracing::info_span!(
            "projection_batch",
            projection = model.name(),
            version = v,
            after = Empty,
            at = Empty,
            events = Empty
        );
        self.step_in_span(model, v, &span).instrument(span.clone()).await
    }

    /// The step, recording on `span` (the batch's own, not `Span::current()`, which not every
    /// subscriber tracks) what it learns on the way.
    async fn step_in_span(&self, model: &dyn ReadModel, v: i64, span: &Span) -> Result<Step, StoreError> {
        let checkpoint = checkpoint_name(model.name(), v);
        let after = self.db.checkpoint(&checkpoint).await?;
        span.record("after", display(after));
        let events = self.store.read_feed(after, self.config.batch).await?;
        let Some(last) = events.last().map(|e| e.position) else { return Ok(reached(span, 0, after)) };
        let batch = Batch { model, v, checkpoint, after, last, events };
        let applied = match self.apply_batch(&batch, Pass::Straight).await? {
            Applied::Poisoned => self.apply_batch(&batch, Pass::Careful).await?,
            other => other,
        };
        let parked = match applied {
            Applied::Committed(parked) => parked,
            // A careful pass parks poison rather than answering it; either way nothing was applied.
            Applied::Poisoned | Applied::Superseded => return Ok(reached(span, 0, after)),
        };
        for event in &parked {
            event.report(model.name(), v);
        }
        let read = batch.events.len();
        metrics::counter!("stay_projection_events_total", "projection" => model.name()).increment(read as u64);
        let step = reached(span, read, last);
        tracing::debug!("batch applied");
        Ok(step)
    }

    /// One pass over a batch: apply, park, move the checkpoint, commit.
    async fn apply_batch<'a>(&self, batch: &'a Batch<'_>, pass: Pass) -> Result<Applied<'a>, StoreError> {
        let (model, v) = (batch.model, batch.v);
        let mut tx = self.db.begin().await?;
        let mut blocked = blocked(&mut tx, model.name(), v).await?;
        let skipped = skipped(&mut tx, model.name()).await?;
        let mut parked = Vec::new();
        // The straight pass hands the model every event it may apply at once, so that it can fold
        // them per row; only the careful pass goes event by event.
        let mut straight = Vec::new();
        let skips = |event: &RecordedEvent| !skipped.is_empty() && skipped.contains(&event.position.to_string());
        for event in batch.events.iter().filter(|e| model.wants(e) && !skips(e)) {
            let aggregate = aggregate_of(event);
            if blocked.contains(&aggregate) {
                let reason = Reason::HeldBehind;
                park(&mut tx, model.name(), v, event, &reason, &self.config).await?;
                parked.push(Parked { event, reason });
                continue;
            }
            if pass == Pass::Straight {
                straight.push(event);
                continue;
            }
            if let Err(error) = self.apply_in_savepoint(&mut tx, model, v, event).await? {
                let reason = Reason::Poison(error);
                park(&mut tx, model.name(), v, event, &reason, &self.config).await?;
                parked.push(Parked { event, reason });
                blocked.insert(aggregate);
            }
        }
        if !straight.is_empty() {
            match model.apply_batch(&mut tx, v, &straight).await {
                Ok(()) => {}
                Err(ApplyError::Poison(_)) => {
                    tx.rollback().await?;
                    return Ok(Applied::Poisoned);
                }
                Err(ApplyError::Store(err)) => return Err(err),
            }
        }
        match tx.save_checkpoint(&batch.checkpoint, batch.after, batch.last).await {
            Ok(()) => {
                tx.commit().await?;
                Ok(Applied::Committed(parked))
            }
            // Another worker applied this batch (a lease changed hands); read on from its checkpoint.
            Err(StoreError::Conflict) => {
                tx.rollback().await?;
                Ok(Applied::Superseded)
            }
            Err(err) => Err(err),
        }
    }

    /// Applies one event in a savepoint, once; `Ok(Err(why))` when the model refuses it. No
    /// second attempt here: the transaction holds the write lock (and, on PostgreSQL, the feed's
    /// fence), so a refused event is tried again later, with backoff, as a dead letter.
    pub(super) async fn apply_in_savepoint(
        &self,
        tx: &mut SqlTransaction,
        model: &dyn ReadModel,
        v: i64,
        event: &RecordedEvent,
    ) -> Result<Result<(), String>, StoreError> {
        tx.run("SAVEPOINT apply_event", &[]).await?;
        match model.apply(tx, v, event).await {
            Ok(()) => {
                tx.run("RELEASE SAVEPOINT apply_event", &[]).await?;
                Ok(Ok(()))
            }
            Err(ApplyError::Poison(why)) => {
                tx.run("ROLLBACK TO SAVEPOINT apply_event", &[]).await?;
                Ok(Err(why))
            }
            Err(ApplyError::Store(err)) => Err(err),
        }
    }
}

/// The step that read `read` events and reached `at`, recorded on the batch's span.
fn reached(span: &Span, read: usize, at: Position) -> Step {
    span.record("events", read);
    span.record("at", display(at));
    Step { read, at }
}

#[cfg(test)]
mod tests {
    use stay_store::Position;

    use super::*;
    use crate::runner::log_recorder::LogRecorder;
    use crate::runner::testing::{Fixture, Probe};
    use crate::runner::versions::initialize;
    use crate::runner::RunnerConfig;

    #[tokio::test]
    async fn a_batch_writes_its_rows_and_moves_the_checkpoint_together() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        let a = f.note("a", false).await;
        let b = f.note("b", false).await;
        let projector = f.projector(RunnerConfig::default());

        let step = projector.step(&model, 1).await.expect("step");

        assert_eq!(step, Step { read: 2, at: b });
        assert_eq!(f.rows(1).await, vec![(a, "a".to_owned()), (b, "b".to_owned())]);
        assert_eq!(f.db.checkpoint(&checkpoint_name("probe", 1)).await.expect("checkpoint"), b);
        assert_eq!(projector.step(&model, 1).await.expect("step"), Step { read: 0, at: b }, "caught up");
    }

    #[tokio::test]
    async fn the_straight_pass_hands_the_model_its_events_not_held_behind_at_once() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        f.note("x", true).await;
        let projector = f.projector(RunnerConfig::default());
        projector.step(&model, 1).await.expect("step");
        assert_eq!(model.take_batches(), vec![vec!["x".to_owned()]], "tried at once, then parked one by one");
        let held = f.note("x", false).await;
        let y = f.note("y", false).await;
        f.append("Other", "o", serde_json::json!({})).await;
        let z = f.note("z", false).await;

        let step = projector.step(&model, 1).await.expect("step");

        assert_eq!(step, Step { read: 4, at: z });
        assert_eq!(
            model.take_batches(),
            vec![vec!["y".to_owned(), "z".to_owned()]],
            "one call, without x (held behind its parked event) and the event the model does not want"
        );
        assert_eq!(f.rows(1).await, vec![(y, "y".to_owned()), (z, "z".to_owned())]);
        let parked = super::super::dead_letters::list(&f.db, "probe", 1).await.expect("list");
        assert_eq!(parked.last().map(|p| p.position.clone()), Some(held.to_string()), "{parked:?}");
        assert_eq!(parked.last().map(|p| p.error.as_str()), Some(super::super::dead_letters::HELD_BEHIND));
    }

    #[tokio::test]
    async fn a_database_error_in_a_batch_leaves_neither_rows_nor_checkpoint() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        f.note("a", false).await;
        f.note("b", false).await;
        model.fail_at("b");
        let projector = f.projector(RunnerConfig::default());

        let failed = projector.step(&model, 1).await;

        assert!(matches!(failed, Err(StoreError::Database(_))), "{failed:?}");
        assert!(f.rows(1).await.is_empty(), "the row of the event before the failure is rolled back");
        assert_eq!(f.db.checkpoint(&checkpoint_name("probe", 1)).await.expect("checkpoint"), Position::START);
        assert!(super::super::dead_letters::list(&f.db, "probe", 1).await.expect("list").is_empty(), "not poison");
    }

    #[tokio::test]
    async fn a_worker_whose_checkpoint_another_moved_applies_nothing_twice() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        f.note("a", false).await;
        let last = f.note("b", false).await;
        let first = f.projector(RunnerConfig::default());
        let second = f.projector(RunnerConfig::default());
        // The second worker read the batch after the start…
        let events = f.store.read_feed(Position::START, 500).await.expect("read");
        let stale = Batch {
            model: &model,
            v: 1,
            checkpoint: checkpoint_name("probe", 1),
            after: Position::START,
            last,
            events,
        };
        // …while the first applied it.
        assert_eq!(first.step(&model, 1).await.expect("step").read, 2);

        let applied = second.apply_batch(&stale, Pass::Straight).await.expect("apply");

        assert!(matches!(applied, Applied::Superseded), "the stale batch is refused");
        assert_eq!(f.rows(1).await.len(), 2, "each event applied once");
        assert_eq!(second.step(&model, 1).await.expect("step"), Step { read: 0, at: last }, "it reads on from there");
    }

    #[tokio::test]
    async fn versions_are_built_independently() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        crate::runner::versions::request_rebuild(&f.db, &model).await.expect("rebuild");
        let a = f.note("a", false).await;
        let projector = f.projector(RunnerConfig::default());

        projector.step(&model, 2).await.expect("step");

        assert_eq!(f.rows(2).await, vec![(a, "a".to_owned())]);
        assert!(f.rows(1).await.is_empty(), "v1 has its own checkpoint and rows");
        assert_eq!(f.db.checkpoint(&checkpoint_name("probe", 1)).await.expect("checkpoint"), Position::START);
    }

    #[tokio::test]
    async fn a_batch_has_a_span_with_its_positions_and_a_parked_event_is_logged_in_it_with_its_ids() {
        let logs = LogRecorder::default();
        let _recording = tracing::subscriber::set_default(logs.clone());
        // Another test thread may have cached these call sites as unwanted before this subscriber existed.
        tracing::callsite::rebuild_interest_cache();
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        f.note("a", false).await;
        let poison = f.note("b", true).await;
        let projector = f.projector(RunnerConfig::default());

        projector.step(&model, 1).await.expect("step");

        let spans = logs.spans("projection_batch");
        assert_eq!(spans.len(), 1, "{spans:?}");
        let fields: Vec<(&str, &str)> = spans[0].fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let at = poison.to_string();
        let expected =
            [("after", "0"), ("at", at.as_str()), ("events", "2"), ("projection", "probe"), ("version", "1")];
        assert_eq!(fields, expected);
        let parked: Vec<_> =
            logs.events().into_iter().filter(|e| e.field("message").is_some_and(|m| m.contains("parked"))).collect();
        assert_eq!(parked.len(), 1, "{parked:?}");
        let event = &parked[0];
        assert_eq!(event.level, tracing::Level::WARN);
        assert_eq!(
            event.span.as_ref().map(|s| s.name.as_str()),
            Some("projection_batch"),
            "logged inside the batch's span"
        );
        for (field, value) in [
            ("position", at.as_str()),
            ("aggregate_type", "Probe"),
            ("aggregate_id", "b"),
            ("correlation_id", "correlation-b"),
            ("error", crate::runner::testing::POISON),
        ] {
            assert_eq!(event.field(field), Some(value), "{field} in {event:?}");
        }
    }

    #[tokio::test]
    async fn a_batch_without_trouble_logs_nothing_at_info() {
        let logs = LogRecorder::default();
        let _recording = tracing::subscriber::set_default(logs.clone());
        // Another test thread may have cached these call sites as unwanted before this subscriber existed.
        tracing::callsite::rebuild_interest_cache();
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        f.note("a", false).await;
        let projector = f.projector(RunnerConfig::default());

        projector.step(&model, 1).await.expect("step");
        projector.step(&model, 1).await.expect("an empty step");

        let loud: Vec<_> = logs
            .events()
            .into_iter()
            .filter(|e| e.target.starts_with("stay_projections") && e.level <= tracing::Level::INFO)
            .collect();
        assert!(loud.is_empty(), "no line per batch at info or above: {loud:?}");
        assert_eq!(logs.spans("projection_batch").len(), 2);
    }
}
