//! Overload: offered twice what it sustains, `stay serve` still gets the work it accepts done at
//! (nearly) the rate it sustains, with a bounded latency, and logs its refusals in aggregate.
//!
//! The sustainable rate is measured in the same run, closed loop (`stay load commands --clients`),
//! before and after the overload, so that a machine slowed by other work in the meantime moves
//! both sides of the comparison. The overload is an open loop (`--rate`) at twice the first
//! measurement, with far more requests outstanding than the server admits (`--max-in-flight`).
//!
//! The server and the load generator each get a core of their own (`taskset`), as they would on
//! separate machines: at twice the rate the generator does twice the work, and sharing the
//! server's cores it would measure its own cost rather than the server's goodput.

use std::process::Command;

use serde_json::Value;
use stay_tests::server::{stay_binary, TEST_SECRET};
use stay_tests::{Backend, StayServer};

/// Requests the server admits at once in these runs.
const MAX_IN_FLIGHT: &str = "32";

/// What one `stay load commands` run measured.
#[derive(Debug)]
struct Measured {
    /// Rooms registered (201) per second.
    per_second: f64,
    /// p99 of the requests answered 201, in ms.
    p99_ms: f64,
    /// Answers 503.
    refused: u64,
    /// The whole report.
    report: Value,
}

/// Whether the server and the generator can each have a core: then the server runs on core 0 (all
/// its threads, and those it starts later inherit it) and the generator on core 1.
fn pin_server(server: &StayServer) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores < 2 {
        return false;
    }
    let pinned = Command::new("taskset").args(["-a", "-p", "-c", "0", &server.pid().to_string()]).output();
    matches!(pinned, Ok(output) if output.status.success())
}

/// Runs `stay load commands` against `server` with `pace` (on core 1 when `pinned`), and reads
/// its JSON report.
fn load(server: &StayServer, pinned: bool, pace: &[&str]) -> Measured {
    let mut command = if pinned {
        let mut taskset = Command::new("taskset");
        taskset.args(["-c", "1"]).arg(stay_binary());
        taskset
    } else {
        Command::new(stay_binary())
    };
    let output = command
        .args(["load", "commands", "--url", server.url(), "--jwt-secret", TEST_SECRET])
        .args(["--lag-every", "0", "--idle-seconds", "0", "--warmup", "1", "--json"])
        .args(pace)
        .env_remove("STAY_JWT_SECRET")
        .output()
        .expect("run stay load");
    assert!(output.status.success(), "stay load failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    Measured {
        per_second: report["per_second"].as_f64().unwrap_or(0.0),
        p99_ms: report["latency"]["p99_ms"].as_f64().unwrap_or(f64::MAX),
        refused: report["outcomes"]["503"].as_u64().unwrap_or(0),
        report,
    }
}

async fn goodput_holds_at_twice_the_sustainable_load(backend: Backend) {
    let server = StayServer::start_with(backend, &["--max-in-flight", MAX_IN_FLIGHT]).await;
    let pinned = pin_server(&server);
    eprintln!("server and load generator on cores of their own: {pinned}");
    tokio::task::block_in_place(|| {
        let closed = ["--clients", "16", "--seconds", "5"];
        let before = load(&server, pinned, &closed);
        assert!(before.per_second > 20.0, "the server sustains nothing: {:#}", before.report);
        let rate = format!("{:.0}", before.per_second * 2.0);
        let overload = load(&server, pinned, &["--rate", &rate, "--clients", "1024", "--seconds", "8"]);
        let after = load(&server, pinned, &closed);

        let sustainable = (before.per_second + after.per_second) / 2.0;
        eprintln!(
            "sustainable {:.0}/s then {:.0}/s; offered {rate}/s: {:.0}/s done, p99 {} ms, {} refused",
            before.per_second, after.per_second, overload.per_second, overload.p99_ms, overload.refused
        );
        assert!(overload.refused > 0, "twice the sustainable rate was not an overload: {:#}", overload.report);
        assert!(
            overload.per_second >= 0.8 * sustainable,
            "goodput {:.0}/s under overload, below 80% of the sustainable {sustainable:.0}/s: {:#}",
            overload.per_second,
            overload.report
        );
        assert!(
            overload.p99_ms <= 2_000.0,
            "p99 of the accepted requests {} ms: {:#}",
            overload.p99_ms,
            overload.report
        );
    });

    let logs = server.logs();
    let about_refusals =
        logs.lines().filter(|line| line.contains("503") || line.contains("overload") || line.contains("refus")).count();
    assert!(about_refusals < 100, "{about_refusals} lines about refusals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goodput_holds_at_twice_the_sustainable_load_on_sqlite() {
    goodput_holds_at_twice_the_sustainable_load(Backend::Sqlite).await;
}
