//! The dashboard is served by the query API: `GET /` and `GET /assets/{file}` answer every file of
//! `query-api/dashboard/` as built into the binary, with its media type, an ETag honoured in
//! `If-None-Match`, `Cache-Control: no-cache` and a strict Content-Security-Policy; an unknown
//! file is a 404 problem; `--dashboard-dir` (`STAY_DASHBOARD_DIR`) serves a folder read at each
//! request; only the roles that answer queries serve it.

use std::path::PathBuf;

use reqwest::Method;
use stay_tests::browser::Browser;
use stay_tests::{Answer, Backend, RawConnection, StayServer};

/// The dashboard's source folder, whose files the binary embeds.
fn dashboard_folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../query-api/dashboard")
}

/// The dashboard's files as they are in the sources: (name, bytes).
fn source_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dashboard_folder())
        .expect("query-api/dashboard exists")
        .map(|entry| entry.expect("a folder entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).expect("a UTF-8 name").to_owned();
            (name, std::fs::read(&path).expect("read a dashboard file"))
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    files.sort();
    files
}

async fn get_bytes(server: &StayServer, path: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let client = reqwest::Client::new();
    let mut request = client.get(format!("{}{path}", server.url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.expect("the body").to_vec())
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The headers every dashboard answer carries.
fn assert_dashboard_headers(what: &str, headers: &reqwest::header::HeaderMap) {
    let csp = header(headers, "content-security-policy");
    assert!(csp.contains("default-src 'self'"), "{what}: Content-Security-Policy {csp:?}");
    assert!(csp.contains("script-src 'self'"), "{what}: scripts only from the site: {csp:?}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{what}: no inline script: {csp:?}");
    assert!(!csp.contains("http:") && !csp.contains("https:"), "{what}: nothing from another site: {csp:?}");
    assert_eq!(header(headers, "cache-control"), "no-cache", "{what}");
    let etag = header(headers, "etag");
    assert!(etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'), "{what}: ETag {etag:?}");
    assert_eq!(header(headers, "x-content-type-options"), "nosniff", "{what}");
}

fn expected_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_every_file_of_the_dashboard_folder_are_served_as_built() {
    let server = StayServer::start(Backend::Sqlite).await;
    let files = source_files();
    let index = files.iter().find(|(name, _)| name == "index.html").expect("query-api/dashboard/index.html");

    let (status, headers, body) = get_bytes(&server, "/", &[]).await;
    assert_eq!(status, 200, "GET /: {}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(body, index.1, "GET / answers index.html as it is in the sources");
    assert_dashboard_headers("GET /", &headers);

    // Every file, whatever its name: a new file needs no change in Rust.
    for (name, bytes) in &files {
        let path = format!("/assets/{name}");
        let (status, headers, body) = get_bytes(&server, &path, &[]).await;
        assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(&body, bytes, "GET {path} answers the file as it is in the sources");
        assert_eq!(header(&headers, "content-type"), expected_type(name), "GET {path}");
        assert_dashboard_headers(&path, &headers);

        // The browser's copy is current: 304 without a body, same ETag.
        let etag = header(&headers, "etag").to_owned();
        let (status, again, body) = get_bytes(&server, &path, &[("if-none-match", &etag)]).await;
        assert_eq!((status, body.len()), (304, 0), "GET {path} with If-None-Match: {etag}");
        assert_eq!(header(&again, "etag"), etag);
        let (status, _, _) = get_bytes(&server, &path, &[("if-none-match", "\"something-else\"")]).await;
        assert_eq!(status, 200, "GET {path} with a stale ETag gets the file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_file_is_a_404_problem_and_no_path_leaves_the_folder() {
    let server = StayServer::start(Backend::Sqlite).await;
    for path in ["/assets/nope.js", "/assets/..%2FCargo.toml", "/assets/.hidden", "/assets/%2E%2E%2Fsecret"] {
        let answer: Answer = server.get(path).await;
        assert_eq!((answer.status, answer.code()), (404, "asset_not_found"), "GET {path}: {}", answer.text);
        assert!(answer.is_problem(), "GET {path}: {}", answer.text);
    }
    // Written as is on the connection, past any client's normalising of dot segments.
    for target in ["/assets/../../Cargo.toml", "/assets/..", "/assets/%2e%2e"] {
        let mut connection = RawConnection::open(server.url()).expect("connect");
        let request = format!("GET {target} HTTP/1.1\r\nhost: stay\r\nconnection: close\r\n\r\n");
        connection.write_all(request.as_bytes()).expect("send");
        let answer = connection.read_answer().expect("an answer");
        assert_eq!(answer.status, 404, "GET {target}: {}", String::from_utf8_lossy(&answer.body));
        let code = answer.json()["code"].as_str().unwrap_or("").to_owned();
        assert!(code == "asset_not_found" || code == "route_not_found", "GET {target}: {code}");
    }
    let answer = server.send(Method::POST, "/", None, None, &[]).await;
    assert_eq!(answer.status, 405, "the dashboard is read-only: {}", answer.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_folder_is_read_at_each_request() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("index.html"), "<!doctype html><title>one</title>").expect("write");
    std::fs::write(dir.path().join("extra.js"), "export const x = 1;").expect("write");
    let folder = dir.path().to_str().expect("a UTF-8 path").to_owned();
    let server = StayServer::start_with(Backend::Sqlite, &["--dashboard-dir", &folder]).await;

    let (status, headers, body) = get_bytes(&server, "/", &[]).await;
    assert_eq!((status, body.as_slice()), (200, b"<!doctype html><title>one</title>".as_slice()));
    assert_dashboard_headers("GET / from a folder", &headers);
    let first_etag = header(&headers, "etag").to_owned();
    let (status, headers, body) = get_bytes(&server, "/assets/extra.js", &[]).await;
    assert_eq!((status, body.as_slice()), (200, b"export const x = 1;".as_slice()));
    assert_eq!(header(&headers, "content-type"), "text/javascript; charset=utf-8");

    // Edited on disk: the next request has the new file, under a new ETag; no rebuild, no restart.
    std::fs::write(dir.path().join("index.html"), "<!doctype html><title>two</title>").expect("write");
    let (status, headers, body) = get_bytes(&server, "/", &[("if-none-match", &first_etag)]).await;
    assert_eq!((status, body.as_slice()), (200, b"<!doctype html><title>two</title>".as_slice()));
    assert_ne!(header(&headers, "etag"), first_etag);

    std::fs::remove_file(dir.path().join("extra.js")).expect("remove");
    let answer = server.get("/assets/extra.js").await;
    assert_eq!((answer.status, answer.code()), (404, "asset_not_found"), "{}", answer.text);
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    let answer = server.get("/assets/sub").await;
    assert_eq!((answer.status, answer.code()), (404, "asset_not_found"), "a folder is no file: {}", answer.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_roles_that_answer_queries_serve_the_dashboard() {
    let commands = StayServer::start_with(Backend::Postgres, &["--role", "command-api"]).await;
    let queries = commands.join(&["--role", "query-api"]).await;
    let answer = commands.get("/").await;
    assert_eq!((answer.status, answer.code()), (404, "route_not_found"), "{}", answer.text);
    let answer = commands.get("/assets/index.html").await;
    assert_eq!((answer.status, answer.code()), (404, "route_not_found"), "{}", answer.text);
    let answer = queries.get("/").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.header("content-type").starts_with("text/html"), "{:?}", answer.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headless_browser_opens_the_dashboard_and_its_console_is_read() {
    let server = StayServer::start(Backend::Sqlite).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", server.url())).await;
    browser.wait_for("main").await;
    let title = browser.execute("return document.title;", vec![]).await;
    assert!(title.as_str().is_some_and(|t| t.contains("Stay")), "the page's title: {title}");
    // The page's scripts ran (the shell's router fills the view), under the strict policy.
    browser.wait_for("main > *").await;
    let shot = browser.screenshot("serving-first-page").await;
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "a PNG at {}", shot.display());
    browser.assert_no_console_errors("the first page").await;

    // The harness sees what a page writes to the console…
    browser.execute("console.error('a harness check');", vec![]).await;
    let errors = browser.console_errors().await;
    assert!(errors.iter().any(|e| e.contains("a harness check")), "{errors:?}");
    // …and the browser enforces the policy: an inline script is refused, and says so.
    browser
        .execute(
            "const s = document.createElement('script'); s.textContent = 'window.inlineRan = true;'; \
             document.head.appendChild(s);",
            vec![],
        )
        .await;
    assert_eq!(browser.execute("return window.inlineRan === true;", vec![]).await, serde_json::json!(false));
    let errors = browser.console_errors().await;
    assert!(errors.iter().any(|e| e.contains("Content Security Policy")), "a CSP refusal in the console: {errors:?}");
    browser.close().await;
}
