//! How the operator commands (`stay saga`, `stay events`) reach a running server: its URL, and an
//! admin token signed with the server's secret (configured, or kept in its data directory).

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use stay_domain::UserId;
use stay_http::{JwtKeys, Role};

use crate::settings::SecretArgs;

/// How long a command's admin token lives: a token per request, so a follower that runs for hours
/// never holds an expired one.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// Where the server is and how to sign in.
#[derive(Debug, Args)]
pub struct AdminServer {
    /// The running server.
    #[arg(long, env = "STAY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// The server's data directory (for its token secret).
    #[arg(long, env = "STAY_DATA_DIR", default_value = "./stay-data")]
    pub data_dir: std::path::PathBuf,

    #[command(flatten)]
    pub secret: SecretArgs,

    /// Machine-readable output (the routes' JSON).
    #[arg(long)]
    pub json: bool,
}

impl AdminServer {
    /// Sends `method path?query` as an admin; answers the status and the JSON body (`Null` when
    /// the body is not JSON).
    pub async fn send(
        &self,
        client: &reqwest::Client,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, Value)> {
        let keys = JwtKeys::new(&self.secret.secret(&self.data_dir)?);
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let user = UserId::new("stay-cli").map_err(|e| anyhow::anyhow!("{e}"))?;
        let token = keys.sign(&user, Role::Admin, TOKEN_LIFETIME, now)?;
        let response = client
            .request(method, format!("{}{path}", self.url.trim_end_matches('/')))
            .query(query)
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("is stay serve running at {}?", self.url))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Sends as [`send`](Self::send) does; anything but success is an error naming the problem.
    pub async fn send_ok(
        &self,
        client: &reqwest::Client,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let (status, body) = self.send(client, method, path, query).await?;
        if !status.is_success() {
            bail!("{}", problem(status, &body));
        }
        Ok(body)
    }
}

/// A problem document as one line: `code: detail`.
pub fn problem(status: StatusCode, body: &Value) -> String {
    format!("{}: {}", body["code"].as_str().unwrap_or(status.as_str()), body["detail"].as_str().unwrap_or(""))
}
