//! Running a stack: every service as a local process, in dependency order, with its references
//! mapped (the rules are in the module doc of [`super`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::help_check::{given_flags, Help};
use super::{
    check_stack, unsupported, Condition, Dependency, DeployError, Health, HealthCheck, Published, Result, Route,
    ServiceKind, ServiceSpec, Stack, PROCESS_WIDE_VARIABLES,
};
use crate::databases::TestPostgres;
use crate::server::stay_binary;

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
        // The local port a probe on the service's container `port` reaches.
        let probed = |port: u16| {
            self.ports.get(&(service.name.clone(), port)).copied().ok_or_else(|| {
                DeployError::Mapping(format!(
                    "service {}: probe on port {port}, which it does not listen on",
                    service.name
                ))
            })
        };
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
                    Health::Tcp { port } => PlannedCheck::Connect(format!("127.0.0.1:{}", probed(*port)?)),
                    Health::Http { path, port } => {
                        PlannedCheck::Get(format!("http://127.0.0.1:{}{path}", probed(*port)?))
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
