//! `stay token`: print a bearer token signed with the secret `stay serve` uses, or (`--url`) a
//! link that opens the dashboard signed in, the token in the URL's fragment (which browsers never
//! send to a server, so it stays out of every log).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::Args;
use stay_domain::UserId;
use stay_http::auth::DEFAULT_MAX_TOKEN_LIFETIME;
use stay_http::{JwtKeys, Role};

use crate::settings::SecretArgs;

/// Arguments of `stay token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user the token speaks for (its `sub`).
    #[arg(long)]
    sub: String,

    /// guest, host or admin.
    #[arg(long)]
    role: Role,

    /// How long the token is valid: 90s, 30m, 24h, 7d… A server refuses tokens that live longer
    /// than its --max-token-lifetime (24h unless configured).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ttl: Duration,

    /// Directory holding the generated secret (the same as `stay serve`'s).
    #[arg(long, env = "STAY_DATA_DIR", default_value = "./stay-data")]
    data_dir: std::path::PathBuf,

    #[command(flatten)]
    secret: SecretArgs,

    /// Print a dashboard link that signs in with the token (`http://LISTEN/#token=…`) instead of
    /// the token alone.
    #[arg(long)]
    url: bool,

    /// The address `stay serve` listens on, for the link (the same setting as serve's).
    #[arg(long, env = "STAY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,

    /// The dashboard's address for the link when it is not `http://LISTEN/` (behind a proxy, say).
    #[arg(long, requires = "url")]
    base_url: Option<String>,
}

/// The dashboard's address for a server listening on `listen`: an unspecified address (every
/// interface) becomes the loopback one, which a browser on the same machine can open.
fn dashboard_base(listen: &str) -> anyhow::Result<String> {
    let host_port = match listen.parse::<SocketAddr>() {
        Ok(addr) => {
            anyhow::ensure!(
                addr.port() != 0,
                "--listen {listen}: port 0 is picked when serve starts; pass --base-url with the address it printed"
            );
            let ip = match addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            SocketAddr::new(ip, addr.port()).to_string()
        }
        // A host name, as serve also takes.
        Err(_) => listen.to_owned(),
    };
    Ok(format!("http://{host_port}/"))
}

/// The link that signs in with `token`: on `base_url`, else where serve listens.
fn dashboard_link(base_url: Option<&str>, listen: &str, token: &str) -> anyhow::Result<String> {
    let base = match base_url {
        Some(base) => {
            anyhow::ensure!(
                base.starts_with("http://") || base.starts_with("https://"),
                "--base-url {base}: an http:// or https:// address"
            );
            anyhow::ensure!(!base.contains('#'), "--base-url {base}: the link's fragment is the token's");
            base.to_owned()
        }
        None => dashboard_base(listen)?,
    };
    Ok(format!("{base}#token={token}"))
}

/// Prints the token on standard output.
#[allow(clippy::print_stdout)] // the command's own output
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let user = UserId::new(args.sub).map_err(|err| anyhow::anyhow!("--sub: {err}"))?;
    anyhow::ensure!(args.ttl.as_secs() > 0, "--ttl must be at least one second");
    if args.ttl > DEFAULT_MAX_TOKEN_LIFETIME {
        tracing::warn!(
            ttl = %humantime::format_duration(args.ttl),
            "a server with the default --max-token-lifetime (24h) refuses this token; raise it there to use one"
        );
    }
    let keys = JwtKeys::new(&args.secret.secret(&args.data_dir)?);
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let token = keys.sign(&user, args.role, args.ttl, now)?;
    if args.url {
        println!("{}", dashboard_link(args.base_url.as_deref(), &args.listen, &token)?);
    } else {
        println!("{token}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_opens_where_serve_listens() {
        assert_eq!(dashboard_base("127.0.0.1:8080").ok(), Some("http://127.0.0.1:8080/".to_owned()));
        assert_eq!(dashboard_base("0.0.0.0:9000").ok(), Some("http://127.0.0.1:9000/".to_owned()));
        assert_eq!(dashboard_base("[::]:9000").ok(), Some("http://[::1]:9000/".to_owned()));
        assert_eq!(dashboard_base("localhost:8080").ok(), Some("http://localhost:8080/".to_owned()));
        assert!(dashboard_base("127.0.0.1:0").is_err(), "port 0 is only known once serve runs");
    }
}
