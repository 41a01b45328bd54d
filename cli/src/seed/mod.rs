//! `stay seed`: demo data through the public API of a running server, as real hosts and guests
//! would make it — rooms from several hosts, reservations with every card outcome, cancellations
//! while pending and once confirmed, reviews and replies.
//!
//! The plan (`plan.rs`) is fixed by `--seed` before the first request. Every request carries an
//! idempotency key derived from the seed, the first day and its place in the plan, so running the
//! same seed again against the same server makes nothing twice. The order of work keeps the end of
//! each reservation deterministic: cards the provider answers come first (waiting for their saga),
//! then cancellations and reviews, and the reservations that only end at the payment deadline come
//! last, so the circuit breaker their failing calls may open rejects no approvable card.

mod plan;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{Days, NaiveDate, Utc};
use clap::Args;
use futures::{stream, StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stay_domain::UserId;
use stay_http::{JwtKeys, Role};
use stay_store::{Backoff, Position};

use crate::output;
use crate::settings::SecretArgs;
use plan::{Fate, Plan, Sizes};

/// Arguments of `stay seed`.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// The running server to fill.
    #[arg(long, env = "STAY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,

    /// The server's data directory (for its token secret).
    #[arg(long, env = "STAY_DATA_DIR", default_value = "./stay-data")]
    data_dir: PathBuf,

    #[command(flatten)]
    secret: SecretArgs,

    /// Rooms to register.
    #[arg(long, default_value_t = 12)]
    rooms: usize,

    /// Hosts the rooms are shared among.
    #[arg(long, default_value_t = 3)]
    hosts: usize,

    /// Guests the reservations are shared among.
    #[arg(long, default_value_t = 20)]
    guests: usize,

    /// Reservations to make (every card outcome appears once there are six or more).
    #[arg(long, default_value_t = 60)]
    reservations: usize,

    /// The same seed (with the same sizes and --from) makes the same data.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// The earliest check-in. Default: tomorrow (UTC).
    #[arg(long)]
    from: Option<NaiveDate>,

    /// Requests in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,

    /// How long to wait, at the end, for reservations whose charge errs or times out to reach the
    /// payment deadline (the server's --payment-deadline, 60 s by default).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    settle_timeout: Duration,

    /// Machine-readable summary.
    #[arg(long)]
    json: bool,
}

/// What was made: counts by outcome, and the last position (a `min_position` for queries).
#[derive(Debug, Default, serde::Serialize)]
struct Summary {
    rooms: usize,
    reservations: BTreeMap<String, usize>,
    cancelled_while_pending: usize,
    cancelled_once_confirmed: usize,
    reviews: usize,
    replies: usize,
    seconds: f64,
    position: Option<String>,
    room_ids: Vec<String>,
}

/// Runs `stay seed`.
#[allow(clippy::print_stdout)] // the command's own output
pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let today = Utc::now().date_naive();
    let day = |days| today.checked_add_days(Days::new(days)).context("the date is past chrono's calendar");
    let from = match args.from {
        Some(day) => day,
        None => day(1)?,
    };
    // The server takes stays ending up to 730 days ahead; a day less leaves room for midnight.
    let last_day = day(729)?;
    let sizes = Sizes { hosts: args.hosts, guests: args.guests, rooms: args.rooms, reservations: args.reservations };
    let plan = Plan::new(args.seed, sizes, from, last_day)?;
    let api = Api::new(&args, &plan)?;
    api.check_reachable().await?;
    let requests = plan.rooms.len()
        + plan.reservations.len()
        + plan
            .reservations
            .iter()
            .map(|r| match &r.fate {
                Fate::Keep => 0,
                Fate::CancelWhilePending | Fate::CancelOnceConfirmed => 1,
                Fate::Review { reply, .. } => 1 + usize::from(reply.is_some()),
            })
            .sum::<usize>();
    let bar = if args.json { ProgressBar::hidden() } else { output::request_bar(requests as u64, "seed".into()) };
    let seeder =
        Seeder { api, plan, bar, concurrency: usize::from(args.concurrency), key_prefix: key_prefix(&args, from) };
    let mut summary = seeder.seed(args.settle_timeout).await?;
    seeder.bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

/// The prefix of every idempotency key: the same plan gets the same keys.
fn key_prefix(args: &SeedArgs, from: NaiveDate) -> String {
    format!("seed-{}-{from}-{}h{}g{}r{}", args.seed, args.hosts, args.guests, args.rooms, args.reservations)
}

#[allow(clippy::print_stdout)] // the command's own output
fn print_summary(summary: &Summary) {
    let mut table = output::table(&["made", "count"], &["count"]);
    table.add_row(vec!["rooms".to_owned(), summary.rooms.to_string()]);
    for (status, count) in &summary.reservations {
        table.add_row(vec![format!("reservations {status}"), count.to_string()]);
    }
    table.add_row(vec!["  of which cancelled while pending".to_owned(), summary.cancelled_while_pending.to_string()]);
    table.add_row(vec!["  of which cancelled once confirmed".to_owned(), summary.cancelled_once_confirmed.to_string()]);
    table.add_row(vec!["reviews".to_owned(), summary.reviews.to_string()]);
    table.add_row(vec!["host replies".to_owned(), summary.replies.to_string()]);
    println!("{table}");
    println!("seeded in {:.1} s; last position {}", summary.seconds, summary.position.as_deref().unwrap_or("(none)"));
}

/// One request's answer.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    /// The answer's `position`, if it has one.
    fn position(&self) -> Option<Position> {
        self.body["position"].as_str().and_then(|p| p.parse().ok())
    }
}

/// The server, with a token for every user the plan names.
#[derive(Debug)]
struct Api {
    base: String,
    client: reqwest::Client,
    hosts: Vec<String>,
    guests: Vec<String>,
}

/// How often a refused (503) or unreachable request is tried before the seed gives up.
const ATTEMPTS: u32 = 8;

/// The waits between tries of a request the connection failed: the project's one retry schedule,
/// from 400 ms up to 6.4 s.
const UNREACHABLE: Backoff = Backoff::new(Duration::from_millis(400), Duration::from_millis(6_400));

impl Api {
    fn new(args: &SeedArgs, plan: &Plan) -> anyhow::Result<Self> {
        let keys = JwtKeys::new(&args.secret.secret(&args.data_dir)?);
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        let sign = |name: &String, role| -> anyhow::Result<String> {
            let user = UserId::new(name.as_str()).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(keys.sign(&user, role, Duration::from_secs(6 * 3600), now)?)
        };
        let hosts = plan.hosts.iter().map(|h| sign(h, Role::Host)).collect::<anyhow::Result<_>>()?;
        let guests = plan.guests.iter().map(|g| sign(g, Role::Guest)).collect::<anyhow::Result<_>>()?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        Ok(Self { base: args.url.trim_end_matches('/').to_owned(), client, hosts, guests })
    }

    async fn check_reachable(&self) -> anyhow::Result<()> {
        let url = format!("{}/healthz", self.base);
        let response =
            self.client.get(&url).send().await.with_context(|| format!("is stay serve running at {}?", self.base))?;
        if !response.status().is_success() {
            bail!("{url} answered {}", response.status());
        }
        Ok(())
    }

    /// Sends a command with an idempotency key, trying again (same key) when the server is
    /// overloaded or the connection fails: the key makes a second try safe.
    async fn command(
        &self,
        method: Method,
        path: &str,
        token: &str,
        key: &str,
        body: Option<&Value>,
        wait: bool,
    ) -> anyhow::Result<Answer> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .client
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(token)
                .header("Idempotency-Key", key);
            if let Some(body) = body {
                request = request.json(body);
            }
            if wait {
                request = request.header("Prefer", "wait=30");
            }
            let pause = match request.send().await {
                Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1);
                    Duration::from_secs(retry_after)
                }
                // The earlier try of this key is still being answered: ask again shortly.
                Ok(response) if response.status() == StatusCode::CONFLICT && attempt < ATTEMPTS => {
                    let status = response.status();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    if body["code"] != "idempotency_key_in_progress" {
                        return Ok(Answer { status, body });
                    }
                    Duration::from_millis(500)
                }
                Ok(response) => {
                    let status = response.status();
                    let body = response.json().await.unwrap_or(Value::Null);
                    return Ok(Answer { status, body });
                }
                Err(err) if attempt < ATTEMPTS && !err.is_builder() => UNREACHABLE.after(attempt),
                Err(err) => return Err(err).with_context(|| format!("{method} {path}")),
            };
            if attempt >= ATTEMPTS {
                bail!("{method} {path}: still refused after {ATTEMPTS} tries");
            }
            tokio::time::sleep(pause).await;
        }
    }

    async fn get(&self, path: &str, token: &str) -> anyhow::Result<Answer> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }
}

/// A failed request, as the user should read it.
fn refused(what: &str, answer: &Answer) -> anyhow::Error {
    anyhow::anyhow!(
        "{what}: {} {}: {}",
        answer.status.as_u16(),
        answer.body["code"].as_str().unwrap_or(""),
        answer.body["detail"].as_str().unwrap_or("")
    )
}

/// One run of the plan.
struct Seeder {
    api: Api,
    plan: Plan,
    bar: ProgressBar,
    concurrency: usize,
    key_prefix: String,
}

/// A reservation made, with where it stands.
#[derive(Debug, Clone)]
struct Made {
    index: usize,
    id: String,
    status: String,
    /// The furthest position an answer about it named.
    position: Option<Position>,
}

impl Made {
    /// Takes in an answer about the reservation: its status, if it names one, and its position.
    fn saw(&mut self, answer: &Answer) {
        if let Some(status) = answer.body["status"].as_str() {
            self.status = status.to_owned();
        }
        self.position = self.position.max(answer.position());
    }
}

impl Seeder {
    async fn seed(&self, settle_timeout: Duration) -> anyhow::Result<Summary> {
        let rooms = self.register_rooms().await?;
        let room_position = rooms.iter().filter_map(|(_, position)| *position).max();
        let room_ids: Vec<String> = rooms.into_iter().map(|(id, _)| id).collect();
        let mut summary = Summary { rooms: room_ids.len(), room_ids: room_ids.clone(), ..Summary::default() };
        let plan = &self.plan.reservations;
        // The provider answers these: made first, each answered once its saga has ended.
        let answered: Vec<usize> = (0..plan.len()).filter(|&i| !plan[i].card.waits_for_the_deadline()).collect();
        let made = self.reserve(&room_ids, &answered).await?;
        let mut made = self.follow_up(&room_ids, made).await?;
        // These end only at the payment deadline: last, so the breaker their failures may open
        // refuses none of the approvable cards above.
        let deadline_bound: Vec<usize> = (0..plan.len()).filter(|&i| plan[i].card.waits_for_the_deadline()).collect();
        let late = self.reserve(&room_ids, &deadline_bound).await?;
        made.extend(self.settle(late, settle_timeout).await?);

        for m in &made {
            *summary.reservations.entry(m.status.clone()).or_default() += 1;
            match &plan[m.index].fate {
                Fate::CancelWhilePending => summary.cancelled_while_pending += 1,
                Fate::CancelOnceConfirmed => summary.cancelled_once_confirmed += 1,
                Fate::Review { reply, .. } => {
                    summary.reviews += 1;
                    summary.replies += usize::from(reply.is_some());
                }
                Fate::Keep => {}
            }
        }
        summary.position = made.iter().filter_map(|m| m.position).chain(room_position).max().map(|p| p.to_string());
        Ok(summary)
    }

    /// Registers the plan's rooms: each one's id and the position of its registration.
    async fn register_rooms(&self) -> anyhow::Result<Vec<(String, Option<Position>)>> {
        stream::iter(self.plan.rooms.iter().enumerate())
            .map(|(index, room)| async move {
                let body = json!({
                    "name": room.name,
                    "description": room.description,
                    "address": room.address,
                    "nightly_price": {"amount_minor": room.nightly_price_minor, "currency": room.currency},
                    "capacity": room.capacity,
                });
                let key = format!("{}-room-{index}", self.key_prefix);
                let answer = self
                    .api
                    .command(Method::POST, "/v1/rooms", &self.api.hosts[room.host], &key, Some(&body), false)
                    .await?;
                self.bar.inc(1);
                match answer.body["room_id"].as_str() {
                    Some(id) if answer.status.is_success() => Ok((id.to_owned(), answer.position())),
                    _ => Err(refused(&format!("registering room {index}"), &answer)),
                }
            })
            .buffered(self.concurrency)
            .try_collect()
            .await
    }

    /// Makes the reservations at `indexes`; those cancelled while pending are cancelled at once.
    async fn reserve(&self, room_ids: &[String], indexes: &[usize]) -> anyhow::Result<Vec<Made>> {
        stream::iter(indexes.iter().copied())
            .map(|index| async move {
                let r = &self.plan.reservations[index];
                let token = &self.api.guests[r.guest];
                let body = json!({
                    "room_id": room_ids[r.room],
                    "check_in": r.check_in,
                    "check_out": r.check_out,
                    "guests": r.guests,
                    "payment": {"card_token": r.card.token()},
                });
                let key = format!("{}-reservation-{index}", self.key_prefix);
                // Wait for the saga, unless the reservation is to be cancelled while pending or
                // ends only at the deadline.
                let wait = r.fate != Fate::CancelWhilePending && !r.card.waits_for_the_deadline();
                let answer = self.api.command(Method::POST, "/v1/reservations", token, &key, Some(&body), wait).await?;
                self.bar.inc(1);
                let Some(id) = answer.body["reservation_id"].as_str().filter(|_| answer.status.is_success()) else {
                    return Err(refused(&format!("reservation {index}"), &answer));
                };
                let mut made = Made { index, id: id.to_owned(), status: "pending".to_owned(), position: None };
                made.saw(&answer);
                if r.fate == Fate::CancelWhilePending {
                    let key = format!("{}-cancel-{index}", self.key_prefix);
                    let path = format!("/v1/reservations/{id}/cancel");
                    let answer = self.api.command(Method::POST, &path, token, &key, None, true).await?;
                    self.bar.inc(1);
                    if !answer.status.is_success() {
                        return Err(refused(&format!("cancelling reservation {index}"), &answer));
                    }
                    made.saw(&answer);
                }
                Ok(made)
            })
            .buffered(self.concurrency)
            .try_collect()
            .await
    }

    /// Cancellations once confirmed, reviews and replies, for the reservations made.
    async fn follow_up(&self, room_ids: &[String], made: Vec<Made>) -> anyhow::Result<Vec<Made>> {
        stream::iter(made)
            .map(|mut m| async move {
                let r = &self.plan.reservations[m.index];
                let guest = &self.api.guests[r.guest];
                match &r.fate {
                    _ if m.status != "confirmed" => {}
                    Fate::CancelOnceConfirmed => {
                        let key = format!("{}-cancel-{}", self.key_prefix, m.index);
                        let path = format!("/v1/reservations/{}/cancel", m.id);
                        let answer = self.api.command(Method::POST, &path, guest, &key, None, true).await?;
                        self.bar.inc(1);
                        if !answer.status.is_success() {
                            return Err(refused(&format!("cancelling reservation {}", m.index), &answer));
                        }
                        m.saw(&answer);
                    }
                    Fate::Review { rating, comment, reply } => {
                        let key = format!("{}-review-{}", self.key_prefix, m.index);
                        let path = format!("/v1/rooms/{}/reviews", room_ids[r.room]);
                        let body = json!({"reservation_id": m.id, "rating": rating, "comment": comment});
                        let answer = self.api.command(Method::POST, &path, guest, &key, Some(&body), false).await?;
                        self.bar.inc(1);
                        let Some(review) = answer.body["review_id"].as_str().filter(|_| answer.status.is_success())
                        else {
                            return Err(refused(&format!("reviewing reservation {}", m.index), &answer));
                        };
                        m.position = m.position.max(answer.position());
                        if let Some(reply) = reply {
                            let host = &self.api.hosts[self.plan.rooms[r.room].host];
                            let key = format!("{}-reply-{}", self.key_prefix, m.index);
                            let path = format!("/v1/reviews/{review}/reply");
                            let body = json!({"comment": reply});
                            let answer = self.api.command(Method::POST, &path, host, &key, Some(&body), false).await?;
                            self.bar.inc(1);
                            if !answer.status.is_success() {
                                return Err(refused(&format!("replying to review {review}"), &answer));
                            }
                            m.position = m.position.max(answer.position());
                        }
                    }
                    Fate::Keep | Fate::CancelWhilePending => {}
                }
                Ok(m)
            })
            .buffered(self.concurrency)
            .try_collect()
            .await
    }

    /// Waits until the reservations `made` have ended (or `timeout` has passed), reading each
    /// one's status from the query API.
    async fn settle(&self, mut made: Vec<Made>, timeout: Duration) -> anyhow::Result<Vec<Made>> {
        let give_up = Instant::now() + timeout;
        if !made.iter().all(|m| is_final(&m.status)) {
            self.bar.set_message("waiting for the payment deadline");
        }
        loop {
            for m in made.iter_mut().filter(|m| !is_final(&m.status)) {
                let guest = &self.api.guests[self.plan.reservations[m.index].guest];
                let answer = self.api.get(&format!("/v1/reservations/{}", m.id), guest).await?;
                if answer.status.is_success() {
                    m.saw(&answer);
                }
            }
            let open = made.iter().filter(|m| !is_final(&m.status)).count();
            if open == 0 {
                return Ok(made);
            }
            if Instant::now() >= give_up {
                tracing::warn!(
                    open,
                    "some reservations had not ended after --settle-timeout; they show as pending (the server's --payment-deadline ends them)"
                );
                return Ok(made);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn is_final(status: &str) -> bool {
    matches!(status, "confirmed" | "rejected" | "cancelled")
}
