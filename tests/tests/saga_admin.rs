//! `GET /v1/admin/sagas` against a real `stay serve`, on SQLite and PostgreSQL: the saga overview
//! from the `sagas` read model, filtered by one or several statuses, paged by cursor without a
//! repeat or a gap while sagas change, read-your-writes with `min_position`, and every bad
//! parameter a 422 problem.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use stay_tests::{Answer, Backend, StayServer};

const WAIT: (&str, &str) = ("prefer", "wait=25");

struct Ops {
    server: StayServer,
    admin: String,
    guest: String,
    room_id: String,
    next_day: u64,
}

impl Ops {
    async fn start(backend: Backend) -> Self {
        let server = StayServer::start(backend).await;
        let room = json!({
            "name": "Loft", "address": "1 Quay Street",
            "nightly_price": {"amount_minor": 10_000, "currency": "EUR"}, "capacity": 2
        });
        let answer = server.post("/v1/rooms", &server.token("host-1", "host"), &room).await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        Self {
            admin: server.token("ops", "admin"),
            guest: server.token("guest-1", "guest"),
            room_id: answer.field("room_id").to_owned(),
            next_day: 5,
            server,
        }
    }

    /// Reserves two nights with `card`, answering once the saga has settled it; answers its id.
    async fn reserve(&mut self, card: &str, status: &str) -> String {
        let from = self.next_day;
        self.next_day += 3;
        let day = |offset: u64| Utc::now().date_naive().checked_add_days(Days::new(offset)).expect("date").to_string();
        let body = json!({
            "room_id": self.room_id, "check_in": day(from), "check_out": day(from + 2), "guests": 2,
            "payment": {"card_token": card}
        });
        let answer = self.server.send(Method::POST, "/v1/reservations", Some(&self.guest), Some(&body), &[WAIT]).await;
        assert_eq!((answer.status, answer.field("status")), (200, status), "{}", answer.text);
        answer.field("reservation_id").to_owned()
    }

    async fn get(&self, path: &str) -> Answer {
        self.server.send(Method::GET, path, Some(&self.admin), None, &[]).await
    }

    async fn page(&self, path: &str) -> (Vec<Value>, Option<String>) {
        let answer = self.get(path).await;
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.text);
        let items = answer.body["items"].as_array().unwrap_or_else(|| panic!("items: {}", answer.text)).clone();
        (items, answer.body["next_cursor"].as_str().map(str::to_owned))
    }

    /// Every saga as `(saga_id, status)`, in list order, once the model shows `settled` of them
    /// in a final status.
    async fn settled(&self, settled: usize) -> Vec<(String, String)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (items, _) = self.page("/v1/admin/sagas").await;
            let listed: Vec<(String, String)> = items.iter().map(|s| (text(s, "saga_id"), text(s, "status"))).collect();
            if listed.iter().filter(|(_, status)| status == "completed" || status == "compensated").count() == settled {
                return listed;
            }
            assert!(Instant::now() < deadline, "never {settled} settled: {listed:?}\n{}", self.server.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ids(&self, path: &str) -> Vec<String> {
        self.page(path).await.0.iter().map(|s| text(s, "saga_id")).collect()
    }
}

fn text(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_else(|| panic!("{field} in {value}")).to_owned()
}

async fn the_saga_list_filters_and_pages(backend: Backend) {
    let mut ops = Ops::start(backend).await;
    let mut confirmed = Vec::new();
    for _ in 0..3 {
        confirmed.push(ops.reserve("tok_visa", "confirmed").await);
    }
    let declined = ops.reserve("tok_declined", "rejected").await;
    let all = ops.settled(4).await;

    // Newest first: saga ids are their reservations' (UUID v7), so creation order, reversed.
    let mut created: Vec<String> = confirmed.iter().chain([&declined]).cloned().collect();
    created.reverse();
    assert_eq!(all.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), created);
    let (items, next) = ops.page("/v1/admin/sagas").await;
    assert_eq!(next, None, "one page holds them all");
    for item in &items {
        for field in ["saga_id", "reservation_id", "status", "step", "updated_at"] {
            assert!(item[field].is_string(), "{field} in {item}");
        }
        assert_eq!(item["saga_id"], item["reservation_id"]);
    }

    // Filters: one status, several (comma-separated or repeated), none matching.
    assert_eq!(ops.ids("/v1/admin/sagas?status=completed").await, created[1..].to_vec());
    assert_eq!(ops.ids("/v1/admin/sagas?status=compensated").await, vec![declined.clone()]);
    assert_eq!(ops.ids("/v1/admin/sagas?status=parked,compensated").await, vec![declined.clone()]);
    assert_eq!(ops.ids("/v1/admin/sagas?status=compensated&status=completed").await, created);
    assert_eq!(ops.ids("/v1/admin/sagas?status=running").await, Vec::<String>::new());

    // Pages of one follow the list exactly, and the last says there is no next.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/admin/sagas?limit=1&cursor={cursor}"),
            None => "/v1/admin/sagas?limit=1".to_owned(),
        };
        let (items, next) = ops.page(&path).await;
        assert!(items.len() <= 1, "{items:?}");
        paged.extend(items.iter().map(|s| text(s, "saga_id")));
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, created, "paging neither repeats nor skips");

    // A saga that changes between two pages keeps its place: the oldest, confirmed, is cancelled
    // (its saga compensates, its row is updated) after the first page was read; the second page
    // still holds it, and nothing is repeated.
    let (first, next) = ops.page("/v1/admin/sagas?limit=2&status=completed,compensated").await;
    let next = next.expect("a second page");
    let oldest = &confirmed[0];
    let cancel = format!("/v1/reservations/{oldest}/cancel");
    let cancelled = ops.server.send(Method::POST, &cancel, Some(&ops.guest), None, &[WAIT]).await;
    assert_eq!((cancelled.status, cancelled.field("status")), (200, "cancelled"), "{}", cancelled.text);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ops.ids("/v1/admin/sagas?status=compensated").await.contains(oldest) {
        assert!(Instant::now() < deadline, "the cancelled saga never compensated\n{}", ops.server.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (second, last) = ops.page(&format!("/v1/admin/sagas?limit=2&status=completed,compensated&cursor={next}")).await;
    assert_eq!(last, None);
    let seen: Vec<String> = first.iter().chain(&second).map(|s| text(s, "saga_id")).collect();
    assert_eq!(seen, created, "every saga once, in place, although one changed between the pages");
    let moved = second.iter().find(|s| s["saga_id"] == oldest.as_str()).expect("the changed saga");
    assert_eq!(text(moved, "status"), "compensated", "the page shows it as it is now");

    // Read-your-writes: at the head of the feed, the answer already holds everything before it.
    let head = ops.server.open_store().await.head().await.expect("head");
    let (items, _) = ops.page(&format!("/v1/admin/sagas?status=compensated&min_position={head}")).await;
    let compensated: BTreeSet<String> = items.iter().map(|s| text(s, "saga_id")).collect();
    assert_eq!(compensated, BTreeSet::from([declined.clone(), oldest.clone()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_list_filters_and_pages_on_sqlite() {
    the_saga_list_filters_and_pages(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_list_filters_and_pages_on_postgres() {
    the_saga_list_filters_and_pages(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_saga_list_parameters_are_422_problems_and_the_list_is_for_admins() {
    let ops = Ops::start(Backend::Sqlite).await;
    for (query, field) in [
        ("status=done", "status"),
        ("status=running,Parked", "status"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=many", "limit"),
        ("cursor=12", "cursor"),
        ("cursor=not-a-saga", "cursor"),
        ("min_position=yesterday", "min_position"),
    ] {
        let answer = ops.get(&format!("/v1/admin/sagas?{query}")).await;
        assert_eq!(answer.status, 422, "{query}: {}", answer.text);
        assert!(answer.is_problem(), "{query}: {}", answer.text);
        assert_eq!(answer.body["errors"][0]["field"], field, "{query}: {}", answer.text);
    }
    let none = ops.server.send(Method::GET, "/v1/admin/sagas", None, None, &[]).await;
    assert_eq!((none.status, none.is_problem()), (401, true), "{}", none.text);
    let guest = ops.server.send(Method::GET, "/v1/admin/sagas", Some(&ops.guest), None, &[]).await;
    assert_eq!((guest.status, guest.is_problem()), (403, true), "{}", guest.text);
}
