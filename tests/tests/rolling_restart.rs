//! A rolling restart of the command API on PostgreSQL, as Kubernetes does one: two `command-api`
//! processes behind the test's own round-robin balancer, each stopped with SIGTERM and started
//! again in turn while clients keep registering rooms and reserving them.
//!
//! The balancer behaves as a Service's endpoints do during a rollout: it sends each request to the
//! next process, and a request that cannot reach one (the connection refused) is retried once on
//! the next, with the same `Idempotency-Key`; a request that was sent and got no answer is a
//! failure. Afterwards no request got a 5xx, none failed after its one retry, and everything
//! acknowledged is there: every room answered 201 is in roomview and every reservation answered
//! 202 ends confirmed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use stay_tests::{Backend, StayServer};
use uuid::Uuid;

/// Clients sending at once.
const CLIENTS: usize = 8;

/// The processes behind the balancer, by name, and the next one to use.
#[derive(Default)]
struct Balancer {
    backends: RwLock<BTreeMap<&'static str, String>>,
    next: AtomicUsize,
}

impl Balancer {
    fn set(&self, name: &'static str, url: &str) {
        self.backends.write().expect("backends").insert(name, url.to_owned());
    }

    fn remove(&self, name: &'static str) {
        self.backends.write().expect("backends").remove(name);
    }

    /// The next process in turn, passing over `not` (the one a retry could not reach) when there
    /// is another.
    fn pick(&self, not: Option<&str>) -> String {
        let backends = self.backends.read().expect("backends");
        let others: Vec<&String> = backends.values().filter(|url| Some(url.as_str()) != not).collect();
        let choice = if others.is_empty() { backends.values().collect() } else { others };
        let at = self.next.fetch_add(1, Ordering::Relaxed) % choice.len();
        choice[at].clone()
    }
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Seen {
    /// Rooms answered 201, with the feed position of their event.
    rooms: Vec<(String, String)>,
    /// Reservations answered 202.
    reservations: Vec<String>,
    /// Requests that could not reach a process the first time and were retried.
    retried: usize,
    /// Requests that failed: a 5xx, another unexpected status, or no answer after the retry.
    failures: Vec<String>,
}

/// Sends one command through the balancer, retrying once on the next process when it cannot
/// reach one. Answers the status and body, or what went wrong.
async fn command(
    client: &reqwest::Client,
    balancer: &Balancer,
    path: &str,
    token: &str,
    body: &Value,
    retried: &mut usize,
) -> Result<(u16, Value), String> {
    let key = Uuid::new_v4().to_string();
    let mut last_error = String::new();
    let mut unreachable: Option<String> = None;
    for attempt in 0..2 {
        let backend = balancer.pick(unreachable.as_deref());
        let url = format!("{backend}{path}");
        let sent = client.request(Method::POST, &url).bearer_auth(token).header("idempotency-key", &key).json(body);
        match sent.send().await {
            Ok(answer) => {
                let status = answer.status().as_u16();
                let text = answer.text().await.unwrap_or_default();
                return Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))));
            }
            // Only a request that never reached a process is retried, as a load balancer does; one
            // cut off after it was sent is a failure.
            Err(err) if err.is_connect() => {
                last_error = format!("{url}: {err:?}");
                unreachable = Some(backend);
                if attempt == 0 {
                    *retried += 1;
                }
            }
            Err(err) => return Err(format!("{url}: the request was sent and got no answer: {err:?}")),
        }
    }
    Err(format!("no answer after a retry: {last_error}"))
}

/// One client: registers a room and reserves it, over and over, until `stop`.
async fn client_loop(balancer: Arc<Balancer>, host: String, guest: String, stop: Arc<AtomicBool>) -> Seen {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let mut seen = Seen::default();
    let check_in = (chrono::Utc::now() + chrono::Duration::days(10)).date_naive();
    let check_out = check_in + chrono::Duration::days(2);
    while !stop.load(Ordering::Relaxed) {
        let room = json!({"name": "Rolling", "address": "1 Restart Row", "nightly_price": {"amount_minor": 5000, "currency": "EUR"}, "capacity": 2});
        let (room_id, position) = match command(&client, &balancer, "/v1/rooms", &host, &room, &mut seen.retried).await
        {
            Ok((201, body)) => (body["room_id"].as_str().expect("room_id").to_owned(), body["position"].to_string()),
            Ok((status, body)) => {
                seen.failures.push(format!("POST /v1/rooms answered {status}: {body}"));
                continue;
            }
            Err(err) => {
                seen.failures.push(err);
                continue;
            }
        };
        seen.rooms.push((room_id.clone(), position.trim_matches('"').to_owned()));
        let stay = json!({"room_id": room_id, "check_in": check_in.to_string(), "check_out": check_out.to_string(), "guests": 1, "payment": {"card_token": "tok_visa"}});
        match command(&client, &balancer, "/v1/reservations", &guest, &stay, &mut seen.retried).await {
            Ok((202, body)) => {
                seen.reservations.push(body["reservation_id"].as_str().expect("reservation_id").to_owned())
            }
            Ok((status, body)) => seen.failures.push(format!("POST /v1/reservations answered {status}: {body}")),
            Err(err) => seen.failures.push(err),
        }
    }
    seen
}

/// Stops `server` with SIGTERM (it must exit cleanly within its grace), takes it out of the
/// balancer, starts it again and puts it back.
async fn roll(server: &mut StayServer, name: &'static str, balancer: &Balancer) {
    let stopped = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(20)));
    let status = stopped.unwrap_or_else(|| panic!("{name} did not stop within 20 s of SIGTERM:\n{}", server.logs()));
    assert!(status.success(), "{name} exits cleanly on SIGTERM ({status}):\n{}", server.logs());
    balancer.remove(name);
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| futures::executor::block_on(server.restart()));
    balancer.set(name, server.url());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_two_command_apis_loses_nothing_and_answers_no_5xx() {
    let mut first = StayServer::start_with(Backend::Postgres, &["--role", "command-api"]).await;
    let mut second = first.join(&["--role", "command-api"]).await;
    let _saga = first.join(&["--role", "saga"]).await;
    let _projector = first.join(&["--role", "projector"]).await;
    let queries = first.join(&["--role", "query-api"]).await;

    let balancer = Arc::new(Balancer::default());
    balancer.set("first", first.url());
    balancer.set("second", second.url());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(client_loop(
                balancer.clone(),
                first.token(&format!("host-{i}"), "host"),
                first.token(&format!("guest-{i}"), "guest"),
                stop.clone(),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(2)).await;
    roll(&mut first, "first", &balancer).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    roll(&mut second, "second", &balancer).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);

    let mut seen = Seen::default();
    for client in clients {
        let one = client.await.expect("client");
        seen.rooms.extend(one.rooms);
        seen.reservations.extend(one.reservations);
        seen.retried += one.retried;
        seen.failures.extend(one.failures);
    }
    println!(
        "rolling restart: {} rooms and {} reservations acknowledged, {} requests retried once, {} failed",
        seen.rooms.len(),
        seen.reservations.len(),
        seen.retried,
        seen.failures.len()
    );
    assert!(seen.failures.is_empty(), "requests failed during the rolling restart: {:#?}", seen.failures);
    assert!(seen.rooms.len() >= 20, "the clients kept working through the restarts: {} rooms", seen.rooms.len());

    // Everything acknowledged is there: each room in roomview, each reservation confirmed.
    let admin = first.token("ops", "admin");
    for (room_id, position) in &seen.rooms {
        let view = queries.get(&format!("/v1/rooms/{room_id}?min_position={position}&wait_ms=15000")).await;
        assert_eq!(view.status, 200, "acknowledged room {room_id} is in roomview: {}", view.text);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for reservation_id in &seen.reservations {
        loop {
            let answer =
                queries.send(Method::GET, &format!("/v1/reservations/{reservation_id}"), Some(&admin), None, &[]).await;
            if answer.status == 200 && answer.field("status") == "confirmed" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "acknowledged reservation {reservation_id} ends confirmed; it is at {} {}",
                answer.status,
                answer.text
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
