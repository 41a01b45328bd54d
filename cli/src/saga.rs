//! `stay saga ls|show|retry|skip`: saga debugging from the command line, through a running server's
//! admin routes (with an admin token signed by the server's secret).

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;
use stay_domain::UserId;
use stay_http::{JwtKeys, Role};

use crate::output;
use crate::settings::SecretArgs;

/// Arguments of `stay saga`.
#[derive(Debug, Args)]
pub struct SagaArgs {
    #[command(subcommand)]
    command: SagaCommand,
}

/// Where the server is and how to sign in.
#[derive(Debug, Args)]
struct Server {
    /// The running server.
    #[arg(long, env = "STAY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,

    /// The server's data directory (for its token secret).
    #[arg(long, env = "STAY_DATA_DIR", default_value = "./stay-data")]
    data_dir: std::path::PathBuf,

    #[command(flatten)]
    secret: SecretArgs,

    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum SagaCommand {
    /// Sagas, newest change first.
    Ls {
        /// Only this status: running, completed, compensated or parked.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// One saga's timeline: every step, outcome, retry, deadline and compensation.
    Show {
        /// The saga (its reservation's id).
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// Try a parked saga's step again.
    Retry {
        /// The saga.
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// Give a parked saga's step up (a compensation step counts as done; a forward step rejects).
    Skip {
        /// The saga.
        id: String,
        #[command(flatten)]
        server: Server,
    },
}

impl Server {
    async fn call(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        let keys = JwtKeys::new(&self.secret.secret(&self.data_dir)?);
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let user = UserId::new("stay-cli").map_err(|e| anyhow::anyhow!("{e}"))?;
        let token = keys.sign(&user, Role::Admin, Duration::from_secs(300), now)?;
        let response = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("is stay serve running at {}?", self.url))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{}: {}", body["code"].as_str().unwrap_or(status.as_str()), body["detail"].as_str().unwrap_or(""));
        }
        Ok(body)
    }
}

/// Runs `stay saga`.
#[allow(clippy::print_stdout)] // the command's own output
pub async fn run(args: SagaArgs) -> anyhow::Result<()> {
    match args.command {
        SagaCommand::Ls { status, server } => {
            let query = status.map(|s| format!("?status={s}")).unwrap_or_default();
            let list = server.call(reqwest::Method::GET, &format!("/v1/admin/sagas{query}")).await?;
            if server.json {
                println!("{list}");
                return Ok(());
            }
            let mut table = output::table(&["saga", "status", "step", "updated", "last error"], &[]);
            for saga in list["items"].as_array().into_iter().flatten() {
                // An absent optional field (no last error) shows as an empty cell.
                let cell = |name: &str| saga[name].as_str().unwrap_or("").to_owned();
                table.add_row(vec![
                    cell("saga_id"),
                    cell("status"),
                    cell("step"),
                    cell("updated_at"),
                    cell("last_error"),
                ]);
            }
            println!("{table}");
        }
        SagaCommand::Show { id, server } => {
            let saga = server.call(reqwest::Method::GET, &format!("/v1/admin/sagas/{id}")).await?;
            if server.json {
                println!("{saga}");
                return Ok(());
            }
            println!(
                "saga {}: {} at {}",
                id,
                saga["status"].as_str().unwrap_or(""),
                saga["step"].as_str().unwrap_or("")
            );
            if let Some(error) = saga["last_error"].as_str() {
                println!("last error: {error}");
            }
            let mut table = output::table(&["at", "#", "event", "step", "detail", "position"], &["#"]);
            for entry in saga["timeline"].as_array().into_iter().flatten() {
                let detail = &entry["detail"];
                let step = detail["step"].as_str().unwrap_or("");
                let what = detail.get("outcome").or_else(|| detail.get("reason")).or_else(|| detail.get("error"));
                table.add_row(vec![
                    entry["at"].as_str().unwrap_or("").to_owned(),
                    entry["sequence"].to_string(),
                    entry["event_type"].as_str().unwrap_or("").to_owned(),
                    step.to_owned(),
                    what.map(Value::to_string).unwrap_or_default(),
                    entry["position"].as_str().unwrap_or("").to_owned(),
                ]);
            }
            println!("{table}");
        }
        SagaCommand::Retry { id, server } => resume(&server, &id, "retry").await?,
        SagaCommand::Skip { id, server } => resume(&server, &id, "skip").await?,
    }
    Ok(())
}

#[allow(clippy::print_stdout)] // the command's own output
async fn resume(server: &Server, id: &str, action: &str) -> anyhow::Result<()> {
    let answer = server.call(reqwest::Method::POST, &format!("/v1/admin/sagas/{id}/{action}")).await?;
    if server.json {
        println!("{answer}");
    } else {
        println!("saga {id}: {action} recorded at {}", answer["position"].as_str().unwrap_or(""));
    }
    Ok(())
}
