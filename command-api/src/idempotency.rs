//! `Idempotency-Key`: a retried command replays its first answer and never applies twice.
//!
//! A keyed request first *claims* its key (caller, key) in the `command_idempotency` table, with a
//! fingerprint of its method, path and body. Then:
//!
//! - a new key runs the command and stores the answer (any 2xx or 4xx that retrying cannot change);
//! - a finished key with the same fingerprint replays the stored answer, byte for byte;
//! - a different fingerprint is refused (422 `idempotency_key_reused`);
//! - a key whose first request is still running is refused (409 `idempotency_key_in_progress`).
//!
//! A claim names the process that holds it, and every process that takes commands beats a
//! heartbeat into `command_api_processes` once a second ([`IdempotencyStore::keep_alive`]). A
//! claim whose process stopped beating ([`DEAD_AFTER`]) died with it (a kill, a crash), and the
//! next retry takes it over at once: a client retrying after a crash gets its answer within
//! seconds of the restart. A process's own claims are live while its request runs; a dropped
//! request gives its claim up. Whoever holds a claim, one pending for longer than
//! [`LONGEST_REQUEST`] is taken to be lost.
//!
//! The command's id and any new aggregate id are derived from (caller, key), so a request whose
//! first attempt died after appending but before storing its answer (a crash, a 5xx) is
//! recognised on retry: its events carry the same `command_id`, and the retry answers from them
//! instead of running the command again. Records live in the SQL database beside the log, so they
//! survive restarts.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use stay_store::migrate::Migration;
use stay_store::{Arg, MigrationSet, SqlDatabase, StoreError};
use uuid::Uuid;

use stay_http::body::read_body;
use stay_http::openapi::document_refusal;
use stay_http::ApiError;
use stay_http::Principal;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};

/// The command API's own table.
pub const IDEMPOTENCY_MIGRATIONS: MigrationSet = MigrationSet {
    component: "command-api",
    sqlite: &[
        Migration {
            version: 1,
            name: "idempotency_keys",
            sql: include_str!("../migrations/sqlite/0001_idempotency.sql"),
        },
        Migration { version: 2, name: "claim_owners", sql: include_str!("../migrations/sqlite/0002_claim_owners.sql") },
    ],
    postgres: &[
        Migration {
            version: 1,
            name: "idempotency_keys",
            sql: include_str!("../migrations/postgres/0001_idempotency.sql"),
        },
        Migration {
            version: 2,
            name: "claim_owners",
            sql: include_str!("../migrations/postgres/0002_claim_owners.sql"),
        },
    ],
};

/// The longest key accepted, in characters.
pub const MAX_KEY_CHARS: usize = 200;

/// How often a process that takes commands says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// A process silent for this long is dead, and its pending claims with it.
pub const DEAD_AFTER: Duration = Duration::from_secs(3);

/// A claim pending for this long is lost whoever holds it (its release failed, or it predates
/// claims naming their process).
pub const LONGEST_REQUEST: Duration = Duration::from_secs(60);

/// How long the row of a process that stopped beating is kept (for whoever looks at the table).
const FORGET_PROCESSES_AFTER: Duration = Duration::from_secs(3600);

/// Namespace of command ids derived from idempotency keys.
const COMMAND_NAMESPACE: Uuid = Uuid::from_u128(0x5d0c_4b1e_8a7f_4c35_9d2e_6f1a_0b3c_7e41);

/// The first answer to a keyed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAnswer {
    /// Its status.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    /// Its `Location`.
    pub location: Option<String>,
    /// Its body.
    pub body: Vec<u8>,
}

/// What a claim found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: run the command.
    Fresh,
    /// An earlier attempt claimed the key and died: run the command, unless its events exist.
    Recovering,
    /// The key was answered already.
    Replay(StoredAnswer),
    /// The key was used for a different request.
    Reused,
    /// The first request with this key is still running.
    InProgress,
}

/// The command a keyed request runs, as the routes see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandKey {
    /// The command's id: derived from (caller, key), or fresh without a key.
    pub command_id: Uuid,
    /// True when the id is derived from a key, so ids derived from it are stable across retries.
    pub keyed: bool,
    /// True when an earlier attempt may have appended this command's events.
    pub recovering: bool,
}

impl CommandKey {
    /// The key of a request sent without `Idempotency-Key`.
    pub fn unkeyed() -> Self {
        Self { command_id: Uuid::now_v7(), keyed: false, recovering: false }
    }

    /// The key of a request with `Idempotency-Key: key` from `principal`, whose fingerprint is
    /// `fingerprint` (so a key reused for another request after its answer was forgotten gets
    /// other ids, and cannot be answered from the first request's events).
    pub fn keyed(principal: &str, key: &str, fingerprint: &str, recovering: bool) -> Self {
        // Length-prefixed, so no (caller, key) pair can spell another's.
        let name = format!("{}:{principal}\n{}:{key}\n{fingerprint}", principal.len(), key.len());
        Self { command_id: Uuid::new_v5(&COMMAND_NAMESPACE, name.as_bytes()), keyed: true, recovering }
    }

    /// An id for something the command creates: stable per key when keyed, fresh (time-ordered) when not.
    pub fn derive_id(&self, purpose: &str) -> Uuid {
        if self.keyed {
            Uuid::new_v5(&self.command_id, purpose.as_bytes())
        } else {
            Uuid::now_v7()
        }
    }
}

/// The stored keys and answers, as seen by one process (its claims carry the process's id).
#[derive(Clone, Debug)]
pub struct IdempotencyStore {
    db: SqlDatabase,
    /// This process's id in `command_api_processes`: new at every start.
    process_id: String,
}

impl IdempotencyStore {
    /// Keys stored in `db` (migrated with [`IDEMPOTENCY_MIGRATIONS`]), claimed by a new process
    /// id. Clones share the id; a process makes one and beats for it ([`Self::keep_alive`]).
    pub fn new(db: SqlDatabase) -> Self {
        Self { db, process_id: Uuid::new_v4().to_string() }
    }

    /// Says this process is alive (its claims with it).
    pub async fn beat(&self) -> Result<(), StoreError> {
        self.db
            .run(
                "INSERT INTO command_api_processes (process_id, heartbeat_at_ms) VALUES ($1, $2) \
                 ON CONFLICT (process_id) DO UPDATE SET heartbeat_at_ms = excluded.heartbeat_at_ms",
                &[self.process_id.as_str().into(), now_ms().into()],
            )
            .await?;
        Ok(())
    }

    /// How long ago this process's heartbeat was last written, as the database has it (`None`
    /// when it has no row: not written yet, or retired at a stop).
    pub async fn heartbeat_age(&self) -> Result<Option<Duration>, StoreError> {
        let rows = self
            .db
            .rows(
                "SELECT heartbeat_at_ms FROM command_api_processes WHERE process_id = $1",
                &[self.process_id.as_str().into()],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let age_ms = now_ms().saturating_sub(row.int("heartbeat_at_ms")?).max(0);
        Ok(Some(Duration::from_millis(age_ms as u64)))
    }

    /// Beats every [`HEARTBEAT_EVERY`] until `done` turns true, then says this process is gone,
    /// so its claims (none should be left) are free at once. Rows of processes long silent are
    /// forgotten on the way.
    pub async fn keep_alive(&self, mut done: tokio::sync::watch::Receiver<bool>) {
        let mut every = tokio::time::interval(HEARTBEAT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats: u64 = 0;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = done.wait_for(|done| *done) => break,
            }
            // Logged when beating starts to fail and when it works again, not every second.
            match self.beat().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("the idempotency heartbeat is written again");
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "cannot write the idempotency heartbeat; other processes may take this one's claims for dead");
                }
                Err(_) => {}
            }
            beats += 1;
            if beats.is_multiple_of(600) {
                if let Err(err) = self.forget_silent_processes().await {
                    tracing::warn!(error = %err, "could not forget processes long silent");
                }
            }
        }
        if let Err(err) = self
            .db
            .run("DELETE FROM command_api_processes WHERE process_id = $1", &[self.process_id.as_str().into()])
            .await
        {
            tracing::warn!(error = %err, "could not retire this process's heartbeat; it goes stale in seconds");
        }
    }

    async fn forget_silent_processes(&self) -> Result<u64, StoreError> {
        let before = now_ms().saturating_sub(millis(FORGET_PROCESSES_AFTER));
        self.db.run("DELETE FROM command_api_processes WHERE heartbeat_at_ms < $1", &[before.into()]).await
    }

    /// Claims `key` for `principal`'s request with `fingerprint`.
    pub async fn claim(&self, principal: &str, key: &str, fingerprint: &str) -> Result<Claim, StoreError> {
        let now = now_ms();
        let inserted = self
            .db
            .run(
                "INSERT INTO command_idempotency \
                   (principal, idem_key, fingerprint, state, claimed_at_ms, created_at_ms, claimed_by) \
                 VALUES ($1, $2, $3, 'pending', $4, $4, $5) ON CONFLICT DO NOTHING",
                &[principal.into(), key.into(), fingerprint.into(), now.into(), self.process_id.as_str().into()],
            )
            .await?;
        if inserted == 1 {
            return Ok(Claim::Fresh);
        }
        let Some(row) = self.read(principal, key).await? else {
            // Deleted between the two statements; nothing deletes rows today, so claim again later.
            return Ok(Claim::InProgress);
        };
        if row.fingerprint != fingerprint {
            return Ok(Claim::Reused);
        }
        if let Some(answer) = row.answer {
            return Ok(Claim::Replay(answer));
        }
        if self.is_live(&row, now) {
            return Ok(Claim::InProgress);
        }
        // Take over the dead claim, unless another retry just did.
        let taken = self
            .db
            .run(
                "UPDATE command_idempotency SET claimed_at_ms = $4, claimed_by = $5 \
                 WHERE principal = $1 AND idem_key = $2 AND state = 'pending' AND claimed_at_ms = $3",
                &[principal.into(), key.into(), row.claimed_at_ms.into(), now.into(), self.process_id.as_str().into()],
            )
            .await?;
        Ok(if taken == 1 { Claim::Recovering } else { Claim::InProgress })
    }

    /// Whether a pending claim still has a request running for it: not released, not pending for
    /// longer than any request runs, and held by this process or by one still beating.
    fn is_live(&self, row: &KeyRow, now: i64) -> bool {
        let released = row.claimed_at_ms == 0;
        let too_old = row.claimed_at_ms <= now.saturating_sub(millis(LONGEST_REQUEST));
        let holder_alive = match (&row.claimed_by, row.holder_beat_at_ms) {
            (Some(holder), _) if *holder == self.process_id => true,
            (Some(_), Some(beat)) => beat > now.saturating_sub(millis(DEAD_AFTER)),
            // A process that stopped (or never beat, or a claim from before claims named their
            // process, which only the age above can end).
            (Some(_), None) => false,
            (None, _) => true,
        };
        !released && !too_old && holder_alive
    }

    /// Stores the answer to a claimed key.
    pub async fn complete(&self, principal: &str, key: &str, answer: &StoredAnswer) -> Result<(), StoreError> {
        self.db
            .run(
                "UPDATE command_idempotency SET state = 'done', status = $3, content_type = $4, location = $5, body = $6 \
                 WHERE principal = $1 AND idem_key = $2",
                &[
                    principal.into(),
                    key.into(),
                    i64::from(answer.status).into(),
                    answer.content_type.clone().into(),
                    answer.location.clone().into(),
                    Arg::Bytes(answer.body.clone()),
                ],
            )
            .await?;
        Ok(())
    }

    /// Gives up a claim whose request failed in a way a retry may fix; the next retry recovers it.
    pub async fn release(&self, principal: &str, key: &str) -> Result<(), StoreError> {
        self.db
            .run(
                "UPDATE command_idempotency SET claimed_at_ms = 0 \
                 WHERE principal = $1 AND idem_key = $2 AND state = 'pending'",
                &[principal.into(), key.into()],
            )
            .await?;
        Ok(())
    }

    /// Forgets answered keys first used more than `retention` ago; answers how many.
    pub async fn purge(&self, retention: Duration) -> Result<u64, StoreError> {
        let before = now_ms().saturating_sub(millis(retention));
        self.db
            .run("DELETE FROM command_idempotency WHERE state = 'done' AND created_at_ms < $1", &[before.into()])
            .await
    }

    async fn read(&self, principal: &str, key: &str) -> Result<Option<KeyRow>, StoreError> {
        let rows = self
            .db
            .rows(
                "SELECT c.fingerprint, c.state, c.claimed_at_ms, c.claimed_by, p.heartbeat_at_ms, \
                   c.status, c.content_type, c.location, c.body \
                 FROM command_idempotency c LEFT JOIN command_api_processes p ON p.process_id = c.claimed_by \
                 WHERE c.principal = $1 AND c.idem_key = $2",
                &[principal.into(), key.into()],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let answer = match (row.text("state")?.as_str(), row.opt_int("status")?) {
            ("done", Some(status)) => Some(StoredAnswer {
                status: u16::try_from(status)
                    .map_err(|_| StoreError::Decode(format!("a stored answer has the status {status}")))?,
                content_type: row.opt_text("content_type")?,
                location: row.opt_text("location")?,
                body: row.opt_bytes("body")?.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(Some(KeyRow {
            fingerprint: row.text("fingerprint")?,
            claimed_at_ms: row.int("claimed_at_ms")?,
            claimed_by: row.opt_text("claimed_by")?,
            holder_beat_at_ms: row.opt_int("heartbeat_at_ms")?,
            answer,
        }))
    }
}

struct KeyRow {
    fingerprint: String,
    claimed_at_ms: i64,
    /// The process holding a pending claim.
    claimed_by: Option<String>,
    /// That process's last heartbeat, if it has a row.
    holder_beat_at_ms: Option<i64>,
    answer: Option<StoredAnswer>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// What the idempotency middleware needs.
#[derive(Clone, Debug)]
pub struct IdempotencyState {
    /// Where keys live.
    pub store: IdempotencyStore,
    /// The request body limit, in bytes.
    pub max_body_bytes: usize,
}

/// The fingerprint of a request: method, path and body (JSON compared by value, not by layout).
pub fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let canonical = match serde_json::from_slice::<serde_json::Value>(body) {
        // serde_json's maps are sorted, so equal documents print equal.
        Ok(value) => value.to_string().into_bytes(),
        Err(_) => body.to_vec(),
    };
    let mut hash = Sha256::new();
    hash.update(method.as_str().as_bytes());
    hash.update(b"\n");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(&canonical);
    hex::encode(hash.finalize())
}

/// Middleware over authenticated command routes: claims, replays or refuses keyed requests, and
/// tells the route its [`CommandKey`].
pub async fn idempotent(State(state): State<IdempotencyState>, request: Request, next: Next) -> Response {
    let is_command = matches!(*request.method(), Method::POST | Method::PATCH | Method::PUT | Method::DELETE);
    let key = match request.headers().get("idempotency-key").map(|value| value.to_str()) {
        None => None,
        Some(Ok(key)) if valid_key(key) => Some(key.to_owned()),
        Some(_) => {
            return ApiError::invalid_field(
                "Idempotency-Key",
                format!("must be 1 to {MAX_KEY_CHARS} visible ASCII characters"),
            )
            .into_response()
        }
    };
    let principal = request.extensions().get::<Principal>().map(|p| p.user.as_str().to_owned());
    let (Some(key), Some(principal), true) = (key, principal, is_command) else {
        let mut request = request;
        request.extensions_mut().insert(CommandKey::unkeyed());
        return next.run(request).await;
    };

    let (mut parts, body) = request.into_parts();
    let bytes = match read_body(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(err) => return err.into_response(),
    };
    let print = fingerprint(&parts.method, parts.uri.path(), &bytes);
    let recovering = match state.store.claim(&principal, &key, &print).await {
        Ok(Claim::Fresh) => false,
        Ok(Claim::Recovering) => true,
        Ok(Claim::Replay(answer)) => return replay(answer),
        Ok(Claim::Reused) => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            )
            .into_response()
        }
        Ok(Claim::InProgress) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_progress",
                "the first request with this Idempotency-Key is still running",
            )
            .retry_after(1)
            .into_response()
        }
        Err(err) => return ApiError::from(err).into_response(),
    };
    parts.extensions.insert(CommandKey::keyed(&principal, &key, &print, recovering));
    // If this request is dropped before it answers (the client went away, shutdown), give the
    // claim up so a retry recovers it at once instead of waiting for the claim to go stale.
    let mut guard = ReleaseOnDrop { store: Some(state.store.clone()), principal: principal.clone(), key: key.clone() };
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    guard.store = None;

    if !is_final(&response) {
        if let Err(err) = state.store.release(&principal, &key).await {
            tracing::warn!(error = %err, "could not release an idempotency key; a retry waits for it to go stale");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(err) => return ApiError::internal("could not buffer a command's answer", &err).into_response(),
    };
    let header_text = |name| parts.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
    let answer = StoredAnswer {
        status: parts.status.as_u16(),
        content_type: header_text(header::CONTENT_TYPE),
        location: header_text(header::LOCATION),
        body: body.to_vec(),
    };
    if let Err(err) = state.store.complete(&principal, &key, &answer).await {
        // The command's effect is committed and its events carry the key's command id, so a retry
        // after the claim goes stale still finds them; the answer itself is not lost.
        tracing::warn!(error = %err, "could not store an idempotent answer");
    }
    Response::from_parts(parts, Body::from(body))
}

/// Releases a claim if the request holding it is dropped unanswered.
struct ReleaseOnDrop {
    store: Option<IdempotencyStore>,
    principal: String,
    key: String,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else { return };
        let (principal, key) = (std::mem::take(&mut self.principal), std::mem::take(&mut self.key));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = store.release(&principal, &key).await {
                    tracing::warn!(error = %err, "could not release the claim of a dropped request");
                }
            });
        }
    }
}

/// Whether an answer is the final one for its key: retrying cannot change it.
fn is_final(response: &Response) -> bool {
    let status = response.status();
    let transient = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || response.headers().contains_key(header::RETRY_AFTER);
    !transient
}

/// Documents on a command route what keyed requests add: the `Idempotency-Key` header with its
/// bounds, and the refusals of a key (a keyed request's body is read here, so it may be too large).
pub fn document(operation: &mut Operation) {
    let key = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_KEY_CHARS))
        .pattern(Some("^[ -~]+$"));
    let header = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some("Makes a retry answer what the first request did (1 to 200 printable ASCII characters)"))
        .schema(Some(key))
        .build();
    operation.parameters.get_or_insert_with(Vec::new).push(header);
    let conflict = "`concurrent_modification`, `idempotency_key_in_progress` (with `Retry-After`)";
    document_refusal(operation, 409, conflict);
    let invalid = "`idempotency_key_reused`; `validation_failed`: the Idempotency-Key is malformed";
    document_refusal(operation, 422, invalid);
    document_refusal(operation, 413, "`body_too_large`");
    document_refusal(operation, 400, "`unreadable_body`");
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_CHARS && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

fn replay(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    if let Some(value) = answer.content_type.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Some(value) = answer.location.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::LOCATION, value);
    }
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_json_bodies_have_equal_fingerprints() {
        let a = fingerprint(&Method::POST, "/v1/rooms", br#"{"a": 1, "b": [1, 2]}"#);
        let b = fingerprint(&Method::POST, "/v1/rooms", br#"{"b":[1,2],"a":1}"#);
        assert_eq!(a, b);
    }

    #[test]
    fn path_method_and_body_all_count() {
        let base = fingerprint(&Method::POST, "/v1/rooms", b"{}");
        assert_ne!(base, fingerprint(&Method::PATCH, "/v1/rooms", b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/v1/rooms/x", b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/v1/rooms", br#"{"a":1}"#));
    }

    #[test]
    fn keyed_commands_derive_stable_ids_per_caller() {
        let first = CommandKey::keyed("guest-1", "k", "print", false);
        let again = CommandKey::keyed("guest-1", "k", "print", true);
        let other = CommandKey::keyed("guest-2", "k", "print", false);
        let reused = CommandKey::keyed("guest-1", "k", "another print", false);
        assert_ne!(first.command_id, reused.command_id);
        assert_eq!(first.command_id, again.command_id);
        assert_eq!(first.derive_id("room"), again.derive_id("room"));
        assert_ne!(first.command_id, other.command_id);
        assert_ne!(first.derive_id("room"), first.derive_id("reservation"));
        assert_ne!(CommandKey::unkeyed().derive_id("room"), CommandKey::unkeyed().derive_id("room"));
    }

    #[tokio::test]
    async fn answered_keys_are_forgotten_after_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let url = stay_store::StoreUrl::Sqlite(dir.path().join("keys.db"));
        let db = SqlDatabase::open(&url).await.unwrap();
        db.migrate(&IDEMPOTENCY_MIGRATIONS).await.unwrap();
        let keys = IdempotencyStore::new(db);
        assert_eq!(keys.claim("u", "k", "print").await.unwrap(), Claim::Fresh);
        let answer = StoredAnswer { status: 201, content_type: None, location: None, body: b"{}".to_vec() };
        keys.complete("u", "k", &answer).await.unwrap();
        assert_eq!(keys.purge(Duration::from_secs(3600)).await.unwrap(), 0, "kept within the retention");
        assert_eq!(keys.claim("u", "k", "print").await.unwrap(), Claim::Replay(answer));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(keys.purge(Duration::ZERO).await.unwrap(), 1);
        assert_eq!(keys.claim("u", "k", "other print").await.unwrap(), Claim::Fresh);
    }

    async fn fresh_keys() -> (tempfile::TempDir, SqlDatabase) {
        let dir = tempfile::tempdir().unwrap();
        let url = stay_store::StoreUrl::Sqlite(dir.path().join("keys.db"));
        let db = SqlDatabase::open(&url).await.unwrap();
        db.migrate(&IDEMPOTENCY_MIGRATIONS).await.unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn a_claim_of_a_process_still_beating_is_in_progress_for_others_and_for_itself() {
        let (_dir, db) = fresh_keys().await;
        let running = IdempotencyStore::new(db.clone());
        running.beat().await.unwrap();
        assert_eq!(running.claim("u", "k", "print").await.unwrap(), Claim::Fresh);

        let other = IdempotencyStore::new(db);
        assert_eq!(other.claim("u", "k", "print").await.unwrap(), Claim::InProgress);
        assert_eq!(running.claim("u", "k", "print").await.unwrap(), Claim::InProgress);
    }

    #[tokio::test]
    async fn a_claim_of_a_process_that_stopped_beating_is_taken_over_at_once() {
        let (_dir, db) = fresh_keys().await;
        let killed = IdempotencyStore::new(db.clone());
        killed.beat().await.unwrap();
        assert_eq!(killed.claim("u", "k", "print").await.unwrap(), Claim::Fresh);
        // Its last beat was longer ago than DEAD_AFTER: it was killed and beats no more.
        let silent_since = now_ms() - millis(DEAD_AFTER) - 1;
        db.run("UPDATE command_api_processes SET heartbeat_at_ms = $1", &[silent_since.into()]).await.unwrap();

        let restarted = IdempotencyStore::new(db);
        assert_eq!(restarted.claim("u", "k", "print").await.unwrap(), Claim::Recovering);
        assert_eq!(restarted.claim("u", "k", "print").await.unwrap(), Claim::InProgress, "now it is the new holder's");
    }

    #[tokio::test]
    async fn a_claim_of_a_process_with_no_heartbeat_left_is_taken_over() {
        let (_dir, db) = fresh_keys().await;
        let gone = IdempotencyStore::new(db.clone());
        assert_eq!(gone.claim("u", "k", "print").await.unwrap(), Claim::Fresh);

        assert_eq!(IdempotencyStore::new(db).claim("u", "k", "print").await.unwrap(), Claim::Recovering);
    }

    #[tokio::test]
    async fn a_stopped_process_retires_its_heartbeat() {
        let (_dir, db) = fresh_keys().await;
        let keys = IdempotencyStore::new(db.clone());
        let (done, watching) = tokio::sync::watch::channel(false);
        let beating = tokio::spawn({
            let keys = keys.clone();
            async move { keys.keep_alive(watching).await }
        });
        let count = || async { db.rows("SELECT process_id FROM command_api_processes", &[]).await.unwrap().len() };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while count().await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "it beats at once");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(keys.claim("u", "k", "print").await.unwrap(), Claim::Fresh);

        done.send(true).unwrap();
        beating.await.unwrap();

        assert_eq!(count().await, 0);
        assert_eq!(IdempotencyStore::new(db).claim("u", "k", "print").await.unwrap(), Claim::Recovering);
    }

    #[test]
    fn keys_are_short_visible_ascii() {
        assert!(valid_key("order-42"));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(MAX_KEY_CHARS + 1)));
        assert!(!valid_key("tab\there"));
    }
}
