//! `stay saga ls|show|retry|skip`: saga debugging from the command line, through a running server's
//! admin routes (with an admin token signed by the server's secret).

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::admin_server::AdminServer;
use crate::output;

/// Arguments of `stay saga`.
#[derive(Debug, Args)]
pub struct SagaArgs {
    #[command(subcommand)]
    command: SagaCommand,
}

#[derive(Debug, Subcommand)]
enum SagaCommand {
    /// Sagas by id (a stable order for paging, not time order), from the server's `sagas` read model: every page, or `--limit` of them.
    Ls {
        /// Only these statuses: running, completed, compensated, parked (repeat, or separate by commas).
        #[arg(long, value_delimiter = ',')]
        status: Vec<String>,
        /// Show at most this many (following pages as needed); without it, all.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Start after this point: the `next_cursor` of an earlier listing.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        server: AdminServer,
    },
    /// One saga's timeline: every step, outcome, retry, deadline and compensation.
    Show {
        /// The saga (its reservation's id).
        id: String,
        #[command(flatten)]
        server: AdminServer,
    },
    /// Try a parked saga's step again.
    Retry {
        /// The saga.
        id: String,
        #[command(flatten)]
        server: AdminServer,
    },
    /// Give a parked saga's step up (a compensation step counts as done; a forward step rejects).
    Skip {
        /// The saga.
        id: String,
        #[command(flatten)]
        server: AdminServer,
    },
}

/// Sends `method path` as an admin; anything but success is an error naming the problem.
async fn call(server: &AdminServer, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
    server.send_ok(&reqwest::Client::new(), method, path, &[]).await
}

/// Runs `stay saga`.
#[allow(clippy::print_stdout)] // the command's own output
pub async fn run(args: SagaArgs) -> anyhow::Result<()> {
    match args.command {
        SagaCommand::Ls { status, limit, cursor, server } => {
            let (items, next_cursor) = list(&server, &status, limit, cursor).await?;
            if server.json {
                println!("{}", serde_json::json!({ "items": items, "next_cursor": next_cursor }));
                return Ok(());
            }
            let mut table = output::table(&["saga", "status", "step", "updated", "outcome"], &[]);
            for saga in &items {
                // An absent optional field (no outcome yet) shows as an empty cell.
                let cell = |name: &str| saga[name].as_str().unwrap_or("").to_owned();
                table.add_row(vec![cell("saga_id"), cell("status"), cell("step"), cell("updated_at"), cell("outcome")]);
            }
            println!("{table}");
            if let Some(cursor) = next_cursor {
                println!("more: --cursor {cursor}");
            }
        }
        SagaCommand::Show { id, server } => {
            let saga = call(&server, reqwest::Method::GET, &format!("/v1/admin/sagas/{id}")).await?;
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

/// The largest page the server gives.
const MAX_PAGE: u64 = 1000;

/// Sagas of `statuses`, following `next_cursor` from `cursor` until the list ends or `limit` are
/// in; answers them and where a further listing would start.
async fn list(
    server: &AdminServer,
    statuses: &[String],
    limit: Option<u64>,
    mut cursor: Option<String>,
) -> anyhow::Result<(Vec<Value>, Option<String>)> {
    let mut items: Vec<Value> = Vec::new();
    loop {
        let wanted = limit.map_or(MAX_PAGE, |limit| (limit - items.len() as u64).min(MAX_PAGE));
        // Built by the URL's own encoder, so a status or cursor with odd characters stays one value.
        let mut url = reqwest::Url::parse("http://stay/v1/admin/sagas")?;
        url.query_pairs_mut().append_pair("limit", &wanted.to_string());
        if !statuses.is_empty() {
            url.query_pairs_mut().append_pair("status", &statuses.join(","));
        }
        if let Some(cursor) = &cursor {
            url.query_pairs_mut().append_pair("cursor", cursor);
        }
        let path = format!("{}?{}", url.path(), url.query().unwrap_or(""));
        let page = call(server, reqwest::Method::GET, &path).await?;
        items.extend(page["items"].as_array().into_iter().flatten().cloned());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        let full = limit.is_some_and(|limit| items.len() as u64 >= limit);
        if cursor.is_none() || full {
            return Ok((items, cursor));
        }
    }
}

#[allow(clippy::print_stdout)] // the command's own output
async fn resume(server: &AdminServer, id: &str, action: &str) -> anyhow::Result<()> {
    let answer = call(server, reqwest::Method::POST, &format!("/v1/admin/sagas/{id}/{action}")).await?;
    if server.json {
        println!("{answer}");
    } else {
        println!("saga {id}: {action} recorded at {}", answer["position"].as_str().unwrap_or(""));
    }
    Ok(())
}
