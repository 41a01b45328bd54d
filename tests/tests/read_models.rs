//! The read side against a real `stay serve` (all roles in one process): roomview, reservations,
//! notifications and reviews field by field after a scripted flow, read-your-writes with
//! `min_position`, a poison event parked without stopping the world, the live feed over SSE, and
//! the operators' feed and stream routes.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use stay_store::Position;
use stay_tests::{Answer, Backend, StayServer};

const WAIT: (&str, &str) = ("prefer", "wait=20");

fn day(offset: u64) -> String {
    Utc::now().date_naive().checked_add_days(Days::new(offset)).expect("date").to_string()
}

fn eur(amount_minor: i64) -> Value {
    json!({"amount_minor": amount_minor, "currency": "EUR"})
}

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}")).with_timezone(&Utc)
}

/// Whether two RFC 3339 times name the same instant (to the millisecond: stores keep different precisions).
fn same_instant(a: &str, b: &str) -> bool {
    (time(a) - time(b)).num_microseconds().is_some_and(|us| us.abs() < 1_000)
}

fn position(text: &str) -> Position {
    text.parse().unwrap_or_else(|e| panic!("{text:?} is not a position: {e}"))
}

/// The last lines of the server's log, for failure messages.
fn tail(server: &StayServer) -> String {
    let logs = server.logs();
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    keys.sort();
    keys
}

fn strs(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// A server and the tokens the tests use.
struct World {
    server: StayServer,
    admin: String,
}

impl World {
    async fn start(backend: Backend) -> Self {
        let server = StayServer::start(backend).await;
        let admin = server.token("ops", "admin");
        Self { server, admin }
    }

    fn token(&self, sub: &str, role: &str) -> String {
        self.server.token(sub, role)
    }

    /// GET with `min_position`.
    async fn get(&self, path: &str, token: Option<&str>, min: &str) -> Answer {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.server.send(Method::GET, &format!("{path}{sep}min_position={min}"), token, None, &[]).await
    }

    /// GET with `min_position` that must answer 200; its body.
    async fn ok(&self, path: &str, token: Option<&str>, min: &str) -> Value {
        let answer = self.get(path, token, min).await;
        assert_eq!(answer.status, 200, "GET {path}?min_position={min}: {}\n{}", answer.text, tail(&self.server));
        answer.body
    }

    async fn admin_get(&self, path: &str) -> Value {
        let answer = self.server.send(Method::GET, path, Some(&self.admin), None, &[]).await;
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.text);
        answer.body
    }

    async fn register(&self, host: &str, room: &Value) -> Answer {
        let answer = self.server.post("/v1/rooms", host, room).await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        let id = answer.field("room_id").to_owned();
        assert_eq!(answer.header("location"), format!("/v1/rooms/{id}"));
        assert!(!answer.field("position").is_empty(), "{}", answer.text);
        answer
    }

    async fn patch(&self, host: &str, room_id: &str, change: &Value) -> Answer {
        let path = format!("/v1/rooms/{room_id}");
        let answer = self.server.send(Method::PATCH, &path, Some(host), Some(change), &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.field("room_id"), room_id);
        assert!(!answer.field("position").is_empty(), "{}", answer.text);
        answer
    }

    #[allow(clippy::too_many_arguments)]
    async fn reserve(
        &self,
        guest: &str,
        room_id: &str,
        from: u64,
        to: u64,
        guests: u32,
        card: &str,
        wait: bool,
    ) -> Answer {
        let body = json!({
            "room_id": room_id, "check_in": day(from), "check_out": day(to), "guests": guests,
            "payment": {"card_token": card}
        });
        let headers: &[(&str, &str)] = if wait { &[WAIT] } else { &[] };
        self.server.send(Method::POST, "/v1/reservations", Some(guest), Some(&body), headers).await
    }

    /// Every event of the feed after `after`, page by page.
    async fn feed_after(&self, after: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = after.to_owned();
        loop {
            let page = self.admin_get(&format!("/v1/admin/feed?after={after}&limit=1000")).await;
            let items = page["items"].as_array().expect("items").clone();
            if items.is_empty() {
                return all;
            }
            after = page["next"].as_str().expect("next").to_owned();
            all.extend(items);
        }
    }

    /// Waits until no saga runs, the read models have caught up (a saga writes its last steps
    /// after the reservation's answer) and the feed has not grown for a while; answers its head.
    async fn quiet_head(&self) -> String {
        self.server.settle().await;
        let mut head = String::new();
        let mut events = self.feed_after("").await.len();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let all = self.feed_after("").await;
            if all.len() == events {
                head = all.last().and_then(|e| e["position"].as_str()).unwrap_or("0").to_owned();
                break;
            }
            events = all.len();
        }
        assert!(!head.is_empty(), "the feed never settled");
        head
    }
}

fn assert_settled(answer: &Answer, status: &str, payment: &str) {
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        (answer.field("status"), answer.body["payment"]["status"].as_str()),
        (status, Some(payment)),
        "{}",
        answer.text
    );
}

/// The read model's reservation says what the command's `Prefer: wait` answer said.
fn assert_same_reservation(read: &Value, command: &Value) {
    assert_eq!(keys(read), keys(command), "read: {read}\ncommand: {command}");
    for key in keys(command) {
        if key == "updated_at" {
            let (r, c) = (read[&key].as_str().expect("updated_at"), command[&key].as_str().expect("updated_at"));
            assert!(same_instant(r, c), "updated_at: read {r}, command {c}");
        } else {
            assert_eq!(read[&key], command[&key], "{key}: read: {read}\ncommand: {command}");
        }
    }
}

/// (kind, reservation_id, room_id), sorted, of a notification list; checks each item's fields.
fn notification_summary(list: &Value) -> Vec<(String, String, String)> {
    let items = list["items"].as_array().expect("items");
    let mut ids = HashSet::new();
    let mut times = Vec::new();
    let mut summary = Vec::new();
    for item in items {
        let id = item["notification_id"].as_str().unwrap_or("");
        assert!(!id.is_empty() && ids.insert(id.to_owned()), "notification id missing or repeated: {list}");
        assert!(item["message"].as_str().is_some_and(|m| !m.is_empty()), "{item}");
        let created = item["created_at"].as_str().unwrap_or_else(|| panic!("created_at: {item}"));
        times.push(time(created));
        let field = |name: &str| item[name].as_str().unwrap_or_else(|| panic!("{name} missing: {item}")).to_owned();
        summary.push((field("kind"), field("reservation_id"), field("room_id")));
    }
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "notifications are not newest first: {list}");
    summary.sort();
    summary
}

fn note(kind: &str, reservation: &str, room: &str) -> (String, String, String) {
    (kind.to_owned(), reservation.to_owned(), room.to_owned())
}

/// One of the two concurrent requests for overlapping nights.
struct Contender {
    guest: &'static str,
    token: String,
    answer: Answer,
}

async fn scripted_flow(backend: Backend) {
    let w = World::start(backend).await;
    let s = &w.server;
    let host = w.token("host-1", "host");
    let other_host = w.token("host-2", "host");
    let g1 = w.token("guest-1", "guest");
    let g2 = w.token("guest-2", "guest");
    let g3 = w.token("guest-3", "guest");

    // Rooms: A is changed, B is delisted at the end, C belongs to another host.
    let a = w
        .register(
            &host,
            &json!({"name": "Loft", "description": "One room under the roof", "address": "1 Quay Street",
                    "nightly_price": eur(10_000), "capacity": 2}),
        )
        .await;
    let room_a = a.field("room_id").to_owned();
    let b = w
        .register(
            &host,
            &json!({"name": "Attic", "address": "2 Quay Street", "nightly_price": eur(8_000), "capacity": 1}),
        )
        .await;
    let room_b = b.field("room_id").to_owned();
    let c = w
        .register(
            &other_host,
            &json!({"name": "Barn", "description": "Hay", "address": "9 Farm Lane",
                    "nightly_price": eur(5_000), "capacity": 6}),
        )
        .await;
    let room_c = c.field("room_id").to_owned();

    let fresh = w.ok(&format!("/v1/rooms/{room_a}"), None, a.field("position")).await;
    assert_eq!(
        (&fresh["name"], &fresh["description"], &fresh["nightly_price"], &fresh["capacity"], &fresh["listed"]),
        (&json!("Loft"), &json!("One room under the roof"), &eur(10_000), &json!(2), &json!(true)),
        "{fresh}"
    );

    // Two changes, each leaving what the other sets alone. The first has no capacity (PATCH without
    // it, or with an unchanged one, records `capacity: None`): roomview must keep the old one.
    let p1 =
        w.patch(&host, &room_a, &json!({"description": "Top floor, two windows", "address": "3 Harbour Road"})).await;
    let mid = w.ok(&format!("/v1/rooms/{room_a}"), None, p1.field("position")).await;
    assert_eq!(
        (&mid["name"], &mid["description"], &mid["address"], &mid["nightly_price"], &mid["capacity"]),
        (&json!("Loft"), &json!("Top floor, two windows"), &json!("3 Harbour Road"), &eur(10_000), &json!(2)),
        "{mid}"
    );
    let p2 =
        w.patch(&host, &room_a, &json!({"name": "Loft by the Sea", "capacity": 3, "nightly_price": eur(12_000)})).await;
    let changed = w.ok(&format!("/v1/rooms/{room_a}"), None, p2.field("position")).await;
    assert_eq!(
        (
            &changed["name"],
            &changed["description"],
            &changed["address"],
            &changed["nightly_price"],
            &changed["capacity"]
        ),
        (
            &json!("Loft by the Sea"),
            &json!("Top floor, two windows"),
            &json!("3 Harbour Road"),
            &eur(12_000),
            &json!(3)
        ),
        "{changed}"
    );

    // Reservations: confirmed, declined, confirmed then cancelled.
    let r1 = w.reserve(&g1, &room_a, 10, 13, 2, "tok_visa", true).await;
    assert_settled(&r1, "confirmed", "approved");
    assert_eq!(r1.body["total_price"], eur(36_000), "{}", r1.text);
    assert_eq!(r1.body["payment"]["charged"], eur(36_000), "{}", r1.text);
    let r1_id = r1.field("reservation_id").to_owned();

    let r2 = w.reserve(&g1, &room_a, 20, 22, 1, "tok_declined", true).await;
    assert_settled(&r2, "rejected", "declined");
    assert_eq!(r2.body["reason"], json!({"code": "payment_declined"}), "{}", r2.text);
    let r2_id = r2.field("reservation_id").to_owned();

    let r3 = w.reserve(&g2, &room_b, 15, 19, 1, "tok_visa", true).await;
    assert_settled(&r3, "confirmed", "approved");
    assert_eq!(r3.body["total_price"], eur(32_000), "{}", r3.text);
    let r3_id = r3.field("reservation_id").to_owned();
    let r3_cancel = s.send(Method::POST, &format!("/v1/reservations/{r3_id}/cancel"), Some(&g2), None, &[WAIT]).await;
    assert_settled(&r3_cancel, "cancelled", "refunded");
    assert_eq!(r3_cancel.body["payment"]["refunded"], eur(32_000), "{}", r3_cancel.text);

    // Two guests race for overlapping nights: one is confirmed; the other is refused at once (409)
    // or rejected by the saga for the dates.
    let (x, y) = tokio::join!(
        w.reserve(&g2, &room_a, 40, 43, 2, "tok_visa", true),
        w.reserve(&g3, &room_a, 41, 44, 1, "tok_visa", true)
    );
    let contenders = [
        Contender { guest: "guest-2", token: g2.clone(), answer: x },
        Contender { guest: "guest-3", token: g3.clone(), answer: y },
    ];
    let mut winner = None;
    let mut loser = None;
    for contender in contenders {
        let answer = &contender.answer;
        match (answer.status, answer.field("status"), answer.code()) {
            (200, "confirmed", _) => {
                assert!(winner.is_none(), "both overlapping requests were confirmed: {}", answer.text);
                assert_eq!(answer.body["total_price"], eur(36_000), "{}", answer.text);
                winner = Some(contender);
            }
            (200, "rejected", _) => {
                assert_eq!(answer.body["reason"], json!({"code": "dates_unavailable"}), "{}", answer.text);
                assert_eq!(answer.body["payment"], json!({"status": "none"}), "{}", answer.text);
                loser = Some(contender);
            }
            (409, _, "dates_unavailable") => assert!(answer.is_problem(), "{}", answer.text),
            other => panic!("unexpected answer to an overlapping request {other:?}: {}", answer.text),
        }
    }
    let winner = winner.expect("one of the overlapping requests is confirmed");
    let w_id = winner.answer.field("reservation_id").to_owned();
    let loser_id = loser.as_ref().map(|l| l.answer.field("reservation_id").to_owned());
    eprintln!(
        "overlapping requests: {} confirmed; the other {}",
        winner.guest,
        if loser.is_some() { "rejected by the saga" } else { "refused at once (409)" }
    );

    // Reviews with a host reply, then B is delisted.
    let review = |token: String, reservation: String, rating: u8, comment: &'static str| {
        let room = room_a.clone();
        async move {
            let body = json!({"reservation_id": reservation, "rating": rating, "comment": comment});
            let answer = s.post(&format!("/v1/rooms/{room}/reviews"), &token, &body).await;
            assert_eq!(answer.status, 201, "{}", answer.text);
            answer
        }
    };
    let rv1 = review(g1.clone(), r1_id.clone(), 4, "Bright and quiet").await;
    let rv2 = review(winner.token.clone(), w_id.clone(), 5, "Lovely view").await;
    let rv1_id = rv1.field("review_id").to_owned();
    let reply =
        s.post(&format!("/v1/reviews/{rv1_id}/reply"), &host, &json!({"comment": "Thank you, come again"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let delist = s.send(Method::DELETE, &format!("/v1/rooms/{room_b}"), Some(&host), None, &[]).await;
    assert_eq!(delist.status, 200, "{}", delist.text);
    let min = delist.field("position").to_owned();
    assert!(!min.is_empty(), "{}", delist.text);

    let feed = w.feed_after("").await;
    let recorded_at = |at: &str| -> String {
        let event = feed.iter().find(|e| e["position"] == at).unwrap_or_else(|| panic!("no event at {at}"));
        event["recorded_at"].as_str().expect("recorded_at").to_owned()
    };

    // roomview, every field.
    let view_a = w.ok(&format!("/v1/rooms/{room_a}"), None, &min).await;
    let mut booked_a = vec![
        json!({"reservation_id": r1_id, "check_in": day(10), "check_out": day(13)}),
        json!({"reservation_id": w_id, "check_in": winner.answer.field("check_in"),
               "check_out": winner.answer.field("check_out")}),
    ];
    booked_a.sort_by_key(|b| b["check_in"].as_str().unwrap_or("").to_owned());
    let expected_a = json!({
        "room_id": room_a, "host_id": "host-1", "name": "Loft by the Sea", "description": "Top floor, two windows",
        "address": "3 Harbour Road", "nightly_price": eur(12_000), "capacity": 3, "listed": true,
        "reservations": {"pending": 0, "confirmed": 2, "cancelled": 0, "rejected": 1 + i64::from(loser.is_some())},
        "booked": booked_a,
        "payments": {"charged": eur(72_000), "refunded": eur(0)},
        "reviews": {"count": 2, "average_rating": 4.5},
    });
    let mut trimmed = view_a.clone();
    let object = trimmed.as_object_mut().expect("object");
    let updated_a = object.remove("updated_at").expect("updated_at");
    let position_a = object.remove("position").expect("position");
    assert_eq!(trimmed, expected_a, "room A");
    assert_eq!(position_a, reply.body["position"], "room A's position is its last event's (the reply)");
    assert!(same_instant(updated_a.as_str().expect("updated_at"), &recorded_at(reply.field("position"))), "{view_a}");

    let view_b = w.ok(&format!("/v1/rooms/{room_b}"), None, &min).await;
    let mut trimmed = view_b.clone();
    let object = trimmed.as_object_mut().expect("object");
    let updated_b = object.remove("updated_at").expect("updated_at");
    let position_b = object.remove("position").expect("position");
    let reviews_b = object.remove("reviews").expect("reviews");
    assert_eq!(
        trimmed,
        json!({
            "room_id": room_b, "host_id": "host-1", "name": "Attic", "description": "", "address": "2 Quay Street",
            "nightly_price": eur(8_000), "capacity": 1, "listed": false,
            "reservations": {"pending": 0, "confirmed": 0, "cancelled": 1, "rejected": 0},
            "booked": [],
            "payments": {"charged": eur(32_000), "refunded": eur(32_000)},
        }),
        "room B"
    );
    assert_eq!(keys(&reviews_b), strs(&["average_rating", "count"]), "{reviews_b}");
    assert_eq!(reviews_b["count"], 0, "{reviews_b}");
    assert!(reviews_b["average_rating"].is_null() || reviews_b["average_rating"] == 0.0, "{reviews_b}");
    assert_eq!(position_b.as_str(), Some(min.as_str()), "room B's position is the delisting's");
    assert!(same_instant(updated_b.as_str().expect("updated_at"), &recorded_at(&min)), "{view_b}");

    let view_c = w.ok(&format!("/v1/rooms/{room_c}"), None, &min).await;
    assert_eq!(
        (&view_c["host_id"], &view_c["listed"], &view_c["reservations"], &view_c["booked"], &view_c["position"]),
        (
            &json!("host-2"),
            &json!(true),
            &json!({"pending": 0, "confirmed": 0, "cancelled": 0, "rejected": 0}),
            &json!([]),
            &json!(c.field("position"))
        ),
        "{view_c}"
    );
    let unknown = w.get(&format!("/v1/rooms/{}", uuid::Uuid::new_v4()), None, &min).await;
    assert_eq!((unknown.status, unknown.code()), (404, "room_not_found"), "{}", unknown.text);

    // The list: the same rows, pages of one, and by host.
    let mut by_id = BTreeMap::new();
    for view in [&view_a, &view_b, &view_c] {
        by_id.insert(view["room_id"].as_str().expect("id").to_owned(), view.clone());
    }
    let list = w.ok("/v1/rooms", None, &min).await;
    assert_eq!(list["items"].as_array().expect("items"), &by_id.values().cloned().collect::<Vec<_>>(), "{list}");
    let mut paged = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let page = w.ok(&format!("/v1/rooms?limit=1&cursor={cursor}"), None, &min).await;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 1, "{page}");
        paged.extend(items.iter().map(|i| i["room_id"].as_str().expect("id").to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) if !items.is_empty() => cursor = next.to_owned(),
            _ => break,
        }
    }
    assert_eq!(paged, by_id.keys().cloned().collect::<Vec<_>>(), "pages of one");
    let mine = w.ok("/v1/rooms?host_id=host-1", None, &min).await;
    let mut host_rooms = vec![room_a.clone(), room_b.clone()];
    host_rooms.sort();
    let ids: Vec<&str> =
        mine["items"].as_array().expect("items").iter().filter_map(|i| i["room_id"].as_str()).collect();
    assert_eq!(ids, host_rooms, "{mine}");
    let theirs = w.ok("/v1/rooms?host_id=host-2", None, &min).await;
    assert_eq!(theirs["items"], json!([view_c]), "{theirs}");
    let nobody = w.ok("/v1/rooms?host_id=host-9", None, &min).await;
    assert_eq!(nobody["items"], json!([]), "{nobody}");

    // Reviews, oldest first, with the reply.
    let reviews = w.ok(&format!("/v1/rooms/{room_a}/reviews"), None, &min).await;
    let items = reviews["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{reviews}");
    let mut first = items[0].clone();
    let mut second = items[1].clone();
    let first_at = first.as_object_mut().expect("object").remove("created_at").expect("created_at");
    let second_at = second.as_object_mut().expect("object").remove("created_at").expect("created_at");
    assert_eq!(
        first,
        json!({"review_id": rv1_id, "reservation_id": r1_id, "guest_id": "guest-1", "rating": 4,
               "comment": "Bright and quiet", "reply": "Thank you, come again"})
    );
    assert_eq!(
        second,
        json!({"review_id": rv2.field("review_id"), "reservation_id": w_id, "guest_id": winner.guest, "rating": 5,
               "comment": "Lovely view"})
    );
    assert!(same_instant(first_at.as_str().expect("time"), &recorded_at(rv1.field("position"))), "{reviews}");
    assert!(same_instant(second_at.as_str().expect("time"), &recorded_at(rv2.field("position"))), "{reviews}");
    let none = w.ok(&format!("/v1/rooms/{room_b}/reviews"), None, &min).await;
    assert_eq!(none["items"], json!([]), "{none}");

    // Each reservation as its guest: what the command's answer said, and the expected facts.
    let mut settled: Vec<(String, String, &Answer)> = vec![
        (r1_id.clone(), g1.clone(), &r1),
        (r2_id.clone(), g1.clone(), &r2),
        (r3_id.clone(), g2.clone(), &r3_cancel),
        (w_id.clone(), winner.token.clone(), &winner.answer),
    ];
    if let Some(l) = &loser {
        settled.push((l.answer.field("reservation_id").to_owned(), l.token.clone(), &l.answer));
    }
    let mut reads = BTreeMap::new();
    for (id, token, answer) in &settled {
        let read = w.ok(&format!("/v1/reservations/{id}"), Some(token), &min).await;
        assert_same_reservation(&read, &answer.body);
        reads.insert(id.clone(), read);
    }
    let r1_read = &reads[&r1_id];
    assert_eq!(
        (&r1_read["status"], &r1_read["total_price"], &r1_read["payment"], &r1_read["guests"]),
        (&json!("confirmed"), &eur(36_000), &json!({"status": "approved", "charged": eur(36_000)}), &json!(2)),
        "{r1_read}"
    );
    assert_eq!((&r1_read["check_in"], &r1_read["check_out"]), (&json!(day(10)), &json!(day(13))));
    let r2_read = &reads[&r2_id];
    assert_eq!(
        (&r2_read["status"], &r2_read["reason"], &r2_read["payment"], r2_read.get("total_price")),
        (&json!("rejected"), &json!({"code": "payment_declined"}), &json!({"status": "declined"}), None),
        "{r2_read}"
    );
    let r3_read = &reads[&r3_id];
    assert_eq!(
        (&r3_read["status"], &r3_read["payment"], &r3_read["room_id"]),
        (
            &json!("cancelled"),
            &json!({"status": "refunded", "charged": eur(32_000), "refunded": eur(32_000)}),
            &json!(room_b)
        ),
        "{r3_read}"
    );
    if let Some(id) = &loser_id {
        let read = &reads[id];
        assert_eq!((&read["status"], &read["reason"]), (&json!("rejected"), &json!({"code": "dates_unavailable"})));
    }

    // Who may read a reservation.
    for (token, status, code) in [
        (Some(g1.as_str()), 200, ""),
        (Some(host.as_str()), 200, ""),
        (Some(w.admin.as_str()), 200, ""),
        (Some(g3.as_str()), 403, "not_owner"),
        (Some(other_host.as_str()), 403, "not_owner"),
        (None, 401, ""),
    ] {
        let answer = w.get(&format!("/v1/reservations/{r1_id}"), token, &min).await;
        assert_eq!(answer.status, status, "{token:?}: {}", answer.text);
        if status == 200 {
            assert_eq!(&answer.body, r1_read);
        } else {
            assert!(answer.is_problem(), "{}", answer.text);
        }
        if !code.is_empty() {
            assert_eq!(answer.code(), code, "{}", answer.text);
        }
    }
    let hosts_b = w.get(&format!("/v1/reservations/{r3_id}"), Some(&host), &min).await;
    assert_eq!(hosts_b.status, 200, "the host of room B reads its reservation: {}", hosts_b.text);
    let missing = w.get(&format!("/v1/reservations/{}", uuid::Uuid::new_v4()), Some(&w.admin), &min).await;
    assert_eq!((missing.status, missing.code()), (404, "reservation_not_found"), "{}", missing.text);
    assert!(missing.is_problem(), "{}", missing.text);

    // A guest's reservations, newest first, as the single reads show them.
    let mut g2_expected: Vec<String> = Vec::new();
    let mut g3_expected: Vec<String> = Vec::new();
    for contender in [Some(&winner), loser.as_ref()].into_iter().flatten() {
        let id = contender.answer.field("reservation_id").to_owned();
        if contender.guest == "guest-2" {
            g2_expected.push(id);
        } else {
            g3_expected.push(id);
        }
    }
    g2_expected.push(r3_id.clone());
    for (token, expected) in [(&g1, vec![r2_id.clone(), r1_id.clone()]), (&g2, g2_expected), (&g3, g3_expected)] {
        let list = w.ok("/v1/me/reservations", Some(token), &min).await;
        let items = list["items"].as_array().expect("items");
        let ids: Vec<&str> = items.iter().filter_map(|i| i["reservation_id"].as_str()).collect();
        assert_eq!(ids, expected, "{list}");
        for item in items {
            assert_eq!(item, &reads[item["reservation_id"].as_str().expect("id")], "{list}");
        }
    }
    for token in [&host, &w.admin] {
        let refused = w.get("/v1/me/reservations", Some(token), &min).await;
        assert_eq!(refused.status, 403, "{}", refused.text);
    }

    // Notifications: exactly one per recipient per event.
    let w_guest = winner.guest;
    let mut expected: BTreeMap<&str, Vec<(String, String, String)>> = BTreeMap::new();
    let mut both = |guest: &'static str, kind: &str, reservation: &str, room: &str| {
        expected.entry(guest).or_default().push(note(kind, reservation, room));
        expected.entry("host-1").or_default().push(note(kind, reservation, room));
    };
    both("guest-1", "reservation_confirmed", &r1_id, &room_a);
    both("guest-1", "reservation_rejected", &r2_id, &room_a);
    both("guest-2", "reservation_confirmed", &r3_id, &room_b);
    both("guest-2", "reservation_cancelled", &r3_id, &room_b);
    both(w_guest, "reservation_confirmed", &w_id, &room_a);
    if let Some(l) = &loser {
        both(l.guest, "reservation_rejected", l.answer.field("reservation_id"), &room_a);
    }
    let host_notes = expected.entry("host-1").or_default();
    host_notes.push(note("review_posted", &r1_id, &room_a));
    host_notes.push(note("review_posted", &w_id, &room_a));
    for list in expected.values_mut() {
        list.sort();
    }
    for (sub, role) in [
        ("guest-1", "guest"),
        ("guest-2", "guest"),
        ("guest-3", "guest"),
        ("host-1", "host"),
        ("host-2", "host"),
        ("ops", "admin"),
    ] {
        let token = w.token(sub, role);
        let list = w.ok("/v1/me/notifications", Some(&token), &min).await;
        let summary = notification_summary(&list);
        let want = expected.get(sub).cloned().unwrap_or_default();
        assert_eq!(summary, want, "notifications of {sub}: {list}");
    }
    let host_counts: BTreeMap<String, usize> = expected["host-1"].iter().fold(BTreeMap::new(), |mut m, n| {
        *m.entry(n.0.clone()).or_default() += 1;
        m
    });
    assert_eq!(host_counts["review_posted"], 2);
    assert_eq!(host_counts["reservation_confirmed"], 3);
    assert_eq!(host_counts["reservation_cancelled"], 1);
    let anonymous = w.get("/v1/me/notifications", None, &min).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_flow_reads_back_field_by_field_on_sqlite() {
    scripted_flow(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_flow_reads_back_field_by_field_on_postgres() {
    scripted_flow(Backend::Postgres).await;
}

async fn read_your_writes(backend: Backend) {
    let w = World::start(backend).await;
    let s = &w.server;
    let host = w.token("host-rw", "host");
    let guest = w.token("guest-rw", "guest");
    let base = w
        .register(&host, &json!({"name": "Base", "address": "1 Main St", "nightly_price": eur(9_000), "capacity": 2}))
        .await;
    let room = base.field("room_id").to_owned();
    let mut requested = Vec::new();
    for i in 0..30u64 {
        match i % 3 {
            0 => {
                let name = format!("Room {i}");
                let answer = w
                    .register(
                        &host,
                        &json!({"name": name, "address": "2 Main St", "nightly_price": eur(5_000), "capacity": 1}),
                    )
                    .await;
                let id = answer.field("room_id");
                let min = answer.field("position");
                let view = w.ok(&format!("/v1/rooms/{id}"), None, min).await;
                assert_eq!(view["name"], name.as_str(), "round {i}: {view}");
                let list = w.ok("/v1/rooms?host_id=host-rw&limit=500", None, min).await;
                let listed = list["items"].as_array().expect("items").iter().any(|r| r["room_id"] == id);
                assert!(listed, "round {i}: the new room is not in the list: {list}");
            }
            1 => {
                let name = format!("Base {i}");
                let answer = w.patch(&host, &room, &json!({"name": name})).await;
                let view = w.ok(&format!("/v1/rooms/{room}"), None, answer.field("position")).await;
                assert_eq!(view["name"], name.as_str(), "round {i}: {view}");
            }
            _ => {
                let answer = w.reserve(&guest, &room, 5 + i, 6 + i, 1, "tok_visa", false).await;
                assert_eq!(answer.status, 202, "{}", answer.text);
                let id = answer.field("reservation_id").to_owned();
                let min = answer.field("position");
                requested.push(id.clone());
                let read = w.ok(&format!("/v1/reservations/{id}"), Some(&guest), min).await;
                assert_eq!(read["reservation_id"], id.as_str(), "round {i}: {read}");
                let mine = w.ok("/v1/me/reservations", Some(&guest), min).await;
                assert_eq!(mine["items"][0]["reservation_id"], id.as_str(), "round {i}: newest first: {mine}");
                let view = w.ok(&format!("/v1/rooms/{room}"), None, min).await;
                let counts = &view["reservations"];
                let total: i64 =
                    ["pending", "confirmed", "cancelled", "rejected"].iter().filter_map(|k| counts[k].as_i64()).sum();
                assert_eq!(total, requested.len() as i64, "round {i}: roomview counts {counts}");
            }
        }
    }

    // Far ahead: 504 projection_behind within about the wait asked for.
    let some_reservation = requested[0].clone();
    for (path, token) in [
        ("/v1/rooms".to_owned(), None),
        (format!("/v1/rooms/{room}"), None),
        (format!("/v1/rooms/{room}/reviews"), None),
        (format!("/v1/reservations/{some_reservation}"), Some(guest.as_str())),
        ("/v1/me/reservations".to_owned(), Some(guest.as_str())),
        ("/v1/me/notifications".to_owned(), Some(guest.as_str())),
    ] {
        let started = Instant::now();
        let sep = if path.contains('?') { '&' } else { '?' };
        let answer =
            s.send(Method::GET, &format!("{path}{sep}min_position=999999999&wait_ms=200"), token, None, &[]).await;
        let took = started.elapsed();
        assert_eq!((answer.status, answer.code()), (504, "projection_behind"), "{path}: {}", answer.text);
        assert!(answer.is_problem(), "{path}: {}", answer.text);
        assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(1), "{path}: took {took:?}");
        for bad in ["abc", "1-", "-5", "1.5", "1-2-3"] {
            let answer = s.send(Method::GET, &format!("{path}{sep}min_position={bad}"), token, None, &[]).await;
            assert_eq!(answer.status, 422, "{path} with min_position={bad}: {}", answer.text);
            assert!(answer.is_problem(), "{path}: {}", answer.text);
            assert_eq!(answer.code(), "validation_failed", "{}", answer.text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_a_commands_position_sees_its_effect_on_sqlite() {
    read_your_writes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_a_commands_position_sees_its_effect_on_postgres() {
    read_your_writes(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_parked_with_its_aggregates_later_events_and_the_rest_goes_on() {
    let w = World::start(Backend::Sqlite).await;
    let host = w.token("host-p", "host");
    let store = w.server.open_store().await;
    let poison_id = uuid::Uuid::new_v4().to_string();
    let append = |version: u64, event_type: &str, payload: Value| stay_store::Append {
        aggregate_type: "Room".into(),
        aggregate_id: poison_id.clone(),
        expected_version: version,
        events: vec![stay_store::NewEvent { event_type: event_type.into(), event_version: "1.0".into(), payload }],
        metadata: stay_store::CommandContext::new("test").metadata(Utc::now()),
    };
    let poison = store
        .append(append(0, "RoomRegistered", json!({"RoomRegistered": {"garbage": true}})))
        .await
        .expect("append the poison event");
    let behind = store
        .append(append(1, "RoomDelisted", json!({"RoomDelisted": {"room_id": poison_id}})))
        .await
        .expect("append the event behind it");
    let (poison_at, behind_at) = (poison[0].to_string(), behind[0].to_string());

    let normal = w
        .register(
            &host,
            &json!({"name": "Sound", "address": "5 Safe Road", "nightly_price": eur(7_000), "capacity": 2}),
        )
        .await;
    let room = normal.field("room_id").to_owned();
    let view = w.ok(&format!("/v1/rooms/{room}"), None, normal.field("position")).await;
    assert_eq!(view["name"], "Sound", "{view}");
    // And it keeps going after that.
    let changed = w.patch(&host, &room, &json!({"name": "Still sound"})).await;
    let view = w.ok(&format!("/v1/rooms/{room}"), None, changed.field("position")).await;
    assert_eq!(view["name"], "Still sound", "{view}");
    let poisoned = w.get(&format!("/v1/rooms/{poison_id}"), None, changed.field("position")).await;
    assert_eq!(poisoned.status, 404, "{}", poisoned.text);

    let deadline = Instant::now() + Duration::from_secs(10);
    let roomview = loop {
        let all = w.admin_get("/v1/admin/projections").await;
        let roomview = all
            .as_array()
            .expect("a list")
            .iter()
            .find(|p| p["name"] == "roomview")
            .unwrap_or_else(|| panic!("no roomview in {all}"))
            .clone();
        let settled = roomview["lag_events"] == 0 && roomview["dead_letters"].as_array().is_some_and(|d| d.len() >= 2);
        if settled || Instant::now() > deadline {
            break roomview;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(roomview["lag_events"], 0, "{roomview}\n{}", tail(&w.server));
    assert_eq!(roomview["status"], "running", "{roomview}");
    assert!(!roomview["position"].as_str().unwrap_or("").is_empty(), "{roomview}");
    assert!(roomview.get("lag_ms").is_some_and(Value::is_number), "{roomview}");
    let letters = roomview["dead_letters"].as_array().expect("dead_letters");
    assert_eq!(letters.len(), 2, "{roomview}");
    let first = &letters[0];
    assert_eq!(
        (&first["position"], &first["aggregate_type"], &first["aggregate_id"], &first["event_type"]),
        (&json!(poison_at), &json!("Room"), &json!(poison_id), &json!("RoomRegistered")),
        "{roomview}"
    );
    assert!(first["error"].as_str().is_some_and(|e| !e.is_empty()), "{roomview}");
    let second = &letters[1];
    assert_eq!(
        (&second["position"], &second["aggregate_id"], &second["event_type"]),
        (&json!(behind_at), &json!(poison_id), &json!("RoomDelisted")),
        "{roomview}"
    );
    assert!(second["error"].as_str().is_some_and(|e| !e.is_empty()), "{roomview}");
    assert!(w.server.logs().contains("parked"), "the parking is logged");
}

/// A `text/event-stream` body read incrementally.
struct SseReader {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

#[derive(Debug, Clone)]
struct SseEvent {
    id: String,
    event: String,
    data: Value,
}

impl SseReader {
    /// The next event (comments and keep-alives skipped), or None at `deadline` or the end.
    async fn next(&mut self, deadline: Instant) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block).replace('\r', "");
                let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
                for line in text.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => id = value.to_owned(),
                        "event" => event = value.to_owned(),
                        "data" => {
                            if !data.is_empty() {
                                data.push('\n');
                            }
                            data.push_str(value);
                        }
                        _ => {}
                    }
                }
                if id.is_empty() && data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {data}"));
                return Some(SseEvent { id, event, data });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.extend_from_slice(&bytes),
                Ok(Ok(None)) => return None,
                Ok(Err(e)) => panic!("the live feed broke: {e}"),
                Err(_) => return None,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_shows_new_events_and_resumes_after_the_last_one_seen() {
    let w = World::start(Backend::Sqlite).await;
    let s = &w.server;
    let host = w.token("host-l", "host");
    let guest = w.token("guest-l", "guest");
    let room = w
        .register(&host, &json!({"name": "Live", "address": "1 Wire St", "nightly_price": eur(6_000), "capacity": 2}))
        .await;
    let room_id = room.field("room_id").to_owned();
    let head = w.quiet_head().await;

    let (status, content_type, response) = s.open("/v1/live", Some(&w.admin), &[]).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let mut live = SseReader { response, buffer: Vec::new() };

    let reserved = w.reserve(&guest, &room_id, 5, 7, 2, "tok_visa", false).await;
    assert_eq!(reserved.status, 202, "{}", reserved.text);
    let sent = Instant::now();
    let reservation_id = reserved.field("reservation_id").to_owned();
    let mut seen: Vec<SseEvent> = Vec::new();
    loop {
        let event = live.next(sent + Duration::from_secs(1)).await.unwrap_or_else(|| {
            panic!("no ReservationRequested on the live feed within 1 s; saw {seen:?}\n{}", tail(s))
        });
        let found = event.event == "ReservationRequested";
        seen.push(event);
        if found {
            break;
        }
    }
    let requested = seen.last().expect("an event").clone();
    assert_eq!(requested.id, reserved.field("position"), "the SSE id is the feed position");
    assert_eq!(requested.data["position"], requested.id.as_str());
    assert_eq!(
        (&requested.data["aggregate_type"], &requested.data["aggregate_id"], &requested.data["event_type"]),
        (&json!("Reservation"), &json!(reservation_id), &json!("ReservationRequested"))
    );
    // Read on a little (the saga's first events), then hang up mid-stream.
    while seen.len() < 4 {
        match live.next(Instant::now() + Duration::from_secs(2)).await {
            Some(event) => seen.push(event),
            None => break,
        }
    }
    drop(live);
    let first_ids: Vec<String> = seen.iter().map(|e| e.id.clone()).collect();
    let feed_then = w.feed_after(&head).await;
    let feed_ids: Vec<&str> = feed_then.iter().filter_map(|e| e["position"].as_str()).take(first_ids.len()).collect();
    assert_eq!(first_ids, feed_ids, "the live feed from the head at connection is the feed, in order");
    let last_seen = first_ids.last().expect("an id").clone();

    // More happens while nobody listens.
    w.patch(&host, &room_id, &json!({"name": "Live again"})).await;
    let confirmed = w.reserve(&guest, &room_id, 10, 12, 1, "tok_visa", true).await;
    assert_settled(&confirmed, "confirmed", "approved");
    w.register(&host, &json!({"name": "Second", "address": "2 Wire St", "nightly_price": eur(6_000), "capacity": 2}))
        .await;
    w.quiet_head().await;
    let missed = w.feed_after(&last_seen).await;
    assert!(missed.len() >= 5, "{missed:?}");

    let (status, _, response) = s.open("/v1/live", Some(&w.admin), &[("last-event-id", last_seen.as_str())]).await;
    assert_eq!(status, 200);
    let mut resumed = SseReader { response, buffer: Vec::new() };
    let mut got = Vec::new();
    while got.len() < missed.len() {
        match resumed.next(Instant::now() + Duration::from_secs(3)).await {
            Some(event) => got.push(event),
            None => break,
        }
    }
    let extra = resumed.next(Instant::now() + Duration::from_millis(300)).await;
    let got_ids: Vec<&str> = got.iter().map(|e| e.id.as_str()).collect();
    let want_ids: Vec<&str> = missed.iter().filter_map(|e| e["position"].as_str()).collect();
    assert_eq!(got_ids, want_ids, "resumed after {last_seen}: exactly the events after it, in order");
    let got_types: Vec<&str> = got.iter().map(|e| e.event.as_str()).collect();
    let want_types: Vec<&str> = missed.iter().filter_map(|e| e["event_type"].as_str()).collect();
    assert_eq!(got_types, want_types);
    for (event, item) in got.iter().zip(&missed) {
        assert_eq!((&event.data["aggregate_id"], &event.data["sequence"]), (&item["aggregate_id"], &item["sequence"]));
    }
    assert!(extra.is_none(), "an event after the settled feed: {extra:?}");
    drop(resumed);

    // The token may come in the query; only admins may listen.
    let (status, content_type, _) = s.open(&format!("/v1/live?access_token={}", w.admin), None, &[]).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let (status, content_type, _) = s.open("/v1/live", Some(&guest), &[]).await;
    assert_eq!(status, 403, "{content_type}");
    let (status, _, _) = s.open(&format!("/v1/live?access_token={guest}"), None, &[]).await;
    assert_eq!(status, 403);
    let (status, _, _) = s.open("/v1/live", None, &[]).await;
    assert_eq!(status, 401);
    let (status, _, _) = s.open("/v1/live", Some(&w.admin), &[("last-event-id", "not-a-position")]).await;
    assert_eq!(status, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_page_the_feed_and_read_a_stream_as_of_a_time() {
    let w = World::start(Backend::Sqlite).await;
    let s = &w.server;
    let host = w.token("host-a", "host");
    let guest = w.token("guest-a", "guest");
    let room = w
        .register(&host, &json!({"name": "Ops", "address": "1 Log St", "nightly_price": eur(4_000), "capacity": 2}))
        .await;
    let room_id = room.field("room_id").to_owned();
    let confirmed = w.reserve(&guest, &room_id, 6, 8, 2, "tok_visa", true).await;
    assert_settled(&confirmed, "confirmed", "approved");
    let id = confirmed.field("reservation_id").to_owned();
    w.quiet_head().await;

    // The feed, all at once and in pages of two.
    let all = w.admin_get("/v1/admin/feed?limit=1000").await;
    let items = all["items"].as_array().expect("items").clone();
    assert!(items.len() >= 8, "{all}");
    assert_eq!(all["next"], items.last().expect("an event")["position"]);
    for item in &items {
        assert_eq!(
            keys(item),
            strs(&[
                "aggregate_id",
                "aggregate_type",
                "event_type",
                "event_version",
                "metadata",
                "payload",
                "position",
                "recorded_at",
                "sequence"
            ]),
            "{item}"
        );
        time(item["recorded_at"].as_str().expect("recorded_at"));
    }
    let positions: Vec<Position> = items.iter().map(|i| position(i["position"].as_str().expect("position"))).collect();
    assert!(positions.windows(2).all(|p| p[0] < p[1]), "{positions:?}");
    let mut paged = Vec::new();
    let mut after = String::new();
    for _ in 0..200 {
        let page = w.admin_get(&format!("/v1/admin/feed?after={after}&limit=2")).await;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2, "{page}");
        if items.is_empty() {
            assert!(page["next"].is_null(), "{page}");
            break;
        }
        assert_eq!(page["next"], items.last().expect("item")["position"], "{page}");
        paged.extend(items.iter().cloned());
        after = page["next"].as_str().expect("next").to_owned();
    }
    assert_eq!(paged, items, "the pages of two make up the feed");
    let bad = s.send(Method::GET, "/v1/admin/feed?after=x", Some(&w.admin), None, &[]).await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    let guest_feed = s.send(Method::GET, "/v1/admin/feed", Some(&guest), None, &[]).await;
    assert_eq!(guest_feed.status, 403, "{}", guest_feed.text);
    let anonymous = s.send(Method::GET, "/v1/admin/feed", None, None, &[]).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);

    // A reservation's stream: its events and state, now and as of before its confirmation.
    let stream = w.admin_get(&format!("/v1/admin/streams/Reservation/{id}")).await;
    let events = stream["events"].as_array().expect("events");
    let types: Vec<&str> = events.iter().filter_map(|e| e["event_type"].as_str()).collect();
    assert_eq!(types, ["ReservationRequested", "ReservationConfirmed"], "{stream}");
    let sequences: Vec<u64> = events.iter().filter_map(|e| e["sequence"].as_u64()).collect();
    assert_eq!(sequences, [1, 2]);
    assert!(events.iter().all(|e| e["aggregate_id"] == id.as_str()), "{stream}");
    let status_of = |state: &Value| -> String {
        state["status"].as_str().or(state["details"]["status"].as_str()).unwrap_or("").to_owned()
    };
    assert_eq!(status_of(&stream["state"]), "confirmed", "{stream}");
    let requested_at = events[0]["recorded_at"].as_str().expect("recorded_at").to_owned();
    assert!(time(&requested_at) < time(events[1]["recorded_at"].as_str().expect("recorded_at")));
    let encoded = requested_at.replace('+', "%2B");
    let then = w.admin_get(&format!("/v1/admin/streams/Reservation/{id}?as_of={encoded}")).await;
    assert_eq!(then["events"].as_array().map(Vec::len), Some(1), "{then}");
    assert_eq!(status_of(&then["state"]), "pending", "{then}");

    let room_stream = w.admin_get(&format!("/v1/admin/streams/Room/{room_id}")).await;
    let room_types: Vec<&str> =
        room_stream["events"].as_array().expect("events").iter().filter_map(|e| e["event_type"].as_str()).collect();
    assert_eq!(room_types.first(), Some(&"RoomRegistered"), "{room_stream}");
    assert!(room_types.contains(&"BookingConfirmed"), "{room_stream}");

    for (path, status, code) in [
        (format!("/v1/admin/streams/Reservation/{id}?as_of=yesterday"), 422, "validation_failed"),
        (format!("/v1/admin/streams/Nothing/{id}"), 404, "stream_not_found"),
        (format!("/v1/admin/streams/Reservation/{}", uuid::Uuid::new_v4()), 404, "stream_not_found"),
    ] {
        let answer = s.send(Method::GET, &path, Some(&w.admin), None, &[]).await;
        assert_eq!((answer.status, answer.code()), (status, code), "{path}: {}", answer.text);
        assert!(answer.is_problem(), "{}", answer.text);
    }
    let guest_stream =
        s.send(Method::GET, &format!("/v1/admin/streams/Reservation/{id}"), Some(&guest), None, &[]).await;
    assert_eq!(guest_stream.status, 403);

    // Every read model is listed and catches up, with nothing parked. Events may still be arriving
    // (the saga's last steps), so "caught up" is waited for, not sampled once.
    s.settle().await;
    let projections = w.admin_get("/v1/admin/projections").await;
    let list = projections.as_array().expect("a list");
    let names: Vec<&str> = list.iter().filter_map(|p| p["name"].as_str()).collect();
    for name in ["roomview", "reservations", "notifications", "reviews", "sagas", "correlations"] {
        assert!(names.contains(&name), "{name} missing: {projections}");
    }
    for p in list {
        for field in ["name", "position", "lag_events", "lag_ms", "status", "dead_letters"] {
            assert!(p.get(field).is_some(), "{field} missing: {p}");
        }
        assert_eq!((&p["lag_events"], &p["dead_letters"]), (&json!(0), &json!([])), "{p}");
    }
}
