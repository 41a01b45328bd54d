//! `stay <subcommand> --help`: the flags and variables a subcommand takes, and the check of a
//! stack's flags and variables against them ([`check_stack`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::sync::OnceLock;

use super::{DeployError, Health, HealthCheck, Result, ServiceKind, ServiceSpec, Stack, PROCESS_WIDE_VARIABLES};
use crate::server::stay_binary;

/// One flag of a subcommand.
#[derive(Debug, Clone, Default)]
pub struct HelpFlag {
    /// Whether it takes a value (`--listen <LISTEN>`) or is a switch.
    pub takes_value: bool,
    /// The variable that sets it (`[env: STAY_LISTEN=]`).
    pub env: Option<String>,
    /// Its default (`[default: 127.0.0.1:8080]`).
    pub default: Option<String>,
}

/// What `stay <subcommand> --help` lists.
#[derive(Debug, Clone, Default)]
pub struct Help {
    /// Flags by long name (without the dashes).
    pub flags: BTreeMap<String, HelpFlag>,
}

impl Help {
    /// Runs `stay <subcommand> --help` (once per subcommand per test process).
    pub fn of(subcommand: &str) -> Result<Help> {
        static CACHE: OnceLock<std::sync::Mutex<HashMap<String, Help>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(help) = cache.lock().map_err(|_| DeployError::Io("help cache poisoned".into()))?.get(subcommand) {
            return Ok(help.clone());
        }
        let output = Command::new(stay_binary())
            .args([subcommand, "--help"])
            .env_clear()
            .output()
            .map_err(|e| DeployError::Io(format!("cannot run stay {subcommand} --help: {e}")))?;
        if !output.status.success() {
            return Err(DeployError::Unknown(vec![format!(
                "stay has no subcommand {subcommand:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )]));
        }
        let help = Help::parse(&String::from_utf8_lossy(&output.stdout));
        cache
            .lock()
            .map_err(|_| DeployError::Io("help cache poisoned".into()))?
            .insert(subcommand.to_owned(), help.clone());
        Ok(help)
    }

    /// Reads clap's help text: a flag's block runs from its `--name` line to the next flag's.
    pub fn parse(text: &str) -> Help {
        let mut flags = BTreeMap::new();
        let mut current: Option<(String, HelpFlag, String)> = None;
        let finish = |current: Option<(String, HelpFlag, String)>, flags: &mut BTreeMap<String, HelpFlag>| {
            if let Some((name, mut flag, block)) = current {
                flag.env = bracketed(&block, "[env: ").map(|v| v.split('=').next().unwrap_or_default().to_owned());
                flag.default = bracketed(&block, "[default: ");
                flags.insert(name, flag);
            }
        };
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with('-') {
                let spec = trimmed.split("  ").next().unwrap_or_default();
                if let Some(long) = spec.split([',', ' ']).find_map(|word| word.strip_prefix("--")) {
                    finish(current.take(), &mut flags);
                    let flag = HelpFlag { takes_value: spec.contains('<'), ..HelpFlag::default() };
                    current = Some((long.to_owned(), flag, trimmed.to_owned()));
                    continue;
                }
            }
            if let Some((_, _, block)) = current.as_mut() {
                block.push(' ');
                block.push_str(trimmed);
            }
        }
        finish(current.take(), &mut flags);
        Help { flags }
    }

    /// Every variable the subcommand reads.
    pub fn variables(&self) -> BTreeSet<&str> {
        self.flags.values().filter_map(|f| f.env.as_deref()).collect()
    }
}

fn bracketed(block: &str, opening: &str) -> Option<String> {
    let start = block.find(opening)? + opening.len();
    let end = block[start..].find(']')? + start;
    Some(block[start..end].to_owned())
}

/// One flag as given on a command line.
pub(super) struct GivenFlag {
    pub(super) name: String,
    pub(super) value: Option<String>,
}

/// Splits `args` (after the subcommand) into flags by what `help` says takes a value.
pub(super) fn given_flags(args: &[String], help: &Help, problems: &mut Vec<String>, who: &str) -> Vec<GivenFlag> {
    let mut given = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            problems.push(format!("{who}: argument {arg:?} is no --flag (positional and short flags are not used)"));
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (flag.to_owned(), None),
        };
        match help.flags.get(&name) {
            None => problems.push(format!("{who}: no flag --{name}")),
            Some(known) if known.takes_value && inline.is_none() => {
                let value = args.next().cloned();
                if value.is_none() {
                    problems.push(format!("{who}: --{name} needs a value"));
                }
                given.push(GivenFlag { name, value });
            }
            Some(_) => given.push(GivenFlag { name, value: inline }),
        }
    }
    given
}

/// Checks every flag and `STAY_*` variable of the stack's Stay services (and their health-check
/// commands) against `stay <subcommand> --help`. All problems are reported at once.
pub fn check_stack(stack: &Stack) -> Result<()> {
    let mut problems = Vec::new();
    let stay_services: Vec<&ServiceSpec> = stack.services.iter().filter(|s| s.kind == ServiceKind::Stay).collect();
    // Variables from something shared must be known to a subcommand of a service that gets them.
    let mut shared_known: HashMap<String, BTreeSet<String>> = HashMap::new();
    for service in &stay_services {
        let sub = service.subcommand()?;
        let help = Help::of(sub)?;
        let who = format!("service {} (stay {sub})", service.name);
        given_flags(&service.args[1..], &help, &mut problems, &who);
        let variables = help.variables();
        for var in service.env.iter().filter(|v| v.name.starts_with("STAY_")) {
            let known = variables.contains(var.name.as_str()) || PROCESS_WIDE_VARIABLES.contains(&var.name.as_str());
            if var.shared {
                let entry = shared_known.entry(var.name.clone()).or_default();
                if known {
                    entry.insert(service.name.clone());
                }
            } else if !known {
                problems.push(format!("{who}: no variable {}", var.name));
            }
        }
        if let Some(HealthCheck { check: Health::Command(argv), .. }) = &service.health {
            let who = format!("service {} health check", service.name);
            match argv.split_first() {
                Some((binary, rest)) if binary == "stay" && !rest.is_empty() => {
                    let help = Help::of(&rest[0])?;
                    given_flags(&rest[1..], &help, &mut problems, &format!("{who} (stay {})", rest[0]));
                }
                _ => problems.push(format!("{who}: {argv:?} does not run stay (the image has nothing else)")),
            }
        }
    }
    let mut unknown_shared: Vec<&String> =
        shared_known.iter().filter(|(_, known_by)| known_by.is_empty()).map(|(name, _)| name).collect();
    unknown_shared.sort();
    for name in unknown_shared {
        problems.push(format!("shared variable {name}: no variable of any stay subcommand that gets it"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DeployError::Unknown(problems))
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_help_gives_flags_their_variables_and_defaults() {
        let help = Help::parse(
            "Usage: stay serve [OPTIONS]\n\nOptions:\n      --listen <LISTEN>\n          Address to listen on\n\n          [env: STAY_LISTEN=]\n          [default: 127.0.0.1:8080]\n\n      --no-migrate\n          Do not migrate [env: STAY_NO_MIGRATE=]\n  -h, --help\n          Print help\n",
        );
        let listen = &help.flags["listen"];
        assert!(listen.takes_value);
        assert_eq!((listen.env.as_deref(), listen.default.as_deref()), (Some("STAY_LISTEN"), Some("127.0.0.1:8080")));
        assert!(!help.flags["no-migrate"].takes_value);
        assert!(help.variables().contains("STAY_NO_MIGRATE"));
        assert!(help.flags.contains_key("help"));
    }
}
