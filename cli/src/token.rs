//! `stay token`: print a bearer token signed with the secret `stay serve` uses.

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
    println!("{}", keys.sign(&user, args.role, args.ttl, now)?);
    Ok(())
}
