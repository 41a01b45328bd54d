//! Talking to a started deployment as its users would: a token from `stay token` run in a
//! service's own environment, and JSON requests to the ports it publishes.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::Deployment;

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
