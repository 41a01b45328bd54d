//! The operator screens of the dashboard in a real browser (headless Chromium through WebDriver)
//! against a real `stay serve`: an admin opens a parked saga, reads its timeline, retries it and
//! sees it finish; starts a rebuild and sees it switch; skips a dead letter and sees what came of
//! it; pages the feed, follows it live, moves a stream's state back one event and reads a
//! reservation's causation tree. No screen writes an error to the console. Each screen is saved
//! under `target/dashboard-screenshots/ops-*.png`.

use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use fantoccini::key::Key;
use reqwest::Method;
use serde_json::{json, Value};
use stay_store::{Append, CommandContext, NewEvent};
use stay_tests::browser::{Browser, PHONE};
use stay_tests::{Answer, Backend, PaymentSim, StayServer};

const WAIT: (&str, &str) = ("prefer", "wait=25");

/// Long enough for a saga to settle or a model to catch up on a busy machine.
const SETTLE: Duration = Duration::from_secs(30);

/// A server with a room, its users' tokens, and a browser signed in as the admin.
struct Desk {
    server: StayServer,
    browser: Browser,
    admin: String,
    guest: String,
    host: String,
    room_id: String,
    next_day: u64,
}

impl Desk {
    async fn start(args: &[&str]) -> Self {
        let server = StayServer::start_with(Backend::Sqlite, args).await;
        let host = server.token("host-1", "host");
        let room = json!({
            "name": "Loft", "address": "1 Quay Street",
            "nightly_price": {"amount_minor": 10_000, "currency": "EUR"}, "capacity": 2
        });
        let answer = server.post("/v1/rooms", &host, &room).await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        let admin = server.token("ops", "admin");
        let browser = Browser::start().await;
        // What `stay token --url` prints: the token in the fragment, which the dashboard keeps for
        // the tab and replaces with `#/me`.
        browser.goto(&format!("{}/#token={admin}", server.url())).await;
        browser.wait_for_text("h1", "").await;
        Self {
            guest: server.token("guest-1", "guest"),
            room_id: answer.field("room_id").to_owned(),
            next_day: 5,
            admin,
            host,
            browser,
            server,
        }
    }

    /// Opens a screen of the dashboard by its hash (`#/ops/sagas`).
    async fn open(&self, hash: &str) {
        self.browser.goto(&format!("{}/{hash}", self.server.url())).await;
    }

    /// Reserves two nights with `card`; answers the reservation's id once the saga settled it as `status`.
    async fn reserve(&mut self, card: &str, status: &str) -> String {
        let from = self.next_day;
        self.next_day += 3;
        let body = json!({
            "room_id": self.room_id, "check_in": day(from), "check_out": day(from + 2), "guests": 2,
            "payment": {"card_token": card}
        });
        let answer = self.server.send(Method::POST, "/v1/reservations", Some(&self.guest), Some(&body), &[WAIT]).await;
        assert_eq!((answer.status, answer.field("status")), (200, status), "{}", answer.text);
        answer.field("reservation_id").to_owned()
    }

    async fn admin_get(&self, path: &str) -> Value {
        let answer = self.server.send(Method::GET, path, Some(&self.admin), None, &[]).await;
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.text);
        answer.body
    }

    /// Waits until the admin route `path` answers something `done` accepts; answers it.
    async fn admin_until(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + SETTLE;
        loop {
            let body = self.admin_get(path).await;
            if done(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "{what} never happened: {body}\n{}", self.server.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Confirms the dialog a button opened.
    async fn confirm(&self) {
        self.browser.click("dialog[open] button[data-confirm=yes]").await;
        self.browser.wait_until_gone("dialog[open]").await;
    }
}

fn day(offset: u64) -> String {
    Utc::now().date_naive().checked_add_days(Days::new(offset)).expect("date").to_string()
}

fn status_of(saga: &Value) -> &str {
    saga["status"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_retries_a_parked_saga_from_its_timeline_and_sees_it_finish() {
    // The refund of a cancellation parks while the (HTTP) payment provider is gone.
    let mut sim = PaymentSim::start();
    let args = sim.parking_serve_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut desk = Desk::start(&args).await;
    let id = desk.reserve("tok_visa", "confirmed").await;
    sim.kill();
    let cancel = format!("/v1/reservations/{id}/cancel");
    let answer: Answer = desk.server.send(Method::POST, &cancel, Some(&desk.guest), None, &[]).await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    let saga = format!("/v1/admin/sagas/{id}");
    desk.admin_until(&saga, "the refund parking", |s| status_of(s) == "parked").await;

    // The list, filtered to parked sagas, shows it.
    desk.open("#/ops/sagas?status=parked").await;
    let row = format!("tr[data-saga=\"{id}\"]");
    desk.browser.wait_for_text(&format!("{row}[data-status=parked]"), "refund").await;
    assert_eq!(desk.browser.count("tbody tr").await, 1, "only the parked saga is listed");
    desk.browser.screenshot("ops-sagas-parked").await;

    // Its timeline: every step with the commands it sent and what they caused, the failed attempts.
    desk.browser.click(&format!("{row} a")).await;
    desk.browser.wait_for(".ops-saga-actions button[data-action=retry]").await;
    desk.browser.wait_for_text("tr[data-step=hold]", "Room.HoldNights").await;
    desk.browser.wait_for_text("tr[data-step=hold]", "NightsHeld").await;
    desk.browser.wait_for_text("tr[data-step=charge]", "ChargeApproved").await;
    desk.browser.wait_for_text("tr[data-step=refund]", "3 failed").await;
    desk.browser.wait_for_text(".ops-saga-history", "SagaParked").await;
    desk.browser.wait_for_text(".ops-deadlines", "payment deadline").await;
    desk.browser.screenshot("ops-saga-parked").await;

    // Retry asks first; declining does nothing.
    desk.browser.click(".ops-saga-actions button[data-action=retry]").await;
    desk.browser.click("dialog[open] button[data-confirm=no]").await;
    desk.browser.wait_until_gone("dialog[open]").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_of(&desk.admin_get(&saga).await), "parked", "a declined confirmation must not resume the saga");

    // With the provider back, Retry (confirmed) resumes it and the page follows it to its end.
    sim.restart();
    desk.browser.click(".ops-saga-actions button[data-action=retry]").await;
    desk.confirm().await;
    desk.browser.wait_for_text(".ops-outcome", "Retry recorded at position").await;
    desk.browser.wait_for_text_within(".ops-outcome", "the saga is compensated", SETTLE).await;
    desk.browser.wait_for(".ops-saga-summary [data-status=compensated]").await;
    desk.browser.wait_for_text("tr[data-step=refund]", "refunded").await;
    desk.browser.wait_for_text(".ops-saga-history", "ops chose to retry").await;
    assert_eq!(status_of(&desk.admin_get(&saga).await), "compensated");
    assert_eq!(desk.browser.count(".ops-saga-actions button").await, 0, "no Retry or Skip once it is not parked");
    desk.browser.screenshot("ops-saga-retried").await;
    desk.browser.resize(PHONE).await;
    desk.browser.screenshot("ops-saga-phone").await;
    desk.browser.assert_no_console_errors("the saga list and timeline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_rebuilds_a_read_model_and_sees_it_switch() {
    let mut desk = Desk::start(&[]).await;
    for _ in 0..3 {
        desk.reserve("tok_visa", "confirmed").await;
    }
    let live_version = |all: &Value| {
        all.as_array().and_then(|models| models.iter().find(|m| m["name"] == "roomview")).map(|m| m["version"].clone())
    };
    let before =
        live_version(&desk.admin_get("/v1/admin/projections").await).and_then(|v| v.as_i64()).expect("version");

    desk.open("#/ops/projections").await;
    let card = "article[data-model=roomview]";
    desk.browser.wait_for_text(&format!("{card} .ops-version"), &format!("version {before}")).await;
    // Two readings make a trend line.
    desk.browser.wait_for(&format!("{card} .ops-spark-line")).await;
    desk.browser.screenshot("ops-projections").await;

    desk.browser.click(&format!("{card} button[data-action=rebuild]")).await;
    desk.confirm().await;
    let after = before + 1;
    desk.browser
        .wait_for_text_within(&format!("{card} .ops-outcome"), &format!("Switched: version {after} is live"), SETTLE)
        .await;
    desk.browser.wait_for_text(&format!("{card} .ops-version"), &format!("version {after}")).await;
    assert_eq!(live_version(&desk.admin_get("/v1/admin/projections").await), Some(json!(after)));
    // The rebuilt model answers as the old one did.
    let room = desk.server.get(&format!("/v1/rooms/{}", desk.room_id)).await;
    assert_eq!(room.status, 200, "{}", room.text);
    desk.browser.screenshot("ops-projections-switched").await;
    desk.browser.resize(PHONE).await;
    desk.browser.screenshot("ops-projections-phone").await;
    desk.browser.assert_no_console_errors("the projections screen").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_skips_a_dead_letter_and_sees_what_came_of_it() {
    let desk = Desk::start(&[]).await;
    // A buggy writer's event roomview cannot apply, and a good one of the same room behind it.
    let store = desk.server.open_store().await;
    let rename = json!({"RoomDetailsChanged": {"room_id": desk.room_id, "name": "After the skip"}});
    let events = vec![
        NewEvent {
            event_type: "RoomDetailsChanged".into(),
            event_version: "1.0".into(),
            payload: json!({"RoomDetailsChanged": {"garbage": 1}}),
        },
        NewEvent { event_type: "RoomDetailsChanged".into(), event_version: "1.0".into(), payload: rename },
    ];
    let append = Append {
        aggregate_type: "Room".into(),
        aggregate_id: desk.room_id.clone(),
        expected_version: 1,
        events,
        metadata: CommandContext::new("test").metadata(Utc::now()),
    };
    let positions: Vec<String> = store.append(append).await.expect("append").iter().map(ToString::to_string).collect();
    let (poison, follower) = (positions[0].clone(), positions[1].clone());
    desk.admin_until("/v1/admin/projections/roomview/dead-letters", "the poison event parking", |list| {
        list["items"][0]["state"] == "parked"
    })
    .await;

    desk.open("#/ops/projections/roomview/dead-letters").await;
    let poisoned = format!("article.ops-letter[data-position=\"{poison}\"]");
    let held = format!("article.ops-letter[data-position=\"{follower}\"]");
    desk.browser.wait_for_text(&format!("{poisoned}[data-state=parked]"), "RoomDetailsChanged").await;
    desk.browser.wait_for(&format!("{poisoned} .ops-letter-error")).await;
    assert!(!desk.browser.text(&format!("{poisoned} .ops-letter-error")).await.trim().is_empty(), "the error is shown");
    desk.browser.wait_for_text(&format!("{poisoned} dl"), &follower).await;
    desk.browser.wait_for(&format!("{held}[data-state=held]")).await;
    let held_buttons =
        desk.browser.execute(&format!("return document.querySelector('{held} .ops-buttons').hidden;"), vec![]).await;
    assert_eq!(held_buttons, json!(true), "a held event has no Retry or Skip: the one ahead of it has");
    desk.browser.screenshot("ops-dead-letters").await;

    desk.browser.click(&format!("{poisoned} button[data-action=skip]")).await;
    desk.confirm().await;
    desk.browser.wait_for_text(".ops-outcome", &format!("The event at {poison} is skipped")).await;
    desk.browser.wait_for_text(".ops-outcome", &format!("1 held event applied after it ({follower})")).await;
    desk.browser.wait_for_text(".ops-letters", "keeps no dead letters").await;
    desk.browser.wait_for_text(".ops-letters-summary", "1 skipped").await;
    let list = desk.admin_get("/v1/admin/projections/roomview/dead-letters").await;
    assert_eq!((&list["items"], &list["skipped"]), (&json!([]), &json!(1)), "{list}");
    let room = desk.server.get(&format!("/v1/rooms/{}?min_position={follower}", desk.room_id)).await;
    assert_eq!(room.field("name"), "After the skip", "{}", room.text);
    desk.browser.screenshot("ops-dead-letters-skipped").await;
    desk.browser.assert_no_console_errors("the dead letters screen").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_a_stream_as_of_an_event_and_a_causation_tree_render() {
    let mut desk = Desk::start(&[]).await;
    let renamed = desk
        .server
        .send(
            Method::PATCH,
            &format!("/v1/rooms/{}", desk.room_id),
            Some(&desk.host),
            Some(&json!({"name": "Loft with a view"})),
            &[],
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    let reservation = desk.reserve("tok_visa", "confirmed").await;

    // The feed from the start: the room's registration first.
    desk.open("#/ops/events").await;
    desk.browser.wait_for_text("tr[data-position]", "RoomRegistered").await;
    desk.browser.wait_for_text(".ops-feed", "ReservationConfirmed").await;
    desk.browser.screenshot("ops-events").await;

    // The live tail shows an event recorded after it opened.
    desk.browser.click(".ops-feed-controls .segmented button:nth-child(2)").await;
    desk.browser.wait_for_text(".live", "Live").await;
    let later = desk
        .server
        .post(
            "/v1/rooms",
            &desk.host,
            &json!({
                "name": "Annex", "address": "2 Quay Street",
                "nightly_price": {"amount_minor": 8_000, "currency": "EUR"}, "capacity": 1
            }),
        )
        .await;
    assert_eq!(later.status, 201, "{}", later.text);
    desk.browser.wait_for_text(&format!("tr[data-position=\"{}\"]", later.field("position")), "RoomRegistered").await;
    desk.browser.screenshot("ops-events-live").await;

    // One stream: the state after its last event, then one event back with the keyboard.
    desk.open(&format!("#/ops/events/Room/{}", desk.room_id)).await;
    let last = desk.browser.wait_for_text("label[for=ops-as-of]", "State after event").await;
    let total = desk.admin_get(&format!("/v1/admin/streams/Room/{}", desk.room_id)).await["events"]
        .as_array()
        .map(Vec::len)
        .expect("events");
    assert!(last.text().await.is_ok_and(|t| t.contains(&format!("event {total} of {total}"))), "starts at the end");
    desk.browser.wait_for_text(".ops-state", "Loft with a view").await;
    // Event 2 is the rename: the change list says what it changed.
    desk.browser.click("li[data-sequence=\"2\"] .ops-ev-pick").await;
    desk.browser.wait_for_text("label[for=ops-as-of]", &format!("State after event 2 of {total}")).await;
    desk.browser.wait_for_text(".ops-changes", "What #2 RoomDetailsChanged changed").await;
    desk.browser.wait_for_text(".ops-changes ins", "Loft with a view").await;
    desk.browser.wait_for_text(".ops-changes del", "Loft").await;
    desk.browser.screenshot("ops-stream").await;
    let left: char = Key::Left.into();
    desk.browser.wait_for("#ops-as-of").await.send_keys(&left.to_string()).await.expect("press the left arrow");
    desk.browser.wait_for_text("label[for=ops-as-of]", &format!("State after event 1 of {total}")).await;
    desk.browser.wait_for_text(".ops-changes", "What #1 RoomRegistered changed").await;
    assert!(!desk.browser.text(".ops-state").await.contains("Loft with a view"), "before the rename, the old name");

    // The reservation's causation tree: the saga's start under the request, the hold under the saga.
    desk.open(&format!("#/ops/correlations/{reservation}")).await;
    let requested = format!("li[data-event=\"Reservation:{reservation}@1\"]");
    let started = format!("{requested} li[data-event=\"ReservationSaga:{reservation}@1\"]");
    desk.browser.wait_for_text(&started, "SagaStarted").await;
    desk.browser.wait_for_text(&format!("{started} li"), "NightsHeld").await;
    desk.browser.wait_for_text(".ops-aggregates", "Payment").await;
    desk.browser.screenshot("ops-correlation").await;
    desk.browser.resize(PHONE).await;
    desk.browser.screenshot("ops-correlation-phone").await;
    desk.browser.assert_no_console_errors("the events, stream and correlation screens").await;

    // A problem answer is shown as such: an unknown saga is the API's 404 with its code.
    desk.open("#/ops/sagas/00000000-0000-7000-8000-000000000000").await;
    desk.browser.wait_for_text("[role=alert]", "saga_not_found").await;
}
