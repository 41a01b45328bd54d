//! Fuzzing the command routes of a real `stay serve`: whatever arrives — arbitrary JSON, the right
//! fields with the wrong types, huge numbers, odd Unicode, bytes that are not JSON, junk ids in
//! paths, tokens good and bad, odd `Content-Type`s and `Idempotency-Key`s — the answer is never a
//! 5xx, every answer that is not a 2xx is a problem document (API.md, "Conventions"), and its
//! status is one `/openapi.json` lists for the route.
//!
//! Each test starts one server with two rooms of `host-1` and one reservation of `guest-1`, so
//! that requests carrying the right token and an almost valid body get deep into the handlers.
//! A failing request is printed in full (method, path, headers, body) with the answer.

use std::fmt;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use reqwest::Method;
use serde_json::{json, Map, Number, Value};
use stay_tests::server::TEST_SECRET;
use stay_tests::{Answer, Backend, StayServer};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// The routes under test
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    RegisterRoom,
    ChangeRoom,
    DelistRoom,
    RequestReservation,
    CancelReservation,
    PostReview,
    ReplyToReview,
}

const ROUTES: [Route; 7] = [
    Route::RegisterRoom,
    Route::ChangeRoom,
    Route::DelistRoom,
    Route::RequestReservation,
    Route::CancelReservation,
    Route::PostReview,
    Route::ReplyToReview,
];

impl Route {
    fn method(self) -> Method {
        match self {
            Route::ChangeRoom => Method::PATCH,
            Route::DelistRoom => Method::DELETE,
            _ => Method::POST,
        }
    }

    /// The path with `id` (already percent-encoded) in its id segment.
    fn path(self, id: &str) -> String {
        match self {
            Route::RegisterRoom => "/v1/rooms".to_owned(),
            Route::ChangeRoom | Route::DelistRoom => format!("/v1/rooms/{id}"),
            Route::RequestReservation => "/v1/reservations".to_owned(),
            Route::CancelReservation => format!("/v1/reservations/{id}/cancel"),
            Route::PostReview => format!("/v1/rooms/{id}/reviews"),
            Route::ReplyToReview => format!("/v1/reviews/{id}/reply"),
        }
    }

    /// The path template the OpenAPI document lists the route under.
    fn path_template(self) -> &'static str {
        match self {
            Route::RegisterRoom => "/v1/rooms",
            Route::ChangeRoom | Route::DelistRoom => "/v1/rooms/{room_id}",
            Route::RequestReservation => "/v1/reservations",
            Route::CancelReservation => "/v1/reservations/{reservation_id}/cancel",
            Route::PostReview => "/v1/rooms/{room_id}/reviews",
            Route::ReplyToReview => "/v1/reviews/{review_id}/reply",
        }
    }

    fn has_id(self) -> bool {
        !matches!(self, Route::RegisterRoom | Route::RequestReservation)
    }

    /// The fields of the body, as JSON pointers (none for routes without a body).
    fn fields(self) -> &'static [&'static str] {
        match self {
            Route::RegisterRoom | Route::ChangeRoom => &[
                "/name",
                "/description",
                "/address",
                "/nightly_price",
                "/nightly_price/amount_minor",
                "/nightly_price/currency",
                "/capacity",
            ],
            Route::RequestReservation => {
                &["/room_id", "/check_in", "/check_out", "/guests", "/payment", "/payment/card_token"]
            }
            Route::PostReview => &["/reservation_id", "/rating", "/comment"],
            Route::ReplyToReview => &["/comment"],
            Route::DelistRoom | Route::CancelReservation => &[],
        }
    }

    /// A valid body for this route (`{}` for routes without one).
    fn template(self, known: &Known) -> Value {
        match self {
            Route::RegisterRoom | Route::ChangeRoom => json!({
                "name": "Fuzzed room",
                "description": "A room the fuzzer registers.",
                "address": "1 Fuzz Street",
                "nightly_price": {"amount_minor": 12000, "currency": "USD"},
                "capacity": 2,
            }),
            Route::RequestReservation => json!({
                "room_id": known.room_id,
                "check_in": known.check_in,
                "check_out": known.check_out,
                "guests": 1,
                "payment": {"card_token": "tok_visa"},
            }),
            Route::PostReview => json!({
                "reservation_id": known.reservation_id,
                "rating": 5,
                "comment": "Lovely.",
            }),
            Route::ReplyToReview => json!({"comment": "Thank you!"}),
            Route::DelistRoom | Route::CancelReservation => json!({}),
        }
    }

    /// Ids that exist, for the id segment. DELETE gets only the spare room, so the room most
    /// requests aim at stays listed.
    fn known_ids(self, known: &Known) -> Vec<String> {
        match self {
            Route::ChangeRoom => vec![known.room_id.clone(), known.spare_room_id.clone()],
            Route::DelistRoom => vec![known.spare_room_id.clone()],
            Route::CancelReservation => vec![known.reservation_id.clone()],
            Route::PostReview => vec![known.room_id.clone()],
            Route::ReplyToReview => vec![known.review_id.clone()],
            Route::RegisterRoom | Route::RequestReservation => vec![String::new()],
        }
    }

    /// The index in the token pool of the caller this route is meant for.
    fn right_caller(self) -> usize {
        match self {
            Route::RegisterRoom | Route::ChangeRoom | Route::DelistRoom | Route::ReplyToReview => HOST_OWNER,
            Route::RequestReservation | Route::CancelReservation | Route::PostReview => GUEST_OWNER,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Callers: valid tokens of each role (some with odd subjects) and invalid ones
// ---------------------------------------------------------------------------------------------

const HOST_OWNER: usize = 0;
const GUEST_OWNER: usize = 2;

/// An `Authorization` header value (or none), with a name for failure reports.
#[derive(Clone, Debug)]
struct Caller {
    label: String,
    authorization: Option<String>,
}

fn callers(server: &StayServer) -> Vec<Caller> {
    let bearer =
        |label: &str, token: String| Caller { label: label.to_owned(), authorization: Some(format!("Bearer {token}")) };
    let raw = |label: &str, value: &str| Caller { label: label.to_owned(), authorization: Some(value.to_owned()) };
    let now = u64::try_from(chrono::Utc::now().timestamp()).expect("after 1970");
    let keys = stay_http::JwtKeys::new(&secrecy::SecretString::from(TEST_SECRET.to_owned()));
    let other_keys =
        stay_http::JwtKeys::new(&secrecy::SecretString::from("another secret, not the server's".to_owned()));
    let user = |sub: &str| stay_domain::UserId::new(sub).expect("user id");
    let expired =
        keys.sign(&user("guest-1"), stay_http::Role::Guest, Duration::from_secs(60), now - 3600).expect("sign");
    let foreign =
        other_keys.sign(&user("admin-1"), stay_http::Role::Admin, Duration::from_secs(3600), now).expect("sign");
    let host = server.token("host-1", "host");
    let admin_claims = format!(r#"{{"sub":"host-1","role":"admin","exp":{}}}"#, now + 3600);
    let tampered = {
        let parts: Vec<&str> = host.split('.').collect();
        format!("{}.{}.{}", parts[0], b64url(admin_claims.as_bytes()), parts[2])
    };
    let alg_none = format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), b64url(admin_claims.as_bytes()));
    let unknown_role = {
        // No HMAC here to sign it properly: the claims of an unknown role under the host's signature.
        let claims = format!(r#"{{"sub":"host-1","role":"superuser","exp":{}}}"#, now + 3600);
        let parts: Vec<&str> = host.split('.').collect();
        format!("{}.{}.{}", parts[0], b64url(claims.as_bytes()), parts[2])
    };
    vec![
        // HOST_OWNER = 0: owns the rooms.
        bearer("host host-1 (owner)", host.clone()),
        bearer("host host-2", server.token("host-2", "host")),
        // GUEST_OWNER = 2: made the reservation.
        bearer("guest guest-1 (owner)", server.token("guest-1", "guest")),
        bearer("guest guest-2", server.token("guest-2", "guest")),
        bearer("admin admin-1", server.token("admin-1", "admin")),
        bearer("host with NUL and RTL in sub", server.token("\u{202e}host\u{0}\u{200f}", "host")),
        bearer("guest with emoji sub", server.token("👩\u{200d}👩\u{200d}👧\u{200d}👦", "guest")),
        bearer("guest with NUL sub", server.token("g\u{0}", "guest")),
        bearer("admin with 200-char sub", server.token(&"a".repeat(200), "admin")),
        bearer("host with spaces in sub", server.token("  host 3  ", "host")),
        raw("lowercase bearer guest-1", &format!("bearer {}", server.token("guest-1", "guest"))),
        raw("bearer with extra spaces", &format!("Bearer    {host}   ")),
        Caller { label: "no token".to_owned(), authorization: None },
        raw("empty Authorization", ""),
        raw("Bearer without token", "Bearer "),
        raw("Bearer garbage", "Bearer garbage"),
        raw("Bearer a.b.c", "Bearer a.b.c"),
        raw("Basic auth", "Basic dXNlcjpwYXNz"),
        raw("token without scheme", &host),
        bearer("expired guest-1", expired),
        bearer("signed with another secret", foreign),
        bearer("claims swapped to admin", tampered),
        bearer("alg none admin", alg_none),
        bearer("unknown role", unknown_role),
        bearer("very long garbage token", "A".repeat(10_000)),
        bearer("three long segments", format!("{0}.{0}.{0}", "eyJ".repeat(1000))),
    ]
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The server and what exists in it
// ---------------------------------------------------------------------------------------------

/// Ids that exist (or are plausible) in the fixture server.
#[derive(Clone, Debug)]
struct Known {
    room_id: String,
    spare_room_id: String,
    reservation_id: String,
    review_id: String,
    check_in: String,
    check_out: String,
}

struct Fixture {
    server: StayServer,
    known: Known,
    callers: Vec<Caller>,
    /// The statuses `/openapi.json` documents for each route.
    documented: std::collections::BTreeMap<(Method, &'static str), Vec<u16>>,
    /// Requests that met a connection the server had closed, and were sent again.
    stale: std::cell::Cell<u32>,
}

impl Fixture {
    async fn start(backend: Backend) -> Self {
        quiet_lost_requests();
        let server = StayServer::start(backend).await;
        let callers = callers(&server);
        let host = server.token("host-1", "host");
        let guest = server.token("guest-1", "guest");
        let room = json!({
            "name": "Sea view",
            "address": "1 Harbour Road",
            "nightly_price": {"amount_minor": 12000, "currency": "USD"},
            "capacity": 4,
        });
        let mut rooms = Vec::new();
        for _ in 0..2 {
            let answer = server.post("/v1/rooms", &host, &room).await;
            assert_eq!(answer.status, 201, "register a room: {}", answer.text);
            rooms.push(answer.field("room_id").to_owned());
        }
        let today = chrono::Utc::now().date_naive();
        let check_in = (today + chrono::Days::new(400)).to_string();
        let check_out = (today + chrono::Days::new(403)).to_string();
        let reservation = json!({
            "room_id": rooms[0],
            "check_in": check_in,
            "check_out": check_out,
            "guests": 2,
            "payment": {"card_token": "tok_visa"},
        });
        let answer = server.post("/v1/reservations", &guest, &reservation).await;
        assert_eq!(answer.status, 202, "request a reservation: {}", answer.text);
        let reservation_id = answer.field("reservation_id").to_owned();
        // The id a review of that reservation would have (there is no review: the reply is a 404).
        let review_id = Uuid::new_v4().to_string();
        // Later stays for the fuzzed requests, so they do not all collide with the fixture's.
        let check_in = (today + chrono::Days::new(500)).to_string();
        let check_out = (today + chrono::Days::new(502)).to_string();
        let known = Known {
            room_id: rooms[0].clone(),
            spare_room_id: rooms[1].clone(),
            reservation_id,
            review_id,
            check_in,
            check_out,
        };
        let doc = server.get("/openapi.json").await.body;
        let documented = ROUTES
            .iter()
            .map(|route| {
                let method = route.method().as_str().to_ascii_lowercase();
                let responses = doc["paths"][route.path_template()][method.as_str()]["responses"].as_object().cloned();
                let statuses = responses.unwrap_or_default().keys().filter_map(|s| s.parse().ok()).collect();
                ((route.method(), route.path_template()), statuses)
            })
            .collect();
        Self { server, known, callers, documented, stale: std::cell::Cell::new(0) }
    }

    /// Whether the route's operation in the document lists the answer's status. Answers from
    /// outside the operation (another method, an unknown route) are not its to document.
    fn documents(&self, route: Route, case: &Case, answer: &Answer) -> Result<(), String> {
        let elsewhere =
            case.method != route.method() || ["route_not_found", "method_not_allowed"].contains(&answer.code());
        let statuses =
            self.documented.get(&(route.method(), route.path_template())).map(Vec::as_slice).unwrap_or_default();
        if elsewhere || statuses.contains(&answer.status) {
            return Ok(());
        }
        Err(format!("{} is not among the statuses the document lists for the route: {statuses:?}", answer.status))
    }

    async fn send(&self, case: &Case) -> Answer {
        let caller = &self.callers[case.caller % self.callers.len()];
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(value) = &caller.authorization {
            headers.push(("authorization", value));
        }
        if let Some(value) = case.content_type {
            headers.push(("content-type", value));
        }
        if let Some(value) = &case.idempotency_key {
            headers.push(("idempotency-key", value));
        }
        if let Some(value) = case.prefer {
            headers.push(("prefer", value));
        }
        self.server.send_raw(case.method.clone(), &case.path, None, case.body.clone(), &headers).await
    }

    /// Sends `case`; a request that gets no answer at all (the harness panics) is an error.
    async fn send_once(&self, case: &Case) -> Result<Answer, String> {
        use futures::FutureExt;
        std::panic::AssertUnwindSafe(self.send(case)).catch_unwind().await.map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .map(|s| clip(s.lines().next().unwrap_or(""), 300))
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the request panicked".to_owned())
        })
    }

    /// Sends `case`, once more if it got no answer: after the server refuses a large body without
    /// reading it, it closes that keep-alive connection without saying so (see
    /// `a_large_refused_body_does_not_break_the_next_request`), and the next request the client
    /// sends on it fails before reaching the server. That is counted in `stale`, and the case
    /// is judged on the second answer; no answer twice is a failure.
    async fn try_send(&self, case: &Case) -> Result<Answer, String> {
        match self.send_once(case).await {
            Ok(answer) => Ok(answer),
            Err(first) => {
                self.stale.set(self.stale.get() + 1);
                self.send_once(case).await.map_err(|second| format!("{first}; sent again: {second}"))
            }
        }
    }

    /// Whether the server process is still running (not exited, not a zombie).
    fn server_alive(&self) -> bool {
        if !std::path::Path::new("/proc/self/status").exists() {
            return true; // Not Linux: the requests themselves tell.
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.server.pid())).unwrap_or_default();
        !status.is_empty() && !status.lines().any(|l| l.starts_with("State:") && l.contains('Z'))
    }

    /// The request as text, for failure reports.
    fn describe(&self, case: &Case) -> String {
        let caller = &self.callers[case.caller % self.callers.len()];
        let mut text = format!("{} {}\n", case.method, clip(&case.path, 600));
        text += &format!("  caller: {} ({})\n", caller.label, clip(caller.authorization.as_deref().unwrap_or("-"), 80));
        text += &format!("  content-type: {:?}\n", case.content_type);
        text += &format!("  idempotency-key: {:?}\n", case.idempotency_key.as_deref().map(|k| clip(k, 80)));
        text += &format!("  prefer: {:?}\n", case.prefer);
        match &case.body {
            None => text += "  body: none\n",
            Some(body) => {
                text += &format!(
                    "  body ({} bytes): {}\n",
                    body.len(),
                    clip(&format!("{:?}", String::from_utf8_lossy(body)), 1500)
                );
            }
        }
        text
    }
}

/// The harness panics with the whole server log when a request gets no answer; the tests here
/// catch that panic and report it themselves, so print only its first line.
fn quiet_lost_requests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or("");
            if message.starts_with("request failed:") {
                eprintln!("(no answer: {})", message.lines().next().unwrap_or(""));
            } else {
                default(info);
            }
        }));
    });
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let head: String = text.chars().take(max).collect();
    format!("{head}… ({} chars in all)", text.chars().count())
}

/// The contract every answer keeps: no 5xx; a command's 2xx carries a position; anything else is
/// a problem. (A GET that the fuzzer sends now and then may reach a query route, whose 2xx is a read.)
fn verdict(method: &Method, answer: &Answer) -> Result<(), String> {
    if answer.status >= 500 {
        return Err(format!("a {} for a client's request", answer.status));
    }
    if (200..300).contains(&answer.status) {
        let read = *method == Method::GET || *method == Method::HEAD;
        if !read && answer.field("position").is_empty() {
            return Err("a 2xx command answer without a position".to_owned());
        }
        return Ok(());
    }
    if !answer.is_problem() {
        return Err(format!("a {} that is not a problem document", answer.status));
    }
    Ok(())
}

/// The distinct errors and panics in the server's log, without colours.
fn server_errors(server: &StayServer) -> String {
    let mut seen = std::collections::BTreeSet::new();
    for line in server.logs().lines() {
        let plain = strip_ansi(line);
        if !(plain.contains("ERROR") || plain.contains("panicked")) || plain.contains("on_failure") {
            continue;
        }
        let what = plain.find("error=").map_or(plain.as_str(), |at| &plain[at..]);
        seen.insert(clip(what, 300));
    }
    seen.into_iter().take(15).collect::<Vec<_>>().join("\n")
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the escape sequence (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn describe_answer(answer: &Answer) -> String {
    format!("{} content-type={:?} body={}", answer.status, answer.header("content-type"), clip(&answer.text, 1500))
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Case {
    method: Method,
    path: String,
    caller: usize,
    body: Option<Vec<u8>>,
    content_type: Option<&'static str>,
    idempotency_key: Option<String>,
    prefer: Option<&'static str>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = self.body.as_ref().map(|b| clip(&format!("{:?}", String::from_utf8_lossy(b)), 1500));
        f.debug_struct("Case")
            .field("method", &self.method)
            .field("path", &clip(&self.path, 600))
            .field("caller", &self.caller)
            .field("content_type", &self.content_type)
            .field("idempotency_key", &self.idempotency_key.as_deref().map(|k| clip(k, 80)))
            .field("prefer", &self.prefer)
            .field("body", &body)
            .finish()
    }
}

/// Texts that have broken servers before.
const NASTY_STRINGS: &[&str] = &[
    "",
    " ",
    "\u{0}",
    "a\u{0}b",
    "\u{202e}gnp.exe\u{200f}",
    "\u{200b}\u{200c}\u{200d}\u{2060}",
    "\u{feff}BOM",
    "👩\u{200d}👩\u{200d}👧\u{200d}👦",
    "🏳️\u{200d}🌈",
    "e\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}",
    "\u{10ffff}\u{fffe}\u{ffff}",
    "\u{85}\u{a0}\u{3000}\t\r\n",
    "\u{1b}[31mred\u{1b}[0m",
    "Robert'); DROP TABLE events;--",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "${jndi:ldap://x}",
    "%s%s%n",
    "../../etc/passwd",
    "null",
    "NaN",
    "-0",
    "9223372036854775808",
    "USD",
    "usd",
    "XXX",
    "US",
    "EURO",
    "\u{0}USD",
    "tok_visa",
    "tok_declined",
    "tok_error",
    "tok_insufficient_funds",
    "2030-02-30",
    "0000-01-01",
    "9999-12-31",
    "+262142-12-31",
    "-0001-01-01",
    "2030-1-1",
    "2030-01-01T00:00:00Z",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "not-a-uuid",
];

/// Raw JSON texts for one field's value, many of them not JSON at all.
const RAW_VALUES: &[&[u8]] = &[
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"-1e308",
    b"1.7976931348623157e308",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"123456789012345678901234567890",
    b"-0",
    b"0.5",
    b"1.0",
    b"1e2",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"0x10",
    b"01",
    b"+1",
    b"1.",
    b".5",
    b"true",
    b"null",
    b"[]",
    b"{}",
    b"\"\\ud800\"",
    b"\"\\udc00\\ud800\"",
    b"\"\\ud83d\\ude00\"",
    b"\"\\ud83d\"",
    b"\"a\\u0000b\"",
    b"\"\\u0000\"",
    b"\"\\u202e\\u200f\"",
    b"\"\\x41\"",
    b"\"\xff\xfe\"",
    b"\"\xed\xa0\x80\"",
    b"\"\xc0\x80\"",
    b"\"\xf0\x9f\x98\x80\"",
    b"\"\x01\"",
    b"\"tab\there\"",
    b"'single'",
    b"\"unterminated",
    b"",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
];

/// Whole bodies that are not (quite) JSON documents.
const RAW_BODIES: &[&[u8]] = &[
    b"",
    b" ",
    b"{",
    b"}",
    b"null",
    b"[]",
    b"\"\"",
    b"0",
    b"\xef\xbb\xbf{}",
    b"{} {}",
    b"{}\0",
    b"{}garbage",
    b"\xff\xfe{\0}\0",
    b"{\"\\u0000\":1}",
    b"{\"\xff\":1}",
    b"{'name': 'single quotes'}",
    b"{name: 1}",
    b"{\"name\":\"a\",\"name\":\"b\"}",
    b"{\"comment\":\"x\",}",
    b"<xml/>",
    b"name=x&address=y",
    b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--x--\r\n",
];

/// Path segments that are not ids (already in URL form).
const NASTY_SEGMENTS: &[&str] = &[
    "not-a-uuid",
    "%00",
    "%FF%FE",
    "%C0%80",
    "%ED%A0%80",
    "%F0%9F%98%80",
    "%E2%80%AE",
    "%",
    "%G0",
    "%%",
    "a%",
    "%2F",
    "%252F",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "..",
    ".",
    "%20",
    "%0A",
    "%0D%0A",
    "%09",
    ";",
    "@",
    ":",
    "~",
    "!$&'()*+,;=",
    "%22%3Cscript%3E",
    "null",
    "0",
    "-1",
    "1e400",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "00000000-0000-0000-0000-00000000000g",
    "00000000000000000000000000000000",
    "%7B00000000-0000-0000-0000-000000000000%7D",
    "urn:uuid:00000000-0000-0000-0000-000000000000",
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=utf-16",
    "APPLICATION/JSON",
    "application/problem+json",
    "application/merge-patch+json",
    "application/vnd.stay+json; version=9",
    "application/json;;;",
    "application/json; charset=\"",
    "application/jsonx",
    "text/json",
    "text/plain",
    "text/html; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "*/*",
    "",
    ";",
    "json",
];

/// `Prefer` values; none asks for a long wait, so the fuzzing stays fast once `Prefer: wait` works.
const PREFERS: &[&str] =
    &["wait=1", "wait=0", "wait=-1", "wait=abc", "wait=0.5", "wait=1, handling=strict", "respond-async", ""];

/// Percent-encodes every byte that is not unreserved.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

fn odd_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "[a-zA-Z0-9 _-]{0,24}",
        3 => select(NASTY_STRINGS).prop_map(str::to_owned),
        1 => "\\PC{0,40}",
        1 => (select(&["a", "é", "😀", "\u{0}", " ", "\u{202e}", "\"", "\\"][..]), 0usize..3000)
            .prop_map(|(s, n)| s.repeat(n)),
    ]
    .boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(&[0_i64, 1, -1, 2, 5, 6, 16, 17, 100, i64::MAX, i64::MIN][..]).prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        select(&[-1e308, 1e308, f64::MIN_POSITIVE, -0.0, 0.5, 1.5, 4.999_999_999][..])
            .prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        odd_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((odd_string(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
    .boxed()
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Sets the field at this index of the route's fields.
    Set(usize, Value),
    /// Removes that field.
    Remove(usize),
    /// Adds a field that does not exist.
    Extra(String, Value),
}

fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        4 => (any::<usize>(), json_value()).prop_map(|(i, v)| Mutation::Set(i, v)),
        2 => (any::<usize>(), odd_string()).prop_map(|(i, s)| Mutation::Set(i, Value::String(s))),
        2 => any::<usize>().prop_map(Mutation::Remove),
        1 => (odd_string(), json_value()).prop_map(|(k, v)| Mutation::Extra(k, v)),
    ]
    .boxed()
}

/// Splits a JSON pointer into its parent's pointer and its last key.
fn split_pointer(pointer: &str) -> (&str, &str) {
    let at = pointer.rfind('/').unwrap_or(0);
    (&pointer[..at], &pointer[at + 1..])
}

fn apply(mut body: Value, fields: &[&str], mutations: &[Mutation]) -> Value {
    for mutation in mutations {
        match mutation {
            Mutation::Set(i, value) if !fields.is_empty() => {
                let (parent, key) = split_pointer(fields[i % fields.len()]);
                if let Some(Value::Object(map)) = body.pointer_mut(parent) {
                    map.insert(key.to_owned(), value.clone());
                }
            }
            Mutation::Remove(i) if !fields.is_empty() => {
                let (parent, key) = split_pointer(fields[i % fields.len()]);
                if let Some(Value::Object(map)) = body.pointer_mut(parent) {
                    map.remove(key);
                }
            }
            Mutation::Set(_, value) | Mutation::Extra(_, value) => {
                let key = match mutation {
                    Mutation::Extra(key, _) => key.clone(),
                    _ => "extra".to_owned(),
                };
                if let Value::Object(map) = &mut body {
                    map.insert(key, value.clone());
                }
            }
            Mutation::Remove(_) => {}
        }
    }
    body
}

/// The template with one field's value replaced by raw text (often not JSON).
fn with_raw_field(template: &Value, fields: &[&str], index: usize, raw: &[u8]) -> Vec<u8> {
    const MARK: &str = "@@raw-value@@";
    let mut body = template.clone();
    let target = if fields.is_empty() { "/extra" } else { fields[index % fields.len()] };
    let (parent, key) = split_pointer(target);
    if let Some(Value::Object(map)) = body.pointer_mut(parent) {
        map.insert(key.to_owned(), Value::String(MARK.to_owned()));
    }
    let text = body.to_string();
    let quoted = format!("\"{MARK}\"");
    let Some(at) = text.find(&quoted) else { return text.into_bytes() };
    let mut bytes = text.as_bytes()[..at].to_vec();
    bytes.extend_from_slice(raw);
    bytes.extend_from_slice(&text.as_bytes()[at + quoted.len()..]);
    bytes
}

fn body_strategy(template: Value, fields: &'static [&'static str]) -> BoxedStrategy<Option<Vec<u8>>> {
    let to_bytes = |value: Value| Some(serde_json::to_vec(&value).expect("JSON"));
    let (t1, t2, t3) = (template.clone(), template.clone(), template);
    prop_oneof![
        1 => Just(None),
        5 => prop::collection::vec(mutation(), 0..3).prop_map(move |m| to_bytes(apply(t1.clone(), fields, &m))),
        2 => json_value().prop_map(to_bytes),
        3 => (any::<usize>(), select(RAW_VALUES)).prop_map(move |(i, raw)| Some(with_raw_field(&t2, fields, i, raw))),
        1 => select(RAW_BODIES).prop_map(|raw| Some(raw.to_vec())),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Some),
        1 => (any::<usize>(), select(&["a", "é", "😀", "\u{0}", " "][..]), 0usize..90_000).prop_map(move |(i, s, n)| {
            let body = apply(t3.clone(), fields, &[Mutation::Set(i, Value::String(s.repeat(n)))]);
            Some(serde_json::to_vec(&body).expect("JSON"))
        }),
        1 => (1usize..20_000).prop_map(|n| Some(format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes())),
    ]
    .boxed()
}

fn id_strategy(known: Vec<String>) -> BoxedStrategy<String> {
    let variants = known.clone();
    prop_oneof![
        5 => select(known),
        2 => any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        2 => any::<String>().prop_map(|s| percent_encode(s.as_bytes())),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| percent_encode(&b)),
        3 => select(NASTY_SEGMENTS).prop_map(str::to_owned),
        1 => (1usize..8_000).prop_map(|n| "a".repeat(n)),
        2 => (select(variants), 0usize..7).prop_map(|(id, how)| match how {
            0 => id.to_uppercase(),
            1 => format!("%7B{id}%7D"),
            2 => id.replace('-', ""),
            3 => format!("{id}%00"),
            4 => format!("%20{id}"),
            5 => format!("{id}/"),
            _ => format!("urn:uuid:{id}"),
        }),
    ]
    .boxed()
}

fn query_strategy() -> BoxedStrategy<String> {
    prop_oneof![
        8 => Just(String::new()),
        1 => any::<String>().prop_map(|s| format!("?q={}", percent_encode(s.as_bytes()))),
        1 => select(&["?", "?&&&", "?min_position=%FF", "?wait_ms=-1", "?a=1&a=2&a", "?%00=%00"][..]).prop_map(str::to_owned),
    ]
    .boxed()
}

fn key_strategy() -> BoxedStrategy<Option<String>> {
    prop_oneof![
        6 => Just(None),
        3 => "[A-Za-z0-9-]{1,40}".prop_map(Some),
        // Reused across requests of every route: replays, or `idempotency_key_reused`.
        1 => select(&["fuzz-key-1", "fuzz-key-2"][..]).prop_map(|k| Some(k.to_owned())),
        1 => select(&["", " ", "  a  ", "a\tb", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"][..]).prop_map(|k| Some(k.to_owned())),
        1 => (195usize..210).prop_map(|n| Some("k".repeat(n))),
        1 => (1usize..8_000).prop_map(|n| Some("x".repeat(n))),
    ]
    .boxed()
}

fn case_strategy(route: Route, known: &Known, callers: usize) -> BoxedStrategy<Case> {
    // Other methods too, but DELETE only where it cannot delist the room most requests aim at.
    let mut others = vec![Method::GET, Method::PUT, Method::POST, Method::PATCH, Method::OPTIONS];
    if route != Route::ChangeRoom {
        others.push(Method::DELETE);
    }
    let method = prop_oneof![12 => Just(route.method()), 1 => select(others)];
    let path = if route.has_id() {
        (id_strategy(route.known_ids(known)), query_strategy()).prop_map(move |(id, q)| route.path(&id) + &q).boxed()
    } else {
        query_strategy().prop_map(move |q| route.path("") + &q).boxed()
    };
    let caller = prop_oneof![3 => Just(route.right_caller()), 2 => 0..callers];
    let content_type = prop_oneof![6 => Just(None), 1 => select(CONTENT_TYPES).prop_map(Some)];
    let prefer = prop_oneof![6 => Just(None), 1 => select(PREFERS).prop_map(Some)];
    (method, path, caller, body_strategy(route.template(known), route.fields()), content_type, key_strategy(), prefer)
        .prop_map(|(method, path, caller, body, content_type, idempotency_key, prefer)| Case {
            method,
            path,
            caller,
            body,
            content_type,
            idempotency_key,
            prefer,
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// The property
// ---------------------------------------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Cases per route: `STAY_FUZZ_CASES` or the given default.
fn cases(default: u32) -> u32 {
    std::env::var("STAY_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn fuzz_every_route(backend: Backend, cases_per_route: u32) {
    let runtime = runtime();
    let fixture = runtime.block_on(Fixture::start(backend));
    let started = Instant::now();
    let mut failures = Vec::new();
    let tally = std::cell::RefCell::new(std::collections::BTreeMap::<(usize, u16, String), u32>::new());
    for route in ROUTES {
        let config = Config {
            cases: cases_per_route,
            failure_persistence: None,
            max_shrink_iters: 300,
            max_shrink_time: 30_000,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let strategy = case_strategy(route, &fixture.known, fixture.callers.len());
        let result = runner.run(&strategy, |case| {
            if !fixture.server_alive() {
                // Shrinking against a dead server means nothing: keep the case that killed it.
                return Ok(());
            }
            *tally.borrow_mut().entry((route as usize, 0, String::new())).or_insert(0) += 1;
            let answer = match runtime.block_on(fixture.try_send(&case)) {
                Ok(answer) => answer,
                Err(why) => {
                    return Err(TestCaseError::fail(format!(
                        "no answer ({why}); server process alive: {}\n{}",
                        fixture.server_alive(),
                        fixture.describe(&case)
                    )))
                }
            };
            *tally.borrow_mut().entry((route as usize, answer.status, answer.code().to_owned())).or_insert(0) += 1;
            verdict(&case.method, &answer).and_then(|()| fixture.documents(route, &case, &answer)).map_err(|why| {
                TestCaseError::fail(format!("{why}\n{}  answer: {}", fixture.describe(&case), describe_answer(&answer)))
            })
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, case)) => {
                failures.push(format!("{route:?}: {why}\n  minimal case: {}", fixture.describe(&case)));
            }
            Err(TestError::Abort(why)) => failures.push(format!("{route:?}: aborted: {why}")),
        }
    }
    eprintln!(
        "fuzzed {} routes × {cases_per_route} cases in {:?}; {} sent again after meeting a closed connection",
        ROUTES.len(),
        started.elapsed(),
        fixture.stale.get()
    );
    for route in ROUTES {
        let counts: Vec<String> = tally
            .borrow()
            .iter()
            .filter(|((r, _, _), _)| *r == route as usize)
            .map(|((_, status, code), n)| match (status, code.as_str()) {
                (0, _) => format!("sent {n}:"),
                (_, "") => format!("{status}×{n}"),
                _ => format!("{status} {code}×{n}"),
            })
            .collect();
        eprintln!("  {route:?}: {}", counts.join(" "));
    }
    if !fixture.server_alive() {
        failures.push(format!("the server died:\n{}", fixture.server.logs()));
    }
    assert!(
        failures.is_empty(),
        "the command API broke its contract on {} route(s):\n\n{}\n\nwhat the server logged (distinct errors):\n{}",
        failures.len(),
        failures.join("\n\n"),
        server_errors(&fixture.server)
    );
}

#[test]
fn every_command_route_survives_fuzzed_requests_on_sqlite() {
    fuzz_every_route(Backend::Sqlite, cases(1000));
}

#[test]
fn every_command_route_survives_fuzzed_requests_on_postgres() {
    fuzz_every_route(Backend::Postgres, cases(300));
}

// ---------------------------------------------------------------------------------------------
// Hand-picked nasty inputs
// ---------------------------------------------------------------------------------------------

/// A fixed list of nasty requests for `route`.
fn hand_picked(route: Route, known: &Known, callers: &[Caller]) -> Vec<Case> {
    let template = route.template(known);
    let fields = route.fields();
    let id = route.known_ids(known)[0].clone();
    let valid = serde_json::to_vec(&template).expect("JSON");
    let base = Case {
        method: route.method(),
        path: route.path(&id),
        caller: route.right_caller(),
        body: Some(valid.clone()),
        content_type: None,
        idempotency_key: None,
        prefer: None,
    };
    let mut cases = Vec::new();
    let mut push = |change: &dyn Fn(&mut Case)| {
        let mut case = base.clone();
        change(&mut case);
        cases.push(case);
    };

    // Every caller, good and bad, with a valid body.
    for caller in 0..callers.len() {
        push(&|c| c.caller = caller);
    }
    // Every field set to every raw value, and to every nasty string.
    for index in 0..fields.len().max(1) {
        for raw in RAW_VALUES {
            push(&|c| c.body = Some(with_raw_field(&template, fields, index, raw)));
        }
        for text in NASTY_STRINGS {
            let body = apply(template.clone(), fields, &[Mutation::Set(index, Value::String((*text).to_owned()))]);
            push(&|c| c.body = Some(serde_json::to_vec(&body).expect("JSON")));
        }
        for value in
            [json!(null), json!([]), json!({}), json!(true), json!(-1), json!(1.5), json!(u64::MAX), json!(-1e308)]
        {
            let body = apply(template.clone(), fields, &[Mutation::Set(index, value)]);
            push(&|c| c.body = Some(serde_json::to_vec(&body).expect("JSON")));
        }
        let body = apply(template.clone(), fields, &[Mutation::Remove(index)]);
        push(&|c| c.body = Some(serde_json::to_vec(&body).expect("JSON")));
        for n in [2_000, 2_001, 10_000, 70_000] {
            let body = apply(template.clone(), fields, &[Mutation::Set(index, Value::String("\u{0}".repeat(n)))]);
            push(&|c| c.body = Some(serde_json::to_vec(&body).expect("JSON")));
        }
    }
    // Whole bodies that are not JSON, none at all, or too large.
    for raw in RAW_BODIES {
        push(&|c| c.body = Some(raw.to_vec()));
    }
    push(&|c| c.body = None);
    push(&|c| c.body = Some(b"[".repeat(100_000)));
    push(&|c| c.body = Some(format!("{}{}", "{\"a\":".repeat(5_000), "}".repeat(5_000)).into_bytes()));
    push(&|c| c.body = Some(vec![b' '; 64 * 1024 + 1]));
    push(&|c| c.body = Some(vec![0xff; 1024 * 1024]));
    // Odd content types, with the valid body.
    for content_type in CONTENT_TYPES {
        push(&|c| c.content_type = Some(content_type));
    }
    // Odd idempotency keys, and one key reused for a different body.
    for key in
        ["", " ", "a\tb", &"k".repeat(200), &"k".repeat(201), &"x".repeat(8_000), "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"]
    {
        push(&|c| c.idempotency_key = Some(key.to_owned()));
    }
    let reused = format!("hand-picked-{route:?}");
    push(&|c| c.idempotency_key = Some(reused.clone()));
    push(&|c| {
        c.idempotency_key = Some(reused.clone());
        c.body = Some(b"{\"different\":true}".to_vec());
    });
    push(&|c| {
        c.idempotency_key = Some(reused.clone());
        c.caller = 7; // another caller (a sub with NUL) under the same key
    });
    for prefer in PREFERS {
        push(&|c| c.prefer = Some(prefer));
    }
    // Bad ids in the path.
    if route.has_id() {
        let long = "a".repeat(60_000);
        let uuid = known.room_id.clone();
        let segments = NASTY_SEGMENTS.iter().map(|s| (*s).to_owned()).chain([
            long,
            Uuid::new_v4().to_string(),
            uuid.to_uppercase(),
            format!("{uuid}%00"),
            percent_encode("\u{202e}👩\u{200d}👦\u{0}".as_bytes()),
            percent_encode(&[0xed, 0xa0, 0x80]),
        ]);
        for segment in segments {
            push(&|c| c.path = route.path(&segment));
        }
    }
    // Other methods on the route (DELETE only where it cannot delist the room the later routes use).
    for method in [Method::GET, Method::PUT, Method::OPTIONS, Method::POST, Method::PATCH, Method::DELETE] {
        if method == Method::DELETE && route == Route::ChangeRoom {
            continue;
        }
        push(&|c| c.method = method.clone());
    }
    cases
}

async fn hand_picked_nasty_inputs(backend: Backend) {
    let fixture = Fixture::start(backend).await;
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut sent = 0;
    for route in ROUTES {
        for case in hand_picked(route, &fixture.known, &fixture.callers) {
            sent += 1;
            let answer = match fixture.try_send(&case).await {
                Ok(answer) => answer,
                Err(why) => {
                    failures.push(format!("{route:?}: no answer ({why})\n{}", fixture.describe(&case)));
                    continue;
                }
            };
            if let Err(why) = verdict(&case.method, &answer).and_then(|()| fixture.documents(route, &case, &answer)) {
                failures.push(format!(
                    "{route:?}: {why}\n{}  answer: {}",
                    fixture.describe(&case),
                    describe_answer(&answer)
                ));
            }
        }
    }
    eprintln!(
        "sent {sent} hand-picked requests in {:?}; {} sent again after meeting a closed connection",
        started.elapsed(),
        fixture.stale.get()
    );
    let shown: Vec<&String> = failures.iter().take(25).collect();
    assert!(
        failures.is_empty(),
        "{} of {sent} hand-picked requests broke the contract (first {}):\n\n{}\n\nwhat the server logged (distinct errors):\n{}",
        failures.len(),
        shown.len(),
        shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n\n"),
        server_errors(&fixture.server)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_picked_nasty_inputs_on_sqlite() {
    hand_picked_nasty_inputs(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_picked_nasty_inputs_on_postgres() {
    hand_picked_nasty_inputs(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// The connection after a refused large body
// ---------------------------------------------------------------------------------------------

/// A request refused before its body is read (no token: 401; too large: 413) must not leave the
/// client a keep-alive connection the server has silently closed: the client's next request on it
/// would fail without reaching the server. (Either read the body or answer `Connection: close`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_refused_body_does_not_break_the_next_request() {
    let fixture = Fixture::start(Backend::Sqlite).await;
    let big = Case {
        method: Method::POST,
        path: "/v1/rooms".to_owned(),
        caller: 12, // no token
        body: Some(vec![b'x'; 300 * 1024]),
        content_type: None,
        idempotency_key: None,
        prefer: None,
    };
    let small = Case { body: Some(b"{}".to_vec()), ..big.clone() };
    let too_large = Case { caller: HOST_OWNER, ..big.clone() };
    let mut broken = Vec::new();
    for round in 0..20 {
        for first in [&big, &too_large] {
            let refusal = fixture.send_once(first).await;
            let next = fixture.send_once(&small).await;
            if let Err(why) = next {
                let status = refusal.as_ref().map_or(0, |a| a.status);
                let close = refusal.as_ref().map_or("", |a| a.header("connection")).to_owned();
                broken.push(format!(
                    "round {round}: after a {status} (Connection: {close:?}) to a {} KiB body from {}, \
                     the next request got no answer: {why}",
                    first.body.as_ref().map_or(0, Vec::len) / 1024,
                    fixture.callers[first.caller].label
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "{} of 40 requests after a refused large body failed:\n{}",
        broken.len(),
        broken.join("\n")
    );
}
