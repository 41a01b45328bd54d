//! `stay migrate` as a user runs it: the real binary, a fresh data directory or database.

use std::process::{Command, Output};

use stay_tests::{TestPostgres, TestSqlite};

fn stay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stay"))
        .args(args)
        .env_remove("STAY_STORE")
        .env_remove("STAY_DATA_DIR")
        .output()
        .expect("run stay")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn migrate_creates_the_sqlite_schema_once_and_then_reports_it_up_to_date() {
    let dir = TestSqlite::create();
    let data_dir = dir.dir().to_str().expect("utf-8 path");

    let first = stay(&["migrate", "--data-dir", data_dir]);
    assert!(first.status.success(), "stderr: {}", text(&first.stderr));
    let out = text(&first.stdout);
    assert!(out.contains("applied store/0001_event_log"), "{out}");
    assert!(out.contains("applied checkpoints/0001_checkpoints"), "{out}");
    assert!(dir.dir().join("stay.db").exists());

    let again = stay(&["migrate", "--data-dir", data_dir, "--json"]);
    assert!(again.status.success(), "stderr: {}", text(&again.stderr));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(report["applied"], serde_json::json!([]));
}

#[tokio::test]
async fn migrate_creates_the_postgres_schema_idempotently() {
    let db = TestPostgres::create().await;
    let url = db.url().to_owned();
    let first = tokio::task::spawn_blocking({
        let url = url.clone();
        move || stay(&["migrate", "--store", &url, "--json"])
    })
    .await
    .expect("join");
    assert!(first.status.success(), "stderr: {}", text(&first.stderr));
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).expect("json");
    let every_component = [
        "store/0001_event_log",
        "store/0002_event_imports",
        "checkpoints/0001_checkpoints",
        "command-api/0001_idempotency_keys",
        "command-api/0002_claim_owners",
        "saga/0001_saga_tables",
        "projections/0001_projection_tables",
        "projections/0002_dead_letter_retries",
    ];
    assert_eq!(report["applied"], serde_json::json!(every_component));

    let again = tokio::task::spawn_blocking(move || stay(&["migrate", "--store", &url])).await.expect("join");
    assert!(again.status.success(), "stderr: {}", text(&again.stderr));
    assert!(text(&again.stdout).contains("schema is up to date"));
}

#[test]
fn a_store_url_of_an_unknown_kind_is_a_clear_error_not_a_panic() {
    let out = stay(&["migrate", "--store", "mysql://root:hunter2@localhost/db"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("unsupported store"), "{err}");
    assert!(!err.contains("hunter2"), "the password must not be printed: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_unreachable_postgres_is_a_clear_error() {
    let out = stay(&["migrate", "--store", "postgres://nobody@127.0.0.1:1/nothing"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("error: cannot open the store"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn help_says_what_migrate_does() {
    let out = stay(&["migrate", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(help.contains("--store"), "{help}");
    assert!(help.contains("STAY_STORE"), "{help}");
}
