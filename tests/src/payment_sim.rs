//! A real `stay payment-sim` for tests: its own port and ledger file, killable and restartable on
//! the same address (so a `stay serve` pointed at it finds it again).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::server::stay_binary;

/// A running `stay payment-sim`.
#[derive(Debug)]
pub struct PaymentSim {
    child: Option<Child>,
    listen: String,
    dir: TempDir,
}

impl PaymentSim {
    /// Starts a simulator on a free port with a ledger file of its own.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("stay-sim-").tempdir().expect("temporary directory");
        let mut sim = Self { child: None, listen: "127.0.0.1:0".to_owned(), dir };
        sim.spawn();
        sim
    }

    /// Its base URL, for `stay serve --payment-provider`.
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// `stay serve` flags that use this simulator and park a saga soon after it goes away: short
    /// provider calls, a breaker that never opens, three failed tries of a step and short waits.
    pub fn parking_serve_args(&self) -> Vec<String> {
        [
            "--payment-provider",
            &self.url(),
            "--payment-call-timeout",
            "500ms",
            "--payment-breaker-threshold",
            "1000",
            "--saga-max-step-failures",
            "3",
            "--saga-retry-base",
            "50ms",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Kills it at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same address and ledger.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Every movement the simulator recorded.
    pub async fn ledger(&self) -> Vec<Value> {
        let answer = reqwest::get(format!("{}/ledger", self.url())).await.expect("GET /ledger");
        answer.json().await.expect("ledger JSON")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sim.log"))
            .expect("log file");
        let mut child = Command::new(stay_binary())
            .args(["payment-sim", "--listen", &self.listen, "--ledger"])
            .arg(self.dir.path().join("ledger.jsonl"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start stay payment-sim");
        let stdout = child.stdout.take().expect("stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines_rx.recv_timeout(left).expect("stay payment-sim did not start");
            if let Some(url) = line.strip_prefix("stay payment-sim: listening on http://") {
                self.listen = url.trim().to_owned();
                return;
            }
        }
    }
}

impl Drop for PaymentSim {
    fn drop(&mut self) {
        self.kill();
    }
}
