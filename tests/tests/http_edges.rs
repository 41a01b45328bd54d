//! What a client sees on the connection itself when `stay serve` refuses a request: an oversized
//! body written in full before the client reads, a huge header section, and a refusal after a
//! body read in full. Raw TCP, so nothing between the test and the server hides what happens.

use serde_json::json;
use stay_tests::{Backend, RawAnswer, RawConnection, StayServer};

fn post_head(address: &str, path: &str, token: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

fn get_head(address: &str, path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{extra}\r\n")
}

/// Writes the whole request, then reads the answer: what Python's urllib and requests do. It is
/// written in pieces of 64 KiB a millisecond apart, as over a network rather than in one go into
/// the loopback's large buffers, so that a server that closes early does so while it is sent.
fn send_whole_then_read(server: &StayServer, request: &[u8]) -> RawAnswer {
    let mut connection = RawConnection::open(server.url()).expect("connect");
    for piece in request.chunks(64 * 1024) {
        if let Err(err) = connection.write_all(piece) {
            panic!("the server broke the connection while the request was being sent: {err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    connection.read_answer().unwrap_or_else(|err| panic!("no answer after the whole request was sent: {err}"))
}

/// A body of `length` bytes, valid JSON all through (one long string), so only its size is wrong.
fn big_json(length: usize) -> Vec<u8> {
    let mut body = b"{\"name\":\"".to_vec();
    body.resize(length - 2, b'x');
    body.extend_from_slice(b"\"}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_writes_a_1_mb_and_a_3_mb_body_first_reads_the_413_problem_document() {
    let server = StayServer::start(Backend::Sqlite).await;
    let host = server.token("host-1", "host");
    let guest = server.token("guest-1", "guest");
    let address = server.url().trim_start_matches("http://").to_owned();
    for length in [1_000_000, 1 << 20, 3_000_000, 3 << 20] {
        for (path, token) in [("/v1/rooms", &host), ("/v1/reservations", &guest)] {
            let mut request = post_head(&address, path, token, length).into_bytes();
            request.extend_from_slice(&big_json(length));
            let answer = tokio::task::block_in_place(|| send_whole_then_read(&server, &request));
            assert_eq!(answer.status, 413, "{path}, {length} bytes: {answer:?}");
            assert!(answer.is_problem("body_too_large"), "{path}, {length} bytes: {answer:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_3_mb_body_gets_its_413_and_the_connection_carries_the_next_request() {
    let server = StayServer::start(Backend::Sqlite).await;
    let host = server.token("host-1", "host");
    let address = server.url().trim_start_matches("http://").to_owned();
    let mut request = format!(
        "POST /v1/rooms HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {host}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for chunk in big_json(3 << 20).chunks(64 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    tokio::task::block_in_place(|| {
        let mut connection = RawConnection::open(server.url()).expect("connect");
        connection.write_all(&request).expect("the whole body is taken");
        let refused = connection.read_answer().expect("an answer");
        assert!(refused.status == 413 && refused.is_problem("body_too_large"), "{refused:?}");
        assert_ne!(refused.header("connection"), "close", "the body was drained: {refused:?}");
        connection.write_all(get_head(&address, "/healthz", "").as_bytes()).expect("write");
        assert_eq!(connection.read_answer().expect("the next answer").status, 200);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_header_section_gets_a_431_problem_document() {
    let server = StayServer::start(Backend::Sqlite).await;
    let address = server.url().trim_start_matches("http://").to_owned();
    tokio::task::block_in_place(|| {
        // One huge field, past hyper's old buffer (about 408 KiB) and Stay's bound (400 KiB).
        for size in [500_000, 1_000_000] {
            let field = format!("X-Padding: {}\r\n", "p".repeat(size));
            let answer = send_whole_then_read(&server, get_head(&address, "/v1/rooms", &field).as_bytes());
            assert_eq!(answer.status, 431, "{size} bytes: {answer:?}");
            assert!(answer.is_problem("headers_too_large"), "{size} bytes: {answer:?}");
        }
        // Many small fields, past hyper's old count (100).
        let fields: String = (0..150).map(|n| format!("X-Field-{n}: {n}\r\n")).collect();
        let answer = send_whole_then_read(&server, get_head(&address, "/v1/rooms", &fields).as_bytes());
        assert_eq!(answer.status, 431, "{answer:?}");
        assert!(answer.is_problem("headers_too_large"), "{answer:?}");

        // What was accepted before still is: a large header within the bound.
        let field = format!("X-Padding: {}\r\n", "p".repeat(200_000));
        let answer = send_whole_then_read(&server, get_head(&address, "/healthz", &field).as_bytes());
        assert_eq!(answer.status, 200, "{answer:?}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_after_a_body_read_in_full_keeps_the_connection_open() {
    let server = StayServer::start(Backend::Sqlite).await;
    let host = server.token("host-1", "host");
    let address = server.url().trim_start_matches("http://").to_owned();
    let room = |name: &str| {
        serde_json::to_vec(&json!({
            "name": name,
            "address": "2 Harbour Road",
            "nightly_price": {"amount_minor": 9900, "currency": "EUR"},
            "capacity": 3
        }))
        .expect("JSON")
    };
    let invalid = serde_json::to_vec(&json!({"name": "Loft", "capacity": "three"})).expect("JSON");
    let with_key = |body: &[u8]| {
        let mut request = format!(
            "POST /v1/rooms HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {host}\r\n\
             Content-Type: application/json\r\nIdempotency-Key: loft-1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    };
    tokio::task::block_in_place(|| {
        let mut connection = RawConnection::open(server.url()).expect("connect");
        let mut exchange = |request: &[u8]| {
            connection.write_all(request).expect("write");
            connection.read_answer().expect("an answer on the same connection")
        };

        let mut request = post_head(&address, "/v1/rooms", &host, invalid.len()).into_bytes();
        request.extend_from_slice(&invalid);
        let refused = exchange(&request);
        assert_eq!(refused.status, 422, "{refused:?}");
        assert_ne!(refused.header("connection"), "close", "{refused:?}");

        assert_eq!(exchange(&with_key(&room("Loft"))).status, 201);
        // The same key with another body: 422 `idempotency_key_reused`, body read in full.
        let reused = exchange(&with_key(&room("Attic")));
        assert!(reused.status == 422 && reused.is_problem("idempotency_key_reused"), "{reused:?}");
        assert_ne!(reused.header("connection"), "close", "{reused:?}");

        let next = exchange(get_head(&address, "/healthz", "").as_bytes());
        assert_eq!(next.status, 200, "{next:?}");
    });
}
