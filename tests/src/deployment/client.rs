//! Talking to a started deployment as its users would: a token from `stay token` run in a
//! service's own environment, JSON requests to the ports it publishes, and one reservation booked
//! end to end.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::Deployment;
use crate::bodies::{day, room_body};

impl Deployment {
    /// A token from `stay token` run in `service`'s environment (`docker compose run --rm SERVICE
    /// token …`, `kubectl exec deploy/SERVICE -- stay token …`): signed with that service's secret.
    pub fn token(&self, service: &str, sub: &str, role: &str) -> String {
        let output = self.run(service, &["token", "--sub", sub, "--role", role]);
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(output.status.success() && !text.is_empty(), "stay token: {}", String::from_utf8_lossy(&output.stderr));
        text
    }
}

impl Deployment {
    /// Registers a room through `commands` (tokens signed in `signer`'s environment), reserves it
    /// with a card that is charged, waits for the saga to confirm it, and checks through `queries`
    /// that roomview shows the confirmed stay and its charge.
    pub async fn reservation_confirmed_and_in_roomview(&self, signer: &str, commands: &str, queries: &str) {
        let host = self.token(signer, "host-1", "host");
        let guest = self.token(signer, "guest-1", "guest");
        let (status, room) =
            send(Method::POST, &format!("{commands}/v1/rooms"), Some(&host), Some(&room_body()), &[]).await;
        assert_eq!(status, 201, "{room}\n{}", self.logs());
        let room_id = room["room_id"].as_str().expect("room_id").to_owned();

        let body = json!({"room_id": room_id, "check_in": day(9), "check_out": day(11), "guests": 2, "payment": {"card_token": "tok_visa"}});
        let headers = [("prefer", "wait=10")];
        let (status, reserved) =
            send(Method::POST, &format!("{commands}/v1/reservations"), Some(&guest), Some(&body), &headers).await;
        assert!(status == 200 || status == 202, "{status} {reserved}\n{}", self.logs());
        let id = reserved["reservation_id"].as_str().expect("reservation_id").to_owned();
        let mut position = reserved["position"].as_str().unwrap_or("0").to_owned();

        // The saga (another process, calling the payment provider) confirms it; the projector (a
        // third) writes it where the query API reads.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let url = format!("{queries}/v1/reservations/{id}?min_position={position}&wait_ms=5000");
            let (status, view) = send(Method::GET, &url, Some(&guest), None, &[]).await;
            if status == 200 && view["status"] == "confirmed" {
                position = view["position"].as_str().unwrap_or(&position).to_owned();
                break;
            }
            assert!(Instant::now() < deadline, "never confirmed: {status} {view}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let url = format!("{queries}/v1/rooms/{room_id}?min_position={position}&wait_ms=15000");
        let (status, view) = send(Method::GET, &url, None, None, &[]).await;
        assert_eq!(status, 200, "{view}\n{}", self.logs());
        assert_eq!(view["reservations"]["confirmed"], 1, "{view}");
        assert_eq!(view["payments"]["charged"]["amount_minor"], 24_000, "{view}");
    }
}

/// Sends a request with an optional bearer token, JSON body and extra headers; answers the status
/// and the body as JSON (a string when it is not JSON).
pub async fn send(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}
