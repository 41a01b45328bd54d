//! `stay probe`: ask a running Stay whether it is alive or ready, for container health checks.
//!
//! The runtime image has no shell and no curl, so its `HEALTHCHECK` and docker-compose's health
//! checks run the binary itself: `stay probe` reads the same `STAY_LISTEN` as `stay serve` in the
//! same container, asks `GET /healthz` (or `--path /readyz`), and exits 0 on a 2xx answer and 1
//! otherwise, saying why.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

/// Arguments of `stay probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The server's listen address, as given to `stay serve` (an unspecified host such as 0.0.0.0
    /// is probed on the loopback address).
    #[arg(long, env = "STAY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,

    /// The server's base URL; when given, the listen address is not used.
    #[arg(long)]
    url: Option<String>,

    /// What to ask: `/healthz` (the process answers) or `/readyz` (it is ready to serve).
    #[arg(long, default_value = "/healthz")]
    path: String,

    /// How long the answer may take (`/readyz` answers within about 2 s, even when a check does not).
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// `stay probe`.
#[allow(clippy::print_stdout)] // the command's own output: the answer it got
pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", loopback_for(&args.listen)?),
    };
    anyhow::ensure!(args.path.starts_with('/'), "--path must start with /, as in /readyz");
    let url = format!("{base}{}", args.path);
    let client = reqwest::Client::builder().timeout(args.timeout).build()?;
    let answer = client.get(&url).send().await.with_context(|| format!("no answer from {url}"))?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{url} answered {status}: {}", body.trim());
    }
    println!("{url}: {status} {}", body.trim());
    Ok(())
}

/// The address to probe for a listen address: the same port, on the loopback address when the
/// server listens on every address.
fn loopback_for(listen: &str) -> anyhow::Result<String> {
    let (host, port) = listen
        .rsplit_once(':')
        .with_context(|| format!("--listen {listen}: expected HOST:PORT, as in 0.0.0.0:8080"))?;
    let port: u16 = port.parse().with_context(|| format!("--listen {listen}: {port} is not a port"))?;
    anyhow::ensure!(port != 0, "--listen {listen}: port 0 is chosen at start-up; probe with --url instead");
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        host => host,
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_listening_everywhere_is_probed_on_loopback() {
        assert_eq!(loopback_for("0.0.0.0:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(loopback_for(":9000").unwrap(), "127.0.0.1:9000");
        assert_eq!(loopback_for("[::]:8080").unwrap(), "[::1]:8080");
        assert_eq!(loopback_for("10.1.2.3:8081").unwrap(), "10.1.2.3:8081");
    }

    #[test]
    fn a_listen_address_without_a_usable_port_is_refused() {
        assert!(loopback_for("0.0.0.0").is_err());
        assert!(loopback_for("0.0.0.0:http").is_err());
        assert!(loopback_for("127.0.0.1:0").is_err(), "port 0 names no port to probe");
    }
}
