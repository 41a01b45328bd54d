//! A real `stay serve` for black-box tests: its own port, data directory and (on PostgreSQL) database.
//!
//! The binary is the workspace's `target/<profile>/stay`, built afresh by the first test that
//! needs it (see [`stay_binary`]), or `STAY_BIN`. The server's logs go to `server.log` in its data directory and are printed
//! when a test fails to start it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;
use stay_store::{EventStore, StoreOptions, StoreUrl};

use crate::databases::{TestPostgres, TestSqlite};

/// The token secret every test server is started with.
pub const TEST_SECRET: &str = "a test secret that is long enough for HS256";

/// Which event store the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The SQLite default under the data directory.
    Sqlite,
    /// A PostgreSQL database of the test's own.
    Postgres,
}

/// The `stay` binary under test, built from the sources as they are now (or `STAY_BIN`).
///
/// The first call in a test process runs the README's build (`cargo test --workspace
/// --all-features --no-run`, in the profile these tests run in): a no-op when the tests were
/// started by that same command, and otherwise the build that makes `target/<profile>/stay`
/// match the sources, so no test ever starts a stale binary. The same command, rather than
/// `cargo build -p stay-cli`, keeps one set of dependency features in the target directory.
pub fn stay_binary() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Ok(path) = std::env::var("STAY_BIN") {
        return PathBuf::from(path);
    }
    match BUILT.get_or_init(build_stay) {
        Ok(path) => path.clone(),
        Err(why) => panic!("{why}"),
    }
}

fn build_stay() -> Result<PathBuf, String> {
    // Test executables live in target/<profile>/deps; the binary one level up.
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the test executable: {e}"))?;
    let profile_dir =
        exe.parent().and_then(Path::parent).ok_or("the test executable is not in target/<profile>/deps")?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("the tests crate has no workspace")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(&cargo);
    build.current_dir(workspace).args(["test", "--workspace", "--all-features", "--no-run", "--quiet"]);
    // Cargo gives this test process the tests crate's own package variables; passed on, they
    // would differ from what the `stay` binary was built with and make cargo build it again.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE"]
                .contains(&name.as_ref())
        {
            build.env_remove(name.as_ref());
        }
    }
    if profile_dir.file_name().is_some_and(|name| name == "release") {
        build.arg("--release");
    }
    let status = build.status().map_err(|e| format!("cannot run {cargo} to build stay: {e}"))?;
    if !status.success() {
        return Err(format!("building stay failed ({status}); see the cargo output above"));
    }
    let binary = profile_dir.join(format!("stay{}", std::env::consts::EXE_SUFFIX));
    if !binary.exists() {
        return Err(format!("{} is missing after the build", binary.display()));
    }
    Ok(binary)
}

/// An answer from the server.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status.
    pub status: u16,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body as text.
    pub text: String,
    /// Its body as JSON (`Null` when it is not JSON).
    pub body: Value,
}

impl Answer {
    /// The problem document's `code`, or "" when there is none.
    pub fn code(&self) -> &str {
        self.body.get("code").and_then(Value::as_str).unwrap_or("")
    }

    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The body's string field `name`, or "".
    pub fn field(&self, name: &str) -> &str {
        self.body.get(name).and_then(Value::as_str).unwrap_or("")
    }

    /// Whether it is a well-formed problem document with this status.
    pub fn is_problem(&self) -> bool {
        self.header("content-type").starts_with("application/problem+json")
            && self.body.get("status").and_then(Value::as_u64) == Some(u64::from(self.status))
            && !self.code().is_empty()
            && self.body.get("title").is_some_and(Value::is_string)
            && self.body.get("type").is_some_and(Value::is_string)
            && self.body.get("detail").is_some_and(Value::is_string)
    }
}

/// A running `stay serve`.
#[derive(Debug)]
pub struct StayServer {
    child: Option<Child>,
    base: String,
    data: TestSqlite,
    postgres: Option<TestPostgres>,
    extra_args: Vec<String>,
    configured_secret: bool,
    shared_store: Option<String>,
    client: reqwest::Client,
}

impl StayServer {
    /// Starts a server on `backend` with default settings.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// Starts a server on `backend` with extra `stay serve` arguments.
    pub async fn start_with(backend: Backend, extra_args: &[&str]) -> Self {
        Self::launch(backend, extra_args, true).await
    }

    /// Starts a server that generates its token secret into its data directory, as a newcomer's does.
    pub async fn start_with_generated_secret(backend: Backend) -> Self {
        Self::launch(backend, &[], false).await
    }

    async fn launch(backend: Backend, extra_args: &[&str], configured_secret: bool) -> Self {
        let postgres = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestPostgres::create().await),
        };
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("HTTP client");
        let mut server = Self {
            child: None,
            base: String::new(),
            data: TestSqlite::create(),
            postgres,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            configured_secret,
            shared_store: None,
            client,
        };
        server.spawn();
        server
    }

    /// Another `stay serve` process on this server's PostgreSQL database (with its own data
    /// directory and port), as a second replica would run.
    pub async fn join(&self, extra_args: &[&str]) -> Self {
        let url = match self.store_url() {
            StoreUrl::Postgres(url) => url,
            other => panic!("only a PostgreSQL store can be shared between processes, not {other}"),
        };
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("HTTP client");
        let mut server = Self {
            child: None,
            base: String::new(),
            data: TestSqlite::create(),
            postgres: None,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            configured_secret: true,
            shared_store: Some(url),
            client,
        };
        server.spawn();
        server
    }

    /// Kills the process (SIGKILL: no shutdown at all) and starts it again on the same data.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The base URL, such as `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.dir()
    }

    /// The event store URL the server uses.
    pub fn store_url(&self) -> StoreUrl {
        match (&self.postgres, &self.shared_store) {
            (Some(db), _) => StoreUrl::Postgres(db.url().to_owned()),
            (None, Some(url)) => StoreUrl::Postgres(url.clone()),
            (None, None) => StoreUrl::Sqlite(self.data.path()),
        }
    }

    /// Opens the server's event store from the test (to check what was recorded, or to act as
    /// the saga would).
    pub async fn open_store(&self) -> EventStore {
        EventStore::open(&self.store_url(), StoreOptions::default()).await.expect("open the server's store")
    }

    /// A token for `sub` with `role`, valid for an hour, signed with the server's secret. The
    /// claims are not checked here, so tests can send tokens the server must refuse.
    pub fn token(&self, sub: &str, role: &str) -> String {
        let exp = chrono::Utc::now().timestamp() + 3600;
        let claims = serde_json::json!({"sub": sub, "role": role, "exp": exp});
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()))
            .expect("sign")
    }

    /// Sends a request with an optional bearer token, JSON body and extra headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON"));
        self.send_raw(method, path, token, bytes, headers).await
    }

    /// Sends raw body bytes (as `application/json` unless a header says otherwise).
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
                request = request.header("content-type", "application/json");
            }
            request = request.body(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("request failed: {e}\n{}", self.logs()));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, headers, text, body }
    }

    /// Opens a GET and answers its status and content type without reading the body (for
    /// streams such as `/v1/live`, whose body never ends).
    pub async fn open(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String, reqwest::Response) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("request failed: {e}\n{}", self.logs()));
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        (response.status().as_u16(), content_type, response)
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.send(Method::POST, path, Some(token), Some(body), &[]).await
    }

    /// GET without a token.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, None, &[]).await
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    /// Does nothing when no process runs (`kill -TERM 0` would signal the test's whole group).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL) and starts it again on the same data.
    pub async fn restart(&mut self) {
        if self.terminate(Duration::from_secs(15)).is_none() {
            self.kill();
        }
        self.spawn();
    }

    /// Waits (up to 2 minutes) until no saga runs and every read model has caught up with the
    /// feed, with no rebuild under way. The models are read first, so the saga list read after
    /// them is at least as new as the feed they had caught up with.
    pub async fn settle(&self) {
        let admin = self.token("ops", "admin");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let projections = self.send(Method::GET, "/v1/admin/projections", Some(&admin), None, &[]).await;
            let sagas = self.send(Method::GET, "/v1/admin/sagas?status=running", Some(&admin), None, &[]).await;
            assert_eq!((projections.status, sagas.status), (200, 200), "{} {}", projections.text, sagas.text);
            let caught_up = projections
                .body
                .as_array()
                .is_some_and(|all| all.iter().all(|p| p["lag_events"] == 0 && p["rebuild"].is_null()));
            let idle = sagas.body["items"].as_array().is_some_and(Vec::is_empty);
            if caught_up && idle {
                return;
            }
            assert!(Instant::now() < deadline, "never settled: {} {}\n{}", sagas.text, projections.text, self.logs());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// What the server logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.data.dir().join("server.log")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        let mut command = Command::new(stay_binary());
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data.dir())
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.extra_args)
            .env("STAY_LOG", "info")
            .env_remove("STAY_JWT_SECRET")
            .env_remove("STAY_STORE")
            .env_remove("STAY_READ_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if let StoreUrl::Postgres(url) = self.store_url() {
            command.args(["--store", &url]);
        }
        if self.configured_secret {
            command.args(["--jwt-secret", TEST_SECRET]);
        }
        let mut child = command.spawn().expect("start stay serve");
        let stdout = child.stdout.take().expect("stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading, so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("stay: listening on ") {
                        self.base = url.trim().to_owned();
                        return;
                    }
                }
                Err(_) => panic!("stay serve did not start:\n{}", self.logs()),
            }
        }
    }
}

impl Drop for StayServer {
    fn drop(&mut self) {
        self.kill();
    }
}
