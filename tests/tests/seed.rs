//! `stay seed` against the real `stay serve`: demo data made through the public API, with every
//! card outcome, cancellations and replied reviews, the same for the same seed, and nothing made
//! twice when the same seed runs again.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use stay_tests::server::{stay_binary, Backend, StayServer, TEST_SECRET};

/// A server whose payment deadline ends erring and silent charges in seconds, not a minute.
async fn server(backend: Backend) -> StayServer {
    StayServer::start_with(backend, &["--payment-deadline", "3s", "--payment-call-timeout", "1s"]).await
}

/// Runs `stay seed` against `server` with `args`; its exit status, standard output and error.
fn seed(server: &StayServer, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(stay_binary())
        .arg("seed")
        .args(["--url", server.url(), "--jwt-secret", TEST_SECRET, "--settle-timeout", "90s"])
        .args(args)
        .env_remove("STAY_JWT_SECRET")
        .output()
        .expect("run stay seed");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8");
    (output.status.success(), text(output.stdout), text(output.stderr))
}

/// The summary `stay seed --json` prints.
fn seeded(server: &StayServer, args: &[&str]) -> Value {
    let (ok, stdout, stderr) = seed(server, &[args, &["--json"]].concat());
    assert!(ok, "stay seed failed:\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("--json prints JSON ({e}):\n{stdout}"))
}

/// Every room, once the read model has reached `position`.
async fn rooms(server: &StayServer, position: &str) -> Vec<Value> {
    let answer = server.get(&format!("/v1/rooms?limit=500&min_position={position}")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["items"].as_array().expect("items").clone()
}

/// Every reservation of the seed's guests (`guest-1` … `guest-N`), as they see them.
async fn reservations(server: &StayServer, guests: usize, position: &str) -> Vec<Value> {
    let mut all = Vec::new();
    for n in 1..=guests {
        let token = server.token(&format!("guest-{n}"), "guest");
        let path = format!("/v1/me/reservations?limit=500&min_position={position}");
        let answer = server.send(reqwest::Method::GET, &path, Some(&token), None, &[]).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        all.extend(answer.body["items"].as_array().expect("items").iter().cloned());
    }
    all
}

fn count(summary: &Value, status: &str) -> u64 {
    summary["reservations"][status].as_u64().unwrap_or(0)
}

async fn seed_shows_every_outcome(backend: Backend) {
    let server = server(backend).await;
    let summary =
        seeded(&server, &["--rooms", "5", "--hosts", "2", "--guests", "6", "--reservations", "30", "--seed", "7"]);

    assert_eq!(summary["rooms"], 5, "{summary}");
    let made: u64 =
        ["confirmed", "rejected", "cancelled", "pending", "cancelling"].iter().map(|s| count(&summary, s)).sum();
    assert_eq!(made, 30, "every reservation is counted once: {summary}");
    assert_eq!(count(&summary, "pending") + count(&summary, "cancelling"), 0, "every saga ended: {summary}");
    for status in ["confirmed", "rejected", "cancelled"] {
        assert!(count(&summary, status) > 0, "some reservation is {status}: {summary}");
    }
    for field in ["cancelled_while_pending", "cancelled_once_confirmed", "reviews", "replies"] {
        assert!(summary[field].as_u64().is_some_and(|n| n > 0), "{field}: {summary}");
    }

    // What the read side shows matches the summary.
    let position = summary["position"].as_str().expect("a position");
    let rooms = rooms(&server, position).await;
    assert_eq!(rooms.len(), 5);
    let hosts: BTreeSet<&str> = rooms.iter().filter_map(|room| room["host_id"].as_str()).collect();
    assert_eq!(hosts, BTreeSet::from(["host-1", "host-2"]));
    let reservations = reservations(&server, 6, position).await;
    assert_eq!(reservations.len(), 30);
    for status in ["confirmed", "rejected", "cancelled"] {
        let seen = reservations.iter().filter(|r| r["status"] == status).count() as u64;
        assert_eq!(seen, count(&summary, status), "{status} reservations as the guests see them");
    }
    // Every card outcome: approved (confirmed or refunded), declined, and failed at the deadline.
    let payments: BTreeSet<&str> = reservations.iter().filter_map(|r| r["payment"]["status"].as_str()).collect();
    for outcome in ["approved", "declined", "refunded"] {
        assert!(payments.contains(outcome), "a payment {outcome}: {payments:?}");
    }
    assert!(
        payments.contains("failed") || payments.contains("none"),
        "a charge the provider never answered: {payments:?}"
    );
    let mut reviews = 0;
    let mut replies = 0;
    for room in &rooms {
        let id = room["room_id"].as_str().expect("room_id");
        let answer = server.get(&format!("/v1/rooms/{id}/reviews?min_position={position}")).await;
        let items = answer.body["items"].as_array().expect("items");
        reviews += items.len() as u64;
        replies += items.iter().filter(|review| review.get("reply").is_some_and(|r| !r.is_null())).count() as u64;
    }
    assert_eq!((Some(reviews), Some(replies)), (summary["reviews"].as_u64(), summary["replies"].as_u64()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stay_seed_makes_every_outcome_through_the_public_api_on_sqlite() {
    seed_shows_every_outcome(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stay_seed_makes_every_outcome_through_the_public_api_on_postgres() {
    seed_shows_every_outcome(Backend::Postgres).await;
}

/// What a seed made, without the ids the servers chose: rooms by their details, and each stay with
/// its room's name, its guest and how it ended.
async fn content(server: &StayServer, summary: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let position = summary["position"].as_str().expect("a position");
    let rooms = rooms(server, position).await;
    let name_of = |id: &Value| rooms.iter().find(|room| room["room_id"] == *id).map(|room| room["name"].to_string());
    let room_set = rooms
        .iter()
        .map(|r| format!("{} {} {} {} {}", r["host_id"], r["name"], r["address"], r["nightly_price"], r["capacity"]))
        .collect();
    let stays = reservations(server, 4, position)
        .await
        .iter()
        .map(|r| {
            let room = name_of(&r["room_id"]).unwrap_or_default();
            format!("{room} {} {} {} {} {}", r["guest_id"], r["check_in"], r["check_out"], r["guests"], r["status"])
        })
        .collect();
    (room_set, stays)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_makes_the_same_data_and_running_it_again_makes_nothing_twice() {
    let from = stay_tests::bodies::day(30).to_string();
    let args = ["--rooms", "4", "--guests", "4", "--reservations", "16", "--seed", "42", "--from", &from];
    let first = server(Backend::Sqlite).await;
    let second = server(Backend::Sqlite).await;
    let first_summary = seeded(&first, &args);
    let second_summary = seeded(&second, &args);
    let (first_rooms, first_stays) = content(&first, &first_summary).await;
    assert_eq!((first_rooms.len(), first_stays.len()), (4, 16));
    assert_eq!(content(&second, &second_summary).await, (first_rooms.clone(), first_stays));

    // Again on the first server: the same rooms, no new ones.
    let again = seeded(&first, &args);
    assert_eq!(again["room_ids"], first_summary["room_ids"], "the idempotency keys answer the first run's rooms");
    assert_eq!(rooms(&first, again["position"].as_str().expect("position")).await.len(), 4);

    // Another seed makes other rooms.
    let other = seeded(&second, &["--rooms", "4", "--reservations", "0", "--seed", "43", "--from", &from]);
    let (other_rooms, _) = content(&second, &other).await;
    assert_ne!(other_rooms.difference(&first_rooms).count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_sizes_and_an_absent_server_are_refused_with_a_reason() {
    let server = server(Backend::Sqlite).await;
    let (ok, _, stderr) = seed(&server, &["--rooms", "1", "--reservations", "1000"]);
    assert!(!ok && stderr.contains("ask for more --rooms"), "{stderr}");
    let (ok, _, stderr) = seed(&server, &["--rooms", "0", "--reservations", "3"]);
    assert!(!ok && stderr.contains("--rooms must be at least 1"), "{stderr}");
    assert_eq!(rooms(&server, "").await.len(), 0, "nothing was sent");

    let output = Command::new(stay_binary())
        .args(["seed", "--url", "http://127.0.0.1:9", "--jwt-secret", TEST_SECRET])
        .output()
        .expect("run stay seed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("is stay serve running at http://127.0.0.1:9"), "{stderr}");
}
