//! A rendered Kubernetes overlay: its pods, init containers, Jobs, probes and Services as a stack.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::dockerfile::Image;
use super::{
    unsupported, Condition, Dependency, DeployError, EnvVar, Health, HealthCheck, Mount, Result, Route, ServiceKind,
    ServiceSpec, Stack,
};

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
