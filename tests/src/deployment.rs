//! Runs what docker-compose.yml and the rendered Kubernetes overlays describe as local processes.
//!
//! No container engine runs on the project's machines, so the deployment files are proven by
//! starting exactly what they describe. Two readers turn a description into a [`Stack`] of
//! [`ServiceSpec`]s ([`Compose`] for docker-compose.yml with the image from the Dockerfile, and
//! [`k8s_stack`] for a rendered kustomize overlay); [`Deployment::start`] runs a stack.
//!
//! The mapping rules, applied to every environment value and argument (and health-check command):
//! - A Stay container (a compose service built from the Dockerfile, a pod of the `stay` image)
//!   runs the `stay` binary under test ([`stay_binary`]) with the image's entrypoint, the
//!   service's command (or the image's `CMD`) and exactly its environment: the image's `ENV`,
//!   then the env files (or ConfigMaps and Secrets), then the service's own values. Nothing of the
//!   test's own environment is passed on.
//! - Host names of services (compose service names, Kubernetes Service names) become 127.0.0.1, and
//!   each (service, container port) it listens on gets a free local port: `0.0.0.0:PORT` in its
//!   own listen setting, `http://service:PORT` (or the Kubernetes Service's port) anywhere, and
//!   `127.0.0.1:PORT`/`localhost:PORT` in its own health check are rewritten to that port.
//! - A PostgreSQL service (image `postgres:*`) is not started: it is the local server. A URL naming
//!   it gets host 127.0.0.1:5432, the local user and a fresh database of the test's own
//!   ([`TestPostgres`]), one per (service, database name), dropped at the end.
//! - A container path under a volume (a named volume, an anonymous one from the image's `VOLUME`,
//!   a tmpfs or an emptyDir) becomes a temporary directory: one per named volume (shared by the
//!   services that mount it), one per service for the others.
//! - Services start in `depends_on` order, each waiting as compose would: `service_healthy` runs the
//!   dependency's health check as a local process with its environment until it succeeds (more
//!   often than its interval, but giving up when compose would mark it unhealthy),
//!   `service_completed_successfully` waits for exit code 0. At the end, as `docker compose up
//!   --wait` (or `kubectl wait --for=condition=ready`), every service with a health check is healthy.
//! - Kubernetes: a pod's init containers are one-shots that must succeed, in order, before its
//!   container starts (on the same emptyDirs); a Job is one every pod waits for; the readiness probe
//!   (HTTP GET or TCP) is the health check; a Service's `port` leads to its `targetPort` (by number
//!   or name) on the one pod its selector matches.
//! - A Stay process must listen on every interface (`0.0.0.0`), as nothing outside its container
//!   could reach it otherwise, and a published port or Service must lead to a port it listens on.
//! - A variable that neither the subcommand nor its health check reads (its flag is given on the
//!   command line, or the subcommand has no such setting) has no effect and is passed as written.
//!
//! Anything the harness does not understand is an error rather than ignored: an unknown key, an
//! interpolation it cannot resolve, a host name that names no service, a shell-form health check
//! in an image without a shell, a service it cannot run (EventStoreDB here). Before anything
//! starts, every flag and every `STAY_*` variable a Stay service passes is checked against
//! `stay <subcommand> --help` ([`check_stack`]), so a typo fails with a message naming it; a flag
//! typo that got through would also make clap exit non-zero. Each process logs to a file; the
//! logs are in the error when a start fails. Everything is killed when the [`Deployment`] drops.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_yaml_ng::Value as Yaml;
use tempfile::TempDir;

use crate::databases::TestPostgres;
use crate::server::stay_binary;

/// Variables the `stay` binary reads for every subcommand, outside clap (cli/src/main.rs).
const PROCESS_WIDE_VARIABLES: &[&str] = &["STAY_LOG", "STAY_LOG_FORMAT"];

/// Why a description could not be run.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The description uses something the harness does not understand.
    #[error("not understood: {0}")]
    Unsupported(String),
    /// Flags or variables that `stay <subcommand> --help` does not list.
    #[error("flags or variables unknown to stay:\n  {}", .0.join("\n  "))]
    Unknown(Vec<String>),
    /// A reference that cannot be mapped to a local process (a host, a port, a path).
    #[error("cannot map: {0}")]
    Mapping(String),
    /// A service did not start, exited, or never became healthy.
    #[error("service {service}: {why}\n{logs}")]
    Start {
        /// The service.
        service: String,
        /// What went wrong.
        why: String,
        /// Every process's log so far.
        logs: String,
    },
    /// Reading a file or making a directory failed.
    #[error("{0}")]
    Io(String),
}

type Result<T, E = DeployError> = std::result::Result<T, E>;

fn unsupported(what: impl Into<String>) -> DeployError {
    DeployError::Unsupported(what.into())
}

// ---------------------------------------------------------------------------------------------
// The generic layer: what a stack is, independent of compose or Kubernetes.

/// What a service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// The `stay` image: run as the binary under test.
    Stay,
    /// A PostgreSQL server: replaced by a fresh database on the local server.
    Postgres,
    /// Anything else (named by its image): cannot run here.
    External(String),
}

/// An environment variable and where it came from.
#[derive(Debug, Clone)]
pub struct EnvVar {
    /// Its name.
    pub name: String,
    /// Its value as written.
    pub value: String,
    /// True when it comes from something several services share (the image, an env file, a
    /// ConfigMap): then it must be known to one of the subcommands that read it, not to each.
    pub shared: bool,
}

/// A health check.
#[derive(Debug, Clone)]
pub enum Health {
    /// A command run in the container (argv, starting with the binary: `stay`).
    Command(Vec<String>),
    /// An HTTP GET of `path` on a container port (a Kubernetes probe): healthy on 2xx.
    Http {
        /// The path.
        path: String,
        /// The container port.
        port: u16,
    },
    /// A TCP connection to a container port (a Kubernetes `tcpSocket` probe).
    Tcp {
        /// The container port.
        port: u16,
    },
}

/// A health check with the time it has to pass.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// What is checked.
    pub check: Health,
    /// When it would be declared failed: start period plus retries × (interval + timeout).
    pub give_up_after: Duration,
    /// How long one check may take.
    pub timeout: Duration,
}

/// How a service waits for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    /// Once it has started.
    Started,
    /// Once its health check passes.
    Healthy,
    /// Once it has exited with code 0 (a one-shot job).
    CompletedSuccessfully,
}

/// A dependency on another service.
#[derive(Debug, Clone)]
pub struct Dependency {
    /// The service waited for.
    pub service: String,
    /// How.
    pub condition: Condition,
}

/// A directory mounted in a container.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Where the container sees it.
    pub path: String,
    /// Which volume: services naming the same one share its directory.
    pub volume: String,
}

/// One service (or pod template) of a stack.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Its name.
    pub name: String,
    /// What it runs.
    pub kind: ServiceKind,
    /// The `stay` arguments (after the entrypoint): the subcommand first.
    pub args: Vec<String>,
    /// Its environment, in order (a later value of a name wins).
    pub env: Vec<EnvVar>,
    /// Its volumes.
    pub mounts: Vec<Mount>,
    /// Its health check, if any.
    pub health: Option<HealthCheck>,
    /// What it waits for.
    pub depends_on: Vec<Dependency>,
}

impl ServiceSpec {
    /// The effective value of a variable (the last one set).
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env.iter().rev().find(|var| var.name == name).map(|var| var.value.as_str())
    }

    fn subcommand(&self) -> Result<&str> {
        self.args
            .first()
            .map(String::as_str)
            .ok_or_else(|| unsupported(format!("service {}: no stay subcommand", self.name)))
    }
}

/// A host name and port by which other services reach a service's container port (a Kubernetes
/// Service's port to its target port; compose services are reached by their own name and port).
#[derive(Debug, Clone)]
pub struct Route {
    /// The host name others use.
    pub host: String,
    /// The port others use.
    pub port: u16,
    /// The service behind it.
    pub service: String,
    /// The container port.
    pub container_port: u16,
}

/// A port published to the outside (compose `ports:`).
#[derive(Debug, Clone)]
pub struct Published {
    /// The host port.
    pub port: u16,
    /// The service.
    pub service: String,
    /// Its container port.
    pub container_port: u16,
}

/// Everything a description asks to run.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    /// The services, in the order described.
    pub services: Vec<ServiceSpec>,
    /// Extra names (beyond each service's own name and container ports).
    pub routes: Vec<Route>,
    /// Ports published to the outside.
    pub published: Vec<Published>,
}

impl Stack {
    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }
}

// ---------------------------------------------------------------------------------------------
// `stay <subcommand> --help`: the flags and variables a subcommand takes.

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
struct GivenFlag {
    name: String,
    value: Option<String>,
}

/// Splits `args` (after the subcommand) into flags by what `help` says takes a value.
fn given_flags(args: &[String], help: &Help, problems: &mut Vec<String>, who: &str) -> Vec<GivenFlag> {
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

// ---------------------------------------------------------------------------------------------
// The Dockerfile: what the image sets for every container.

/// One instruction of a Dockerfile (continuation lines joined).
#[derive(Debug, Clone)]
pub struct Instruction {
    /// Its keyword, upper-case.
    pub keyword: String,
    /// The rest of the line.
    pub rest: String,
}

/// A Dockerfile's stages.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// Each stage's instructions, starting with its FROM.
    pub stages: Vec<Vec<Instruction>>,
}

/// What the final stage sets for a container.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// `ENV`, in order.
    pub env: Vec<(String, String)>,
    /// `VOLUME` paths.
    pub volumes: Vec<String>,
    /// `ENTRYPOINT` (exec form).
    pub entrypoint: Vec<String>,
    /// `CMD` (exec form).
    pub cmd: Vec<String>,
    /// `HEALTHCHECK`.
    pub health: Option<HealthCheck>,
    /// `USER`.
    pub user: Option<String>,
    /// `LABEL`s.
    pub labels: BTreeMap<String, String>,
}

impl Dockerfile {
    /// Reads a Dockerfile's instructions.
    pub fn parse(text: &str) -> Result<Dockerfile> {
        let mut stages: Vec<Vec<Instruction>> = Vec::new();
        let mut pending = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
                continue;
            }
            if trimmed.starts_with('#') {
                continue; // a comment inside a continued instruction
            }
            if let Some(head) = trimmed.strip_suffix('\\') {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            pending.push_str(trimmed);
            let full = std::mem::take(&mut pending);
            let (keyword, rest) = full.split_once(char::is_whitespace).unwrap_or((full.as_str(), ""));
            let instruction = Instruction { keyword: keyword.to_ascii_uppercase(), rest: rest.trim().to_owned() };
            if instruction.keyword == "FROM" {
                stages.push(Vec::new());
            }
            match stages.last_mut() {
                Some(stage) => stage.push(instruction),
                None if instruction.keyword == "ARG" => {}
                None => return Err(unsupported(format!("Dockerfile: {} before any FROM", instruction.keyword))),
            }
        }
        if stages.is_empty() {
            return Err(unsupported("Dockerfile: no FROM"));
        }
        Ok(Dockerfile { stages })
    }

    /// The final stage's instructions.
    pub fn final_stage(&self) -> &[Instruction] {
        self.stages.last().map_or(&[], Vec::as_slice)
    }

    /// What the final stage sets for containers.
    pub fn image(&self) -> Result<Image> {
        let mut image = Image::default();
        for instruction in self.final_stage() {
            let rest = instruction.rest.as_str();
            match instruction.keyword.as_str() {
                "ENV" => image.env.extend(key_values(rest)?),
                "LABEL" => image.labels.extend(key_values(rest)?),
                "VOLUME" => image.volumes.extend(exec_or_words(rest)?),
                "ENTRYPOINT" => image.entrypoint = exec_form(rest, "ENTRYPOINT")?,
                "CMD" => image.cmd = exec_form(rest, "CMD")?,
                "USER" => image.user = Some(rest.to_owned()),
                "HEALTHCHECK" => image.health = docker_healthcheck(rest)?,
                _ => {}
            }
        }
        Ok(image)
    }
}

/// `A=1 B="two words"`.
fn key_values(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for word in shell_words(text)? {
        let (key, value) =
            word.split_once('=').ok_or_else(|| unsupported(format!("Dockerfile: {word:?} is not KEY=VALUE")))?;
        pairs.push((key.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// Words split on blanks, with double quotes grouping (and removed).
fn shell_words(text: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut in_word) = (false, false);
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err(unsupported(format!("Dockerfile: unbalanced quotes in {text:?}")));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn exec_form(text: &str, what: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|_| {
        unsupported(format!("Dockerfile: {what} {text} is not in exec form [\"...\"] (no shell in the image)"))
    })
}

fn exec_or_words(text: &str) -> Result<Vec<String>> {
    if text.starts_with('[') {
        exec_form(text, "VOLUME")
    } else {
        shell_words(text)
    }
}

fn docker_healthcheck(text: &str) -> Result<Option<HealthCheck>> {
    if text.trim() == "NONE" {
        return Ok(None);
    }
    let (options, command) =
        text.split_once("CMD").ok_or_else(|| unsupported(format!("Dockerfile: HEALTHCHECK {text}")))?;
    let mut timing = Timing::docker_defaults();
    for option in options.split_whitespace() {
        let (name, value) = option
            .strip_prefix("--")
            .and_then(|o| o.split_once('='))
            .ok_or_else(|| unsupported(format!("Dockerfile: HEALTHCHECK option {option}")))?;
        timing.set(name.replace('-', "_").as_str(), value)?;
    }
    let argv = exec_form(command.trim(), "HEALTHCHECK CMD")?;
    Ok(Some(timing.check(Health::Command(argv))))
}

/// A health check's timing as compose and Docker write it.
#[derive(Debug, Clone, Copy)]
struct Timing {
    interval: Duration,
    timeout: Duration,
    retries: u32,
    start_period: Duration,
}

impl Timing {
    fn docker_defaults() -> Self {
        Timing {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            retries: 3,
            start_period: Duration::ZERO,
        }
    }

    fn set(&mut self, name: &str, value: &str) -> Result<()> {
        match name {
            "interval" => self.interval = duration(value)?,
            "timeout" => self.timeout = duration(value)?,
            "start_period" => self.start_period = duration(value)?,
            // Only how often checks run during the start period: the harness checks often anyway.
            "start_interval" => {
                duration(value)?;
            }
            "retries" => self.retries = value.parse().map_err(|_| unsupported(format!("retries: {value}")))?,
            other => return Err(unsupported(format!("health check option {other}"))),
        }
        Ok(())
    }

    fn check(self, check: Health) -> HealthCheck {
        HealthCheck {
            check,
            give_up_after: self.start_period + (self.interval + self.timeout) * self.retries.max(1),
            timeout: self.timeout,
        }
    }
}

/// `1m30s`, `500ms`, `5s` (compose's and Docker's duration form).
fn duration(text: &str) -> Result<Duration> {
    let bad = || unsupported(format!("duration {text:?}"));
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "h" => Duration::from_secs(number * 3600),
            "m" => Duration::from_secs(number * 60),
            "s" => Duration::from_secs(number),
            "ms" => Duration::from_millis(number),
            _ => return Err(bad()),
        };
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml.

/// Service keys that change nothing about the process a service runs (only how Docker keeps it).
const COMPOSE_KEYS_WITHOUT_EFFECT_HERE: &[&str] = &["read_only", "restart", "stop_grace_period", "labels", "init"];
/// Service keys the reader understands.
const COMPOSE_KEYS: &[&str] = &[
    "image",
    "build",
    "command",
    "environment",
    "env_file",
    "depends_on",
    "healthcheck",
    "ports",
    "volumes",
    "tmpfs",
    "profiles",
];

/// A docker-compose.yml, read with its env files and the Dockerfile of the services it builds.
#[derive(Debug, Clone)]
pub struct Compose {
    services: BTreeMap<String, Yaml>,
    order: Vec<String>,
    volumes: BTreeSet<String>,
    image: Image,
    dir: PathBuf,
    env_files: HashMap<String, PathBuf>,
}

impl Compose {
    /// The repository's docker-compose.yml, its env file `stay.env` read from
    /// `stay.env.example`, and the repository's Dockerfile.
    pub fn repository() -> Result<Compose> {
        let dir = repository_root();
        let text = read(&dir.join("docker-compose.yml"))?;
        Compose::parse(&text, &dir, &[("stay.env", "stay.env.example")])
    }

    /// Reads compose `text` as if it lay in `dir` (env files, the build context), with env files
    /// replaced as `(named, read instead)`. Interpolation sees no variables: a `${VAR}` without a
    /// default is an error (the test runs no shell whose variables compose would read).
    pub fn parse(text: &str, dir: &Path, env_file_stand_ins: &[(&str, &str)]) -> Result<Compose> {
        let mut document: Yaml =
            serde_yaml_ng::from_str(text).map_err(|e| unsupported(format!("docker-compose.yml: {e}")))?;
        // A merged mapping may hold a merge key of its own (an anchor built from another): merge
        // until none is left, as compose's YAML reader does.
        for _ in 0..8 {
            document.apply_merge().map_err(|e| unsupported(format!("docker-compose.yml merge keys: {e}")))?;
            if !has_merge_key(&document) {
                break;
            }
        }
        if has_merge_key(&document) {
            return Err(unsupported("docker-compose.yml: merge keys nested too deep"));
        }
        interpolate_all(&mut document)?;
        let top = document.as_mapping().ok_or_else(|| unsupported("docker-compose.yml is not a mapping"))?;
        let mut services = BTreeMap::new();
        let mut order = Vec::new();
        let mut volumes = BTreeSet::new();
        for (key, value) in top {
            let key = yaml_str(key, "a top-level key")?;
            match key.as_str() {
                "name" => {}
                k if k.starts_with("x-") => {}
                "services" => {
                    for (name, service) in value.as_mapping().ok_or_else(|| unsupported("services: not a mapping"))? {
                        let name = yaml_str(name, "a service name")?;
                        order.push(name.clone());
                        services.insert(name, service.clone());
                    }
                }
                "volumes" => {
                    for (name, options) in value.as_mapping().ok_or_else(|| unsupported("volumes: not a mapping"))? {
                        if !options.is_null() {
                            return Err(unsupported(format!("volume options of {name:?}")));
                        }
                        volumes.insert(yaml_str(name, "a volume name")?);
                    }
                }
                other => return Err(unsupported(format!("top-level key {other:?}"))),
            }
        }
        let image = Dockerfile::parse(&read(&dir.join("Dockerfile"))?)?.image()?;
        let env_files =
            env_file_stand_ins.iter().map(|(named, instead)| ((*named).to_owned(), dir.join(instead))).collect();
        Ok(Compose { services, order, volumes, image, dir: dir.to_owned(), env_files })
    }

    /// The image the Dockerfile builds.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// The services `docker compose --profile P… up [SERVICE…]` would start: those without a
    /// profile or with one of `profiles`, or only `only` and what they depend on.
    pub fn stack(&self, profiles: &[&str], only: &[&str]) -> Result<Stack> {
        let mut selected: BTreeSet<String> = BTreeSet::new();
        if only.is_empty() {
            for name in &self.order {
                let service_profiles = self.profiles_of(name)?;
                if service_profiles.is_empty() || service_profiles.iter().any(|p| profiles.contains(&p.as_str())) {
                    selected.insert(name.clone());
                }
            }
        } else {
            let mut todo: Vec<String> = only.iter().map(|s| (*s).to_owned()).collect();
            while let Some(name) = todo.pop() {
                if !self.services.contains_key(&name) {
                    return Err(unsupported(format!("no service {name}")));
                }
                if selected.insert(name.clone()) {
                    todo.extend(self.dependencies(&name)?.into_iter().map(|d| d.service));
                }
            }
        }
        let mut stack = Stack::default();
        for name in self.order.iter().filter(|n| selected.contains(*n)) {
            let spec = self.service(name)?;
            for dependency in &spec.depends_on {
                if !selected.contains(&dependency.service) {
                    return Err(unsupported(format!(
                        "service {name} depends on {}, which is not started with profiles {profiles:?}",
                        dependency.service
                    )));
                }
            }
            stack.published.extend(self.ports(name)?);
            stack.services.push(spec);
        }
        Ok(stack)
    }

    /// Every service of the file, whatever its profile.
    pub fn all_services(&self) -> Result<Stack> {
        let mut stack = Stack::default();
        for name in &self.order {
            stack.services.push(self.service(name)?);
        }
        Ok(stack)
    }

    fn raw(&self, name: &str) -> Result<&serde_yaml_ng::Mapping> {
        self.services
            .get(name)
            .and_then(Yaml::as_mapping)
            .ok_or_else(|| unsupported(format!("service {name} is not a mapping")))
    }

    fn field(&self, name: &str, key: &str) -> Result<Option<&Yaml>> {
        Ok(self.raw(name)?.get(key))
    }

    fn profiles_of(&self, name: &str) -> Result<Vec<String>> {
        match self.field(name, "profiles")? {
            None => Ok(Vec::new()),
            Some(value) => string_list(value, &format!("service {name}: profiles")),
        }
    }

    fn service(&self, name: &str) -> Result<ServiceSpec> {
        for key in self.raw(name)?.keys() {
            let key = yaml_str(key, "a service key")?;
            if !COMPOSE_KEYS.contains(&key.as_str()) && !COMPOSE_KEYS_WITHOUT_EFFECT_HERE.contains(&key.as_str()) {
                return Err(unsupported(format!("service {name}: key {key:?}")));
            }
        }
        let kind = self.kind(name)?;
        let mut env = Vec::new();
        if kind == ServiceKind::Stay {
            env.extend(self.image.env.iter().map(|(k, v)| EnvVar { name: k.clone(), value: v.clone(), shared: true }));
        }
        env.extend(self.env_file_vars(name)?);
        env.extend(self.environment(name)?);
        let args = match (self.field(name, "command")?, &kind) {
            (Some(command), _) => match command {
                Yaml::Sequence(_) => string_list(command, &format!("service {name}: command"))?,
                _ => return Err(unsupported(format!("service {name}: command in string form (write a list)"))),
            },
            (None, ServiceKind::Stay) => self.image.cmd.clone(),
            (None, _) => Vec::new(),
        };
        let health = match self.field(name, "healthcheck")? {
            Some(value) => compose_healthcheck(name, value, &kind)?,
            None if kind == ServiceKind::Stay => self.image.health.clone(),
            None => None,
        };
        let mut mounts = self.mounts(name)?;
        if kind == ServiceKind::Stay {
            // The image's VOLUMEs become anonymous volumes unless the service mounts something there.
            for path in &self.image.volumes {
                if !mounts.iter().any(|m| &m.path == path) {
                    mounts.push(Mount { path: path.clone(), volume: format!("{name}:{path}") });
                }
            }
        }
        Ok(ServiceSpec { name: name.to_owned(), kind, args, env, mounts, health, depends_on: self.dependencies(name)? })
    }

    fn kind(&self, name: &str) -> Result<ServiceKind> {
        if let Some(build) = self.field(name, "build")? {
            let context = match build {
                Yaml::String(context) => context.clone(),
                Yaml::Mapping(map) => {
                    for key in map.keys() {
                        let key = yaml_str(key, "a build key")?;
                        if key != "context" && key != "dockerfile" {
                            return Err(unsupported(format!("service {name}: build.{key}")));
                        }
                    }
                    if map.get("dockerfile").is_some_and(|d| d.as_str() != Some("Dockerfile")) {
                        return Err(unsupported(format!("service {name}: a Dockerfile other than ./Dockerfile")));
                    }
                    map.get("context").and_then(Yaml::as_str).unwrap_or(".").to_owned()
                }
                _ => return Err(unsupported(format!("service {name}: build"))),
            };
            if context != "." {
                return Err(unsupported(format!(
                    "service {name}: build context {context:?} (only . is the Stay image)"
                )));
            }
            let entrypoint: Vec<&str> = self.image.entrypoint.iter().map(String::as_str).collect();
            if entrypoint != ["stay"] {
                return Err(unsupported(format!("the Dockerfile's ENTRYPOINT is {entrypoint:?}, not [\"stay\"]")));
            }
            return Ok(ServiceKind::Stay);
        }
        let image = self
            .field(name, "image")?
            .and_then(Yaml::as_str)
            .ok_or_else(|| unsupported(format!("service {name}: neither build nor image")))?;
        Ok(if image.starts_with("postgres:") || image.starts_with("docker.io/library/postgres:") {
            ServiceKind::Postgres
        } else {
            ServiceKind::External(image.to_owned())
        })
    }

    fn env_file_vars(&self, name: &str) -> Result<Vec<EnvVar>> {
        let Some(value) = self.field(name, "env_file")? else { return Ok(Vec::new()) };
        let files = match value {
            Yaml::String(file) => vec![file.clone()],
            Yaml::Sequence(_) => string_list(value, &format!("service {name}: env_file"))?,
            _ => return Err(unsupported(format!("service {name}: env_file in long form"))),
        };
        let mut vars = Vec::new();
        for file in files {
            let path = self.env_files.get(&file).cloned().unwrap_or_else(|| self.dir.join(&file));
            for (number, line) in read(&path)?.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (key, value) = line
                    .split_once('=')
                    .ok_or_else(|| unsupported(format!("{}:{}: not KEY=VALUE", path.display(), number + 1)))?;
                if value.contains('$') || value.starts_with(['"', '\'']) {
                    return Err(unsupported(format!("{}:{}: quotes or $ in a value", path.display(), number + 1)));
                }
                vars.push(EnvVar { name: key.trim().to_owned(), value: value.to_owned(), shared: true });
            }
        }
        Ok(vars)
    }

    fn environment(&self, name: &str) -> Result<Vec<EnvVar>> {
        let mut vars = Vec::new();
        match self.field(name, "environment")? {
            None => {}
            Some(Yaml::Mapping(map)) => {
                for (key, value) in map {
                    let key = yaml_str(key, "a variable name")?;
                    let value = match value {
                        Yaml::String(s) => s.clone(),
                        Yaml::Number(n) => n.to_string(),
                        Yaml::Bool(b) => b.to_string(),
                        _ => {
                            return Err(unsupported(format!(
                                "service {name}: {key} without a value (taken from the shell)"
                            )))
                        }
                    };
                    vars.push(EnvVar { name: key, value, shared: false });
                }
            }
            Some(list @ Yaml::Sequence(_)) => {
                for item in string_list(list, &format!("service {name}: environment"))? {
                    let (key, value) = item.split_once('=').ok_or_else(|| {
                        unsupported(format!("service {name}: {item} without a value (taken from the shell)"))
                    })?;
                    vars.push(EnvVar { name: key.to_owned(), value: value.to_owned(), shared: false });
                }
            }
            Some(_) => return Err(unsupported(format!("service {name}: environment"))),
        }
        Ok(vars)
    }

    fn dependencies(&self, name: &str) -> Result<Vec<Dependency>> {
        let mut dependencies = Vec::new();
        match self.field(name, "depends_on")? {
            None => {}
            Some(list @ Yaml::Sequence(_)) => {
                for service in string_list(list, &format!("service {name}: depends_on"))? {
                    dependencies.push(Dependency { service, condition: Condition::Started });
                }
            }
            Some(Yaml::Mapping(map)) => {
                for (service, options) in map {
                    let service = yaml_str(service, "a dependency")?;
                    let mut condition = Condition::Started;
                    for (key, value) in options.as_mapping().into_iter().flatten() {
                        match (yaml_str(key, "a depends_on key")?.as_str(), value.as_str()) {
                            ("condition", Some("service_started")) => condition = Condition::Started,
                            ("condition", Some("service_healthy")) => condition = Condition::Healthy,
                            ("condition", Some("service_completed_successfully")) => {
                                condition = Condition::CompletedSuccessfully;
                            }
                            (key, _) => return Err(unsupported(format!("service {name}: depends_on.{service}.{key}"))),
                        }
                    }
                    if !self.services.contains_key(&service) {
                        return Err(unsupported(format!("service {name} depends on {service}, which is no service")));
                    }
                    dependencies.push(Dependency { service, condition });
                }
            }
            Some(_) => return Err(unsupported(format!("service {name}: depends_on"))),
        }
        Ok(dependencies)
    }

    fn mounts(&self, name: &str) -> Result<Vec<Mount>> {
        let mut mounts = Vec::new();
        if let Some(value) = self.field(name, "volumes")? {
            for entry in string_list(value, &format!("service {name}: volumes (short form)"))? {
                let mut parts = entry.split(':');
                let (source, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                if path.is_empty() || parts.any(|option| option != "ro" && option != "rw") {
                    return Err(unsupported(format!("service {name}: volume {entry:?}")));
                }
                if !self.volumes.contains(source) {
                    return Err(unsupported(format!(
                        "service {name}: {source:?} is no named volume (bind mounts are not used)"
                    )));
                }
                mounts.push(Mount { path: path.to_owned(), volume: source.to_owned() });
            }
        }
        if let Some(value) = self.field(name, "tmpfs")? {
            let paths = match value {
                Yaml::String(path) => vec![path.clone()],
                _ => string_list(value, &format!("service {name}: tmpfs"))?,
            };
            for path in paths {
                mounts.push(Mount { volume: format!("{name}:{path}"), path });
            }
        }
        Ok(mounts)
    }

    fn ports(&self, name: &str) -> Result<Vec<Published>> {
        let mut published = Vec::new();
        if let Some(value) = self.field(name, "ports")? {
            for entry in string_list(value, &format!("service {name}: ports (short form)"))? {
                let parts: Vec<&str> = entry.split(':').collect();
                let (host, container) = match parts.as_slice() {
                    [host, container] | [_, host, container] => (*host, *container),
                    _ => return Err(unsupported(format!("service {name}: port {entry:?} (write HOST:CONTAINER)"))),
                };
                let number = |text: &str| {
                    text.parse::<u16>().map_err(|_| unsupported(format!("service {name}: port {entry:?}")))
                };
                published.push(Published {
                    port: number(host)?,
                    service: name.to_owned(),
                    container_port: number(container)?,
                });
            }
        }
        Ok(published)
    }
}

fn compose_healthcheck(name: &str, value: &Yaml, kind: &ServiceKind) -> Result<Option<HealthCheck>> {
    let map = value.as_mapping().ok_or_else(|| unsupported(format!("service {name}: healthcheck")))?;
    let mut timing = Timing::docker_defaults();
    let mut argv = None;
    for (key, value) in map {
        let key = yaml_str(key, "a healthcheck key")?;
        match key.as_str() {
            "test" => {
                let test = match value {
                    Yaml::Sequence(_) => string_list(value, &format!("service {name}: healthcheck.test"))?,
                    _ => vec!["CMD-SHELL".to_owned()],
                };
                match test.split_first() {
                    Some((form, rest)) if form == "CMD" => argv = Some(rest.to_vec()),
                    Some((form, _)) if form == "NONE" => return Ok(None),
                    // Only services the harness does not run may use a shell.
                    _ if *kind != ServiceKind::Stay => argv = Some(test),
                    _ => {
                        return Err(unsupported(format!(
                            "service {name}: health check {test:?} needs a shell, which the image does not have"
                        )))
                    }
                }
            }
            "disable" if value.as_bool() == Some(true) => return Ok(None),
            _ => timing.set(&key, value.as_str().map_or_else(|| yaml_scalar(value), str::to_owned).as_str())?,
        }
    }
    let argv = argv.ok_or_else(|| unsupported(format!("service {name}: healthcheck without test")))?;
    Ok(Some(timing.check(Health::Command(argv))))
}

fn yaml_scalar(value: &Yaml) -> String {
    match value {
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn yaml_str(value: &Yaml, what: &str) -> Result<String> {
    value.as_str().map(str::to_owned).ok_or_else(|| unsupported(format!("{what} that is not a string: {value:?}")))
}

fn string_list(value: &Yaml, what: &str) -> Result<Vec<String>> {
    value
        .as_sequence()
        .ok_or_else(|| unsupported(format!("{what}: not a list")))?
        .iter()
        .map(|item| match item {
            Yaml::String(s) => Ok(s.clone()),
            Yaml::Number(n) => Ok(n.to_string()),
            _ => Err(unsupported(format!("{what}: {item:?}"))),
        })
        .collect()
}

fn has_merge_key(value: &Yaml) -> bool {
    match value {
        Yaml::Mapping(map) => map.iter().any(|(key, value)| key.as_str() == Some("<<") || has_merge_key(value)),
        Yaml::Sequence(items) => items.iter().any(has_merge_key),
        Yaml::Tagged(tagged) => has_merge_key(&tagged.value),
        Yaml::Null | Yaml::Bool(_) | Yaml::Number(_) | Yaml::String(_) => false,
    }
}

/// Compose's interpolation in every string value, with no variables set: `$$` is a dollar,
/// `${VAR:-default}`/`${VAR-default}` take the default, anything else is an error.
fn interpolate_all(value: &mut Yaml) -> Result<()> {
    match value {
        Yaml::String(text) => *text = interpolate(text)?,
        Yaml::Sequence(items) => {
            for item in items {
                interpolate_all(item)?;
            }
        }
        Yaml::Mapping(map) => {
            for (_, item) in map.iter_mut() {
                interpolate_all(item)?;
            }
        }
        Yaml::Tagged(tagged) => interpolate_all(&mut tagged.value)?,
        Yaml::Null | Yaml::Bool(_) | Yaml::Number(_) => {}
    }
    Ok(())
}

fn interpolate(text: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(body) = rest.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| unsupported(format!("interpolation in {text:?}")))?;
            let expression = &body[..end];
            let name_len =
                expression.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expression.len());
            let operator = &expression[name_len..];
            let default = operator.strip_prefix(":-").or_else(|| operator.strip_prefix('-'));
            match default {
                Some(default) if !default.contains('$') => out.push_str(default),
                _ => return Err(unsupported(format!("interpolation ${{{expression}}} in {text:?}: no such variable"))),
            }
            rest = &body[end + 1..];
        } else {
            return Err(unsupported(format!("interpolation in {text:?}: no such variable")));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The repository's top folder.
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| DeployError::Io(format!("cannot read {}: {e}", path.display())))
}

// ---------------------------------------------------------------------------------------------
// A rendered Kubernetes overlay.

/// Container keys that change nothing about the process (only how the cluster keeps it).
const K8S_CONTAINER_KEYS_WITHOUT_EFFECT_HERE: &[&str] = &[
    "resources",
    "securityContext",
    "lifecycle",
    "imagePullPolicy",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "livenessProbe",
    "startupProbe",
];
/// Container keys the reader understands.
const K8S_CONTAINER_KEYS: &[&str] =
    &["name", "image", "command", "args", "env", "envFrom", "ports", "readinessProbe", "volumeMounts"];

/// How long a pod may take to become ready here (Kubernetes itself never gives up on readiness).
const K8S_READY_WITHIN: Duration = Duration::from_secs(60);

/// A pod as the Services' selectors see it.
struct Pod {
    name: String,
    labels: BTreeMap<String, String>,
    /// Container ports by name and by number.
    ports: BTreeMap<String, u16>,
}

/// The stack a rendered overlay describes, run with the image the Dockerfile builds.
///
/// Every Deployment and StatefulSet pod runs its one container, after its init containers (each a
/// one-shot that must succeed, on the pod's own volumes); a Job is a one-shot every pod waits for.
/// A container of the `stay` image (`stay:TAG`, whatever registry) is Stay, `postgres:*` the local
/// server; anything else cannot run. A pod's environment is the image's `ENV`, then `envFrom`
/// (shared: ConfigMaps and Secrets), then `env` (its own), resolved from the rendered ConfigMaps
/// and Secrets. The readiness probe is the health check. Services are routes: `name:port` leads to
/// the target port (by number or by name) of the pod their selector matches.
pub fn k8s_stack(rendered: &crate::kustomize::Rendered, image: &Image) -> Result<Stack> {
    use crate::kustomize::{array, container_name, selector_matches};
    let mut stack = Stack::default();
    let mut jobs = Vec::new();
    // (service name, pod labels, named container ports) for the Services' selectors.
    let mut pods: Vec<Pod> = Vec::new();
    for workload in rendered.workloads() {
        let kind = workload.kind();
        if !matches!(kind, "Deployment" | "StatefulSet" | "Job") {
            return Err(unsupported(format!(
                "{kind}/{}: only Deployments, StatefulSets and Jobs run here",
                workload.name()
            )));
        }
        let pod = workload.name().to_owned();
        let containers = workload.containers();
        let [container] = containers.as_slice() else {
            return Err(unsupported(format!("{kind}/{pod}: {} containers in a pod (one is run)", containers.len())));
        };
        let mut volumes = BTreeMap::new();
        for volume in array(workload.pod_spec().get("volumes")) {
            let name = volume.get("name").and_then(Value::as_str).unwrap_or_default();
            if volume.get("emptyDir").is_none() {
                return Err(unsupported(format!("{kind}/{pod}: volume {name} is not an emptyDir")));
            }
            volumes.insert(name.to_owned(), format!("{pod}:{name}"));
        }
        let mut init_names = Vec::new();
        for init in workload.init_containers() {
            let name = format!("{pod}/{}", container_name(init));
            let spec = k8s_container(rendered, image, &name, init, &volumes)?;
            if spec.kind != ServiceKind::Stay {
                return Err(unsupported(format!("{name}: an init container that is not stay")));
            }
            // Init containers run one after another.
            let mut spec = spec;
            if let Some(previous) = init_names.last() {
                spec.depends_on
                    .push(Dependency { service: String::clone(previous), condition: Condition::CompletedSuccessfully });
            }
            init_names.push(name);
            stack.services.push(spec);
        }
        let mut spec = k8s_container(rendered, image, &pod, container, &volumes)?;
        if let Some(last) = init_names.last() {
            spec.depends_on.push(Dependency { service: last.clone(), condition: Condition::CompletedSuccessfully });
        }
        let mut named_ports = BTreeMap::new();
        for port in array(container.get("ports")) {
            let number = port.get("containerPort").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
            let number = number.ok_or_else(|| unsupported(format!("{pod}: containerPort {port}")))?;
            if let Some(name) = port.get("name").and_then(Value::as_str) {
                named_ports.insert(name.to_owned(), number);
            }
            named_ports.insert(number.to_string(), number);
        }
        // Only a Stay pod's probe is run; the local PostgreSQL is up before anything starts.
        if let (Some(probe), ServiceKind::Stay) = (container.get("readinessProbe"), &spec.kind) {
            spec.health = Some(k8s_probe(&pod, probe, &named_ports)?);
        }
        if kind == "Job" {
            jobs.push(pod.clone());
        }
        pods.push(Pod { name: pod.clone(), labels: workload.pod_labels(), ports: named_ports });
        stack.services.push(spec);
    }
    // Every pod waits for the Jobs (the migration) to succeed.
    for service in &mut stack.services {
        for job in &jobs {
            if &service.name != job && !service.name.starts_with(&format!("{job}/")) {
                service
                    .depends_on
                    .push(Dependency { service: job.clone(), condition: Condition::CompletedSuccessfully });
            }
        }
    }
    for service in rendered.of_kind("Service") {
        let host = crate::kustomize::name_of(service).to_owned();
        let selector = service.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
        let selector = serde_json::json!({ "matchLabels": selector });
        let matched: Vec<&Pod> = pods.iter().filter(|pod| selector_matches(&selector, &pod.labels)).collect();
        let [Pod { name: pod, ports: named_ports, .. }] = matched.as_slice() else {
            return Err(DeployError::Mapping(format!("Service {host} selects {} pods (one is run)", matched.len())));
        };
        for port in array(service.pointer("/spec/ports")) {
            let number = port.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
            let number = number.ok_or_else(|| unsupported(format!("Service {host}: port {port}")))?;
            let target = match port.get("targetPort") {
                None => number.to_string(),
                Some(Value::String(name)) => name.clone(),
                Some(other) => other.to_string(),
            };
            let container_port = *named_ports.get(&target).ok_or_else(|| {
                DeployError::Mapping(format!("Service {host}: targetPort {target} is no port of {pod}"))
            })?;
            stack.routes.push(Route { host: host.clone(), port: number, service: pod.clone(), container_port });
        }
    }
    Ok(stack)
}

fn k8s_container(
    rendered: &crate::kustomize::Rendered,
    image: &Image,
    name: &str,
    container: &Value,
    volumes: &BTreeMap<String, String>,
) -> Result<ServiceSpec> {
    for key in container.as_object().into_iter().flat_map(|o| o.keys()) {
        if !K8S_CONTAINER_KEYS.contains(&key.as_str())
            && !K8S_CONTAINER_KEYS_WITHOUT_EFFECT_HERE.contains(&key.as_str())
        {
            return Err(unsupported(format!("container {name}: key {key:?}")));
        }
    }
    let reference = container.get("image").and_then(Value::as_str).unwrap_or_default();
    let repository = reference.rsplit('/').next().unwrap_or_default().split([':', '@']).next().unwrap_or_default();
    let kind = match repository {
        "stay" => ServiceKind::Stay,
        "postgres" => ServiceKind::Postgres,
        _ => ServiceKind::External(reference.to_owned()),
    };
    if kind != ServiceKind::Stay {
        return Ok(ServiceSpec {
            name: name.to_owned(),
            kind,
            args: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            health: None,
            depends_on: Vec::new(),
        });
    }
    if let Some(command) = container.get("command") {
        if command != &serde_json::json!(["stay"]) {
            return Err(unsupported(format!("container {name}: command {command} replaces the stay entrypoint")));
        }
    }
    let args = match container.get("args") {
        Some(_) => crate::kustomize::container_args(container),
        None => image.cmd.clone(),
    };
    let own: BTreeSet<&str> = crate::kustomize::array(container.get("env"))
        .iter()
        .filter_map(|var| var.get("name").and_then(Value::as_str))
        .collect();
    let values =
        rendered.container_env_values(container).map_err(|why| unsupported(format!("container {name}: {why}")))?;
    let mut env: Vec<EnvVar> =
        image.env.iter().map(|(k, v)| EnvVar { name: k.clone(), value: v.clone(), shared: true }).collect();
    // envFrom first, then env over it, as the kubelet builds it.
    for (key, value) in &values {
        if !own.contains(key.as_str()) {
            env.push(EnvVar { name: key.clone(), value: value.clone(), shared: true });
        }
    }
    for (key, value) in &values {
        if own.contains(key.as_str()) {
            env.push(EnvVar { name: key.clone(), value: value.clone(), shared: false });
        }
    }
    let mut mounts = Vec::new();
    for mount in crate::kustomize::array(container.get("volumeMounts")) {
        let volume = mount.get("name").and_then(Value::as_str).unwrap_or_default();
        let path = mount.get("mountPath").and_then(Value::as_str).unwrap_or_default();
        let key = volumes
            .get(volume)
            .ok_or_else(|| unsupported(format!("container {name}: mounts {volume}, which the pod does not have")))?;
        mounts.push(Mount { path: path.to_owned(), volume: key.clone() });
    }
    for path in &image.volumes {
        if !mounts.iter().any(|m| &m.path == path) {
            mounts.push(Mount { path: path.clone(), volume: format!("{name}:{path}") });
        }
    }
    Ok(ServiceSpec { name: name.to_owned(), kind, args, env, mounts, health: None, depends_on: Vec::new() })
}

fn k8s_probe(pod: &str, probe: &Value, named_ports: &BTreeMap<String, u16>) -> Result<HealthCheck> {
    let port_of = |port: Option<&Value>| -> Result<u16> {
        let key = match port {
            Some(Value::String(name)) => name.clone(),
            Some(other) => other.to_string(),
            None => return Err(unsupported(format!("{pod}: a probe without a port"))),
        };
        named_ports
            .get(&key)
            .copied()
            .ok_or_else(|| DeployError::Mapping(format!("{pod}: probe port {key} is no container port")))
    };
    let check = if let Some(get) = probe.get("httpGet") {
        let path = get.get("path").and_then(Value::as_str).unwrap_or("/").to_owned();
        Health::Http { path, port: port_of(get.get("port"))? }
    } else if let Some(tcp) = probe.get("tcpSocket") {
        Health::Tcp { port: port_of(tcp.get("port"))? }
    } else {
        return Err(unsupported(format!("{pod}: a readiness probe other than httpGet or tcpSocket: {probe}")));
    };
    let seconds =
        |key: &str, default: u64| Duration::from_secs(probe.get(key).and_then(Value::as_u64).unwrap_or(default));
    Ok(HealthCheck {
        check,
        give_up_after: K8S_READY_WITHIN + seconds("initialDelaySeconds", 0),
        timeout: seconds("timeoutSeconds", 1),
    })
}

// ---------------------------------------------------------------------------------------------
// Running a stack.

/// A running stack: every process, its ports, databases and directories.
#[derive(Debug)]
pub struct Deployment {
    processes: Vec<(String, Child)>,
    ports: HashMap<(String, u16), u16>,
    routes: Vec<Route>,
    published: Vec<Published>,
    planned: HashMap<String, Planned>,
    logs: TempDir,
    _volumes: Vec<TempDir>,
    _databases: Vec<TestPostgres>,
}

/// Everything decided before a process starts.
struct Plan<'a> {
    stack: &'a Stack,
    listens: HashMap<String, Vec<u16>>,
    ports: HashMap<(String, u16), u16>,
    routes: Vec<Route>,
    databases: HashMap<(String, String), TestPostgres>,
    volumes: HashMap<String, TempDir>,
}

impl Deployment {
    /// Checks `stack` against `stay --help`, then starts every service in dependency order and
    /// waits for each as its dependants would. Fails with every process's log.
    pub async fn start(stack: &Stack) -> Result<Deployment> {
        check_stack(stack)?;
        Deployment::start_unchecked(stack).await
    }

    /// [`Deployment::start`] without the `--help` check: for showing that a misspelt flag is also
    /// refused by `stay` itself (clap exits non-zero), which the start reports with the logs.
    pub async fn start_unchecked(stack: &Stack) -> Result<Deployment> {
        for service in &stack.services {
            if let ServiceKind::External(image) = &service.kind {
                return Err(unsupported(format!("service {} ({image}) cannot run on this machine", service.name)));
            }
        }
        let mut plan = Plan::new(stack)?;
        let logs = tempfile::Builder::new().prefix("stay-deploy-logs-").tempdir().map_err(io)?;
        let mut deployment = Deployment {
            processes: Vec::new(),
            ports: plan.ports.clone(),
            routes: plan.routes.clone(),
            published: stack.published.clone(),
            planned: HashMap::new(),
            logs,
            _volumes: Vec::new(),
            _databases: Vec::new(),
        };
        let mut commands = Vec::new();
        for service in stack.services.iter().filter(|s| s.kind == ServiceKind::Stay) {
            commands.push((service.name.clone(), plan.command(service).await?));
        }
        deployment._databases = plan.databases.drain().map(|(_, db)| db).collect();
        deployment._volumes = plan.volumes.drain().map(|(_, dir)| dir).collect();

        let mut state: HashMap<String, Condition> = HashMap::new();
        for service in stack.services.iter().filter(|s| s.kind == ServiceKind::Postgres) {
            state.insert(service.name.clone(), Condition::Healthy);
        }
        let mut waiting: Vec<(String, Planned)> = commands;
        let mut started: Vec<(String, Planned)> = Vec::new();
        while !waiting.is_empty() {
            let ready = waiting.iter().position(|(name, _)| {
                stack.service(name).is_some_and(|s| s.depends_on.iter().all(|d| reached(&state, d)))
            });
            let Some(index) = ready else {
                let names: Vec<&String> = waiting.iter().map(|(n, _)| n).collect();
                return Err(unsupported(format!("depends_on never satisfied (a cycle?) for {names:?}")));
            };
            let (name, planned) = waiting.remove(index);
            deployment.spawn(&name, &planned)?;
            deployment.planned.insert(name.clone(), planned.clone());
            started.push((name.clone(), planned.clone()));
            state.insert(name.clone(), Condition::Started);
            // What do the others wait for? Reach it before going on.
            let wanted: BTreeSet<Condition> = stack
                .services
                .iter()
                .flat_map(|s| &s.depends_on)
                .filter(|d| d.service == name)
                .map(|d| d.condition)
                .collect();
            if wanted.contains(&Condition::CompletedSuccessfully) {
                deployment.wait_completed(&name).await?;
                state.insert(name.clone(), Condition::CompletedSuccessfully);
            } else if wanted.contains(&Condition::Healthy) {
                let Some(health) = &planned.health else {
                    return Err(unsupported(format!(
                        "others wait for {name} to be healthy, but it has no health check"
                    )));
                };
                deployment.wait_healthy(&name, health, &planned).await?;
                state.insert(name.clone(), Condition::Healthy);
            }
        }
        // As `docker compose up --wait`: every service with a health check is healthy (a one-shot
        // that nobody waited for must have succeeded instead).
        for (name, planned) in &started {
            let exited = deployment.child(name).and_then(|c| c.try_wait().ok().flatten());
            match (exited, &planned.health) {
                (Some(status), _) if status.success() => {}
                (Some(status), _) => return Err(deployment.fail(name, format!("exited with {status}"))),
                (None, Some(health)) if state.get(name) != Some(&Condition::Healthy) => {
                    deployment.wait_healthy(name, health, planned).await?;
                }
                (None, _) => {}
            }
        }
        Ok(deployment)
    }

    /// The base URL of a port published to the outside (compose `ports:`), such as 8080.
    pub fn published(&self, port: u16) -> String {
        let published =
            self.published.iter().find(|p| p.port == port).unwrap_or_else(|| panic!("nothing publishes port {port}"));
        self.local(&published.service, published.container_port)
    }

    /// The base URL by which other services reach `host:port` (a service or Kubernetes Service).
    pub fn url(&self, host: &str, port: u16) -> String {
        let route = self
            .routes
            .iter()
            .find(|r| r.host == host && r.port == port)
            .unwrap_or_else(|| panic!("no service answers at {host}:{port}"));
        self.local(&route.service, route.container_port)
    }

    fn local(&self, service: &str, container_port: u16) -> String {
        let port = self
            .ports
            .get(&(service.to_owned(), container_port))
            .unwrap_or_else(|| panic!("service {service} does not listen on {container_port}"));
        format!("http://127.0.0.1:{port}")
    }

    /// Runs `stay ARGS…` once in `service`'s environment, as `docker compose run --rm SERVICE
    /// ARGS…` (or `kubectl exec`) would: its mapped variables, not the test's. Its output.
    pub fn run(&self, service: &str, args: &[&str]) -> std::process::Output {
        let planned = self.planned.get(service).unwrap_or_else(|| panic!("no Stay service {service} was started"));
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        planned.command(&args).output().unwrap_or_else(|e| panic!("cannot run stay in {service}: {e}"))
    }

    /// Every process's log so far, each under its service's name.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(self.logs.path())
            .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for path in entries {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let _ = write!(all, "----- {name}\n{text}\n");
        }
        all
    }

    fn fail(&self, service: &str, why: impl Into<String>) -> DeployError {
        DeployError::Start { service: service.to_owned(), why: why.into(), logs: self.logs() }
    }

    fn spawn(&mut self, name: &str, planned: &Planned) -> Result<()> {
        let path = self.logs.path().join(format!("{}.log", name.replace('/', "--")));
        let log = std::fs::File::create(&path)
            .map_err(|e| DeployError::Io(format!("cannot create {}: {e}", path.display())))?;
        let err = log.try_clone().map_err(io)?;
        let child = planned
            .command(&planned.args)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| self.fail(name, format!("cannot start: {e}")))?;
        self.processes.push((name.to_owned(), child));
        Ok(())
    }

    fn child(&mut self, name: &str) -> Option<&mut Child> {
        self.processes.iter_mut().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    async fn wait_completed(&mut self, name: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self.child(name).and_then(|c| c.try_wait().ok().flatten());
            match status {
                Some(status) if status.success() => return Ok(()),
                Some(status) => {
                    return Err(self.fail(name, format!("exited with {status}, others needed it to succeed")))
                }
                None if Instant::now() > deadline => return Err(self.fail(name, "did not finish within 120 s")),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn wait_healthy(&mut self, name: &str, health: &PlannedHealth, planned: &Planned) -> Result<()> {
        let deadline = Instant::now() + health.give_up_after;
        loop {
            if let Some(status) = self.child(name).and_then(|c| c.try_wait().ok().flatten()) {
                return Err(self.fail(name, format!("exited with {status} before it was healthy")));
            }
            let last = match health.run(planned).await {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if Instant::now() > deadline {
                return Err(self.fail(
                    name,
                    format!("not healthy after {:?} (compose would call it unhealthy): {last}", health.give_up_after),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn reached(state: &HashMap<String, Condition>, dependency: &Dependency) -> bool {
    match (state.get(&dependency.service), dependency.condition) {
        (None, _) => false,
        (Some(_), Condition::Started) => true,
        (Some(now), Condition::Healthy) => matches!(now, Condition::Healthy | Condition::CompletedSuccessfully),
        (Some(now), Condition::CompletedSuccessfully) => *now == Condition::CompletedSuccessfully,
    }
}

fn io(err: std::io::Error) -> DeployError {
    DeployError::Io(err.to_string())
}

/// A Stay process ready to start: mapped arguments and environment.
#[derive(Debug, Clone)]
struct Planned {
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    health: Option<PlannedHealth>,
}

impl Planned {
    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(stay_binary());
        command
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        command
    }
}

/// A health check with its references mapped.
#[derive(Debug, Clone)]
struct PlannedHealth {
    check: PlannedCheck,
    give_up_after: Duration,
    timeout: Duration,
}

#[derive(Debug, Clone)]
enum PlannedCheck {
    /// `stay` arguments.
    Stay(Vec<String>),
    /// A URL to GET.
    Get(String),
    /// An address to connect to.
    Connect(String),
}

impl PlannedHealth {
    async fn run(&self, planned: &Planned) -> Result<(), String> {
        match &self.check {
            PlannedCheck::Stay(args) => {
                let mut child = planned
                    .command(args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("cannot run the health check: {e}"))?;
                let deadline = Instant::now() + self.timeout;
                loop {
                    if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                        let output = child.wait_with_output().map_err(|e| e.to_string())?;
                        if status.success() {
                            return Ok(());
                        }
                        let said = String::from_utf8_lossy(&output.stdout).into_owned()
                            + &String::from_utf8_lossy(&output.stderr);
                        return Err(format!("stay {} exited with {status}: {}", args.join(" "), said.trim()));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!("stay {} took longer than {:?}", args.join(" "), self.timeout));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            PlannedCheck::Connect(address) => {
                let connect = tokio::net::TcpStream::connect(address.as_str());
                match tokio::time::timeout(self.timeout, connect).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(err)) => Err(format!("connect {address}: {err}")),
                    Err(_) => Err(format!("connect {address}: no answer within {:?}", self.timeout)),
                }
            }
            PlannedCheck::Get(url) => {
                let client = reqwest::Client::builder().timeout(self.timeout).build().map_err(|e| e.to_string())?;
                let answer = client.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
                if answer.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("GET {url}: {}", answer.status()))
                }
            }
        }
    }
}

impl<'a> Plan<'a> {
    fn new(stack: &'a Stack) -> Result<Plan<'a>> {
        let mut listens: HashMap<String, Vec<u16>> = HashMap::new();
        let mut ports = HashMap::new();
        for service in stack.services.iter().filter(|s| s.kind == ServiceKind::Stay) {
            let Some(listen) = listen_setting(service)? else { continue };
            let port = container_listen_port(&service.name, &listen)?;
            listens.entry(service.name.clone()).or_default().push(port);
            ports.insert((service.name.clone(), port), free_port()?);
        }
        let mut routes = stack.routes.clone();
        for (service, service_ports) in &listens {
            for port in service_ports {
                routes.push(Route {
                    host: service.clone(),
                    port: *port,
                    service: service.clone(),
                    container_port: *port,
                });
            }
        }
        for route in &routes {
            let stay = stack.service(&route.service).is_some_and(|s| s.kind == ServiceKind::Stay);
            if stay && !ports.contains_key(&(route.service.clone(), route.container_port)) {
                return Err(DeployError::Mapping(format!(
                    "{}:{} leads to port {} of {}, which it does not listen on",
                    route.host, route.port, route.container_port, route.service
                )));
            }
        }
        for published in &stack.published {
            let listening = listens.get(&published.service).is_some_and(|p| p.contains(&published.container_port));
            let database = stack.service(&published.service).is_some_and(|s| s.kind != ServiceKind::Stay);
            if !listening && !database {
                return Err(DeployError::Mapping(format!(
                    "service {} publishes {}:{} but listens on {:?}",
                    published.service,
                    published.port,
                    published.container_port,
                    listens.get(&published.service)
                )));
            }
        }
        Ok(Plan { stack, listens, ports, routes, databases: HashMap::new(), volumes: HashMap::new() })
    }

    async fn command(&mut self, service: &ServiceSpec) -> Result<Planned> {
        let mut dir_of_mount = Vec::new();
        for mount in &service.mounts {
            if !self.volumes.contains_key(&mount.volume) {
                let dir = tempfile::Builder::new().prefix("stay-volume-").tempdir().map_err(io)?;
                self.volumes.insert(mount.volume.clone(), dir);
            }
            let dir = self.volumes[&mount.volume].path().to_owned();
            dir_of_mount.push((mount.path.clone(), dir));
        }
        let mut args = Vec::new();
        for arg in &service.args {
            args.push(self.map_arg(service, arg, &dir_of_mount).await?);
        }
        // The last value of a name wins, as in a container.
        let mut env: Vec<(String, String)> = Vec::new();
        // A variable that neither the subcommand nor its health check reads has no effect: it is
        // passed on as written (the image's STAY_LISTEN in a `stay migrate`, say).
        let mut read: BTreeSet<String> = variables_read(&service.args)?;
        if let Some(HealthCheck { check: Health::Command(argv), .. }) = &service.health {
            read.extend(variables_read(argv.get(1..).unwrap_or_default())?);
        }
        let read = |name: &str| PROCESS_WIDE_VARIABLES.contains(&name) || read.contains(name);
        for var in &service.env {
            let value = if read(&var.name) {
                self.map_value(service, &var.value, &dir_of_mount).await?
            } else {
                var.value.clone()
            };
            env.retain(|(name, _)| name != &var.name);
            env.push((var.name.clone(), value));
        }
        let health = match &service.health {
            None => None,
            Some(health) => Some(PlannedHealth {
                check: match &health.check {
                    Health::Command(argv) => {
                        let mut args = Vec::new();
                        for arg in argv.iter().skip(1) {
                            args.push(self.map_arg(service, arg, &dir_of_mount).await?);
                        }
                        PlannedCheck::Stay(args)
                    }
                    Health::Tcp { port } => {
                        let local = self.ports.get(&(service.name.clone(), *port)).ok_or_else(|| {
                            DeployError::Mapping(format!(
                                "service {}: probe on port {port}, which it does not listen on",
                                service.name
                            ))
                        })?;
                        PlannedCheck::Connect(format!("127.0.0.1:{local}"))
                    }
                    Health::Http { path, port } => {
                        let local = self.ports.get(&(service.name.clone(), *port)).ok_or_else(|| {
                            DeployError::Mapping(format!(
                                "service {}: probe on port {port}, which it does not listen on",
                                service.name
                            ))
                        })?;
                        PlannedCheck::Get(format!("http://127.0.0.1:{local}{path}"))
                    }
                },
                give_up_after: health.give_up_after,
                timeout: health.timeout,
            }),
        };
        let dir = tempfile::Builder::new().prefix("stay-cwd-").tempdir().map_err(io)?;
        let planned = Planned { args, env, dir: dir.path().to_owned(), health };
        self.volumes.insert(format!("{}:cwd", service.name), dir);
        Ok(planned)
    }

    async fn map_arg(&mut self, service: &ServiceSpec, arg: &str, mounts: &[(String, PathBuf)]) -> Result<String> {
        if let Some((flag, value)) = arg.strip_prefix("--").and_then(|a| a.split_once('=')) {
            return Ok(format!("--{flag}={}", self.map_value(service, value, mounts).await?));
        }
        self.map_value(service, arg, mounts).await
    }

    /// One value as the process outside a container must see it.
    async fn map_value(&mut self, service: &ServiceSpec, value: &str, mounts: &[(String, PathBuf)]) -> Result<String> {
        // Its own listen address: every interface in a container, the mapped port here.
        for prefix in ["0.0.0.0:", "[::]:"] {
            if let Some(port) = value.strip_prefix(prefix) {
                let port: u16 = port.parse().map_err(|_| DeployError::Mapping(format!("{}: {value}", service.name)))?;
                let local = self.own_port(service, port, value)?;
                return Ok(format!("127.0.0.1:{local}"));
            }
        }
        // A container path under a volume.
        for (path, dir) in mounts {
            if value == path {
                return Ok(dir.display().to_string());
            }
            if let Some(rest) = value.strip_prefix(&format!("{path}/")) {
                return Ok(dir.join(rest).display().to_string());
            }
        }
        // A URL naming a host.
        if let Some((scheme, after)) = value.split_once("://") {
            if scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') && !scheme.is_empty() {
                return self.map_url(service, scheme, after, value).await;
            }
        }
        Ok(value.to_owned())
    }

    fn own_port(&self, service: &ServiceSpec, port: u16, value: &str) -> Result<u16> {
        self.ports.get(&(service.name.clone(), port)).copied().ok_or_else(|| {
            DeployError::Mapping(format!(
                "service {}: {value} is not a port it listens on ({:?})",
                service.name,
                self.listens.get(&service.name)
            ))
        })
    }

    async fn map_url(&mut self, service: &ServiceSpec, scheme: &str, after: &str, value: &str) -> Result<String> {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, tail) = after.split_at(end);
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((user, hostport)) => (Some(user), hostport),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => {
                let port: u16 =
                    port.parse().map_err(|_| DeployError::Mapping(format!("{}: port in {value}", service.name)))?;
                (host, Some(port))
            }
            None => (hostport, None),
        };
        let target = self.stack.service(host).map(|s| s.kind.clone());
        if matches!(target, Some(ServiceKind::Postgres))
            || self.stack.routes.iter().any(|r| r.host == host && self.is_postgres(&r.service))
        {
            if !scheme.starts_with("postgres") || port.is_some_and(|p| p != 5432) {
                return Err(DeployError::Mapping(format!("{}: {value} names PostgreSQL {host} oddly", service.name)));
            }
            let (path, query) = tail.split_once('?').map_or((tail, None), |(p, q)| (p, Some(q)));
            let database = path.trim_start_matches('/').to_owned();
            let server = self.route_service(host).unwrap_or_else(|| host.to_owned());
            let key = (server, database);
            if !self.databases.contains_key(&key) {
                self.databases.insert(key.clone(), TestPostgres::create().await);
            }
            // The local server's user and database replace the container's (user and password).
            let url = self.databases[&key].url().to_owned();
            return Ok(match query {
                Some(query) => format!("{url}?{query}"),
                None => url,
            });
        }
        let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
        let local = if host == "127.0.0.1" || host == "localhost" {
            self.own_port(service, port, value)?
        } else if let Some(route) = self.routes.iter().find(|r| r.host == host && r.port == port) {
            self.ports[&(route.service.clone(), route.container_port)]
        } else if self.stack.service(host).is_some() || self.routes.iter().any(|r| r.host == host) {
            return Err(DeployError::Mapping(format!("{}: {value}: {host} does not listen on {port}", service.name)));
        } else {
            return Err(DeployError::Mapping(format!("{}: {value}: {host} is no service", service.name)));
        };
        let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        Ok(format!("{scheme}://{user}127.0.0.1:{local}{tail}"))
    }

    fn route_service(&self, host: &str) -> Option<String> {
        self.stack.routes.iter().find(|r| r.host == host).map(|r| r.service.clone())
    }

    fn is_postgres(&self, service: &str) -> bool {
        self.stack.service(service).is_some_and(|s| s.kind == ServiceKind::Postgres)
    }
}

/// The variables `stay ARGS…` reads: those of its subcommand whose flag is not given.
fn variables_read(args: &[String]) -> Result<BTreeSet<String>> {
    let Some(sub) = args.first() else { return Ok(BTreeSet::new()) };
    let help = Help::of(sub)?;
    let mut problems = Vec::new();
    let given: BTreeSet<String> =
        given_flags(&args[1..], &help, &mut problems, sub).into_iter().map(|g| g.name).collect();
    Ok(help.flags.iter().filter(|(name, _)| !given.contains(*name)).filter_map(|(_, flag)| flag.env.clone()).collect())
}

/// A service's listen address as the process will see it: `--listen`, else the variable that
/// `--help` names for it, else its default. None when the subcommand has no --listen.
fn listen_setting(service: &ServiceSpec) -> Result<Option<String>> {
    let help = Help::of(service.subcommand()?)?;
    let Some(flag) = help.flags.get("listen") else { return Ok(None) };
    let mut problems = Vec::new();
    let given = given_flags(&service.args[1..], &help, &mut problems, &service.name);
    if let Some(value) = given.iter().rev().find(|g| g.name == "listen").and_then(|g| g.value.clone()) {
        return Ok(Some(value));
    }
    if let Some(value) = flag.env.as_deref().and_then(|name| service.env_value(name)) {
        return Ok(Some(value.to_owned()));
    }
    Ok(flag.default.clone())
}

fn container_listen_port(service: &str, listen: &str) -> Result<u16> {
    let (host, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| DeployError::Mapping(format!("service {service}: listen address {listen:?}")))?;
    if host != "0.0.0.0" && host != "[::]" {
        return Err(DeployError::Mapping(format!(
            "service {service} listens on {listen}, which nothing outside its container can reach"
        )));
    }
    port.parse().map_err(|_| DeployError::Mapping(format!("service {service}: listen address {listen:?}")))
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    Ok(listener.local_addr().map_err(io)?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_compose_writes_them() {
        assert_eq!(duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(duration("5 s").is_err());
        assert!(duration("soon").is_err());
    }

    #[test]
    fn interpolation_takes_defaults_and_refuses_unknown_variables() {
        assert_eq!(interpolate("${IMAGE:-stay:local}").unwrap(), "stay:local");
        assert_eq!(interpolate("a$$b").unwrap(), "a$b");
        assert!(matches!(interpolate("${IMAGE}"), Err(DeployError::Unsupported(m)) if m.contains("IMAGE")));
        assert!(interpolate("$IMAGE").is_err());
        assert!(interpolate("${IMAGE:?set-it}").is_err(), "a required variable has no default");
        assert_eq!(interpolate("${TAG-1.2-rc}").unwrap(), "1.2-rc");
    }

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
