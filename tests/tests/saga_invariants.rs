//! The reservation saga's invariants (DESIGN.md §4.4, §5.2), black-box against real `stay serve`
//! processes: many guests racing for the same nights, a random workload of reservations, card
//! outcomes and cancellations, `stay serve` and `stay payment-sim` killed mid-run, and two saga
//! processes sharing one PostgreSQL database.
//!
//! After every run, once all sagas have ended, the checks are the same:
//! - every reservation ended confirmed, rejected or cancelled; no saga is running or parked, and
//!   each saga's stream ends in the outcome its reservation shows;
//! - money is conserved per reservation: succeeded charges − refunds − voids is its total price
//!   when confirmed and 0 otherwise, both in Stay's ledger (`/v1/admin/payments`) and in the
//!   provider's own (`stay payment-sim`'s over HTTP, or the ledger file of the simulator inside
//!   `stay serve`); no payment belongs to an unknown reservation;
//!   no payment is charged twice;
//! - no night of a room is confirmed to two reservations;
//! - no saga step succeeded twice.
//!
//! The workload is random from a seed printed at the start of each test; `STAY_TEST_SEED=N`
//! replays it (the interleaving of concurrent requests is, of course, not replayed).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{Days, NaiveDate, Utc};
use futures::stream::{self, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use stay_store::{EventStore, Position, RecordedEvent};
use stay_tests::{Backend, PaymentSim, StayServer};

/// Concurrent clients in the random workloads.
const CLIENTS: usize = 16;
/// How long a client keeps retrying one request during the run before it sets the job aside
/// (a request in flight during a crash holds its idempotency key until the restarted process
/// sees the dead one's heartbeat stop, a few seconds).
const RUN_PATIENCE: Duration = Duration::from_secs(6);
/// How long the set-aside requests are retried at the end of the run.
const DRAIN_PATIENCE: Duration = Duration::from_secs(150);
/// The currency of every room.
const CURRENCY: &str = "EUR";

// ---------------------------------------------------------------------------------------------
// Randomness

/// SplitMix64: small, seedable, good enough to pick rooms, dates and cards.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn weighted<T: Copy>(&mut self, choices: &[(T, u64)]) -> T {
        let total: u64 = choices.iter().map(|(_, weight)| weight).sum();
        let mut pick = self.below(total);
        for (choice, weight) in choices {
            if pick < *weight {
                return *choice;
            }
            pick -= weight;
        }
        choices[choices.len() - 1].0
    }
}

/// The test's seed: `STAY_TEST_SEED`, or the clock; printed so a failure can be replayed.
fn seeded(test: &str) -> (u64, Rng) {
    let seed = match std::env::var("STAY_TEST_SEED") {
        Ok(text) => {
            text.trim().parse().unwrap_or_else(|_| panic!("STAY_TEST_SEED must be an unsigned integer, not {text:?}"))
        }
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1),
    };
    eprintln!("{test}: seed {seed} (replay with STAY_TEST_SEED={seed})");
    (seed, Rng(seed))
}

// ---------------------------------------------------------------------------------------------
// Talking to the servers (with retries across crashes)

/// An answer, as far as the tests need it.
#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    text: String,
    body: Value,
    retry_after: Option<u64>,
}

impl Reply {
    fn code(&self) -> &str {
        self.body.get("code").and_then(Value::as_str).unwrap_or("")
    }

    fn field(&self, name: &str) -> &str {
        self.body.get(name).and_then(Value::as_str).unwrap_or("")
    }
}

/// The servers' current addresses (a crashed and restarted server listens elsewhere), shared by
/// the clients of a workload.
#[derive(Clone, Debug)]
struct Endpoints {
    client: reqwest::Client,
    urls: Arc<Vec<RwLock<String>>>,
    retries: Arc<Retries>,
}

/// Why commands were sent again, for the summary line.
#[derive(Debug, Default)]
struct Retries {
    connection_failed: AtomicUsize,
    payments_unavailable: AtomicUsize,
    overloaded: AtomicUsize,
    key_in_progress: AtomicUsize,
}

impl Retries {
    fn summary(&self) -> String {
        format!(
            "retries: {} connection failures, {} payments_unavailable, {} other 503, {} idempotency_key_in_progress",
            self.connection_failed.load(Ordering::SeqCst),
            self.payments_unavailable.load(Ordering::SeqCst),
            self.overloaded.load(Ordering::SeqCst),
            self.key_in_progress.load(Ordering::SeqCst),
        )
    }
}

impl Endpoints {
    fn new(servers: &[&StayServer]) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("HTTP client");
        let urls = servers.iter().map(|server| RwLock::new(server.url().to_owned())).collect();
        Self { client, urls: Arc::new(urls), retries: Arc::default() }
    }

    fn count(&self) -> usize {
        self.urls.len()
    }

    fn url(&self, server: usize) -> String {
        self.urls[server].read().expect("URL lock").clone()
    }

    /// Points clients of `index` at `server`'s (new) address.
    fn point(&self, index: usize, server: &StayServer) {
        *self.urls[index].write().expect("URL lock") = server.url().to_owned();
    }

    async fn send(
        &self,
        server: usize,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self.client.request(method, format!("{}{path}", self.url(server))).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse().ok());
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, text, body, retry_after })
    }

    /// A GET, retried over connection failures for up to a minute.
    async fn get(&self, server: usize, path: &str, token: &str) -> Reply {
        let started = Instant::now();
        loop {
            match self.send(server, Method::GET, path, token, None, &[]).await {
                Ok(reply) if reply.status != 503 => return reply,
                Ok(_) | Err(_) if started.elapsed() < Duration::from_secs(60) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(reply) => return reply,
                Err(err) => panic!("GET {path} failed for a minute: {err}"),
            }
        }
    }

    /// A keyed command, sent again with the same key and body until the server gives an answer
    /// that retrying cannot change: over connection failures (a crash), 503 (`overloaded`,
    /// `payments_unavailable`, after Retry-After) and 409 `idempotency_key_in_progress` (the first
    /// attempt died holding the key). `None` when `patience` ran out first.
    #[allow(clippy::too_many_arguments)]
    async fn command(
        &self,
        server: usize,
        path: &str,
        token: &str,
        key: &str,
        body: Option<&Value>,
        wait: Option<u32>,
        patience: Duration,
    ) -> Option<Reply> {
        let started = Instant::now();
        let prefer = wait.map(|seconds| format!("wait={seconds}"));
        loop {
            let mut headers = vec![("idempotency-key", key)];
            if let Some(prefer) = &prefer {
                headers.push(("prefer", prefer.as_str()));
            }
            let counter = |counter: &AtomicUsize| counter.fetch_add(1, Ordering::SeqCst);
            let pause = match self.send(server, Method::POST, path, token, body, &headers).await {
                Ok(reply) if reply.status == 503 => {
                    if reply.code() == "payments_unavailable" {
                        counter(&self.retries.payments_unavailable);
                    } else {
                        counter(&self.retries.overloaded);
                    }
                    Duration::from_millis(reply.retry_after.unwrap_or(1).saturating_mul(1000).clamp(200, 2000))
                }
                Ok(reply) if reply.status == 409 && reply.code() == "idempotency_key_in_progress" => {
                    counter(&self.retries.key_in_progress);
                    Duration::from_millis(500)
                }
                Ok(reply) => return Some(reply),
                Err(_) => {
                    counter(&self.retries.connection_failed);
                    Duration::from_millis(100)
                }
            };
            if started.elapsed() + pause > patience {
                return None;
            }
            tokio::time::sleep(pause).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The workload

/// A registered room.
#[derive(Clone, Debug)]
struct Room {
    id: String,
    nightly_minor: i64,
}

/// What a job does after its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Nothing.
    Keep,
    /// Cancel right after the request, whatever the saga is doing.
    CancelAtOnce,
    /// Ask with `Prefer: wait`, then cancel if it was confirmed (also with `Prefer: wait`).
    CancelOnceConfirmed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Request,
    Cancel,
    Done,
}

/// One guest's reservation request and what came of it, as the client saw it.
#[derive(Clone, Debug)]
struct Job {
    index: usize,
    server: usize,
    guest: String,
    token: String,
    room_id: String,
    check_in: NaiveDate,
    check_out: NaiveDate,
    card: &'static str,
    plan: Plan,
    stage: Stage,
    set_aside: bool,
    reservation_id: Option<String>,
    /// The code of a refusal at once (409), if the request was refused.
    refused: Option<String>,
    /// The answer to the cancellation: its status and code.
    cancel: Option<(u16, String)>,
    /// Answers no contract allows.
    unexpected: Vec<String>,
}

impl Job {
    fn body(&self) -> Value {
        json!({
            "room_id": self.room_id,
            "check_in": self.check_in.to_string(),
            "check_out": self.check_out.to_string(),
            "guests": 1 + self.index % 2,
            "payment": {"card_token": self.card},
        })
    }

    fn request_key(&self) -> String {
        format!("reserve-{}", self.index)
    }

    fn cancel_key(&self) -> String {
        format!("cancel-{}", self.index)
    }
}

fn day(offset: u64) -> NaiveDate {
    Utc::now().date_naive().checked_add_days(Days::new(offset)).expect("date")
}

/// The shape of a random workload.
#[derive(Clone, Debug)]
struct Mix {
    reservations: usize,
    /// Check-in is 2 to 2 + `horizon` days from today.
    horizon: u64,
    max_nights: u64,
    guests: usize,
    cards: &'static [(&'static str, u64)],
    cancel_at_once_pct: u64,
    cancel_once_confirmed_pct: u64,
}

const CARDS: &[(&str, u64)] = &[
    ("tok_visa", 72),
    ("tok_declined", 6),
    ("tok_insufficient_funds", 5),
    ("tok_error", 7),
    ("tok_timeout", 5),
    ("tok_slow", 5),
];

/// More slow charges, so some are in flight whenever the simulator is killed.
const CARDS_SLOW: &[(&str, u64)] = &[
    ("tok_visa", 62),
    ("tok_declined", 6),
    ("tok_insufficient_funds", 4),
    ("tok_error", 7),
    ("tok_timeout", 4),
    ("tok_slow", 17),
];

/// A provider that always answers (declines included, and slow answers): with it, a reservation
/// rejected as `payment_unavailable` can only be Stay's doing.
const CARDS_ANSWERED: &[(&str, u64)] =
    &[("tok_visa", 66), ("tok_declined", 8), ("tok_insufficient_funds", 6), ("tok_slow", 20)];

fn guest_token(server: &StayServer, guest: &str) -> String {
    server.token(guest, "guest")
}

fn random_jobs(rng: &mut Rng, server: &StayServer, servers: usize, rooms: &[Room], mix: &Mix) -> Vec<Job> {
    (0..mix.reservations)
        .map(|index| {
            let guest = format!("guest-{}", rng.below(mix.guests as u64));
            let room = &rooms[rng.below(rooms.len() as u64) as usize];
            let check_in = day(2 + rng.below(mix.horizon));
            let check_out = check_in.checked_add_days(Days::new(1 + rng.below(mix.max_nights))).expect("date");
            let card = rng.weighted(mix.cards);
            let roll = rng.below(100);
            let plan = if roll < mix.cancel_at_once_pct {
                Plan::CancelAtOnce
            } else if roll < mix.cancel_at_once_pct + mix.cancel_once_confirmed_pct {
                Plan::CancelOnceConfirmed
            } else {
                Plan::Keep
            };
            Job {
                index,
                server: index % servers,
                token: guest_token(server, &guest),
                guest,
                room_id: room.id.clone(),
                check_in,
                check_out,
                card,
                plan,
                stage: Stage::Request,
                set_aside: false,
                reservation_id: None,
                refused: None,
                cancel: None,
                unexpected: Vec::new(),
            }
        })
        .collect()
}

async fn register_rooms(endpoints: &Endpoints, host_token: &str, count: usize, rng: &mut Rng) -> Vec<Room> {
    let mut rooms = Vec::new();
    for index in 0..count {
        let nightly_minor = 5_000 + 100 * i64::try_from(rng.below(100)).expect("small");
        let body = json!({
            "name": format!("Room {index}"),
            "address": format!("{index} Saga Street"),
            "nightly_price": {"amount_minor": nightly_minor, "currency": CURRENCY},
            "capacity": 4,
        });
        let key = format!("room-{index}");
        let reply = endpoints
            .command(0, "/v1/rooms", host_token, &key, Some(&body), None, DRAIN_PATIENCE)
            .await
            .expect("registering a room answered");
        assert_eq!(reply.status, 201, "registering a room: {}", reply.text);
        rooms.push(Room { id: reply.field("room_id").to_owned(), nightly_minor });
    }
    rooms
}

/// Carries a job on from its stage; false when a request got no answer within `patience`.
async fn run_job(endpoints: &Endpoints, job: &mut Job, patience: Duration) -> bool {
    loop {
        match job.stage {
            Stage::Done => return true,
            Stage::Request => {
                let wait = (job.plan == Plan::CancelOnceConfirmed).then_some(20);
                let (key, body) = (job.request_key(), job.body());
                let sent = endpoints
                    .command(job.server, "/v1/reservations", &job.token, &key, Some(&body), wait, patience)
                    .await;
                let Some(reply) = sent else { return false };
                job.stage = Stage::Done;
                match reply.status {
                    200 | 202 => {
                        let id = reply.field("reservation_id");
                        if id.is_empty() {
                            job.unexpected
                                .push(format!("request {key} of {}: no reservation_id: {}", job.guest, reply.text));
                            continue;
                        }
                        job.reservation_id = Some(id.to_owned());
                        job.stage = match job.plan {
                            Plan::Keep => Stage::Done,
                            Plan::CancelAtOnce => Stage::Cancel,
                            // Still pending after the wait: cancel it anyway.
                            Plan::CancelOnceConfirmed if reply.status == 202 => Stage::Cancel,
                            Plan::CancelOnceConfirmed if reply.field("status") == "confirmed" => Stage::Cancel,
                            Plan::CancelOnceConfirmed => Stage::Done,
                        };
                    }
                    409 if reply.code() == "dates_unavailable" => job.refused = Some(reply.code().to_owned()),
                    _ => {
                        job.unexpected.push(format!("request {key} of {}: {} {}", job.guest, reply.status, reply.text))
                    }
                }
            }
            Stage::Cancel => {
                let id = job.reservation_id.clone().expect("a reservation to cancel");
                let path = format!("/v1/reservations/{id}/cancel");
                let wait = (job.plan == Plan::CancelOnceConfirmed).then_some(20);
                let key = job.cancel_key();
                let sent = endpoints.command(job.server, &path, &job.token, &key, None, wait, patience).await;
                let Some(reply) = sent else { return false };
                job.stage = Stage::Done;
                job.cancel = Some((reply.status, reply.code().to_owned()));
                match reply.status {
                    202 => {}
                    200 if reply.field("status") == "cancelled" => {}
                    // Rejected (or already cancelled) before the cancellation arrived.
                    409 if reply.code() == "reservation_status_conflict" => {}
                    _ => job.unexpected.push(format!("cancel of {id}: {} {}", reply.status, reply.text)),
                }
            }
        }
    }
}

/// Runs the jobs with `clients` at once; `progress` counts the jobs done (or set aside). Jobs whose
/// request got no answer during the run are retried at the end, with more patience.
async fn run_workload(endpoints: Endpoints, jobs: Vec<Job>, clients: usize, progress: Arc<AtomicUsize>) -> Vec<Job> {
    let ran: Vec<(Job, bool)> = stream::iter(jobs)
        .map(|mut job| {
            let endpoints = endpoints.clone();
            let progress = progress.clone();
            async move {
                let done = run_job(&endpoints, &mut job, RUN_PATIENCE).await;
                progress.fetch_add(1, Ordering::SeqCst);
                (job, done)
            }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    let (mut finished, aside): (Vec<_>, Vec<_>) = ran.into_iter().partition(|(_, done)| *done);
    let drained: Vec<(Job, bool)> = stream::iter(aside)
        .map(|(mut job, _)| {
            let endpoints = endpoints.clone();
            async move {
                job.set_aside = true;
                let done = run_job(&endpoints, &mut job, DRAIN_PATIENCE).await;
                if !done {
                    job.unexpected.push(format!(
                        "job {} ({:?} stage) got no answer in {DRAIN_PATIENCE:?} of retries",
                        job.index, job.stage
                    ));
                }
                (job, done)
            }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    finished.extend(drained);
    let mut jobs: Vec<Job> = finished.into_iter().map(|(job, _)| job).collect();
    jobs.sort_by_key(|job| job.index);
    jobs
}

// ---------------------------------------------------------------------------------------------
// What the store says

/// An event's own fields, whether the payload is stored with its variant tag or without.
fn fields(event: &RecordedEvent) -> &Value {
    event.payload.get(&event.event_type).unwrap_or(&event.payload)
}

fn text_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A reservation as its stream tells it.
#[derive(Clone, Debug, Default)]
struct Reservation {
    guest_id: String,
    room_id: String,
    check_in: String,
    check_out: String,
    card: String,
    events: Vec<String>,
    rejection: Option<String>,
    total_price: Option<(i64, String)>,
}

impl Reservation {
    /// `confirmed`, `rejected` or `cancelled`, once final.
    fn final_state(&self) -> Option<&'static str> {
        match self.events.last().map(String::as_str) {
            Some("ReservationConfirmed") => Some("confirmed"),
            Some("ReservationRejected") => Some("rejected"),
            Some("ReservationCancelled") => Some("cancelled"),
            _ => None,
        }
    }
}

/// A saga as its stream tells it.
#[derive(Clone, Debug, Default)]
struct Saga {
    /// (event type, its fields), in order.
    events: Vec<(String, Value)>,
}

impl Saga {
    /// The outcome of the last `SagaCompleted`, if the stream ends with one.
    fn ended_as(&self) -> Option<&str> {
        match self.events.last() {
            Some((kind, fields)) if kind == "SagaCompleted" => Some(text_at(fields, "/outcome/kind")),
            _ => None,
        }
    }
}

impl Saga {
    /// Its events in short, for failure messages: `StepSucceeded(charge:charge_approved)`.
    fn trail(&self) -> String {
        let short: Vec<String> = self
            .events
            .iter()
            .map(|(kind, fields)| {
                let step = text_at(fields, "/step");
                let detail = match kind.as_str() {
                    "StepSucceeded" => format!("{step}:{}", text_at(fields, "/outcome/kind")),
                    "StepFailed" => format!("{step}: {}", text_at(fields, "/error")),
                    "CompensationStarted" | "SagaCompleted" => {
                        let reason = fields.get("reason").or_else(|| fields.get("outcome")).unwrap_or(&Value::Null);
                        reason.to_string()
                    }
                    _ => step.to_owned(),
                };
                format!("{kind}({detail})")
            })
            .collect();
        short.join(" → ")
    }
}

#[derive(Debug, Default)]
struct History {
    reservations: BTreeMap<String, Reservation>,
    sagas: BTreeMap<String, Saga>,
}

async fn read_history(store: &EventStore) -> History {
    let mut history = History::default();
    let mut after = Position::START;
    loop {
        let batch = store.read_feed(after, 1000).await.expect("read the feed");
        let Some(last) = batch.last() else { break };
        after = last.position;
        for event in &batch {
            let fields = fields(event);
            match event.aggregate_type.as_str() {
                "Reservation" => {
                    let reservation = history.reservations.entry(event.aggregate_id.clone()).or_default();
                    reservation.events.push(event.event_type.clone());
                    match event.event_type.as_str() {
                        "ReservationRequested" => {
                            reservation.guest_id = text_at(fields, "/guest_id").to_owned();
                            reservation.room_id = text_at(fields, "/room_id").to_owned();
                            reservation.check_in = text_at(fields, "/stay/check_in").to_owned();
                            reservation.check_out = text_at(fields, "/stay/check_out").to_owned();
                            reservation.card = text_at(fields, "/card_token").to_owned();
                        }
                        "ReservationRejected" => {
                            let reason = fields.get("reason").cloned().unwrap_or(Value::Null);
                            let code = reason.get("code").and_then(Value::as_str).map(str::to_owned);
                            reservation.rejection = Some(code.unwrap_or_else(|| reason.to_string()));
                        }
                        "ReservationConfirmed" => {
                            let amount = fields.pointer("/total_price/amount_minor").and_then(Value::as_i64);
                            let currency = text_at(fields, "/total_price/currency").to_owned();
                            reservation.total_price = amount.map(|amount| (amount, currency));
                        }
                        _ => {}
                    }
                }
                "ReservationSaga" => {
                    let saga = history.sagas.entry(event.aggregate_id.clone()).or_default();
                    saga.events.push((event.event_type.clone(), fields.clone()));
                }
                _ => {}
            }
        }
    }
    history
}

/// The sagas of `status` as the `sagas` read model shows them once it has read the whole log.
async fn admin_sagas(endpoints: &Endpoints, admin: &str, status: &str, store: &EventStore) -> Vec<Value> {
    let head = store.head().await.expect("the head of the feed");
    let path = format!("/v1/admin/sagas?status={status}&limit=1000&min_position={head}&wait_ms=30000");
    let reply = endpoints.get(0, &path, admin).await;
    assert_eq!(reply.status, 200, "GET /v1/admin/sagas?status={status}: {}", reply.text);
    reply.body.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
}

async fn admin_payments(endpoints: &Endpoints, admin: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/admin/payments?limit=10000&cursor={cursor}"),
            None => "/v1/admin/payments?limit=10000".to_owned(),
        };
        let reply = endpoints.get(0, &path, admin).await;
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.text);
        items.extend(reply.body.get("items").and_then(Value::as_array).cloned().unwrap_or_default());
        match reply.body.get("next_cursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

/// Waits until no saga runs and every reservation and saga in the store is final (or `timeout`).
async fn settle(endpoints: &Endpoints, admin: &str, store: &EventStore, timeout: Duration) -> History {
    let deadline = Instant::now() + timeout;
    loop {
        let running = admin_sagas(endpoints, admin, "running", store).await;
        if running.is_empty() || Instant::now() > deadline {
            let history = read_history(store).await;
            let open = history.reservations.values().any(|r| r.final_state().is_none())
                || history.sagas.values().any(|s| s.ended_as().is_none());
            if !open || Instant::now() > deadline {
                return history;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The invariants

/// Counts for the summary line.
#[derive(Debug, Default)]
struct Tally {
    requests: usize,
    confirmed: usize,
    rejected: usize,
    refused_at_once: usize,
    cancelled: usize,
    cancels_asked: usize,
    set_aside: usize,
    /// Rejections by the saga, per reason.
    reasons: BTreeMap<String, usize>,
    /// Compensation steps that succeeded, per step.
    compensations: BTreeMap<String, usize>,
}

/// Money kept per reservation: succeeded charges − succeeded refunds − succeeded voids.
fn kept(entries: &[Value], violations: &mut Vec<String>, ledger: &str) -> HashMap<String, i64> {
    let mut kept = HashMap::new();
    for entry in entries {
        if text_at(entry, "/status") != "succeeded" {
            continue;
        }
        let reservation = text_at(entry, "/reservation_id").to_owned();
        let amount = entry.pointer("/amount/amount_minor").and_then(Value::as_i64).unwrap_or(0);
        let currency = text_at(entry, "/amount/currency");
        if currency != CURRENCY {
            violations.push(format!("{ledger}: a movement for reservation {reservation} is in {currency:?}: {entry}"));
        }
        let sign = match text_at(entry, "/kind") {
            "charge" => 1,
            "refund" | "void" => -1,
            other => {
                violations.push(format!("{ledger}: unknown movement kind {other:?} for reservation {reservation}"));
                0
            }
        };
        *kept.entry(reservation).or_insert(0) += sign * amount;
    }
    kept
}

/// At most one succeeded charge per payment id.
fn charged_once(entries: &[Value], violations: &mut Vec<String>, ledger: &str) {
    let mut charges: HashMap<&str, usize> = HashMap::new();
    for entry in entries {
        if text_at(entry, "/kind") == "charge" && text_at(entry, "/status") == "succeeded" {
            *charges.entry(text_at(entry, "/payment_id")).or_default() += 1;
        }
    }
    for (payment, count) in charges {
        if count > 1 {
            let reservations: Vec<&str> = entries
                .iter()
                .filter(|entry| text_at(entry, "/payment_id") == payment)
                .map(|entry| text_at(entry, "/reservation_id"))
                .collect();
            violations.push(format!(
                "no double charge: payment {payment} (reservation {}) has {count} succeeded charges in the {ledger}",
                reservations.first().unwrap_or(&"?")
            ));
        }
    }
}

struct Evidence<'a> {
    label: &'a str,
    seed: u64,
    rooms: &'a [Room],
    jobs: &'a [Job],
    history: &'a History,
    running: &'a [Value],
    parked: &'a [Value],
    stay_ledger: &'a [Value],
    sim_ledger: Option<&'a [Value]>,
}

/// Every invariant of the run; answers the violations (each naming its reservation) and the tally.
fn check(evidence: &Evidence<'_>) -> (Vec<String>, Tally) {
    let Evidence { rooms, jobs, history, running, parked, stay_ledger, sim_ledger, .. } = evidence;
    let mut violations = Vec::new();
    let mut tally = Tally { requests: jobs.len(), ..Tally::default() };

    // What the clients were told matches what the store holds.
    let mut answered: HashMap<&str, &Job> = HashMap::new();
    for job in jobs.iter() {
        tally.set_aside += usize::from(job.set_aside);
        tally.refused_at_once += usize::from(job.refused.is_some());
        tally.cancels_asked += usize::from(job.cancel.is_some());
        for unexpected in &job.unexpected {
            violations.push(format!("API contract: unexpected answer: {unexpected}"));
        }
        let Some(id) = job.reservation_id.as_deref() else { continue };
        if answered.insert(id, job).is_some() {
            violations.push(format!("idempotency: reservation {id} was answered to two different requests"));
        }
        match history.reservations.get(id) {
            None => {
                violations.push(format!("reservation {id} was answered to job {} but is not in the store", job.index))
            }
            Some(stored) => {
                let asked = (job.room_id.as_str(), job.check_in.to_string(), job.check_out.to_string());
                let recorded = (stored.room_id.as_str(), stored.check_in.clone(), stored.check_out.clone());
                if asked != recorded || stored.card != job.card {
                    violations.push(format!(
                        "reservation {id} was recorded as {recorded:?} with {} but job {} asked for {asked:?} with {}",
                        stored.card, job.index, job.card
                    ));
                }
            }
        }
    }
    for (id, stored) in &history.reservations {
        if !answered.contains_key(id.as_str()) {
            // The request(s) it must have come from: same guest, room, nights and card.
            let sources: Vec<String> = jobs
                .iter()
                .filter(|job| {
                    job.guest == stored.guest_id
                        && job.room_id == stored.room_id
                        && job.check_in.to_string() == stored.check_in
                        && job.check_out.to_string() == stored.check_out
                        && job.card == stored.card
                })
                .map(|job| {
                    format!(
                        "job {} (key {} of {}, set aside after a failed attempt: {}) was answered {}",
                        job.index,
                        job.request_key(),
                        job.guest,
                        job.set_aside,
                        match (&job.reservation_id, &job.refused) {
                            (Some(other), _) => format!("with reservation {other}"),
                            (None, Some(code)) => format!("409 {code}"),
                            (None, None) => format!("{:?}", job.unexpected),
                        }
                    )
                })
                .collect();
            violations.push(format!(
                "idempotency: reservation {id} is in the store (events {:?}, rejection {:?}) but no request was \
                 answered with it; its request: {sources:?}",
                stored.events, stored.rejection
            ));
        }
    }

    // Every saga ended; none is running or parked.
    for saga in running.iter() {
        violations.push(format!(
            "every saga ends: saga {} is still running at step {} (last error {})",
            text_at(saga, "/saga_id"),
            text_at(saga, "/step"),
            saga.get("last_error").unwrap_or(&Value::Null)
        ));
    }
    for saga in parked.iter() {
        violations.push(format!(
            "no saga parked: saga {} is parked at step {} ({})",
            text_at(saga, "/saga_id"),
            text_at(saga, "/step"),
            saga.get("last_error").unwrap_or(&Value::Null)
        ));
    }

    let nightly: HashMap<&str, i64> = rooms.iter().map(|room| (room.id.as_str(), room.nightly_minor)).collect();
    let stay_kept = kept(stay_ledger, &mut violations, "Stay's ledger (/v1/admin/payments)");
    let sim_kept = sim_ledger.map(|ledger| kept(ledger, &mut violations, "simulator's ledger"));
    let mut booked: HashMap<(&str, NaiveDate), &str> = HashMap::new();

    for (id, reservation) in &history.reservations {
        let state = reservation.final_state();
        match state {
            Some("confirmed") => tally.confirmed += 1,
            Some("rejected") => {
                tally.rejected += 1;
                let reason = reservation.rejection.clone().unwrap_or_default();
                *tally.reasons.entry(reason).or_default() += 1;
            }
            Some("cancelled") => tally.cancelled += 1,
            _ => violations
                .push(format!("every saga ends: reservation {id} is not final; its events: {:?}", reservation.events)),
        }

        // The saga's own stream ended the same way, and no step succeeded twice.
        match history.sagas.get(id) {
            None => violations.push(format!("reservation {id} has no saga stream")),
            Some(saga) => {
                let ended = saga.ended_as();
                if state.is_some() && ended != state {
                    violations.push(format!(
                        "saga and reservation agree: reservation {id} is {state:?} but its saga ended as {ended:?}"
                    ));
                }
                let mut steps: HashMap<(String, String), usize> = HashMap::new();
                for (kind, fields) in &saga.events {
                    if kind == "StepSucceeded" {
                        let step = text_at(fields, "/step").to_owned();
                        if ["void", "refund", "release"].contains(&step.as_str()) {
                            *tally.compensations.entry(step.clone()).or_default() += 1;
                        }
                        let outcome = text_at(fields, "/outcome/kind").to_owned();
                        *steps.entry((step, outcome)).or_default() += 1;
                    }
                }
                for ((step, outcome), count) in steps {
                    if count > 1 {
                        violations.push(format!(
                            "no saga step twice: saga {id} recorded step {step} succeeding {count} times as {outcome}"
                        ));
                    }
                }
            }
        }

        // Money is conserved.
        let nights = match (reservation.check_in.parse::<NaiveDate>(), reservation.check_out.parse::<NaiveDate>()) {
            (Ok(check_in), Ok(check_out)) => (check_out - check_in).num_days(),
            _ => {
                violations.push(format!("reservation {id} has unreadable dates {reservation:?}"));
                0
            }
        };
        let expected = if state == Some("confirmed") {
            let price = nightly.get(reservation.room_id.as_str()).map(|n| n * nights);
            match &reservation.total_price {
                Some((total, currency)) => {
                    if Some(*total) != price || currency != CURRENCY {
                        violations.push(format!(
                            "price: reservation {id} was confirmed at {total} {currency} but {nights} nights of room {} \
                             cost {price:?} {CURRENCY}",
                            reservation.room_id
                        ));
                    }
                    *total
                }
                None => {
                    violations.push(format!("reservation {id} was confirmed without a total price"));
                    price.unwrap_or(0)
                }
            }
        } else {
            0
        };
        let stay_net = stay_kept.get(id).copied().unwrap_or(0);
        if stay_net != expected {
            let rows: Vec<String> = stay_ledger
                .iter()
                .filter(|entry| text_at(entry, "/reservation_id") == id)
                .map(|entry| {
                    format!(
                        "{} {} {}",
                        text_at(entry, "/kind"),
                        text_at(entry, "/status"),
                        entry.pointer("/amount/amount_minor").unwrap_or(&Value::Null)
                    )
                })
                .collect();
            violations.push(format!(
                "money conserved (Stay's ledger): reservation {id} is {} (card {}), so Stay should keep {expected}, \
                 but its ledger keeps {stay_net}: {rows:?}; saga: {}",
                state.unwrap_or("not final"),
                reservation.card,
                history.sagas.get(id).map(Saga::trail).unwrap_or_default()
            ));
        }
        if let (Some(sim_kept), Some(sim_ledger)) = (&sim_kept, sim_ledger) {
            let sim_net = sim_kept.get(id).copied().unwrap_or(0);
            if sim_net != expected {
                let rows: Vec<String> = sim_ledger
                    .iter()
                    .filter(|entry| text_at(entry, "/reservation_id") == id)
                    .map(|entry| {
                        format!(
                            "{} {} {}",
                            text_at(entry, "/kind"),
                            text_at(entry, "/status"),
                            entry.pointer("/amount/amount_minor").unwrap_or(&Value::Null)
                        )
                    })
                    .collect();
                violations.push(format!(
                    "money conserved (simulator's ledger): reservation {id} is {} (card {}), so the provider should \
                     keep {expected}, but it keeps {sim_net}: {rows:?}; saga: {}",
                    state.unwrap_or("not final"),
                    reservation.card,
                    history.sagas.get(id).map(Saga::trail).unwrap_or_default()
                ));
            }
        }

        // No night of a room is confirmed twice.
        if state == Some("confirmed") {
            if let (Ok(check_in), Ok(check_out)) =
                (reservation.check_in.parse::<NaiveDate>(), reservation.check_out.parse::<NaiveDate>())
            {
                let mut night = check_in;
                while night < check_out {
                    if let Some(other) = booked.insert((reservation.room_id.as_str(), night), id.as_str()) {
                        violations.push(format!(
                            "no night booked twice: room {} night {night} is confirmed to reservations {other} and {id}",
                            reservation.room_id
                        ));
                    }
                    night = night.succ_opt().expect("date");
                }
            }
        }
    }

    // No payment without a reservation; no charge twice.
    for (ledger, entries) in [("Stay's ledger", Some(*stay_ledger)), ("simulator's ledger", *sim_ledger)] {
        for entry in entries.unwrap_or_default() {
            let reservation = text_at(entry, "/reservation_id");
            if !history.reservations.contains_key(reservation) {
                violations.push(format!("no payment without a reservation: {ledger} has {entry} for reservation {reservation}, which does not exist"));
            }
        }
    }
    charged_once(stay_ledger, &mut violations, "Stay's ledger");
    if let Some(sim_ledger) = sim_ledger {
        charged_once(sim_ledger, &mut violations, "simulator's ledger");
    }
    (violations, tally)
}

/// Settles the run, checks every invariant, prints the summary line and fails on any violation.
#[allow(clippy::too_many_arguments)]
async fn verify(
    label: &str,
    seed: u64,
    servers: &[&StayServer],
    endpoints: &Endpoints,
    provider: ProviderBooks<'_>,
    rooms: &[Room],
    jobs: &[Job],
    timeout: Duration,
    started: Instant,
    extra: &str,
) -> (History, Tally) {
    let admin = servers[0].token("ops", "admin");
    let store = servers[0].open_store().await;
    let history = settle(endpoints, &admin, &store, timeout).await;
    let running = admin_sagas(endpoints, &admin, "running", &store).await;
    let parked = admin_sagas(endpoints, &admin, "parked", &store).await;
    let stay_ledger = admin_payments(endpoints, &admin).await;
    let sim_ledger = match provider {
        ProviderBooks::Process(sim) => Some(sim.ledger().await),
        ProviderBooks::File(server) => Some(own_simulator_ledger(server)),
    };
    let evidence = Evidence {
        label,
        seed,
        rooms,
        jobs,
        history: &history,
        running: &running,
        parked: &parked,
        stay_ledger: &stay_ledger,
        sim_ledger: sim_ledger.as_deref(),
    };
    let (violations, tally) = check(&evidence);
    eprintln!(
        "{label}: {} requests: {} confirmed, {} rejected by the saga {:?}, {} refused at once (409), {} cancelled \
         ({} cancellations asked); compensations {:?}; {} requests set aside and retried, {}{extra}; \
         {} ledger rows; {:.1}s (seed {seed})",
        tally.requests,
        tally.confirmed,
        tally.rejected,
        tally.reasons,
        tally.refused_at_once,
        tally.cancelled,
        tally.cancels_asked,
        tally.compensations,
        tally.set_aside,
        endpoints.retries.summary(),
        stay_ledger.len(),
        started.elapsed().as_secs_f64(),
    );
    if !violations.is_empty() {
        let mut logs = String::new();
        for (index, server) in servers.iter().enumerate() {
            let text = server.logs();
            let kept = std::env::temp_dir().join(format!("saga_invariants-{label}-{seed}-server{index}.log"));
            let _ = std::fs::write(&kept, &text);
            let _ = writeln!(logs, "--- server {index}: full log kept at {}", kept.display());
            // The log lines about the reservations named in the first violations.
            for violation in violations.iter().take(5) {
                let ids: Vec<&str> = violation
                    .split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
                    .filter(|word| word.len() == 36 && word.matches('-').count() == 4)
                    .collect();
                for id in ids.iter().take(1) {
                    for line in text.lines().filter(|line| line.contains(id)).take(8) {
                        let _ = writeln!(logs, "{line}");
                    }
                }
            }
            let lines: Vec<&str> = text
                .lines()
                .filter(|line| line.contains("ERROR") || line.contains("WARN") || line.contains("panicked"))
                .collect();
            let _ = writeln!(logs, "--- server {index}: {} warnings/errors, the last 20:", lines.len());
            for line in lines.iter().rev().take(20).rev() {
                let _ = writeln!(logs, "{line}");
            }
        }
        let shown: Vec<&String> = violations.iter().take(40).collect();
        panic!(
            "{}: {} invariant violations (seed {}; replay with STAY_TEST_SEED={}), the first {}:\n{}\n{logs}",
            evidence.label,
            violations.len(),
            evidence.seed,
            evidence.seed,
            shown.len(),
            shown.iter().map(|v| format!("- {v}")).collect::<Vec<_>>().join("\n")
        );
    }
    (history, tally)
}

fn saga_args(provider: Option<&str>, call_timeout: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--payment-deadline",
        "3s",
        "--payment-call-timeout",
        call_timeout,
        "--payment-breaker-cool-down",
        "1s",
        "--saga-retry-base",
        "50ms",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    if let Some(url) = provider {
        args.extend(["--payment-provider".to_owned(), url.to_owned()]);
    }
    args
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The sum of a process's Prometheus samples whose line starts with `prefix` and contains any of
/// `labels` (all samples when `labels` is empty).
async fn metric_sum(endpoints: &Endpoints, server: usize, token: &str, prefix: &str, labels: &[&str]) -> f64 {
    let reply = endpoints.get(server, "/metrics", token).await;
    assert_eq!(reply.status, 200, "GET /metrics: {}", reply.text);
    reply
        .text
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter(|line| labels.is_empty() || labels.iter().any(|label| line.contains(label)))
        .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Kills `server` (SIGKILL) and restarts it when the workload reaches each of `percents` of its
/// `total` jobs; answers when the last restart was.
async fn crash_at(
    label: &str,
    server: &mut StayServer,
    endpoints: &Endpoints,
    progress: &AtomicUsize,
    workload: &tokio::task::JoinHandle<Vec<Job>>,
    total: usize,
    percents: &[usize],
) -> Instant {
    let mut last_restart = Instant::now();
    for percent in percents {
        wait_for_progress(progress, total * percent / 100, workload).await;
        let done = progress.load(Ordering::SeqCst);
        tokio::task::block_in_place(|| server.crash_and_restart());
        last_restart = Instant::now();
        endpoints.point(0, server);
        eprintln!("{label}: killed stay serve (SIGKILL) after {done} jobs, restarted at {}", server.url());
    }
    last_restart
}

async fn wait_for_progress(progress: &AtomicUsize, target: usize, workload: &tokio::task::JoinHandle<Vec<Job>>) {
    while progress.load(Ordering::SeqCst) < target && !workload.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

/// 50 guests ask for the same nights of one room at once: one is confirmed, the others rejected
/// (by the saga, or refused at once) as `dates_unavailable`; only the winner's payment keeps money.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_guests_race_for_the_same_nights() {
    let started = Instant::now();
    let label = "race";
    let (seed, mut rng) = seeded(label);
    let sim = PaymentSim::start();
    let args = saga_args(Some(&sim.url()), "1s");
    let server = StayServer::start_with(Backend::Sqlite, &as_strs(&args)).await;
    let endpoints = Endpoints::new(&[&server]);
    let rooms = register_rooms(&endpoints, &server.token("host-race", "host"), 1, &mut rng).await;
    let check_in = day(10 + rng.below(20));
    let check_out = check_in.checked_add_days(Days::new(1 + rng.below(5))).expect("date");
    let jobs: Vec<Job> = (0..50)
        .map(|index| {
            let guest = format!("racer-{index}");
            Job {
                index,
                server: 0,
                token: guest_token(&server, &guest),
                guest,
                room_id: rooms[0].id.clone(),
                check_in,
                check_out,
                card: "tok_visa",
                plan: Plan::Keep,
                stage: Stage::Request,
                set_aside: false,
                reservation_id: None,
                refused: None,
                cancel: None,
                unexpected: Vec::new(),
            }
        })
        .collect();
    // All 50 requests are sent at once.
    let jobs = run_workload(endpoints.clone(), jobs, 50, Arc::new(AtomicUsize::new(0))).await;
    let timeout = Duration::from_secs(60);
    let (history, tally) =
        verify(label, seed, &[&server], &endpoints, ProviderBooks::Process(&sim), &rooms, &jobs, timeout, started, "")
            .await;

    let confirmed: Vec<&String> =
        history.reservations.iter().filter(|(_, r)| r.final_state() == Some("confirmed")).map(|(id, _)| id).collect();
    assert_eq!(confirmed.len(), 1, "race (seed {seed}): exactly one of 50 guests gets the nights, not {confirmed:?}");
    let winner = confirmed[0];
    for (id, reservation) in &history.reservations {
        if id != winner {
            assert_eq!(
                (reservation.final_state(), reservation.rejection.as_deref()),
                (Some("rejected"), Some("dates_unavailable")),
                "race (seed {seed}): the loser {id} must be rejected as dates_unavailable; its events: {:?}",
                reservation.events
            );
        }
    }
    assert_eq!(
        tally.rejected + tally.refused_at_once,
        49,
        "race (seed {seed}): 49 guests are rejected (by the saga or at once)"
    );
    let admin = server.token("ops", "admin");
    let price = rooms[0].nightly_minor * (check_out - check_in).num_days();
    for (ledger, entries) in
        [("Stay's ledger", admin_payments(&endpoints, &admin).await), ("simulator's ledger", sim.ledger().await)]
    {
        for entry in &entries {
            let reservation = text_at(entry, "/reservation_id");
            assert!(
                reservation == winner.as_str() || text_at(entry, "/status") != "succeeded",
                "race (seed {seed}): only the winner {winner} moves money, but the {ledger} has {entry} for {reservation}"
            );
        }
        let mut violations = Vec::new();
        let kept = kept(&entries, &mut violations, ledger);
        assert_eq!(
            kept.get(winner.as_str()).copied(),
            Some(price),
            "race: the winner {winner} keeps its price in the {ledger}"
        );
    }
}

/// 500 random reservations over 20 rooms, with every kind of card and random cancellations, on
/// the in-process simulator: every invariant holds once the sagas have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_and_nights_are_conserved_over_a_random_workload() {
    let started = Instant::now();
    let label = "conservation";
    let (seed, mut rng) = seeded(label);
    let args = saga_args(None, "3s");
    let server = StayServer::start_with(Backend::Sqlite, &as_strs(&args)).await;
    let endpoints = Endpoints::new(&[&server]);
    let rooms = register_rooms(&endpoints, &server.token("host-1", "host"), 20, &mut rng).await;
    let mix = Mix {
        reservations: 500,
        horizon: 60,
        max_nights: 6,
        guests: 40,
        cards: CARDS,
        cancel_at_once_pct: 10,
        cancel_once_confirmed_pct: 10,
    };
    let jobs = random_jobs(&mut rng, &server, 1, &rooms, &mix);
    let jobs = run_workload(endpoints.clone(), jobs, CLIENTS, Arc::new(AtomicUsize::new(0))).await;
    let timeout = Duration::from_secs(120);
    verify(label, seed, &[&server], &endpoints, ProviderBooks::File(&server), &rooms, &jobs, timeout, started, "")
        .await;
}

/// The random workload while `stay serve` is killed (SIGKILL) three times: every invariant still
/// holds, and the provider never charged a reservation twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariants_survive_stay_serve_being_killed() {
    let started = Instant::now();
    let label = "serve-crashes";
    let (seed, mut rng) = seeded(label);
    let sim = PaymentSim::start();
    let args = saga_args(Some(&sim.url()), "3s");
    let mut server = StayServer::start_with(Backend::Sqlite, &as_strs(&args)).await;
    let endpoints = Endpoints::new(&[&server]);
    let rooms = register_rooms(&endpoints, &server.token("host-1", "host"), 20, &mut rng).await;
    let mix = Mix {
        reservations: 200,
        horizon: 40,
        max_nights: 6,
        guests: 30,
        cards: CARDS,
        cancel_at_once_pct: 10,
        cancel_once_confirmed_pct: 10,
    };
    let jobs = random_jobs(&mut rng, &server, 1, &rooms, &mix);
    let progress = Arc::new(AtomicUsize::new(0));
    let workload = tokio::spawn(run_workload(endpoints.clone(), jobs, CLIENTS, progress.clone()));
    let crashes = [20, 40, 60];
    crash_at(label, &mut server, &endpoints, &progress, &workload, mix.reservations, &crashes).await;
    let jobs = workload.await.expect("the workload ran");
    let timeout = Duration::from_secs(150);
    let extra = format!(", {} crashes of stay serve", crashes.len());
    verify(label, seed, &[&server], &endpoints, ProviderBooks::Process(&sim), &rooms, &jobs, timeout, started, &extra)
        .await;
}

/// Where `verify` reads the provider's own books, once the sagas have settled.
enum ProviderBooks<'a> {
    /// `stay payment-sim`'s ledger, over HTTP.
    Process(&'a PaymentSim),
    /// The ledger file of the simulator inside this `stay serve`.
    File(&'a StayServer),
}

/// The provider's books as the simulator inside `stay serve` keeps them: its ledger file in the
/// data directory, one entry a line.
fn own_simulator_ledger(server: &StayServer) -> Vec<Value> {
    let path = server.data_dir().join("payment-simulator.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}: {line}", path.display())))
        .collect()
}

/// The default provider, the simulator inside `stay serve`, keeps its books in the data
/// directory: 300 reservations with cancellations while `stay serve` is killed (SIGKILL) three
/// times, and within 30 s of the last restart every reservation is final, none is parked, money is
/// conserved in Stay's ledger and in the provider's, and, the provider having answered every call,
/// none was rejected for want of an answer (as the crashes used to do to charges approved just
/// before them).
async fn the_default_provider_survives_stay_serve_being_killed(backend: Backend) {
    let started = Instant::now();
    let label = match backend {
        Backend::Sqlite => "own-simulator-crashes-sqlite",
        Backend::Postgres => "own-simulator-crashes-postgres",
    };
    let (seed, mut rng) = seeded(label);
    let args = saga_args(None, "3s");
    let mut server = StayServer::start_with(backend, &as_strs(&args)).await;
    let endpoints = Endpoints::new(&[&server]);
    let rooms = register_rooms(&endpoints, &server.token("host-1", "host"), 20, &mut rng).await;
    let mix = Mix {
        reservations: 300,
        horizon: 40,
        max_nights: 6,
        guests: 30,
        cards: CARDS_ANSWERED,
        cancel_at_once_pct: 10,
        cancel_once_confirmed_pct: 15,
    };
    let jobs = random_jobs(&mut rng, &server, 1, &rooms, &mix);
    let progress = Arc::new(AtomicUsize::new(0));
    let workload = tokio::spawn(run_workload(endpoints.clone(), jobs, CLIENTS, progress.clone()));
    let last_restart =
        crash_at(label, &mut server, &endpoints, &progress, &workload, mix.reservations, &[30, 55, 80]).await;
    let jobs = workload.await.expect("the workload ran");
    let recovery = Duration::from_secs(30);
    let left = recovery.saturating_sub(last_restart.elapsed());
    assert!(!left.is_zero(), "{label}: the workload was still running {recovery:?} after the last restart");
    let extra = ", 3 crashes of stay serve with its own simulator".to_owned();
    let books = ProviderBooks::File(&server);
    let (history, _) = verify(label, seed, &[&server], &endpoints, books, &rooms, &jobs, left, started, &extra).await;
    // The provider answered every call: only the crashes could have left a charge unanswered.
    let lost_to_the_outage: Vec<(&String, &str)> = history
        .reservations
        .iter()
        .filter(|(_, r)| r.rejection.as_deref() == Some("payment_unavailable"))
        .map(|(id, r)| (id, r.card.as_str()))
        .collect();
    assert!(lost_to_the_outage.is_empty(), "{label}: rejected because of the outage: {lost_to_the_outage:?}");
    eprintln!("{label}: all final {:?} after the last restart", last_restart.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_provider_survives_stay_serve_being_killed_on_sqlite() {
    the_default_provider_survives_stay_serve_being_killed(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_provider_survives_stay_serve_being_killed_on_postgres() {
    the_default_provider_survives_stay_serve_being_killed(Backend::Postgres).await;
}

/// The random workload while `stay payment-sim` is killed with charges in flight and restarted:
/// every invariant holds in both ledgers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariants_survive_the_payment_provider_being_killed() {
    let started = Instant::now();
    let label = "provider-crashes";
    let (seed, mut rng) = seeded(label);
    let mut sim = PaymentSim::start();
    let args = saga_args(Some(&sim.url()), "3s");
    let server = StayServer::start_with(Backend::Sqlite, &as_strs(&args)).await;
    let endpoints = Endpoints::new(&[&server]);
    let rooms = register_rooms(&endpoints, &server.token("host-1", "host"), 20, &mut rng).await;
    let mix = Mix {
        reservations: 200,
        horizon: 40,
        max_nights: 6,
        guests: 30,
        cards: CARDS_SLOW,
        cancel_at_once_pct: 10,
        cancel_once_confirmed_pct: 10,
    };
    let jobs = random_jobs(&mut rng, &server, 1, &rooms, &mix);
    let progress = Arc::new(AtomicUsize::new(0));
    let workload = tokio::spawn(run_workload(endpoints.clone(), jobs, CLIENTS, progress.clone()));
    let mut kills = 0;
    for (percent, down) in [(25, Duration::from_millis(1500)), (55, Duration::ZERO), (75, Duration::from_millis(500))] {
        wait_for_progress(&progress, mix.reservations * percent / 100, &workload).await;
        let done = progress.load(Ordering::SeqCst);
        tokio::task::block_in_place(|| sim.kill());
        tokio::time::sleep(down).await;
        tokio::task::block_in_place(|| sim.restart());
        kills += 1;
        eprintln!("{label}: killed stay payment-sim after {done} jobs, down for {down:?}, restarted");
    }
    let jobs = workload.await.expect("the workload ran");
    let timeout = Duration::from_secs(120);
    let extra = format!(", {kills} kills of stay payment-sim");
    verify(label, seed, &[&server], &endpoints, ProviderBooks::Process(&sim), &rooms, &jobs, timeout, started, &extra)
        .await;
}

/// Two `stay serve` processes on one PostgreSQL database, both running the saga, both taking
/// requests: every invariant holds, no saga step ran twice and no payment was charged twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_saga_processes_share_postgres_without_doing_a_step_twice() {
    let started = Instant::now();
    let label = "postgres-two-processes";
    let (seed, mut rng) = seeded(label);
    let sim = PaymentSim::start();
    let args = saga_args(Some(&sim.url()), "3s");
    let first = StayServer::start_with(Backend::Postgres, &as_strs(&args)).await;
    let second = first.join(&as_strs(&args)).await;
    let endpoints = Endpoints::new(&[&first, &second]);
    let rooms = register_rooms(&endpoints, &first.token("host-1", "host"), 20, &mut rng).await;
    let mix = Mix {
        reservations: 200,
        horizon: 40,
        max_nights: 6,
        guests: 30,
        cards: CARDS,
        cancel_at_once_pct: 10,
        cancel_once_confirmed_pct: 10,
    };
    let jobs = random_jobs(&mut rng, &first, endpoints.count(), &rooms, &mix);
    let jobs = run_workload(endpoints.clone(), jobs, CLIENTS, Arc::new(AtomicUsize::new(0))).await;
    let per_server: Vec<usize> =
        (0..endpoints.count()).map(|index| jobs.iter().filter(|job| job.server == index).count()).collect();
    let timeout = Duration::from_secs(120);
    let extra = format!(", requests per process {per_server:?}");
    let (history, _) = verify(
        label,
        seed,
        &[&first, &second],
        &endpoints,
        ProviderBooks::Process(&sim),
        &rooms,
        &jobs,
        timeout,
        started,
        &extra,
    )
    .await;
    // Both processes drove sagas, or the test proved nothing about sharing.
    let admin = first.token("ops", "admin");
    let (mut steps, mut answered_charges) = (Vec::new(), 0.0);
    for server in 0..endpoints.count() {
        let prefix = "stay_saga_step_duration_seconds_count";
        steps.push(metric_sum(&endpoints, server, &admin, prefix, &[]).await);
        let results = ["result=\"approved\"", "result=\"declined\""];
        let prefix = "stay_provider_calls_total{op=\"charge\"";
        answered_charges += metric_sum(&endpoints, server, &admin, prefix, &results).await;
    }
    // For information: a charge call answered more often than the provider has charges (tok_timeout
    // ones are never answered) means a charge step was repeated, legitimately (a call that timed
    // out and was answered on retry) or not.
    let answerable = sim
        .ledger()
        .await
        .iter()
        .filter(|entry| text_at(entry, "/kind") == "charge")
        .filter(|entry| {
            history.reservations.get(text_at(entry, "/reservation_id")).is_some_and(|r| r.card != "tok_timeout")
        })
        .count();
    eprintln!(
        "{label}: saga steps performed per process {steps:?}; charge calls answered by the provider {answered_charges} \
         for {answerable} answerable charges in its ledger"
    );
    assert!(
        steps.iter().all(|steps| *steps > 0.0),
        "{label}: both saga processes drive sagas, but the steps per process were {steps:?}"
    );
}
