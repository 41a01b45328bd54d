//! The routes the dashboard added to the API: `GET /v1/live/rooms` (room changes for anyone),
//! `GET /v1/me/live` (the caller's changes), `GET /v1/me/rooms/reservations` (a host's
//! reservations), the feed's `head`, a stream's `until_sequence`, and `stay token --url`.
//!
//! The live streams are read as a browser would: server-sent events, each a signal that the JSON
//! routes already show (the test reads them right after a signal, without `min_position`).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use stay_store::Position;
use stay_tests::bodies::{day, room_body};
use stay_tests::server::{stay_binary, TEST_SECRET};
use stay_tests::{Backend, StayServer};

/// One server-sent event.
#[derive(Clone, Debug, Default, PartialEq)]
struct SseEvent {
    id: Option<String>,
    event: String,
    data: Value,
}

/// A server-sent event stream, read as it arrives.
struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

impl SseStream {
    /// Opens `path` (status 200 and `text/event-stream` asserted).
    async fn open(server: &StayServer, path: &str, token: Option<&str>, last_event_id: Option<&str>) -> Self {
        let headers: Vec<(&str, &str)> = last_event_id.map(|id| ("last-event-id", id)).into_iter().collect();
        let (status, content_type, response) = server.open(path, token, &headers).await;
        assert_eq!(status, 200, "GET {path}");
        assert!(content_type.starts_with("text/event-stream"), "GET {path}: {content_type}");
        Self { response, buffer: String::new() }
    }

    /// The next event, or `None` if none comes within `wait` (comments are skipped).
    async fn next_within(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent { event: "message".to_owned(), ..SseEvent::default() };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        event.id = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("event:") {
                        event.event = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                event.data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}"));
                return Some(event);
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None)) => panic!("the stream ended"),
                Ok(Err(e)) => panic!("the stream failed: {e}"),
                Err(_) => return None,
            }
        }
    }

    /// The next event, which must come within 10 s.
    async fn next(&mut self) -> SseEvent {
        self.next_within(Duration::from_secs(10)).await.expect("an event within 10 s")
    }

    /// Events up to the one that satisfies `wanted` and then to the end of its position (the event
    /// carrying the id: several signals of one position share it), within 15 s.
    async fn through(&mut self, what: &str, wanted: impl Fn(&SseEvent) -> bool) -> Vec<SseEvent> {
        let mut seen = self.until(what, wanted).await;
        while seen.last().is_some_and(|e| e.id.is_none()) {
            seen.push(self.next().await);
        }
        seen
    }

    /// Events until one satisfies `wanted` (within 15 s); answers all read, the wanted one last.
    async fn until(&mut self, what: &str, wanted: impl Fn(&SseEvent) -> bool) -> Vec<SseEvent> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(event) = self.next_within(deadline.saturating_duration_since(Instant::now())).await {
                let done = wanted(&event);
                seen.push(event);
                if done {
                    return seen;
                }
            }
        }
        panic!("no event {what} within 15 s; saw {seen:?}");
    }
}

/// A feed position as the server wrote it.
fn position(text: &str) -> Position {
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name].as_str().unwrap_or("")
}

async fn register_room(server: &StayServer, host: &str) -> String {
    let token = server.token(host, "host");
    let answer = server.post("/v1/rooms", &token, &room_body()).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    answer.field("room_id").to_owned()
}

/// Reserves `room_id` for `guest` from `offset` for two nights, waiting for the saga's outcome.
async fn reserve(server: &StayServer, guest: &str, room_id: &str, offset: u64) -> Value {
    let token = server.token(guest, "guest");
    let body = json!({"room_id": room_id, "check_in": day(offset), "check_out": day(offset + 2), "guests": 1,
                      "payment": {"card_token": "tok_visa"}});
    let answer =
        server.send(Method::POST, "/v1/reservations", Some(&token), Some(&body), &[("prefer", "wait=20")]).await;
    assert_eq!((answer.status, answer.field("status")), (200, "confirmed"), "{}", answer.text);
    answer.body
}

async fn live_rooms_signal_each_changed_room_once_applied_with_no_personal_data(backend: Backend) {
    let server = StayServer::start(backend).await;
    let mut stream = SseStream::open(&server, "/v1/live/rooms", None, None).await;

    let room_id = register_room(&server, "live-host").await;
    let registered = stream.next().await;
    assert_eq!(registered.event, "room");
    assert_eq!(field(&registered.data, "room_id"), room_id);
    let keys: BTreeSet<&str> = registered.data.as_object().expect("an object").keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["position", "room_id"]), "nothing personal: {}", registered.data);
    assert_eq!(registered.id.as_deref(), Some(field(&registered.data, "position")), "the id is the position");
    // Sent once roomview has the change: a plain read shows it.
    let view = server.get(&format!("/v1/rooms/{room_id}")).await;
    assert_eq!(view.status, 200, "the signalled room is in roomview already: {}", view.text);

    // Every signal comes once roomview has applied it: the room read right after is at least there.
    reserve(&server, "live-guest", &room_id, 10).await;
    let mut last = registered;
    loop {
        let view = server.get(&format!("/v1/rooms/{room_id}")).await;
        assert!(
            position(view.field("position")) >= position(field(&last.data, "position")),
            "signalled at {} but roomview is at {}",
            field(&last.data, "position"),
            view.field("position")
        );
        if view.body["reservations"]["confirmed"] == 1 {
            break;
        }
        last = stream.next().await;
        assert_eq!((last.event.as_str(), field(&last.data, "room_id")), ("room", room_id.as_str()), "{last:?}");
    }

    // A second room changes; a client that resumes after the last event it saw gets only that.
    let other = register_room(&server, "live-host-2").await;
    let resumed_from = last.id.clone().expect("an id");
    let mut resumed = SseStream::open(&server, "/v1/live/rooms", None, Some(&resumed_from)).await;
    let first = resumed.until("about the second room", |e| field(&e.data, "room_id") == other).await;
    assert!(
        first.iter().all(|e| e.id.as_deref() != Some(resumed_from.as_str())),
        "nothing at or before Last-Event-ID again: {first:?}"
    );

    // ?after= works as Last-Event-ID does; a bad position is a 422 problem.
    let answer = server.get("/v1/live/rooms?after=yesterday").await;
    assert_eq!((answer.status, answer.code()), (422, "validation_failed"), "{}", answer.text);
    let (status, _, response) = server.open("/v1/live/rooms", None, &[("last-event-id", "x")]).await;
    assert_eq!(status, 422);
    drop(response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rooms_signal_each_changed_room_once_applied_with_no_personal_data_on_sqlite() {
    live_rooms_signal_each_changed_room_once_applied_with_no_personal_data(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rooms_signal_each_changed_room_once_applied_with_no_personal_data_on_postgres() {
    live_rooms_signal_each_changed_room_once_applied_with_no_personal_data(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_live_stream_signals_only_the_callers_reservations_notifications_and_rooms() {
    let server = StayServer::start(Backend::Sqlite).await;
    let room_id = register_room(&server, "me-host").await;
    let guest = server.token("me-guest", "guest");
    let host = server.token("me-host", "host");
    let mut guest_stream = SseStream::open(&server, "/v1/me/live", Some(&guest), None).await;
    let mut host_stream = SseStream::open(&server, "/v1/me/live", Some(&host), None).await;

    // Another guest's reservation on the same room: the host hears of it, the guest does not.
    let theirs = reserve(&server, "someone-else", &room_id, 20).await;
    let theirs_id = field(&theirs, "reservation_id").to_owned();
    host_stream
        .until("about the other guest's reservation", |e| e.event == "reservation" && field(&e.data, "id") == theirs_id)
        .await;

    let mine = reserve(&server, "me-guest", &room_id, 30).await;
    let mine_id = field(&mine, "reservation_id").to_owned();
    let seen = guest_stream.through("a notification of the confirmation", |e| e.event == "notification").await;
    for event in &seen {
        assert!(["reservation", "notification"].contains(&event.event.as_str()), "{event:?}");
        assert_eq!(field(&event.data, "kind"), event.event, "{event:?}");
        if event.event == "reservation" {
            assert_eq!(field(&event.data, "id"), mine_id, "only the caller's own reservation: {event:?}");
        }
        assert!(!event.data.to_string().contains("someone-else"), "nothing of another user's: {event:?}");
    }
    assert!(seen.iter().any(|e| e.event == "reservation"), "the reservation itself was signalled: {seen:?}");
    // Signalled once the models show it: plain reads find the confirmation and its message.
    let notification = seen.iter().rev().find(|e| e.event == "notification").expect("one");
    let notification_id = field(&notification.data, "id").to_owned();
    let listed = server.send(Method::GET, "/v1/me/notifications", Some(&guest), None, &[]).await;
    let ids: Vec<&str> =
        listed.body["items"].as_array().expect("items").iter().map(|n| field(n, "notification_id")).collect();
    assert!(ids.contains(&notification_id.as_str()), "{ids:?} has {notification_id}");
    let read = server.send(Method::GET, &format!("/v1/reservations/{mine_id}"), Some(&guest), None, &[]).await;
    assert_eq!(read.field("status"), "confirmed", "{}", read.text);

    // The host: the guest's reservation on their room, and their room's own changes.
    host_stream
        .until("about the guest's reservation", |e| e.event == "reservation" && field(&e.data, "id") == mine_id)
        .await;
    let patched = server
        .send(Method::PATCH, &format!("/v1/rooms/{room_id}"), Some(&host), Some(&json!({"name": "Renamed"})), &[])
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    // (The room's calendar moved with each reservation too: wait for the rename's own signal.)
    let renamed_at = position(patched.field("position"));
    host_stream
        .until("about the renamed room", |e| {
            e.event == "room" && field(&e.data, "id") == room_id && position(field(&e.data, "position")) >= renamed_at
        })
        .await;
    let view = server.get(&format!("/v1/rooms/{room_id}")).await;
    assert_eq!(view.field("name"), "Renamed", "the room's change is in roomview when signalled");
    // The guest heard nothing of the room's change.
    while let Some(event) = guest_stream.next_within(Duration::from_millis(500)).await {
        assert_ne!(event.event, "room", "a guest has no rooms: {event:?}");
    }

    // The token goes in the header; none is a 401, a bad position a 422.
    let (status, _, _) = server.open("/v1/me/live", None, &[]).await;
    assert_eq!(status, 401);
    let (status, _, _) = server.open("/v1/me/live?access_token=x", None, &[]).await;
    assert_eq!(status, 401, "no token in the URL");
    let (status, _, _) = server.open("/v1/me/live", Some(&guest), &[("last-event-id", "soon")]).await;
    assert_eq!(status, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_live_stream_resumes_after_the_last_event_id_without_losing_a_change() {
    let server = StayServer::start(Backend::Sqlite).await;
    let room_id = register_room(&server, "resume-host").await;
    let guest = server.token("resume-guest", "guest");
    let mut stream = SseStream::open(&server, "/v1/me/live", Some(&guest), None).await;
    let first = reserve(&server, "resume-guest", &room_id, 10).await;
    let seen = stream.through("the first confirmation's message", |e| e.event == "notification").await;
    let last_id = seen.iter().rev().find_map(|e| e.id.clone()).expect("an id");
    assert!(seen.iter().all(|e| field(&e.data, "id") == field(&first, "reservation_id") || e.event == "notification"));
    drop(stream);

    // While no stream is open, a second reservation is confirmed; resuming finds it, not the first.
    let second = reserve(&server, "resume-guest", &room_id, 20).await;
    let second_id = field(&second, "reservation_id").to_owned();
    let mut resumed = SseStream::open(&server, "/v1/me/live", Some(&guest), Some(&last_id)).await;
    let seen = resumed.until("the second reservation", |e| field(&e.data, "id") == second_id).await;
    let first_id = field(&first, "reservation_id");
    assert!(seen.iter().all(|e| field(&e.data, "id") != first_id), "the first is not sent again: {seen:?}");
}

async fn host_reservations_are_their_rooms_newest_first_paged(backend: Backend) {
    let server = StayServer::start(backend).await;
    let room_a = register_room(&server, "paging-host").await;
    let room_b = register_room(&server, "paging-host").await;
    let elsewhere = register_room(&server, "another-host").await;
    let mut made = Vec::new();
    for (i, room) in [&room_a, &room_b, &room_a].iter().enumerate() {
        let reservation = reserve(&server, &format!("paging-guest-{i}"), room, 10 + 5 * i as u64).await;
        made.push(field(&reservation, "reservation_id").to_owned());
    }
    let not_theirs = reserve(&server, "paging-guest-x", &elsewhere, 10).await;
    let position = field(&not_theirs, "position").to_owned();

    let host = server.token("paging-host", "host");
    let path = format!("/v1/me/rooms/reservations?min_position={position}");
    let all = server.send(Method::GET, &path, Some(&host), None, &[]).await;
    assert_eq!(all.status, 200, "{}", all.text);
    let items = all.body["items"].as_array().expect("items");
    let ids: Vec<&str> = items.iter().map(|r| field(r, "reservation_id")).collect();
    let newest_first: Vec<&str> = made.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first, "the host's rooms' reservations only, newest first");
    assert_eq!(all.body["next_cursor"], Value::Null);
    let first = &items[0];
    for name in ["room_id", "guest_id", "check_in", "check_out", "status", "updated_at", "position"] {
        assert!(first[name].is_string(), "a Reservation has {name}: {first}");
    }
    assert_eq!(field(first, "status"), "confirmed");
    assert_eq!(first["payment"]["status"], "approved", "{first}");

    // One at a time: every reservation once, in the same order.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = server
            .send(Method::GET, &format!("/v1/me/rooms/reservations?limit=1&cursor={cursor}"), Some(&host), None, &[])
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        paged.extend(
            page.body["items"].as_array().expect("items").iter().map(|r| field(r, "reservation_id").to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
        assert!(paged.len() <= 3, "paging ends: {paged:?}");
    }
    assert_eq!(paged, newest_first);

    // Only hosts; a cursor not from this list is a 422.
    let guest = server.token("paging-guest-0", "guest");
    let answer = server.send(Method::GET, "/v1/me/rooms/reservations", Some(&guest), None, &[]).await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    assert!(answer.is_problem());
    let answer = server.send(Method::GET, "/v1/me/rooms/reservations", None, None, &[]).await;
    assert_eq!(answer.status, 401, "{}", answer.text);
    let answer = server.send(Method::GET, "/v1/me/rooms/reservations?cursor=garbage", Some(&host), None, &[]).await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    let nobody = server.token("host-without-rooms", "host");
    let answer = server.send(Method::GET, "/v1/me/rooms/reservations", Some(&nobody), None, &[]).await;
    assert_eq!((answer.status, answer.body["items"].clone()), (200, json!([])), "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_reservations_are_their_rooms_newest_first_paged_on_sqlite() {
    host_reservations_are_their_rooms_newest_first_paged(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_reservations_are_their_rooms_newest_first_paged_on_postgres() {
    host_reservations_are_their_rooms_newest_first_paged(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_says_its_head_and_a_stream_folds_its_first_events_only() {
    let server = StayServer::start(Backend::Sqlite).await;
    let admin = server.token("feed-admin", "admin");
    let empty = server.send(Method::GET, "/v1/admin/feed", Some(&admin), None, &[]).await;
    assert_eq!((empty.status, empty.field("head")), (200, "0"), "{}", empty.text);

    let room_id = register_room(&server, "fold-host").await;
    let host = server.token("fold-host", "host");
    let patch = json!({"name": "Second name"});
    let patched = server.send(Method::PATCH, &format!("/v1/rooms/{room_id}"), Some(&host), Some(&patch), &[]).await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let head = patched.field("position").to_owned();

    let page = server.send(Method::GET, "/v1/admin/feed?limit=1", Some(&admin), None, &[]).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.field("head"), head, "the head is the last position, whatever the page");
    assert_eq!(page.body["items"].as_array().map(Vec::len), Some(1));

    let path = format!("/v1/admin/streams/Room/{room_id}");
    let whole = server.send(Method::GET, &path, Some(&admin), None, &[]).await;
    assert_eq!(whole.status, 200, "{}", whole.text);
    assert_eq!(whole.body["events"].as_array().map(Vec::len), Some(2), "{}", whole.text);
    assert!(whole.body["state"].to_string().contains("Second name"), "{}", whole.body["state"]);
    let first = server.send(Method::GET, &format!("{path}?until_sequence=1"), Some(&admin), None, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["events"].as_array().map(Vec::len), Some(1), "{}", first.text);
    let state = first.body["state"].to_string();
    assert!(state.contains("Loft by the river") && !state.contains("Second name"), "{state}");
    for bad in ["0", "-1", "many"] {
        let answer = server.send(Method::GET, &format!("{path}?until_sequence={bad}"), Some(&admin), None, &[]).await;
        assert_eq!(answer.status, 422, "until_sequence={bad}: {}", answer.text);
        assert!(answer.is_problem(), "{}", answer.text);
    }
}

/// `stay token … --url` with the server's settings.
fn token_url(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(stay_binary())
        .args(["token", "--sub", "link-guest", "--role", "guest", "--jwt-secret", TEST_SECRET])
        .args(args)
        .env_remove("STAY_JWT_SECRET")
        .env_remove("STAY_LISTEN")
        .output()
        .expect("run stay token");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stay_token_url_prints_a_dashboard_link_with_a_working_token_in_the_fragment() {
    let server = StayServer::start(Backend::Sqlite).await;
    let listen = server.url().trim_start_matches("http://").to_owned();
    let (ok, link, err) = token_url(&["--url", "--listen", &listen]);
    assert!(ok, "{err}");
    let prefix = format!("http://{listen}/#token=");
    let token = link.strip_prefix(&prefix).unwrap_or_else(|| panic!("{link:?} starts with {prefix:?}"));
    assert!(!token.is_empty() && !token.contains(char::is_whitespace), "{link}");
    // The token in the link is one the server takes.
    let mine = server.send(Method::GET, "/v1/me/reservations", Some(token), None, &[]).await;
    assert_eq!(mine.status, 200, "{}", mine.text);

    // The default listen address, as `stay serve`'s; --base-url overrides it.
    let (ok, link, err) = token_url(&["--url"]);
    assert!(ok && link.starts_with("http://127.0.0.1:8080/#token="), "{link} {err}");
    let (ok, link, err) = token_url(&["--url", "--base-url", "https://stay.example.org/dash/"]);
    assert!(ok && link.starts_with("https://stay.example.org/dash/#token="), "{link} {err}");
    // A listen address on every interface is not one a browser can open: the link says localhost.
    let (ok, link, err) = token_url(&["--url", "--listen", "0.0.0.0:9000"]);
    assert!(ok && link.starts_with("http://127.0.0.1:9000/#token="), "{link} {err}");
    // Without --url, the token alone, as before.
    let (ok, plain, err) = token_url(&[]);
    assert!(ok && !plain.contains('#') && plain.split('.').count() == 3, "{plain} {err}");
}
