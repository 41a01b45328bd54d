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
//!
//! [`stay_binary`]: crate::server::stay_binary
//! [`TestPostgres`]: crate::databases::TestPostgres

use std::time::Duration;

mod client;
mod compose;
mod dockerfile;
mod help_check;
mod kubernetes;
mod run;

pub use client::send;
pub use compose::{repository_root, Compose};
pub use dockerfile::{Dockerfile, Image, Instruction};
pub use help_check::{check_stack, Help, HelpFlag};
pub use kubernetes::k8s_stack;
pub use run::Deployment;

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
