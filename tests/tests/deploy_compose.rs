//! docker-compose.yml describes a system that works: each profile's Stay services, started as
//! local processes exactly as the file says (tests/src/deployment/ maps hosts, ports, volumes and
//! PostgreSQL), come up in depends_on order with passing health checks and take one reservation
//! from the published ports to confirmed and visible in roomview. A typo in a flag or variable
//! name, an unknown key or an unresolvable interpolation makes the harness refuse the file.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use stay_tests::deployment::{check_stack, repository_root, send, Compose, DeployError, Deployment};

/// Waits until `GET base/readyz` says ready.
async fn wait_ready(deployment: &Deployment, base: &str, role: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    loop {
        let (status, text) = match client.get(format!("{base}/readyz")).send().await {
            Ok(answer) => (answer.status().as_u16(), answer.text().await.unwrap_or_default()),
            Err(err) => (0, err.to_string()),
        };
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 && body["ready"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "{role} never ready: {status} {text}\n{}", deployment.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_profile_runs_each_role_and_confirms_a_reservation_through_the_published_ports() {
    let compose = Compose::repository().unwrap_or_else(|e| panic!("{e}"));
    let stack = compose.stack(&[], &[]).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["postgres", "migrate", "command-api", "query-api", "projector", "saga", "payment-sim"]);
    let deployment = Deployment::start(&stack).await.unwrap_or_else(|e| panic!("{e}"));

    let (commands, queries, saga) =
        (deployment.published(8080), deployment.published(8081), deployment.published(8082));
    for (role, base) in [
        ("command-api", commands.clone()),
        ("query-api", queries.clone()),
        ("saga", saga.clone()),
        ("projector", deployment.url("projector", 8080)),
    ] {
        wait_ready(&deployment, &base, role).await;
    }
    // The split the published ports promise: commands on 8080 only, reads on 8081 only.
    let (status, _) = send(Method::GET, &format!("{commands}/v1/rooms"), None, None, &[]).await;
    assert_eq!(status, 405, "command-api takes no reads");
    deployment.reservation_confirmed_and_in_roomview("command-api", &commands, &queries).await;

    // The saga's admin routes are on 8082.
    let admin = deployment.token("command-api", "admin-1", "admin");
    let (status, payments) = send(Method::GET, &format!("{saga}/v1/admin/payments"), Some(&admin), None, &[]).await;
    assert_eq!(status, 200, "{payments}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_profile_is_one_process_that_confirms_a_reservation() {
    let compose = Compose::repository().unwrap_or_else(|e| panic!("{e}"));
    // `docker compose --profile sqlite up stay-sqlite`: that service alone.
    let stack = compose.stack(&["sqlite"], &["stay-sqlite"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stack.services.len(), 1);
    let deployment = Deployment::start(&stack).await.unwrap_or_else(|e| panic!("{e}"));
    let base = deployment.published(8088);
    wait_ready(&deployment, &base, "stay-sqlite").await;
    deployment.reservation_confirmed_and_in_roomview("stay-sqlite", &base, &base).await;
}

/// The eventstoredb profile's services cannot run here (no EventStoreDB server), so its Stay
/// services are only checked: every flag and variable against `stay … --help`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eventstoredb_profile_passes_the_flag_and_variable_check_and_is_not_run_here() {
    let compose = Compose::repository().unwrap_or_else(|e| panic!("{e}"));
    let stack = compose.stack(&["eventstoredb"], &[]).unwrap_or_else(|e| panic!("{e}"));
    for name in [
        "eventstoredb",
        "postgres-read",
        "migrate-esdb",
        "command-api-esdb",
        "query-api-esdb",
        "projector-esdb",
        "saga-esdb",
    ] {
        let service = stack.service(name).unwrap_or_else(|| panic!("the profile has {name}"));
        if name.ends_with("-esdb") {
            assert_eq!(service.env_value("STAY_STORE"), Some("esdb://eventstoredb:2113?tls=false"), "{name}");
            assert!(service.env_value("STAY_READ_STORE").is_some_and(|u| u.starts_with("postgres://")), "{name}");
        }
    }
    check_stack(&stack).unwrap_or_else(|e| panic!("{e}"));
    let refused = Deployment::start(&stack).await.expect_err("no EventStoreDB server runs here");
    assert!(matches!(&refused, DeployError::Unsupported(why) if why.contains("eventstoredb")), "{refused}");
}

/// The repository's compose text with `from` replaced by `to` (which must occur).
fn mutated(from: &str, to: &str) -> Compose {
    let text = std::fs::read_to_string(repository_root().join("docker-compose.yml")).expect("docker-compose.yml");
    assert!(text.contains(from), "docker-compose.yml no longer holds {from:?}");
    Compose::parse(&text.replacen(from, to, 1), &repository_root(), &[("stay.env", "stay.env.example")])
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn refusal(compose: &Compose, profiles: &[&str]) -> DeployError {
    let stack = compose.stack(profiles, &[]).unwrap_or_else(|e| panic!("{e}"));
    Deployment::start(&stack).await.expect_err("the harness must refuse it")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_flag_or_variable_is_refused_with_its_name() {
    let cases = [
        (r#""serve", "--role", "command-api"]"#, r#""serve", "--rol", "command-api"]"#, "--rol"),
        ("STAY_PAYMENT_PROVIDER:", "STAY_PAYMENT_PROVIDR:", "STAY_PAYMENT_PROVIDR"),
        ("STAY_NO_MIGRATE:", "STAY_NO_MIGRATION:", "STAY_NO_MIGRATION"),
        (r#""--path", "/readyz""#, r#""--pth", "/readyz""#, "--pth"),
        (r#""--ledger", "/var/lib"#, r#""--ledgr", "/var/lib"#, "--ledgr"),
        (r#"["migrate"]"#, r#"["migrat"]"#, "migrat"),
    ];
    for (from, to, named) in cases {
        let refused = refusal(&mutated(from, to), &[]).await;
        assert!(matches!(&refused, DeployError::Unknown(_)), "{to}: {refused}");
        assert!(refused.to_string().contains(named), "{to}: {refused}");
    }
    // The same check covers the profiles that are not run here.
    let refused =
        refusal(&mutated(r#""--payment-provider", "http"#, r#""--payment-provder", "http"#), &["eventstoredb"]).await;
    assert!(refused.to_string().contains("--payment-provder"), "{refused}");
}

/// Past the check, `stay` itself refuses a misspelt flag: the service exits non-zero at once and
/// the harness says which, with its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_flag_also_stops_the_process_itself() {
    let compose = mutated(r#""serve", "--role", "query-api"]"#, r#""serve", "--rol", "query-api"]"#);
    let stack = compose.stack(&[], &[]).unwrap_or_else(|e| panic!("{e}"));
    let refused = Deployment::start_unchecked(&stack).await.expect_err("query-api cannot start");
    match &refused {
        DeployError::Start { service, why, logs } => {
            assert_eq!(service, "query-api", "{refused}");
            assert!(why.contains("exited"), "{refused}");
            assert!(logs.contains("--rol"), "clap names the flag in the log: {refused}");
        }
        other => panic!("expected a failed start, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_variable_in_the_env_file_is_refused_with_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = std::fs::read_to_string(repository_root().join("stay.env.example")).expect("stay.env.example");
    assert!(example.contains("STAY_JWT_SECRET="));
    let env_file = dir.path().join("stay.env");
    std::fs::write(&env_file, example.replace("STAY_JWT_SECRET=", "STAY_JWT_SECRT=")).expect("write");
    let text = std::fs::read_to_string(repository_root().join("docker-compose.yml")).expect("docker-compose.yml");
    let env_path = env_file.to_str().expect("utf-8 path");
    let compose =
        Compose::parse(&text, &repository_root(), &[("stay.env", env_path)]).unwrap_or_else(|e| panic!("{e}"));
    let refused = refusal(&compose, &[]).await;
    assert!(matches!(&refused, DeployError::Unknown(_)) && refused.to_string().contains("STAY_JWT_SECRT"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_harness_does_not_understand_is_refused_rather_than_ignored() {
    let text = std::fs::read_to_string(repository_root().join("docker-compose.yml")).expect("docker-compose.yml");
    let parse = |text: String| Compose::parse(&text, &repository_root(), &[("stay.env", "stay.env.example")]);
    let stack_of = |text: String| parse(text).and_then(|compose| compose.stack(&[], &[]));

    // A key that changes what runs.
    let refused =
        stack_of(text.replacen("  migrate:\n", "  migrate:\n    entrypoint: [\"sh\"]\n", 1)).expect_err("entrypoint");
    assert!(refused.to_string().contains("entrypoint"), "{refused}");
    // An interpolation with nothing to take its value from.
    let refused = parse(text.replacen("image: stay:local", "image: stay:${STAY_TAG}", 1)).expect_err("interpolation");
    assert!(matches!(&refused, DeployError::Unsupported(why) if why.contains("STAY_TAG")), "{refused}");
    // A shell-form health check in an image without a shell.
    let refused = stack_of(text.replacen(
        r#"test: ["CMD", "stay", "probe", "--path", "/readyz"]"#,
        r#"test: ["CMD-SHELL", "curl -f http://localhost:8080/readyz"]"#,
        1,
    ))
    .expect_err("shell health check");
    assert!(refused.to_string().contains("shell"), "{refused}");

    // A host name that names no service (found while mapping, before anything starts).
    let compose = parse(text.replacen("http://payment-sim:8090", "http://payment-simm:8090", 1)).expect("parses");
    let refused = refusal(&compose, &[]).await;
    assert!(matches!(&refused, DeployError::Mapping(why) if why.contains("payment-simm")), "{refused}");
    // A published port nobody listens on.
    let compose = parse(text.replacen("\"8081:8080\"", "\"8081:8000\"", 1)).expect("parses");
    let refused = refusal(&compose, &[]).await;
    assert!(matches!(&refused, DeployError::Mapping(why) if why.contains("8081")), "{refused}");
}
