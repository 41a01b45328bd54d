//! Events a model could not apply, kept in `projection_dead_letters` with their error and body,
//! and what becomes of them: retried with backoff, parked, retried or skipped by an operator.
//!
//! An event the model refuses is not tried again at once: it becomes a dead letter in state
//! `retrying` with its attempts and the time of its next try ([`stay_store::Backoff`] by failure
//! count), and the batch goes on past it, so other aggregates are not held up. Its aggregate is
//! blocked for the version: its later events are kept behind it in state `held`, so they are never
//! applied out of order. The worker tries it again when its time comes; after the configured
//! attempts it is `parked` and waits for an operator.
//!
//! An operator's retry or skip is recorded on the dead letter ([`request`]) and carried out by the
//! worker that holds the model's lease, in the worker's own loop: never beside a batch of the same
//! version. Applying a released event, its followers in order and deleting their dead letters is
//! one transaction whose deletes are compare-and-set on the rows read, so a worker whose lease
//! lapsed meanwhile cannot release them twice. A skip is kept in `projection_skips`, which every
//! version reads: a rebuilt version neither applies that event nor parks it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use stay_store::{Arg, Position, RecordedEvent, Row, SqlDatabase, SqlTransaction, StoreError};

use super::versions::versions;
use super::{Projector, RunnerConfig};
use crate::model::ReadModel;

/// Why an event is kept although it was never tried: an earlier event of its aggregate is.
pub(crate) const HELD_BEHIND: &str = "held behind an earlier parked event of the same aggregate";

/// The states of a dead letter, as kept in its row.
const RETRYING: &str = "retrying";
const PARKED: &str = "parked";
const HELD: &str = "held";

/// A dead letter, as the admin routes and `stay projections` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Its feed position.
    pub position: String,
    /// Its aggregate.
    pub aggregate_type: String,
    /// Its aggregate's id.
    pub aggregate_id: String,
    /// Its type.
    pub event_type: String,
    /// Why it is kept: the model's last error, or that it is held behind an earlier one.
    pub error: String,
    /// `retrying` (tried again at `next_retry_at`), `parked` (waits for an operator) or `held`
    /// (behind an earlier dead letter of its aggregate).
    pub state: String,
    /// How often the model was asked to apply it (0 for a held event).
    pub attempts: i64,
    /// When the runner tries it again (a `retrying` one only).
    pub next_retry_at: Option<DateTime<Utc>>,
    /// When it was first kept.
    pub parked_at: DateTime<Utc>,
    /// An operator's `retry` or `skip` not yet carried out by the model's worker.
    pub request: Option<String>,
    /// The positions of its aggregate's later events held behind it, in order (empty for a held one).
    pub followers: Vec<String>,
}

impl DeadLetter {
    /// Whether it was refused by the model (an operator may retry or skip it), rather than held.
    pub fn is_refused(&self) -> bool {
        self.state != HELD
    }
}

/// Why an event was kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The model refused it: the model's error.
    Poison(String),
    /// It was not tried: an earlier event of its aggregate is a dead letter.
    HeldBehind,
}

impl Reason {
    /// The reason as the dead letter keeps it.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Reason::Poison(error) => error,
            Reason::HeldBehind => HELD_BEHIND,
        }
    }
}

/// An event a batch kept, to report once the batch has committed (a batch rolled back kept nothing).
#[derive(Debug)]
pub(crate) struct Parked<'a> {
    /// The event.
    pub(crate) event: &'a RecordedEvent,
    /// Why.
    pub(crate) reason: Reason,
}

impl Parked<'_> {
    /// Logs the kept event with what a person would search for, and counts a refused one.
    pub(crate) fn report(&self, projection: &'static str, v: i64) {
        let event = self.event;
        let correlation_id = event.metadata_field("correlation_id");
        match &self.reason {
            Reason::Poison(error) => {
                metrics::counter!("stay_projection_parked_total", "projection" => projection).increment(1);
                tracing::warn!(
                    projection,
                    version = v,
                    position = %event.position,
                    aggregate_type = %event.aggregate_type,
                    aggregate_id = %event.aggregate_id,
                    correlation_id,
                    event_type = %event.event_type,
                    %error,
                    "event parked: the read model cannot apply it (it is retried with backoff)"
                );
            }
            Reason::HeldBehind => tracing::info!(
                projection,
                version = v,
                position = %event.position,
                aggregate_type = %event.aggregate_type,
                aggregate_id = %event.aggregate_id,
                correlation_id,
                event_type = %event.event_type,
                "event parked behind an earlier parked event of its aggregate"
            ),
        }
    }
}

/// An aggregate, as `(aggregate_type, aggregate_id)`.
pub(crate) type AggregateKey = (String, String);

/// The aggregate of an event.
pub(crate) fn aggregate_of(event: &RecordedEvent) -> AggregateKey {
    (event.aggregate_type.clone(), event.aggregate_id.clone())
}

/// The aggregates with a dead letter in version `v` of `name`: their later events wait behind it.
pub(crate) async fn blocked(tx: &mut SqlTransaction, name: &str, v: i64) -> Result<HashSet<AggregateKey>, StoreError> {
    let rows = tx
        .rows(
            "SELECT DISTINCT aggregate_type, aggregate_id FROM projection_dead_letters WHERE projection = $1 AND version = $2",
            &[name.into(), v.into()],
        )
        .await?;
    rows.iter().map(|row| Ok((row.text("aggregate_type")?, row.text("aggregate_id")?))).collect()
}

/// The positions an operator skipped in `name`: no version applies them.
pub(crate) async fn skipped(tx: &mut SqlTransaction, name: &str) -> Result<HashSet<String>, StoreError> {
    let rows = tx.rows("SELECT position FROM projection_skips WHERE projection = $1", &[name.into()]).await?;
    rows.iter().map(|row| row.text("position")).collect()
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The time `wait` from now, in milliseconds since the epoch.
fn in_ms(wait: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2))
}

/// After `attempts` refusals: `retrying` with the time of the next try, or `parked` once the
/// runner has tried as often as it does.
fn after_refusals(attempts: i64, config: &RunnerConfig) -> (&'static str, Option<i64>) {
    if attempts >= i64::from(config.attempts.max(1)) {
        (PARKED, None)
    } else {
        let failures = u32::try_from(attempts).unwrap_or(u32::MAX);
        (RETRYING, Some(in_ms(config.poison_backoff.after(failures))))
    }
}

/// Keeps `event` as a dead letter of version `v` of `name`, inside the batch's transaction: a
/// refused one after its first attempt (`retrying`, or `parked` if the runner tries only once),
/// a held one behind its aggregate's earlier dead letter. An event kept before stays as it was.
pub(crate) async fn park(
    tx: &mut SqlTransaction,
    name: &str,
    v: i64,
    event: &RecordedEvent,
    reason: &Reason,
    config: &RunnerConfig,
) -> Result<(), StoreError> {
    let body = body(event, format_args!("{} {} at {}", event.aggregate_type, event.event_type, event.position))?;
    let (state, attempts, next_retry) = match reason {
        Reason::Poison(_) => {
            let (state, next) = after_refusals(1, config);
            (state, 1, next)
        }
        Reason::HeldBehind => (HELD, 0, None),
    };
    tx.run(
        "INSERT INTO projection_dead_letters \
           (projection, version, position, aggregate_type, aggregate_id, event_type, error, event, parked_at_ms, \
            state, attempts, next_retry_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
        &[
            name.into(),
            v.into(),
            event.position.to_string().into(),
            event.aggregate_type.as_str().into(),
            event.aggregate_id.as_str().into(),
            event.event_type.as_str().into(),
            reason.as_str().into(),
            body.into(),
            Arg::Int(now_ms()),
            state.into(),
            Arg::Int(attempts),
            next_retry.map_or(Arg::NullInt, Arg::Int),
        ],
    )
    .await?;
    Ok(())
}

/// The JSON body kept with a dead letter, so a person can see what was parked. A body that cannot
/// be written is an error: a dead letter without its event could be neither retried nor judged.
pub(crate) fn body(event: &impl Serialize, what: fmt::Arguments<'_>) -> Result<String, StoreError> {
    serde_json::to_string(event)
        .map_err(|err| StoreError::Decode(format!("{what} cannot be written as a dead letter's body: {err}")))
}

/// The columns every reading of a dead letter takes.
const COLUMNS: &str = "position, aggregate_type, aggregate_id, event_type, error, state, attempts, next_retry_ms, \
                       parked_at_ms, request";

/// A time in milliseconds since the epoch.
fn time_of(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// A dead letter's row, without its followers.
fn letter_of(row: &Row) -> Result<(Position, DeadLetter), StoreError> {
    let position_text = row.text("position")?;
    let position =
        position_text.parse().map_err(|err| StoreError::Decode(format!("dead letter at {position_text:?}: {err}")))?;
    let letter = DeadLetter {
        position: position_text,
        aggregate_type: row.text("aggregate_type")?,
        aggregate_id: row.text("aggregate_id")?,
        event_type: row.text("event_type")?,
        error: row.text("error")?,
        state: row.text("state")?,
        attempts: row.int("attempts")?,
        next_retry_at: row.opt_int("next_retry_ms")?.map(time_of),
        parked_at: time_of(row.int("parked_at_ms")?),
        request: row.opt_text("request")?,
        followers: Vec::new(),
    };
    Ok((position, letter))
}

/// Every dead letter of version `v` of `name`, in feed order, each refused one with the held
/// events of its aggregate behind it.
pub async fn all(db: &SqlDatabase, name: &str, v: i64) -> Result<Vec<DeadLetter>, StoreError> {
    let rows = db
        .rows(
            &format!("SELECT {COLUMNS} FROM projection_dead_letters WHERE projection = $1 AND version = $2"),
            &[name.into(), v.into()],
        )
        .await?;
    let mut letters = rows.iter().map(letter_of).collect::<Result<Vec<_>, _>>()?;
    letters.sort_by_key(|(position, _)| *position);
    // Per aggregate, the refused letter that the held ones after it wait behind.
    let mut heads: BTreeMap<AggregateKey, usize> = BTreeMap::new();
    let mut followers: Vec<(usize, String)> = Vec::new();
    for (i, (_, letter)) in letters.iter().enumerate() {
        let key = (letter.aggregate_type.clone(), letter.aggregate_id.clone());
        if letter.is_refused() {
            heads.insert(key, i);
        } else if let Some(head) = heads.get(&key) {
            followers.push((*head, letter.position.clone()));
        }
    }
    for (head, position) in followers {
        letters[head].1.followers.push(position);
    }
    Ok(letters.into_iter().map(|(_, letter)| letter).collect())
}

/// The dead letters of version `v` of `name`, in feed order (at most 100).
pub(crate) async fn list(db: &SqlDatabase, name: &str, v: i64) -> Result<Vec<DeadLetter>, StoreError> {
    let mut letters = all(db, name, v).await?;
    letters.truncate(100);
    Ok(letters)
}

/// How many events an operator skipped in `name`.
pub async fn skipped_count(db: &SqlDatabase, name: &str) -> Result<i64, StoreError> {
    let rows = db.rows("SELECT COUNT(*) AS n FROM projection_skips WHERE projection = $1", &[name.into()]).await?;
    rows.first().map_or(Ok(0), |row| row.int("n"))
}

/// What an operator asks of a refused event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Apply it again; on success its held followers are applied in order.
    Retry,
    /// Never apply it (in any version); its held followers are applied in order.
    Skip,
}

impl Action {
    /// The action as a request column keeps it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Skip => "skip",
        }
    }
}

/// Why a request was refused.
#[derive(Debug)]
pub enum RequestError {
    /// The live version keeps no dead letter at that position.
    UnknownPosition,
    /// The event there is held behind an earlier one of its aggregate (at this position): it is
    /// released with it, not by itself.
    Held(Option<String>),
    /// The database failed.
    Store(StoreError),
}

impl From<StoreError> for RequestError {
    fn from(err: StoreError) -> Self {
        RequestError::Store(err)
    }
}

/// A request recorded on a dead letter, as it stood then.
#[derive(Clone, Debug)]
pub struct Requested {
    /// The model.
    pub name: String,
    /// The version whose dead letter it is (the live one when asked).
    pub version: i64,
    /// What was asked.
    pub action: Action,
    /// The dead letter then.
    pub letter: DeadLetter,
}

/// Records an operator's `action` on the live version's dead letter at `position` of `name`, for
/// the worker holding the model's lease to carry out (its next round, within about half a second).
pub async fn request(
    db: &SqlDatabase,
    name: &str,
    position: Position,
    action: Action,
) -> Result<Requested, RequestError> {
    let version = versions(db, name).await?.live;
    let letters = all(db, name, version).await?;
    let wanted = position.to_string();
    let Some(letter) = letters.iter().find(|l| l.position == wanted).cloned() else {
        return Err(RequestError::UnknownPosition);
    };
    if !letter.is_refused() {
        let head = letters.iter().find(|l| l.followers.contains(&wanted)).map(|l| l.position.clone());
        return Err(RequestError::Held(head));
    }
    db.run(
        "UPDATE projection_dead_letters SET request = $4, requested_at_ms = $5 \
         WHERE projection = $1 AND version = $2 AND position = $3",
        &[name.into(), version.into(), wanted.as_str().into(), action.as_str().into(), Arg::Int(now_ms())],
    )
    .await?;
    Ok(Requested { name: name.to_owned(), version, action, letter })
}

/// What became of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Settled {
    /// The dead letter's position.
    pub position: String,
    /// What was asked.
    pub action: Action,
    /// `applied` (retried and applied), `skipped`, `parked` (retried and refused again: it stays,
    /// with the new error) or `requested` (no worker carried it out yet; it will).
    pub outcome: String,
    /// The model's error when it was refused again.
    pub error: Option<String>,
    /// Its attempts so far, when it is still a dead letter.
    pub attempts: Option<i64>,
    /// The held followers applied after it, in order.
    pub released: Vec<String>,
}

/// Waits up to `timeout` for the worker to carry out `requested`; answers what became of it.
pub async fn settled(db: &SqlDatabase, requested: &Requested, timeout: Duration) -> Result<Settled, StoreError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let letter = &requested.letter;
    loop {
        let now = all(db, &requested.name, requested.version).await?;
        let released = || letter.followers.iter().filter(|f| !now.iter().any(|l| &&l.position == f)).cloned().collect();
        let settled = |outcome: &str, error: Option<String>, attempts: Option<i64>, released: Vec<String>| Settled {
            position: letter.position.clone(),
            action: requested.action,
            outcome: outcome.to_owned(),
            error,
            attempts,
            released,
        };
        match now.iter().find(|l| l.position == letter.position) {
            None => {
                let skips = db
                    .rows(
                        "SELECT position FROM projection_skips WHERE projection = $1 AND position = $2",
                        &[requested.name.as_str().into(), letter.position.as_str().into()],
                    )
                    .await?;
                let outcome = if skips.is_empty() { "applied" } else { "skipped" };
                return Ok(settled(outcome, None, None, released()));
            }
            Some(still) if still.request.is_none() && still.attempts > letter.attempts => {
                return Ok(settled(PARKED, Some(still.error.clone()), Some(still.attempts), Vec::new()));
            }
            Some(still) => {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(settled("requested", None, Some(still.attempts), Vec::new()));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A dead letter the worker has to act on now.
#[derive(Clone, Debug)]
struct Due {
    position: Position,
    aggregate: AggregateKey,
    state: String,
    attempts: i64,
    request: Option<String>,
    skipped: bool,
}

/// The dead letters of version `v` of `name` the worker acts on now: refused ones whose next try
/// has come, those an operator asked about, those skipped (in any version), and held ones no
/// refused event of their aggregate is ahead of any more.
async fn due(db: &SqlDatabase, name: &str, v: i64) -> Result<Vec<Due>, StoreError> {
    let rows = db
        .rows(
            "SELECT d.position, d.aggregate_type, d.aggregate_id, d.state, d.attempts, d.request, \
                    (SELECT COUNT(*) FROM projection_skips s WHERE s.projection = d.projection AND s.position = d.position) \
                      AS skipped \
             FROM projection_dead_letters d \
             WHERE d.projection = $1 AND d.version = $2 AND ( \
               (d.state = 'retrying' AND d.next_retry_ms <= $3) \
               OR d.request IS NOT NULL \
               OR EXISTS (SELECT 1 FROM projection_skips s WHERE s.projection = d.projection AND s.position = d.position) \
               OR (d.state = 'held' AND NOT EXISTS ( \
                    SELECT 1 FROM projection_dead_letters h WHERE h.projection = d.projection AND h.version = d.version \
                      AND h.aggregate_type = d.aggregate_type AND h.aggregate_id = d.aggregate_id AND h.state <> 'held')))",
            &[name.into(), v.into(), Arg::Int(now_ms())],
        )
        .await?;
    let mut due = rows
        .iter()
        .map(|row| {
            let (position, letter) = letter_of_due(row)?;
            Ok(Due {
                position,
                aggregate: (letter.0, letter.1),
                state: row.text("state")?,
                attempts: row.int("attempts")?,
                request: row.opt_text("request")?,
                skipped: row.int("skipped")? > 0,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    due.sort_by_key(|d| d.position);
    Ok(due)
}

/// The position of a row.
fn position_of(row: &Row) -> Result<Position, StoreError> {
    let text = row.text("position")?;
    text.parse().map_err(|err| StoreError::Decode(format!("dead letter at {text:?}: {err}")))
}

/// The position and aggregate of a row.
fn letter_of_due(row: &Row) -> Result<(Position, (String, String)), StoreError> {
    Ok((position_of(row)?, (row.text("aggregate_type")?, row.text("aggregate_id")?)))
}

/// When the next `retrying` dead letter of version `v` of `name` is due, if one is.
pub(crate) async fn next_due(db: &SqlDatabase, name: &str, v: i64) -> Result<Option<DateTime<Utc>>, StoreError> {
    let rows = db
        .rows(
            "SELECT MIN(next_retry_ms) AS next FROM projection_dead_letters \
             WHERE projection = $1 AND version = $2 AND state = 'retrying'",
            &[name.into(), v.into()],
        )
        .await?;
    Ok(rows.first().map(|row| row.opt_int("next")).transpose()?.flatten().map(time_of))
}

/// A dead letter as a settling transaction reads it.
#[derive(Clone, Debug)]
struct Kept {
    position: Position,
    state: String,
    attempts: i64,
    error: String,
    event_type: String,
}

/// What settling one dead letter did.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Done {
    /// Applied (or skipped), with these followers applied after it.
    Released,
    /// Refused again: it stays.
    Refused,
    /// Its row had changed since it was read (another worker): nothing done.
    Superseded,
}

impl Projector {
    /// Acts on the dead letters of version `v` of `model` that are due: retries, operators'
    /// requests, skips. Answers whether any event was applied or skipped.
    pub(crate) async fn settle_due(&self, model: &dyn ReadModel, v: i64) -> Result<bool, StoreError> {
        let mut progressed = false;
        for letter in due(&self.db, model.name(), v).await? {
            progressed |= self.settle(model, v, &letter).await? == Done::Released;
        }
        Ok(progressed)
    }

    /// Settles one dead letter and releases its held followers in order, in one transaction.
    async fn settle(&self, model: &dyn ReadModel, v: i64, letter: &Due) -> Result<Done, StoreError> {
        let name = model.name();
        let (aggregate_type, aggregate_id) = (&letter.aggregate.0, &letter.aggregate.1);
        // The log as it is now: a mended event or a fixed upcaster counts.
        let stream = self.store.read_stream(aggregate_type, aggregate_id).await?;
        let mut tx = self.db.begin().await?;
        let rows = tx
            .rows(
                "SELECT position, state, attempts, error, event_type FROM projection_dead_letters \
                 WHERE projection = $1 AND version = $2 AND aggregate_type = $3 AND aggregate_id = $4",
                &[name.into(), v.into(), aggregate_type.as_str().into(), aggregate_id.as_str().into()],
            )
            .await?;
        let mut kept = rows
            .iter()
            .map(|row| {
                Ok(Kept {
                    position: position_of(row)?,
                    state: row.text("state")?,
                    attempts: row.int("attempts")?,
                    error: row.text("error")?,
                    event_type: row.text("event_type")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        kept.sort_by_key(|k| k.position);
        let Some(head) = kept.iter().find(|k| k.position == letter.position).cloned() else {
            tx.rollback().await?;
            return Ok(Done::Superseded);
        };
        if head.attempts != letter.attempts || head.state != letter.state {
            tx.rollback().await?;
            return Ok(Done::Superseded);
        }
        let followers: Vec<Kept> =
            kept.iter().filter(|k| k.position > head.position).take_while(|k| k.state == HELD).cloned().collect();
        let skips = skipped(&mut tx, name).await?;
        let skip = letter.skipped || letter.request.as_deref() == Some(Action::Skip.as_str());
        let by_operator = letter.request.is_some();
        if skip {
            if !remove(&mut tx, name, v, &head).await? {
                tx.rollback().await?;
                return Ok(Done::Superseded);
            }
            tx.run(
                "INSERT INTO projection_skips \
                   (projection, position, aggregate_type, aggregate_id, event_type, error, skipped_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    name.into(),
                    head.position.to_string().into(),
                    aggregate_type.as_str().into(),
                    aggregate_id.as_str().into(),
                    head.event_type.as_str().into(),
                    head.error.as_str().into(),
                    Arg::Int(now_ms()),
                ],
            )
            .await?;
            tracing::info!(projection = name, version = v, position = %head.position, "dead letter skipped");
            if head.state == HELD {
                // Skipped in another version while held here: whatever it waits behind still holds the rest.
                tx.commit().await?;
                return Ok(Done::Released);
            }
        } else {
            let refused = match stream.iter().find(|e| e.position == head.position) {
                Some(event) => self.apply_in_savepoint(&mut tx, model, v, event).await?.err(),
                None => Some(format!("the event at {} is no longer in the log", head.position)),
            };
            if let Some(error) = refused {
                let attempts = head.attempts + 1;
                let (state, next) = if by_operator { (PARKED, None) } else { after_refusals(attempts, &self.config) };
                let clear = if by_operator { ", request = NULL" } else { "" };
                let changed = tx
                    .run(
                        &format!(
                            "UPDATE projection_dead_letters SET state = $4, attempts = $5, next_retry_ms = $6, error = $7{clear} \
                             WHERE projection = $1 AND version = $2 AND position = $3 AND attempts = $8"
                        ),
                        &[
                            name.into(),
                            v.into(),
                            head.position.to_string().into(),
                            state.into(),
                            Arg::Int(attempts),
                            next.map_or(Arg::NullInt, Arg::Int),
                            error.as_str().into(),
                            Arg::Int(head.attempts),
                        ],
                    )
                    .await?;
                if changed != 1 {
                    tx.rollback().await?;
                    return Ok(Done::Superseded);
                }
                tx.commit().await?;
                tracing::warn!(
                    projection = name,
                    version = v,
                    position = %head.position,
                    attempts,
                    state,
                    %error,
                    "a dead letter was tried again and refused again"
                );
                return Ok(Done::Refused);
            }
            if !remove(&mut tx, name, v, &head).await? {
                tx.rollback().await?;
                return Ok(Done::Superseded);
            }
            tracing::info!(projection = name, version = v, position = %head.position, attempts = head.attempts + 1, "dead letter applied");
        }
        // Its followers, in order, until one is refused (it becomes the one the rest wait behind).
        for follower in &followers {
            let refused = if skips.contains(&follower.position.to_string()) {
                None
            } else {
                match stream.iter().find(|e| e.position == follower.position) {
                    Some(event) if model.wants(event) => self.apply_in_savepoint(&mut tx, model, v, event).await?.err(),
                    Some(_) => None,
                    None => Some(format!("the event at {} is no longer in the log", follower.position)),
                }
            };
            match refused {
                None => {
                    if !remove(&mut tx, name, v, follower).await? {
                        tx.rollback().await?;
                        return Ok(Done::Superseded);
                    }
                }
                Some(error) => {
                    let (state, next) = after_refusals(1, &self.config);
                    tx.run(
                        "UPDATE projection_dead_letters SET state = $4, attempts = 1, next_retry_ms = $5, error = $6 \
                         WHERE projection = $1 AND version = $2 AND position = $3",
                        &[
                            name.into(),
                            v.into(),
                            follower.position.to_string().into(),
                            state.into(),
                            next.map_or(Arg::NullInt, Arg::Int),
                            error.as_str().into(),
                        ],
                    )
                    .await?;
                    break;
                }
            }
        }
        tx.commit().await?;
        Ok(Done::Released)
    }
}

/// Deletes a dead letter if it is still as read (compare-and-set); answers whether it was.
async fn remove(tx: &mut SqlTransaction, name: &str, v: i64, kept: &Kept) -> Result<bool, StoreError> {
    let removed = tx
        .run(
            "DELETE FROM projection_dead_letters \
             WHERE projection = $1 AND version = $2 AND position = $3 AND attempts = $4 AND state = $5",
            &[
                name.into(),
                v.into(),
                kept.position.to_string().into(),
                Arg::Int(kept.attempts),
                kept.state.as_str().into(),
            ],
        )
        .await?;
    Ok(removed == 1)
}
#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use serde::Serializer;
    use serde_json::Value;
    use stay_store::Backoff;

    use super::*;
    use crate::runner::testing::{Fixture, Probe, POISON};
    use crate::runner::versions::initialize;
    use crate::runner::RunnerConfig;

    /// A value whose serialisation always fails.
    struct Unwritable;

    impl Serialize for Unwritable {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("this value refuses to be written"))
        }
    }

    async fn bodies(f: &Fixture) -> Vec<(String, Value)> {
        let rows =
            f.db.rows(
                "SELECT position, event FROM projection_dead_letters WHERE projection = 'probe' ORDER BY position",
                &[],
            )
            .await
            .expect("rows");
        rows.iter().map(|row| (row.text("position").expect("position"), row.json("event").expect("event"))).collect()
    }

    #[test]
    fn a_body_that_cannot_be_written_is_an_error_not_an_empty_string() {
        let refused = body(&Unwritable, format_args!("Probe Noted at 7"));

        match refused {
            Err(StoreError::Decode(why)) => {
                assert!(why.contains("Probe Noted at 7") && why.contains("refuses to be written"), "{why}");
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_poison_event_is_parked_with_its_error_and_body_and_its_aggregates_later_events_wait_behind_it() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        let a1 = f.note("a", false).await;
        let a2 = f.note("a", true).await;
        let b1 = f.note("b", false).await;
        let a3 = f.note("a", false).await;
        let b2 = f.note("b", false).await;
        let projector = f.projector(RunnerConfig::default());

        let step = projector.step(&model, 1).await.expect("step");

        assert_eq!((step.read, step.at), (5, b2), "the batch went past the poison event");
        assert_eq!(f.rows(1).await, vec![(a1, "a".to_owned()), (b1, "b".to_owned()), (b2, "b".to_owned())]);
        let letters = list(&f.db, "probe", 1).await.expect("list");
        let parked: Vec<(String, &str, &str, &str)> = letters
            .iter()
            .map(|l| (l.position.clone(), l.aggregate_type.as_str(), l.aggregate_id.as_str(), l.error.as_str()))
            .collect();
        assert_eq!(parked, vec![(a2.to_string(), "Probe", "a", POISON), (a3.to_string(), "Probe", "a", HELD_BEHIND)]);
        let bodies = bodies(&f).await;
        assert_eq!(bodies.len(), 2, "{bodies:?}");
        let (position, event) = &bodies[0];
        assert_eq!(position, &a2.to_string());
        assert_eq!((&event["position"], &event["aggregate_id"]), (&Value::from(a2.to_string()), &Value::from("a")));
        assert_eq!(event["payload"]["poison"], Value::Bool(true), "the body is the event as it was read: {event}");
    }

    const MS: Duration = Duration::from_millis(1);

    /// Attempts with waits of 100, 200, 400 ms (ceilings) between them.
    fn quick(attempts: u32) -> RunnerConfig {
        RunnerConfig {
            attempts,
            poison_backoff: Backoff::new(100 * MS, Duration::from_secs(2)),
            ..RunnerConfig::default()
        }
    }

    async fn letter(f: &Fixture, v: i64, position: Position) -> Option<DeadLetter> {
        all(&f.db, "probe", v).await.expect("dead letters").into_iter().find(|l| l.position == position.to_string())
    }

    /// Waits (a bounded time) until the dead letter at `position` satisfies `done`.
    async fn until(f: &Fixture, position: Position, done: impl Fn(Option<&DeadLetter>) -> bool) -> Option<DeadLetter> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let now = letter(f, 1, position).await;
            if done(now.as_ref()) {
                return now;
            }
            assert!(Instant::now() < deadline, "the dead letter at {position} never got there: {now:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_refused_event_is_retried_with_backoff_then_parked_while_other_aggregates_go_on() {
        let f = Fixture::new().await;
        let model = Arc::new(Probe::default());
        let poison = f.note("a", true).await;
        let other = f.note("b", false).await;
        let projector = f.projector_of(model.clone(), quick(4));
        initialize(&f.db, model.as_ref()).await.expect("initialize");

        // The first batch tries it (straight, then on its own), keeps it and goes past it at once.
        let step = projector.step(model.as_ref(), 1).await.expect("step");
        assert_eq!((step.read, step.at), (2, other), "not held up by the refused event");
        assert_eq!(f.rows(1).await, vec![(other, "b".to_owned())]);
        let first = letter(&f, 1, poison).await.expect("a dead letter");
        assert_eq!((first.state.as_str(), first.attempts, first.error.as_str()), (RETRYING, 1, POISON));
        let next = first.next_retry_at.expect("a next try");
        let wait = (next - first.parked_at).num_milliseconds();
        assert!((40..=110).contains(&wait), "the first wait is about the backoff's first: {wait} ms");
        assert!(!projector.settle_due(model.as_ref(), 1).await.expect("settle"), "not due yet");
        assert_eq!(model.poison_attempts(), 2, "no try before its time");

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(Arc::new(projector).run(stopped));
        let parked = until(&f, poison, |l| l.is_some_and(|l| l.state == PARKED)).await.expect("parked");
        stop.send(true).expect("stop");
        running.await.expect("the projector stops");

        assert_eq!((parked.attempts, parked.next_retry_at), (4, None), "{parked:?}");
        // Straight, on its own, then three retries spaced by the backoff (at least half of each ceiling).
        let times = model.poison_times();
        assert_eq!(times.len(), 5, "{times:?}");
        for (i, floor) in [50, 100, 200].into_iter().enumerate() {
            let gap = times[i + 2] - times[i + 1];
            assert!(gap >= floor * MS, "retry {} came {gap:?} after the one before, sooner than {floor} ms", i + 1);
        }
        assert_eq!(f.rows(1).await, vec![(other, "b".to_owned())], "a parked event is never applied");
    }

    #[tokio::test]
    async fn a_retry_after_the_cause_is_fixed_applies_it_and_releases_its_followers_in_order() {
        let f = Fixture::new().await;
        let model = Arc::new(Probe::default());
        initialize(&f.db, model.as_ref()).await.expect("initialize");
        let a1 = f.note("a", true).await;
        let a2 = f.note("a", false).await;
        let b1 = f.note("b", false).await;
        let a3 = f.note("a", false).await;
        let projector = f.projector_of(model.clone(), quick(1));
        projector.step(model.as_ref(), 1).await.expect("step");
        let parked = letter(&f, 1, a1).await.expect("parked");
        assert_eq!((parked.state.as_str(), parked.followers.clone()), (PARKED, vec![a2.to_string(), a3.to_string()]));

        // Refused again: it stays parked with its attempts counted, and the answer says so.
        let asked = request(&f.db, "probe", a1, Action::Retry).await.expect("request");
        assert!(projector.settle_due(model.as_ref(), 1).await.is_ok());
        let again = settled(&f.db, &asked, Duration::from_secs(1)).await.expect("settled");
        assert_eq!((again.outcome.as_str(), again.attempts, again.error.as_deref()), ("parked", Some(2), Some(POISON)));
        assert!(again.released.is_empty());

        model.cure();
        let asked = request(&f.db, "probe", a1, Action::Retry).await.expect("request");
        assert_eq!(letter(&f, 1, a1).await.and_then(|l| l.request).as_deref(), Some("retry"), "recorded");
        assert!(projector.settle_due(model.as_ref(), 1).await.expect("settle"), "released");
        let done = settled(&f.db, &asked, Duration::from_secs(1)).await.expect("settled");

        assert_eq!((done.outcome.as_str(), done.released.clone()), ("applied", vec![a2.to_string(), a3.to_string()]));
        let mine: Vec<Position> = model.applied().into_iter().filter(|p| *p != b1).collect();
        assert_eq!(mine, vec![a1, a2, a3], "the aggregate's events in order");
        assert_eq!(f.rows(1).await.len(), 4);
        assert!(all(&f.db, "probe", 1).await.expect("list").is_empty());
        // Nothing holds the aggregate back any more.
        let a4 = f.note("a", false).await;
        projector.step(model.as_ref(), 1).await.expect("step");
        assert_eq!(f.rows(1).await.last(), Some(&(a4, "a".to_owned())));
    }

    #[tokio::test]
    async fn a_follower_refused_on_release_is_kept_and_the_rest_wait_behind_it() {
        let f = Fixture::new().await;
        let model = Arc::new(Probe::default());
        initialize(&f.db, model.as_ref()).await.expect("initialize");
        let a1 = f.note("a", true).await;
        let a2 = f.note("a", true).await;
        let a3 = f.note("a", false).await;
        let projector = f.projector_of(model.clone(), quick(2));
        projector.step(model.as_ref(), 1).await.expect("step");

        let asked = request(&f.db, "probe", a1, Action::Skip).await.expect("request");
        projector.settle_due(model.as_ref(), 1).await.expect("settle");
        let done = settled(&f.db, &asked, Duration::from_secs(1)).await.expect("settled");

        assert_eq!((done.outcome.as_str(), done.released.clone()), ("skipped", vec![]));
        let now = all(&f.db, "probe", 1).await.expect("list");
        let states: Vec<(String, &str, i64)> =
            now.iter().map(|l| (l.position.clone(), l.state.as_str(), l.attempts)).collect();
        assert_eq!(states, vec![(a2.to_string(), RETRYING, 1), (a3.to_string(), HELD, 0)]);
        assert_eq!(now[0].followers, vec![a3.to_string()]);
    }

    #[tokio::test]
    async fn a_skipped_event_stays_skipped_through_a_rebuild() {
        let f = Fixture::new().await;
        let model = Arc::new(Probe::default());
        initialize(&f.db, model.as_ref()).await.expect("initialize");
        let a1 = f.note("a", true).await;
        let a2 = f.note("a", false).await;
        let projector = f.projector_of(model.clone(), quick(1));
        projector.step(model.as_ref(), 1).await.expect("step");

        let asked = request(&f.db, "probe", a1, Action::Skip).await.expect("request");
        projector.settle_due(model.as_ref(), 1).await.expect("settle");
        let done = settled(&f.db, &asked, Duration::from_secs(1)).await.expect("settled");
        assert_eq!((done.outcome.as_str(), done.released.clone()), ("skipped", vec![a2.to_string()]));
        assert_eq!(f.rows(1).await, vec![(a2, "a".to_owned())]);
        assert_eq!(skipped_count(&f.db, "probe").await.expect("count"), 1);
        let tried = model.poison_attempts();

        crate::runner::versions::request_rebuild(&f.db, model.as_ref()).await.expect("rebuild");
        projector.step(model.as_ref(), 2).await.expect("step");

        assert_eq!(f.rows(2).await, vec![(a2, "a".to_owned())], "the rebuilt version passes over it too");
        assert!(all(&f.db, "probe", 2).await.expect("list").is_empty(), "and does not park it again");
        assert_eq!(model.poison_attempts(), tried, "nor tries it");
    }

    #[tokio::test]
    async fn only_a_refused_dead_letter_of_the_live_version_can_be_asked_about() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        let a1 = f.note("a", true).await;
        let a2 = f.note("a", false).await;
        let b1 = f.note("b", false).await;
        f.projector(quick(1)).step(&model, 1).await.expect("step");

        assert!(matches!(request(&f.db, "probe", b1, Action::Retry).await, Err(RequestError::UnknownPosition)));
        match request(&f.db, "probe", a2, Action::Skip).await {
            Err(RequestError::Held(head)) => assert_eq!(head, Some(a1.to_string())),
            other => panic!("a held event is released with the one it waits behind: {other:?}"),
        }
        let asked = request(&f.db, "probe", a1, Action::Retry).await.expect("request");
        let pending = settled(&f.db, &asked, Duration::from_millis(50)).await.expect("settled");
        assert_eq!(pending.outcome, "requested", "no worker carried it out yet");
    }

    #[tokio::test]
    async fn a_blocked_aggregates_events_in_later_batches_are_parked_too() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        f.note("a", true).await;
        let projector = f.projector(RunnerConfig::default());
        projector.step(&model, 1).await.expect("step");
        let later = f.note("a", false).await;
        let other = f.note("b", false).await;

        projector.step(&model, 1).await.expect("step");

        assert_eq!(f.rows(1).await, vec![(other, "b".to_owned())]);
        let letters = list(&f.db, "probe", 1).await.expect("list");
        assert_eq!(
            letters.last().map(|l| (l.position.clone(), l.error.as_str())),
            Some((later.to_string(), HELD_BEHIND))
        );
        let mut tx = f.db.begin().await.expect("begin");
        let blocked = blocked(&mut tx, "probe", 1).await.expect("blocked");
        tx.rollback().await.expect("rollback");
        assert_eq!(blocked, HashSet::from([("Probe".to_owned(), "a".to_owned())]));
        assert!(list(&f.db, "probe", 2).await.expect("list").is_empty(), "dead letters belong to one version");
    }
}
