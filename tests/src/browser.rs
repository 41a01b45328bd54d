//! A real browser for the dashboard's tests: Debian's headless Chromium driven through WebDriver
//! (chromedriver) with `fantoccini`, each test with its own chromedriver on a free port and its
//! own profile.
//!
//! [`Browser::start`] launches chromedriver (`/usr/bin/chromedriver`, or `STAY_CHROMEDRIVER`) and
//! through it Chromium (`/usr/bin/chromium`, or `STAY_CHROMIUM`) headless, with the flags it needs
//! as root in a container (`--no-sandbox`, `--disable-dev-shm-usage`) and without reaching for the
//! network on its own (`--disable-background-networking`). `.ci/run` installs both when missing.
//!
//! Every wait has a timeout and fails with what the page showed (its address and text), so a
//! failing browser test says what the person would have seen. [`Browser::screenshot`] saves PNGs
//! under `target/dashboard-screenshots/`; [`Browser::console_errors`] answers what the page wrote
//! to the console at level SEVERE (uncaught errors, failed loads, CSP refusals). The browser is
//! closed, and chromedriver with every process it started is ended, when the [`Browser`] is dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// How long a wait lasts unless a test says otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

/// The window's size unless a test says otherwise: a laptop's.
pub const DESKTOP: (u32, u32) = (1280, 900);

/// A narrow phone's width, the narrowest the dashboard is made for.
pub const PHONE: (u32, u32) = (375, 800);

/// One message the page wrote to the browser's console (or the browser wrote about the page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleEntry {
    /// `SEVERE`, `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// The message as Chromium gives it (it starts with the script's URL, or `console-api`).
    pub message: String,
}

/// A headless Chromium under this test's control.
#[derive(Debug)]
pub struct Browser {
    client: Option<Client>,
    driver: Option<Child>,
    driver_url: String,
    session_id: Option<String>,
    /// Every console entry read so far (reading the log drains it in the browser).
    console: Mutex<Vec<ConsoleEntry>>,
    profile: tempfile::TempDir,
}

/// A port no one listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

fn program(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// The target directory these tests were built into (`target/`, or `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps.
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("target"))
}

/// Where screenshots go: `target/dashboard-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    target_dir().join("dashboard-screenshots")
}

/// Chromium's browser log, through chromedriver's `se/log` (needs `goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

impl Browser {
    /// Starts a browser with a desktop-sized window.
    pub async fn start() -> Self {
        Self::start_sized(DESKTOP).await
    }

    /// Starts a browser whose window is `(width, height)` CSS pixels.
    pub async fn start_sized((width, height): (u32, u32)) -> Self {
        let chromium = program("STAY_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("STAY_CHROMEDRIVER", "/usr/bin/chromedriver");
        for (what, path) in [("Chromium", &chromium), ("chromedriver", &chromedriver)] {
            assert!(
                path.is_file(),
                "{what} is not at {} (`.ci/run` installs Debian's chromium and chromium-driver; \
                 STAY_CHROMIUM / STAY_CHROMEDRIVER name other places)",
                path.display()
            );
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let log_path = profile.path().join("chromedriver.log");
        let port = free_port();
        let mut command = Command::new(&chromedriver);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that ending it ends the browsers it started too, whatever
        // state they are in.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let driver_url = format!("http://127.0.0.1:{port}/");
        let mut browser = Self {
            client: None,
            driver: Some(driver),
            driver_url: driver_url.clone(),
            session_id: None,
            console: Mutex::default(),
            profile,
        };
        browser.wait_for_driver().await;

        let user_data = browser.profile.path().join("chromium");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-gpu",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-sync",
                    "--metrics-recording-only",
                    "--password-store=basic",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", user_data.display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(capabilities) = capabilities else { unreachable!("a JSON object") };
        let capabilities: Capabilities = capabilities;
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver_url)
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}\n{}", browser.driver_log()));
        browser.session_id = client.session_id().await.ok().flatten();
        browser.client = Some(client);
        browser
    }

    async fn wait_for_driver(&mut self) {
        let status = format!("{}status", self.driver_url);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("an HTTP client");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(answer) = http.get(&status).send().await {
                if answer.status().is_success() {
                    return;
                }
            }
            if let Some(Ok(Some(exit))) = self.driver.as_mut().map(Child::try_wait) {
                panic!("chromedriver exited at once ({exit}):\n{}", self.driver_log());
            }
            assert!(Instant::now() < deadline, "chromedriver did not answer within 30 s:\n{}", self.driver_log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn driver_log(&self) -> String {
        let text = std::fs::read_to_string(self.profile.path().join("chromedriver.log")).unwrap_or_default();
        // The end says why; the whole log can be long.
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        format!("chromedriver's log (end):\n{}", &text[start..])
    }

    /// The WebDriver client, for anything this harness does not wrap.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the browser is open")
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client().goto(url).await.unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The page's address now.
    pub async fn url(&self) -> String {
        self.client().current_url().await.map(|u| u.to_string()).unwrap_or_else(|e| format!("<no address: {e}>"))
    }

    /// Runs `script` in the page (its `arguments` are `args`) and answers what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.client().execute(script, args).await.unwrap_or_else(|e| panic!("the script failed: {e}\n{script}"))
    }

    /// The page's visible text (`document.body.innerText`), or what went wrong reading it.
    pub async fn page_text(&self) -> String {
        match self.client().execute("return document.body ? document.body.innerText : '';", vec![]).await {
            Ok(Value::String(text)) => text,
            Ok(other) => other.to_string(),
            Err(e) => format!("<the page's text could not be read: {e}>"),
        }
    }

    /// What a failure message tells about the page: its address and text.
    async fn page_report(&self) -> String {
        format!("page {}\n--- its text ---\n{}\n---", self.url().await, self.page_text().await)
    }

    /// Waits up to [`DEFAULT_WAIT`] for an element matching `css`, and answers it.
    pub async fn wait_for(&self, css: &str) -> Element {
        self.wait_for_within(css, DEFAULT_WAIT).await
    }

    /// Waits up to `timeout` for an element matching `css`, and answers it.
    pub async fn wait_for_within(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(element) = self.client().find(Locator::Css(css)).await {
                return element;
            }
            if Instant::now() >= deadline {
                panic!("no element matches {css:?} after {timeout:?}\n{}", self.page_report().await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to [`DEFAULT_WAIT`] for an element matching `css` whose text contains `text`.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> Element {
        self.wait_for_text_within(css, text, DEFAULT_WAIT).await
    }

    /// Waits up to `timeout` for an element matching `css` whose text contains `text`.
    pub async fn wait_for_text_within(&self, css: &str, text: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(elements) = self.client().find_all(Locator::Css(css)).await {
                for element in elements {
                    if element.text().await.is_ok_and(|shown| shown.contains(text)) {
                        return element;
                    }
                }
            }
            if Instant::now() >= deadline {
                panic!("no element matching {css:?} shows {text:?} after {timeout:?}\n{}", self.page_report().await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to [`DEFAULT_WAIT`] until no element matches `css`.
    pub async fn wait_until_gone(&self, css: &str) {
        let deadline = Instant::now() + DEFAULT_WAIT;
        loop {
            match self.client().find_all(Locator::Css(css)).await {
                Ok(found) if found.is_empty() => return,
                _ => {}
            }
            if Instant::now() >= deadline {
                panic!("elements matching {css:?} are still there after {DEFAULT_WAIT:?}\n{}", self.page_report().await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.client().find_all(Locator::Css(css)).await.map_or(0, |found| found.len())
    }

    /// The text of the first element matching `css` (waiting for it).
    pub async fn text(&self, css: &str) -> String {
        let element = self.wait_for(css).await;
        match element.text().await {
            Ok(text) => text,
            Err(e) => panic!("cannot read the text of {css:?}: {e}\n{}", self.page_report().await),
        }
    }

    /// Clicks the first element matching `css` (waiting for it).
    pub async fn click(&self, css: &str) {
        let element = self.wait_for(css).await;
        if let Err(e) = element.click().await {
            panic!("cannot click {css:?}: {e}\n{}", self.page_report().await);
        }
    }

    /// Types `text` into the first element matching `css` (waiting for it), after clearing it.
    /// Keys such as Enter are in [`fantoccini::key::Key`] (`Key::Enter.into()` as a `char`).
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_for(css).await;
        let _ = element.clear().await;
        if let Err(e) = element.send_keys(text).await {
            panic!("cannot type into {css:?}: {e}\n{}", self.page_report().await);
        }
    }

    /// Resizes the window to `(width, height)` CSS pixels.
    pub async fn resize(&self, (width, height): (u32, u32)) {
        self.client().set_window_size(width, height).await.unwrap_or_else(|e| panic!("cannot resize: {e}"));
    }

    /// Saves a screenshot of the window as `target/dashboard-screenshots/NAME.png`, and answers its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client().screenshot().await.unwrap_or_else(|e| panic!("cannot take a screenshot: {e}"));
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Every console entry of this browser so far (all levels, oldest first).
    pub async fn console(&self) -> Vec<ConsoleEntry> {
        let fresh = match self.client().issue_cmd(BrowserLog).await {
            Ok(Value::Array(entries)) => entries,
            Ok(other) => panic!("chromedriver's browser log is not a list: {other}"),
            Err(e) => panic!("cannot read the browser's console log: {e}"),
        };
        let mut all = self.console.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.extend(fresh.iter().map(|entry| ConsoleEntry {
            level: entry["level"].as_str().unwrap_or("").to_owned(),
            message: entry["message"].as_str().unwrap_or("").to_owned(),
        }));
        all.clone()
    }

    /// The console's errors so far (level SEVERE): uncaught exceptions, `console.error`, resources
    /// that failed to load, Content-Security-Policy refusals.
    pub async fn console_errors(&self) -> Vec<String> {
        self.console().await.into_iter().filter(|e| e.level == "SEVERE").map(|e| e.message).collect()
    }

    /// Fails the test, saying what they were, if the console has any error.
    pub async fn assert_no_console_errors(&self, screen: &str) {
        let errors = self.console_errors().await;
        assert!(errors.is_empty(), "the console has errors on {screen}:\n{}", errors.join("\n"));
    }

    /// Closes the browser and ends chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
        self.end_driver();
    }

    /// Ends chromedriver's process group: chromedriver and the browsers it started.
    fn end_driver(&mut self) {
        if let Some(mut driver) = self.driver.take() {
            #[cfg(unix)]
            {
                let group = format!("-{}", driver.id());
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            }
            let _ = driver.kill();
            let _ = driver.wait();
        }
    }

    /// Ends the WebDriver session without a runtime (from `drop`): chromedriver then closes Chromium.
    fn delete_session_blocking(&self) {
        let Some(session) = &self.session_id else { return };
        let address = self.driver_url.trim_start_matches("http://").trim_end_matches('/');
        let Ok(mut stream) = TcpStream::connect(address) else { return };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let request = format!(
            "DELETE /session/{session} HTTP/1.1\r\nhost: {address}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.client.take().is_some() {
            self.delete_session_blocking();
        }
        self.end_driver();
    }
}
