//! A token passed in the URL (`/v1/live?access_token=…`, for browsers that cannot send a header)
//! appears in no log line, at the most talkative level, in JSON (which writes every span's fields
//! into every line) as in text, whether the token is accepted or refused.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use stay_tests::server::{stay_binary, TEST_SECRET};
use stay_tests::{Backend, TestPostgres, TestSqlite};

/// A `stay serve` logging everything to a file, killed when dropped.
struct TalkativeServer {
    child: Child,
    url: String,
}

impl Drop for TalkativeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, store: Option<&str>, format: &str) -> TalkativeServer {
    let log = std::fs::File::create(data.join("server.log")).expect("log file");
    let mut command = Command::new(stay_binary());
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--jwt-secret", TEST_SECRET])
        .env("STAY_LOG", "trace")
        .env("STAY_LOG_FORMAT", format)
        .env_remove("STAY_JWT_SECRET")
        .env_remove("STAY_STORE")
        .env_remove("STAY_READ_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    if let Some(store) = store {
        command.args(["--store", store]);
    }
    let mut child = command.spawn().expect("start stay serve");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, listened) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    loop {
        match listened.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("stay: listening on ") {
                    return TalkativeServer { child, url: url.trim().to_owned() };
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("stay serve did not start:\n{}", logs(data));
            }
        }
    }
}

fn logs(data: &Path) -> String {
    std::fs::read_to_string(data.join("server.log")).unwrap_or_default()
}

fn token(role: &str, secret: &str) -> String {
    let claims = serde_json::json!({"sub": "ops", "role": role, "exp": chrono::Utc::now().timestamp() + 3600});
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())).expect("sign")
}

/// Opens `/v1/live` with `token` in the query; answers the status (the stream is read a little, then dropped).
async fn open_live(client: &reqwest::Client, url: &str, query: &str) -> u16 {
    let response = client.get(format!("{url}/v1/live?{query}")).send().await.expect("GET /v1/live");
    let status = response.status().as_u16();
    // Let the server log what it logs for a stream that has started, then hang up.
    let _ = tokio::time::timeout(Duration::from_millis(300), response.bytes()).await;
    status
}

async fn no_token_in_the_logs(backend: Backend, format: &str) {
    let data = TestSqlite::create();
    let postgres = match backend {
        Backend::Postgres => Some(TestPostgres::create().await),
        Backend::Sqlite => None,
    };
    let server = start(data.dir(), postgres.as_ref().map(TestPostgres::url), format);
    let client = reqwest::Client::new();
    let admin = token("admin", TEST_SECRET);
    let guest = token("guest", TEST_SECRET);
    let forged = token("admin", "a secret that is not the server's, long enough");
    let cases = [
        (format!("access_token={admin}"), 200),
        (format!("after=0&access_token={admin}"), 200),
        (format!("access_token={guest}"), 403),
        (format!("access_token={forged}"), 401),
        ("access_token=not-a-jwt-but-a-secret-all-the-same".to_owned(), 401),
        (format!("access_token={admin}&after=nowhere"), 422),
    ];
    for (query, status) in &cases {
        assert_eq!(open_live(&client, &server.url, query).await, *status, "{query}\n{}", logs(data.dir()));
    }
    drop(server);

    let logged = logs(data.dir());
    assert!(logged.contains("/v1/live"), "the requests were logged at all:\n{logged}");
    for secret in [admin.as_str(), guest.as_str(), forged.as_str(), "not-a-jwt-but-a-secret-all-the-same"] {
        // The signature alone is as good as the token: look for it too.
        let signature = secret.rsplit('.').next().unwrap_or(secret);
        for line in logged.lines() {
            assert!(!line.contains(signature), "a token in the log:\n{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_token_in_the_query_appears_in_no_json_log_line_on_sqlite() {
    no_token_in_the_logs(Backend::Sqlite, "json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_token_in_the_query_appears_in_no_text_log_line_on_sqlite() {
    no_token_in_the_logs(Backend::Sqlite, "text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_token_in_the_query_appears_in_no_json_log_line_on_postgres() {
    no_token_in_the_logs(Backend::Postgres, "json").await;
}
