//! Schema fuzzing (issue 11): schemathesis generates requests from `/openapi.json`, ones that fit
//! the document and ones that break it, and sends them to a real `stay serve` with an admin's, a
//! host's and a guest's token in turn. No answer may be a server error, and every status, content
//! type, header and body must be one the document describes for that operation.
//!
//! The pinned schemathesis is the one `STAY_SCHEMATHESIS` names (`.ci/run` sets it); otherwise
//! `.ci/schemathesis`, the script `.ci/run` uses, installs it from PyPI into a cache once. If it
//! cannot be had, the test fails: it never passes without having fuzzed. `STAY_FUZZ_SEED`
//! repeats a run's generated requests (each run prints its seed); `STAY_FUZZ_EXAMPLES` sets how
//! many cases are generated per operation and phase.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use reqwest::Method;
use serde_json::{json, Value};
use stay_tests::bodies::{day, room_body};
use stay_tests::server::{stay_binary, TEST_SECRET};
use stay_tests::{Backend, StayServer};

/// What every answer is checked for: the document's promises, nothing more.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

/// Generated cases per operation and phase: enough to reach the refusals of every operation,
/// few enough that three roles take a few minutes on a busy two-core machine.
const DEFAULT_EXAMPLES: u32 = 5;

/// The users whose tokens the runs carry; the seeded room and reservation are theirs, so that
/// owner-only routes are reached past their 403.
const HOST: &str = "fuzz-host";
const GUEST: &str = "fuzz-guest";
const ADMIN: &str = "fuzz-admin";

/// The workspace's root (the tests crate's parent).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate has a parent").to_owned()
}

/// The schemathesis executable: `STAY_SCHEMATHESIS`, or the one `.ci/schemathesis` installs.
fn schemathesis() -> PathBuf {
    if let Ok(path) = std::env::var("STAY_SCHEMATHESIS") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "STAY_SCHEMATHESIS={} is not a file", path.display());
        return path;
    }
    let script = workspace().join(".ci/schemathesis");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} could not install schemathesis ({}); it needs python3 and PyPI, or set STAY_SCHEMATHESIS",
        script.display(),
        output.status
    );
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(path.is_file(), "{} printed {path:?}, which is not a file", script.display());
    path
}

/// A bearer token from `stay token`, as an operator would mint it.
fn token(server: &StayServer, sub: &str, role: &str) -> String {
    let output = Command::new(stay_binary())
        .args(["token", "--sub", sub, "--role", role, "--ttl", "1h", "--jwt-secret", TEST_SECRET, "--data-dir"])
        .arg(server.data_dir())
        .env_remove("STAY_JWT_SECRET")
        .output()
        .expect("run stay token");
    assert!(output.status.success(), "stay token: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("a token is text").trim().to_owned()
}

/// What the runs are given as real ids, so paths with ids reach existing targets half the time.
struct Seeded {
    rooms: Vec<String>,
    reservations: Vec<String>,
}

/// A listed room with a confirmed reservation, a second room, and a rejected reservation.
async fn seed_data(server: &StayServer, host: &str, guest: &str) -> Seeded {
    let mut rooms = Vec::new();
    for _ in 0..2 {
        let created = server.post("/v1/rooms", host, &room_body()).await;
        assert_eq!(created.status, 201, "{}", created.text);
        rooms.push(created.field("room_id").to_owned());
    }
    let mut reservations = Vec::new();
    for (nights, card, outcome) in [((30, 33), "tok_visa", "confirmed"), ((40, 42), "tok_declined", "rejected")] {
        let body = json!({
            "room_id": rooms[0], "check_in": day(nights.0).to_string(), "check_out": day(nights.1).to_string(),
            "guests": 1, "payment": {"card_token": card},
        });
        let answer =
            server.send(Method::POST, "/v1/reservations", Some(guest), Some(&body), &[("prefer", "wait=20")]).await;
        assert_eq!((answer.status, answer.field("status")), (200, outcome), "{}", answer.text);
        reservations.push(answer.field("reservation_id").to_owned());
    }
    Seeded { rooms, reservations }
}

/// A TOML string.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

/// A TOML array of strings.
fn list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|i| quoted(i)).collect::<Vec<_>>().join(", "))
}

/// The run's configuration: the token; dictionaries of real ids for the parameters that name one
/// (taken half the time; the other half are generated, and mostly unknown); and the one 5xx the
/// contract has for a request that is not at fault: 504 `projection_behind`, for a `min_position`
/// the read model has not reached within `wait_ms` (a generated position is mostly far ahead).
fn config(token: &str, seeded: &Seeded, doc: &Value) -> String {
    let mut ids = seeded.rooms.clone();
    ids.extend(seeded.reservations.iter().cloned());
    let projections: Vec<String> =
        ["roomview", "reservations", "notifications", "reviews", "sagas", "correlations"].map(str::to_owned).into();
    let aggregate_types: Vec<String> =
        ["Room", "Reservation", "Payment", "Review", "ReservationSaga"].map(str::to_owned).into();
    let mut toml = String::new();
    let _ = writeln!(toml, "[headers]\nAuthorization = {}\n", quoted(&format!("Bearer {token}")));
    for (name, values) in [
        ("rooms", &seeded.rooms),
        ("reservations", &seeded.reservations),
        ("ids", &ids),
        ("projections", &projections),
        ("aggregate_types", &aggregate_types),
        ("hosts", &vec![HOST.to_owned()]),
    ] {
        let _ = writeln!(toml, "[dictionaries.{name}]\nvalues = {}\n", list(values));
    }
    toml.push_str("[parameters]\n");
    for (parameter, dictionary) in [
        ("path.room_id", "rooms"),
        ("body.room_id", "rooms"),
        ("path.reservation_id", "reservations"),
        ("body.reservation_id", "reservations"),
        ("query.reservation_id", "reservations"),
        ("path.saga_id", "reservations"),
        ("path.correlation_id", "reservations"),
        ("path.name", "projections"),
        ("path.aggregate_type", "aggregate_types"),
        ("path.aggregate_id", "ids"),
        ("query.host_id", "hosts"),
    ] {
        let _ = writeln!(toml, "{} = {{ dictionary = {}, probability = 0.5 }}", quoted(parameter), quoted(dictionary));
    }
    for (method, path) in taking_min_position(doc) {
        let _ = writeln!(
            toml,
            "\n[[operations]]\ninclude-method = {}\ninclude-path = {}\n\
             checks.not_a_server_error.expected-statuses = [\"2XX\", \"3XX\", \"4XX\", \"504\"]",
            quoted(&method.to_uppercase()),
            quoted(&path)
        );
    }
    toml
}

/// The operations (method, path) that take `min_position`.
fn taking_min_position(doc: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            let mut parameters = operation["parameters"].as_array().into_iter().flatten();
            if parameters.any(|p| p["name"] == "min_position" && p["in"] == "query") {
                found.push((method.clone(), path.clone()));
            }
        }
    }
    found
}

/// Requests the server has answered so far, by its own count (`/metrics`).
async fn requests_answered(server: &StayServer) -> u64 {
    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.status, 200, "{}", metrics.text);
    metrics
        .text
        .lines()
        .filter(|line| line.starts_with("stay_http_requests_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|count| count as u64)
        .sum()
}

/// The outcome of one run: its report, what it printed, and how long it took.
struct Run {
    role: &'static str,
    report: Value,
    output: String,
    success: bool,
    seconds: f64,
    requests: u64,
}

/// Runs schemathesis against the server with `token`, bounded to `examples` cases per operation
/// and phase.
async fn fuzz(
    server: &StayServer,
    doc: &Value,
    role: &'static str,
    token: &str,
    seeded: &Seeded,
    seed: u64,
    examples: u32,
) -> Run {
    let executable = schemathesis();
    let dir = tempfile::tempdir().expect("a directory for the run");
    let config_path = dir.path().join("schemathesis.toml");
    std::fs::write(&config_path, config(token, seeded, doc)).expect("write the configuration");
    let report_path = dir.path().join("report.json");
    let before = requests_answered(server).await;
    let started = Instant::now();
    let mut command = Command::new(&executable);
    command
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(&config_path)
        .args(["run", &format!("{}/openapi.json", server.url())])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--workers", "1", "--request-timeout", "60", "--no-color", "--report", "json"])
        .arg("--report-json-path")
        .arg(&report_path)
        // The cache of earlier failures would make runs depend on each other.
        .args(["--generation-database", "none"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    if role == "admin" {
        // An admin's `/v1/live` is a stream that never ends, which schemathesis would read until
        // its timeout; `tests/tests/openapi.rs` checks its head. Other roles get its 403.
        command.args(["--exclude-path", "/v1/live"]);
    }
    // The dashboard's live streams answer every role (and no token) with a stream that never ends;
    // `tests/tests/openapi.rs` checks their heads and `tests/tests/dashboard_api.rs` their events.
    command.args(["--exclude-path", "/v1/live/rooms", "--exclude-path", "/v1/me/live"]);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the run's thread")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", executable.display()));
    let seconds = started.elapsed().as_secs_f64();
    let requests = requests_answered(server).await.saturating_sub(before + 1);
    let report = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    let output_ok = output.status.success();
    let output = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let success = output_ok && is_clean(&report);
    Run { role, report, output, success, seconds, requests }
}

/// Whether the report says the run completed and found nothing.
fn is_clean(report: &Value) -> bool {
    report["complete"] == json!(true)
        && report["exit_code"] == json!(0)
        && report["failures"].as_array().is_some_and(Vec::is_empty)
        && report["errors"].as_array().is_some_and(Vec::is_empty)
}

/// The operations of the document.
fn operation_count(doc: &Value) -> u64 {
    let methods = ["get", "put", "post", "delete", "patch"];
    let paths = doc["paths"].as_object().expect("paths");
    paths.values().map(|item| methods.iter().filter(|m| item.get(**m).is_some()).count() as u64).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_requests_get_no_server_error_and_only_answers_the_document_describes() {
    let seed: u64 = match std::env::var("STAY_FUZZ_SEED") {
        Ok(text) => text.parse().expect("STAY_FUZZ_SEED is a number"),
        Err(_) => u64::from(std::process::id()) * 7919 + u64::from(chrono::Utc::now().timestamp_subsec_nanos()),
    };
    let examples: u32 = std::env::var("STAY_FUZZ_EXAMPLES")
        .map(|text| text.parse().expect("STAY_FUZZ_EXAMPLES is a number"))
        .unwrap_or(DEFAULT_EXAMPLES);
    // Installed before the server starts, so an install's time counts against nothing.
    let _ = schemathesis();
    let server = StayServer::start(Backend::Sqlite).await;
    let doc = server.get("/openapi.json").await.body;
    let operations = operation_count(&doc);
    let host = token(&server, HOST, "host");
    let guest = token(&server, GUEST, "guest");
    let admin = token(&server, ADMIN, "admin");
    let seeded = seed_data(&server, &host, &guest).await;

    let mut runs = Vec::new();
    // The host's run before the guest's: the host cannot delist the room with a confirmed stay,
    // and the guest's run may cancel that stay.
    for (role, token) in [("admin", &admin), ("host", &host), ("guest", &guest)] {
        let run = fuzz(&server, &doc, role, token, &seeded, seed, examples).await;
        eprintln!(
            "schema fuzzing as {role} (seed {seed}, {examples} examples): {} test cases, {} requests, {:.0} s, {}",
            run.report["test_cases"]["generated"],
            run.requests,
            run.seconds,
            if run.success { "no failures" } else { "FAILED" }
        );
        runs.push(run);
    }

    let mut failed = Vec::new();
    for run in &runs {
        let selected = run.report["operations"]["selected"].as_u64().unwrap_or(0);
        let tested = run.report["operations"]["tested"].as_u64().unwrap_or(0);
        let generated = run.report["test_cases"]["generated"].as_u64().unwrap_or(0);
        // A run that tested too little passes nothing: every operation (but the streams it
        // excludes: the dashboard's two, and the admin's feed), several cases each, and the server
        // saw at least as many requests.
        let excluded = if run.role == "admin" { 3 } else { 2 };
        let too_little = selected + excluded < operations
            || tested < selected
            || generated < operations * 3
            || run.requests < generated;
        if !run.success || too_little {
            failed.push(format!(
                "as {} (seed {seed}): {tested} of {operations} operations tested, {generated} cases, {} requests\n\
                 report: {}\n{}",
                run.role,
                run.requests,
                serde_json::to_string_pretty(&json!({
                    "failures": run.report["failures"], "errors": run.report["errors"],
                    "operations": run.report["operations"],
                }))
                .unwrap_or_default(),
                tail(&run.output, 30_000)
            ));
        }
    }
    assert!(failed.is_empty(), "schema fuzzing found answers the document does not describe:\n{}", failed.join("\n\n"));
}

/// The last `chars` characters of `text`.
fn tail(text: &str, chars: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(chars)).collect()
}
