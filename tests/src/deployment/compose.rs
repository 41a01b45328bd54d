//! docker-compose.yml, read with its env files and the Dockerfile of the services it builds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value as Yaml;

use super::dockerfile::{Dockerfile, Image, Timing};
use super::{
    unsupported, Condition, Dependency, DeployError, EnvVar, Health, HealthCheck, Mount, Published, Result,
    ServiceKind, ServiceSpec, Stack,
};

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
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_takes_defaults_and_refuses_unknown_variables() {
        assert_eq!(interpolate("${IMAGE:-stay:local}").unwrap(), "stay:local");
        assert_eq!(interpolate("a$$b").unwrap(), "a$b");
        assert!(matches!(interpolate("${IMAGE}"), Err(DeployError::Unsupported(m)) if m.contains("IMAGE")));
        assert!(interpolate("$IMAGE").is_err());
        assert!(interpolate("${IMAGE:?set-it}").is_err(), "a required variable has no default");
        assert_eq!(interpolate("${TAG-1.2-rc}").unwrap(), "1.2-rc");
    }
}
