//! `stay events`: the event log for audit, through a running server's admin routes (with an admin
//! token signed by the server's secret, as `stay saga` does).
//!
//! - `stay events STREAM_OR_ID [--as-of TIME]`: an aggregate's history and its state then.
//! - `stay events --correlation ID`: everything one reservation caused, as a causation tree.
//! - `stay events --feed [--after POS] [--follow]`: the global feed, followed live.
//!
//! `--json` prints what the routes answer (the feed as one JSON object per line, so a follower
//! can be read as it goes); without it the output is aligned text for people.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::admin_server::{problem, AdminServer};
use crate::output;

/// The aggregate types whose streams the admin routes show (`Aggregate::TYPE` of each).
const AGGREGATE_TYPES: [&str; 5] = crate::aggregate_types::ALL;

/// How often `--follow` asks for new events once it has caught up.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Arguments of `stay events`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["stream", "correlation", "feed"])))]
pub struct EventsArgs {
    /// The aggregate: `Type/id`, `Type:id`, or its id alone when no other type has a stream by that id.
    stream: Option<String>,

    /// Its state as it was at this time (RFC 3339, e.g. 2026-05-01T12:00:00Z); default now.
    #[arg(long, requires = "stream")]
    as_of: Option<String>,

    /// Everything this correlation (a reservation's id) caused, as a causation tree.
    #[arg(long, conflicts_with_all = ["stream", "feed"])]
    correlation: Option<String>,

    /// The global feed, in order.
    #[arg(long, conflicts_with = "stream")]
    feed: bool,

    /// With --feed: only events after this position.
    #[arg(long, requires = "feed")]
    after: Option<String>,

    /// With --feed: at most this many events (default: to the end of the feed).
    #[arg(long, requires = "feed")]
    limit: Option<usize>,

    /// With --feed: keep printing new events as they are recorded, until interrupted.
    #[arg(long, requires = "feed")]
    follow: bool,

    #[command(flatten)]
    server: AdminServer,
}

/// Runs `stay events`.
pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    if let Some(id) = &args.correlation {
        return correlation(&args.server, &client, id).await;
    }
    if args.feed {
        return feed(&args.server, &client, args.after.as_deref(), args.limit, args.follow).await;
    }
    match &args.stream {
        Some(stream) => history(&args.server, &client, stream, args.as_of.as_deref()).await,
        None => bail!("name a stream, --correlation ID or --feed"),
    }
}

/// Splits `Type/id` or `Type:id` into a known type and the id; `None` for a bare id.
fn split_stream(text: &str) -> anyhow::Result<Option<(&'static str, &str)>> {
    let Some(at) = text.find(['/', ':']) else { return Ok(None) };
    let (kind, id) = (&text[..at], &text[at + 1..]);
    let Some(kind) = AGGREGATE_TYPES.iter().find(|known| known.eq_ignore_ascii_case(kind)) else {
        bail!("no aggregate type is called {kind:?}; the types are {}", AGGREGATE_TYPES.join(", "));
    };
    if id.is_empty() {
        bail!("{text:?} names no id after the type");
    }
    Ok(Some((kind, id)))
}

/// Which streams hold `id`, of every type: the type and the stream's answer.
async fn find_streams(
    server: &AdminServer,
    client: &reqwest::Client,
    id: &str,
    query: &[(&str, &str)],
) -> anyhow::Result<Vec<(&'static str, Value)>> {
    let mut found = Vec::new();
    for kind in AGGREGATE_TYPES {
        let (status, body) = server.send(client, Method::GET, &stream_path(kind, id), query).await?;
        match status {
            StatusCode::OK => found.push((kind, body)),
            StatusCode::NOT_FOUND => {}
            other => bail!("{}", problem(other, &body)),
        }
    }
    Ok(found)
}

fn stream_path(kind: &str, id: &str) -> String {
    format!("/v1/admin/streams/{kind}/{}", encode_segment(id))
}

/// A path segment with everything but unreserved characters percent-encoded.
fn encode_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// `stay events STREAM_OR_ID [--as-of TIME]`.
#[allow(clippy::print_stdout)] // the command's own output
async fn history(
    server: &AdminServer,
    client: &reqwest::Client,
    stream: &str,
    as_of: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(time) = as_of {
        chrono::DateTime::parse_from_rfc3339(time)
            .with_context(|| format!("--as-of {time:?} is not an RFC 3339 time (such as 2026-05-01T12:00:00Z)"))?;
    }
    let query: Vec<(&str, &str)> = as_of.map(|time| ("as_of", time)).into_iter().collect();
    let (kind, id, answer) = match split_stream(stream)? {
        Some((kind, id)) => (kind, id, server.send_ok(client, Method::GET, &stream_path(kind, id), &query).await?),
        None => {
            let mut found = find_streams(server, client, stream, &query).await?;
            match found.len() {
                0 => bail!("no aggregate of any type ({}) has the id {stream:?}", AGGREGATE_TYPES.join(", ")),
                1 => {
                    let (kind, answer) = found.remove(0);
                    (kind, stream, answer)
                }
                _ => {
                    let names: Vec<String> = found.iter().map(|(kind, _)| format!("{kind}/{stream}")).collect();
                    bail!("the id {stream:?} is a stream of several types; name one: {}", names.join(", "));
                }
            }
        }
    };
    let events = answer["events"].clone();
    let state = answer["state"].clone();
    if server.json {
        let shown = json!({
            "aggregate_type": kind, "aggregate_id": id, "as_of": as_of, "events": events, "state": state,
        });
        println!("{shown}");
        return Ok(());
    }
    let list = events.as_array().map(Vec::as_slice).unwrap_or_default();
    let when = as_of.map_or_else(|| "now".to_owned(), |time| format!("as of {time}"));
    println!("{kind} {id}: {} events ({when})", list.len());
    let mut table = output::table(&["#", "position", "recorded at", "event", "payload"], &["#", "position"]);
    for event in list {
        table.add_row(vec![
            event["sequence"].to_string(),
            text(&event["position"]),
            text(&event["recorded_at"]),
            text(&event["event_type"]),
            event["payload"].to_string(),
        ]);
    }
    println!("{table}");
    match &state {
        Value::Null => println!("state: see `stay saga show {id}`"),
        state => println!("state:\n{}", serde_json::to_string_pretty(state)?),
    }
    Ok(())
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or("").to_owned()
}

/// `stay events --correlation ID`.
#[allow(clippy::print_stdout)] // the command's own output
async fn correlation(server: &AdminServer, client: &reqwest::Client, id: &str) -> anyhow::Result<()> {
    let answer =
        server.send_ok(client, Method::GET, &format!("/v1/admin/correlations/{}", encode_segment(id)), &[]).await?;
    if server.json {
        println!("{answer}");
        return Ok(());
    }
    print!("{}", causation_tree(&answer));
    Ok(())
}

/// The correlation as a tree by causation: each event under the event that caused it, each root
/// under the request that caused it; positions and times in aligned columns on the left.
fn causation_tree(answer: &Value) -> String {
    let events = answer["events"].as_array().map(Vec::as_slice).unwrap_or_default();
    let aggregates = answer["aggregates"].as_array().map_or(0, Vec::len);
    let mut out = format!(
        "correlation {}: {} events across {aggregates} aggregates\n",
        text(&answer["correlation_id"]),
        events.len()
    );
    let width = events.iter().map(|e| text(&e["position"]).len()).max().unwrap_or(0).max("position".len());
    let time_width = events.iter().map(|e| text(&e["recorded_at"]).len()).max().unwrap_or(0).max("recorded at".len());
    let _ = writeln!(out, "{:>width$}  {:<time_width$}  event", "position", "recorded at");
    let mut children: HashMap<String, Vec<usize>> = HashMap::new();
    let mut roots: Vec<(String, Vec<usize>)> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match event["parent"].as_str() {
            Some(parent) => children.entry(parent.to_owned()).or_default().push(index),
            None => {
                let cause = event["causation_id"].as_str().unwrap_or("?").to_owned();
                match roots.iter_mut().find(|(known, _)| *known == cause) {
                    Some((_, list)) => list.push(index),
                    None => roots.push((cause, vec![index])),
                }
            }
        }
    }
    let line = |out: &mut String, event: &Value, prefix: &str| {
        let _ = writeln!(
            out,
            "{:>width$}  {:<time_width$}  {prefix}{}/{}#{} {}",
            text(&event["position"]),
            text(&event["recorded_at"]),
            text(&event["aggregate_type"]),
            text(&event["aggregate_id"]),
            event["sequence"],
            text(&event["event_type"]),
        );
    };
    // Depth first, children in feed order; an explicit stack, as a chain may be long.
    for (cause, list) in roots {
        let actor = list.first().and_then(|&i| events[i]["actor"].as_str()).unwrap_or("?");
        let _ = writeln!(out, "{:>width$}  {:<time_width$}  request {cause} (by {actor})", "", "");
        let mut stack: Vec<(usize, String, bool)> = Vec::new();
        for (n, &index) in list.iter().enumerate().rev() {
            stack.push((index, String::new(), n + 1 == list.len()));
        }
        while let Some((index, indent, last)) = stack.pop() {
            let event = &events[index];
            line(&mut out, event, &format!("{indent}{}", if last { "└─ " } else { "├─ " }));
            let below = format!("{indent}{}", if last { "   " } else { "│  " });
            let kids = children.get(event["id"].as_str().unwrap_or("")).map(Vec::as_slice).unwrap_or_default();
            for (n, &kid) in kids.iter().enumerate().rev() {
                stack.push((kid, below.clone(), n + 1 == kids.len()));
            }
        }
    }
    out
}

/// `stay events --feed [--after POS] [--limit N] [--follow]`.
#[allow(clippy::print_stdout)] // the command's own output
async fn feed(
    server: &AdminServer,
    client: &reqwest::Client,
    after: Option<&str>,
    limit: Option<usize>,
    follow: bool,
) -> anyhow::Result<()> {
    let mut after = after.unwrap_or("").to_owned();
    let mut left = limit.unwrap_or(usize::MAX);
    if !server.json {
        println!("{:>12}  {:<27}  {:>5}  {:<40}  event", "position", "recorded at", "#", "aggregate");
    }
    while left > 0 {
        let page_size = left.min(1000).to_string();
        let page = server
            .send_ok(client, Method::GET, "/v1/admin/feed", &[("after", after.as_str()), ("limit", page_size.as_str())])
            .await?;
        let items = page["items"].as_array().map(Vec::as_slice).unwrap_or_default();
        for event in items {
            if server.json {
                println!("{event}");
            } else {
                println!(
                    "{:>12}  {:<27}  {:>5}  {:<40}  {}",
                    text(&event["position"]),
                    text(&event["recorded_at"]),
                    event["sequence"],
                    format!("{}/{}", text(&event["aggregate_type"]), text(&event["aggregate_id"])),
                    text(&event["event_type"]),
                );
            }
        }
        left = left.saturating_sub(items.len());
        if let Some(next) = page["next"].as_str() {
            after = next.to_owned();
        }
        if items.is_empty() {
            if !follow {
                break;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_named_with_its_type_or_alone() {
        assert_eq!(split_stream("Reservation/abc").ok().flatten(), Some(("Reservation", "abc")));
        assert_eq!(split_stream("reservationsaga:abc").ok().flatten(), Some(("ReservationSaga", "abc")));
        assert_eq!(split_stream("abc").ok().flatten(), None);
        assert!(split_stream("Ship/abc").is_err());
        assert!(split_stream("Room/").is_err());
    }

    #[test]
    fn the_tree_puts_each_event_under_its_cause() {
        let answer = json!({
            "correlation_id": "r1",
            "aggregates": [{}, {}],
            "events": [
                {"id": "Reservation:r1@1", "position": "7", "recorded_at": "t1", "aggregate_type": "Reservation",
                 "aggregate_id": "r1", "sequence": 1, "event_type": "ReservationRequested", "causation_id": "k1",
                 "actor": "guest-1", "parent": null},
                {"id": "ReservationSaga:r1@1", "position": "8", "recorded_at": "t2", "aggregate_type": "ReservationSaga",
                 "aggregate_id": "r1", "sequence": 1, "event_type": "SagaStarted", "causation_id": "Reservation:r1@1",
                 "actor": "saga", "parent": "Reservation:r1@1"},
                {"id": "Reservation:r1@2", "position": "9", "recorded_at": "t3", "aggregate_type": "Reservation",
                 "aggregate_id": "r1", "sequence": 2, "event_type": "ReservationConfirmed",
                 "causation_id": "ReservationSaga:r1@1", "actor": "saga", "parent": "ReservationSaga:r1@1"}
            ]
        });
        let tree = causation_tree(&answer);
        let lines: Vec<&str> = tree.lines().collect();
        assert!(lines[0].starts_with("correlation r1: 3 events across 2 aggregates"), "{tree}");
        assert!(lines[2].ends_with("request k1 (by guest-1)"), "{tree}");
        assert!(lines[3].ends_with("└─ Reservation/r1#1 ReservationRequested"), "{tree}");
        assert!(lines[4].ends_with("   └─ ReservationSaga/r1#1 SagaStarted"), "{tree}");
        assert!(lines[5].ends_with("      └─ Reservation/r1#2 ReservationConfirmed"), "{tree}");
        assert!(lines[3].starts_with("       7  t1"), "positions align right: {tree}");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_segment("0190-ab_c.d~"), "0190-ab_c.d~");
    }
}
