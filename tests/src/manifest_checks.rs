//! The properties a safe deployment of Stay needs, checked on a rendered Kubernetes overlay
//! (issue 14):
//!
//! - readiness (`/readyz`) and liveness (`/healthz`) probes that differ, liveness the more patient;
//! - requests and limits, non-root, a read-only root filesystem, no privilege escalation and no
//!   capabilities, for every container and init container;
//! - a termination grace longer than `stay serve`'s shutdown grace plus the preStop sleep;
//! - an HPA for each API role targeting its Deployment, a PDB for every role whose selector
//!   matches its pods;
//! - NetworkPolicies that let the ingress controller's namespace reach the roles behind the
//!   Ingress and nothing else;
//! - the JWT secret and the PostgreSQL URL from a Secret; the schema migrated by `stay migrate`
//!   before the roles, which never migrate themselves (STAY_NO_MIGRATE);
//! - Services that select pods and target their ports; an Ingress whose backends exist and that
//!   sends each path to the role that serves it;
//! - every flag and STAY_* variable the manifests give `stay` is one `stay <command> --help` lists.
//!
//! Each check is a function that returns the problems it finds, one line each; [`CHECKS`] names
//! them all, and [`check_flags`] checks the flags and variables against `stay`'s own help.
//! tests/tests/deploy_k8s_manifests.rs runs them on every overlay and shows that each catches the
//! breakage it guards against.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::kustomize::{
    self, array, component, container_args, container_name, name_of, selector_matches, string_map, EnvSource, Rendered,
    Workload,
};
use crate::server::stay_binary;

/// The roles of `stay serve`, each a Deployment of its own.
pub const ROLES: [&str; 4] = ["command-api", "query-api", "projector", "saga"];

/// The roles whose load is requests, so an HPA scales them.
const API_ROLES: [&str; 2] = ["command-api", "query-api"];

/// The namespace of the ingress controller (ingress-nginx's), which the NetworkPolicies let in.
const INGRESS_NAMESPACE: &str = "ingress-nginx";

/// `stay serve --shutdown-grace`'s default, when the manifests do not set STAY_SHUTDOWN_GRACE.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// What the checks look at
// ---------------------------------------------------------------------------------------------

/// Whether a container runs the Stay image (`stay`, `stay:TAG`, `REGISTRY/stay:TAG`).
pub fn runs_stay_image(container: &Value) -> bool {
    let image = container.get("image").and_then(Value::as_str).unwrap_or_default();
    let without_tag = image.split('@').next().unwrap_or_default();
    let repository = without_tag.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(without_tag, |(r, _)| r);
    repository.rsplit('/').next() == Some("stay")
}

/// The Deployment of a role: a workload whose pods are labelled `stay` / the role.
pub fn role_workload<'a>(rendered: &'a Rendered, role: &str) -> Option<Workload<'a>> {
    rendered.workloads().into_iter().find(|workload| {
        let labels = workload.pod_labels();
        workload.kind() == "Deployment"
            && labels.get("app.kubernetes.io/name").map(String::as_str) == Some("stay")
            && component(&labels) == role
    })
}

/// The container of a pod that runs `stay serve`.
pub fn serve_container<'a>(workload: &Workload<'a>) -> Option<&'a Value> {
    workload
        .containers()
        .into_iter()
        .find(|container| container_args(container).first().map(String::as_str) == Some("serve"))
}

/// A duration as `stay serve` reads it (humantime's forms that manifests use: `10s`, `1m30s`, `500ms`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match rest[..unit].trim() {
            "ms" => Duration::from_millis(1),
            "s" | "sec" | "secs" | "second" | "seconds" => Duration::from_secs(1),
            "m" | "min" | "mins" | "minute" | "minutes" => Duration::from_secs(60),
            "h" | "hr" | "hrs" | "hour" | "hours" => Duration::from_secs(3600),
            _ => return None,
        };
        total += scale * u32::try_from(number).ok()?;
        rest = &rest[unit..];
    }
    Some(total)
}

/// The ports a container declares: names and numbers, as text.
fn container_ports(container: &Value) -> BTreeSet<String> {
    array(container.get("ports"))
        .iter()
        .flat_map(|port| {
            [
                port.get("name").and_then(Value::as_str).map(str::to_owned),
                port.get("containerPort").map(Value::to_string),
            ]
        })
        .flatten()
        .collect()
}

/// A port reference (a number or a port's name) as text.
fn port_ref(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// The checks: each returns the problems it finds
// ---------------------------------------------------------------------------------------------

/// Every role has a Deployment labelled `app.kubernetes.io/name: stay` and its component, running
/// `stay serve --role ROLE`.
fn check_roles(rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    for role in ROLES {
        let Some(workload) = role_workload(rendered, role) else {
            problems.push(format!("no Deployment runs pods labelled app.kubernetes.io/component={role}"));
            continue;
        };
        let Some(serve) = serve_container(&workload) else {
            problems.push(format!("{}: no container runs `stay serve`", workload.name()));
            continue;
        };
        let args = container_args(serve);
        let role_arg = args.iter().position(|arg| arg == "--role").and_then(|at| args.get(at + 1));
        if role_arg.map(String::as_str) != Some(role) {
            problems.push(format!("{}: runs {args:?}, not `serve --role {role}`", workload.name()));
        }
        if !runs_stay_image(serve) {
            problems.push(format!("{}: the serve container's image is not Stay's", workload.name()));
        }
    }
    problems
}

/// Readiness is GET /readyz, liveness GET /healthz, on a port the container has; liveness gives
/// up later than readiness (a slow store takes a pod out of service, it does not restart it).
fn check_probes(rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    for role in ROLES {
        let Some(serve) = role_workload(rendered, role).as_ref().and_then(serve_container) else { continue };
        let ports = container_ports(serve);
        let probe = |name: &str| serve.get(name).filter(|probe| probe.is_object());
        for (name, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let Some(found) = probe(name) else {
                problems.push(format!("{role}: no {name}"));
                continue;
            };
            let got = found.pointer("/httpGet/path").and_then(Value::as_str);
            if got != Some(path) {
                problems.push(format!("{role}: {name} is {got:?}, not GET {path}"));
            }
            let port = found.pointer("/httpGet/port").map(port_ref).unwrap_or_default();
            if !ports.contains(&port) {
                problems.push(format!("{role}: {name} probes port {port:?}, which the container does not have"));
            }
        }
        if let (Some(readiness), Some(liveness)) = (probe("readinessProbe"), probe("livenessProbe")) {
            if readiness == liveness {
                problems.push(format!("{role}: the readiness and liveness probes are the same"));
            }
            // How long each takes to act: periodSeconds (default 10) × failureThreshold (default 3).
            let patience = |probe: &Value| {
                probe.get("periodSeconds").and_then(Value::as_u64).unwrap_or(10)
                    * probe.get("failureThreshold").and_then(Value::as_u64).unwrap_or(3)
            };
            if patience(liveness) <= patience(readiness) {
                problems.push(format!(
                    "{role}: liveness gives up after {} s, no later than readiness ({} s)",
                    patience(liveness),
                    patience(readiness)
                ));
            }
        }
    }
    problems
}

/// Every container and init container of every workload: requests and limits for CPU and
/// memory, non-root, read-only root filesystem, no privilege escalation, every capability
/// dropped. Stay's pods mount no service-account token.
fn check_hardening(rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    for workload in rendered.workloads() {
        let pod_security = workload.pod_spec().get("securityContext").cloned().unwrap_or(Value::Null);
        for container in workload.all_containers() {
            let at = format!("{}/{} container {}", workload.kind(), workload.name(), container_name(container));
            for section in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    if container.pointer(&format!("/resources/{section}/{resource}")).is_none() {
                        problems.push(format!("{at}: no {section}.{resource}"));
                    }
                }
            }
            let security = container.get("securityContext").cloned().unwrap_or(Value::Null);
            // The container's own setting wins over the pod's.
            let run_as_non_root =
                security.get("runAsNonRoot").or_else(|| pod_security.get("runAsNonRoot")).and_then(Value::as_bool);
            if run_as_non_root != Some(true) {
                problems.push(format!("{at}: runAsNonRoot is not true"));
            }
            let user = security.get("runAsUser").or_else(|| pod_security.get("runAsUser")).and_then(Value::as_u64);
            if user == Some(0) {
                problems.push(format!("{at}: runs as user 0"));
            }
            if security.get("readOnlyRootFilesystem").and_then(Value::as_bool) != Some(true) {
                problems.push(format!("{at}: readOnlyRootFilesystem is not true"));
            }
            if security.get("allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false) {
                problems.push(format!("{at}: allowPrivilegeEscalation is not false"));
            }
            if !array(security.pointer("/capabilities/drop")).iter().any(|cap| cap.as_str() == Some("ALL")) {
                problems.push(format!("{at}: does not drop ALL capabilities"));
            }
            if array(security.pointer("/capabilities/add")).iter().next().is_some() {
                problems.push(format!("{at}: adds capabilities"));
            }
        }
        let stay_pod = workload.all_containers().into_iter().any(runs_stay_image);
        if stay_pod && workload.pod_spec().get("automountServiceAccountToken").and_then(Value::as_bool) != Some(false) {
            problems.push(format!("{}/{}: mounts a service-account token", workload.kind(), workload.name()));
        }
    }
    problems
}

/// terminationGracePeriodSeconds (default 30) exceeds `--shutdown-grace` plus the preStop sleep,
/// so the kubelet never kills `stay serve` while it finishes requests in flight.
fn check_termination(rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    for role in ROLES {
        let Some(workload) = role_workload(rendered, role) else { continue };
        let Some(serve) = serve_container(&workload) else { continue };
        let env = match rendered.container_env(serve) {
            Ok(env) => env,
            Err(why) => {
                problems.push(format!("{role}: {why}"));
                continue;
            }
        };
        let args = container_args(serve);
        let from_args = args
            .iter()
            .position(|arg| arg == "--shutdown-grace")
            .and_then(|at| args.get(at + 1).cloned())
            .or_else(|| args.iter().find_map(|arg| arg.strip_prefix("--shutdown-grace=").map(str::to_owned)));
        let configured =
            from_args.or_else(|| env.get("STAY_SHUTDOWN_GRACE").and_then(EnvSource::value).map(str::to_owned));
        let grace = match configured {
            Some(text) => match parse_duration(&text) {
                Some(grace) => grace,
                None => {
                    problems.push(format!("{role}: the shutdown grace {text:?} is not a duration"));
                    continue;
                }
            },
            None => DEFAULT_SHUTDOWN_GRACE,
        };
        let pre_stop =
            Duration::from_secs(serve.pointer("/lifecycle/preStop/sleep/seconds").and_then(Value::as_u64).unwrap_or(0));
        let termination = Duration::from_secs(
            workload.pod_spec().get("terminationGracePeriodSeconds").and_then(Value::as_u64).unwrap_or(30),
        );
        if termination <= grace + pre_stop {
            problems.push(format!(
                "{role}: terminationGracePeriodSeconds {termination:?} is not more than the shutdown grace \
                 {grace:?} plus the preStop sleep {pre_stop:?}"
            ));
        }
    }
    problems
}

/// An HPA for each API role, scaling the Deployment that runs that role's pods, with sane bounds.
fn check_hpas(rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    for role in API_ROLES {
        let Some(workload) = role_workload(rendered, role) else { continue };
        let hpas: Vec<&Value> = rendered
            .hpas_of(&workload)
            .into_iter()
            .filter(|hpa| hpa.pointer("/spec/scaleTargetRef/apiVersion").and_then(Value::as_str) == Some("apps/v1"))
            .collect();
        let [hpa] = hpas.as_slice() else {
            problems.push(format!(
                "{role}: {} HPAs target {} {}, not one",
                hpas.len(),
                workload.kind(),
                workload.name()
            ));
            continue;
        };
        // The HPA owns the count: a `replicas` in the manifest would reset it on every apply.
        if workload.doc.pointer("/spec/replicas").is_some() {
            problems.push(format!(
                "{role}: {} sets replicas, which every apply would reset under HPA {}",
                workload.name(),
                name_of(hpa)
            ));
        }
        let min = hpa.pointer("/spec/minReplicas").and_then(Value::as_u64).unwrap_or(1);
        let max = hpa.pointer("/spec/maxReplicas").and_then(Value::as_u64).unwrap_or(0);
        if min < 1 || max < min {
            problems.push(format!("{role}: HPA {} scales between {min} and {max}", name_of(hpa)));
        }
        if array(hpa.pointer("/spec/metrics")).is_empty() {
            problems.push(format!("{role}: HPA {} has no metric", name_of(hpa)));
        }
    }
    for hpa in rendered.of_kind("HorizontalPodAutoscaler") {
        let target = hpa.pointer("/spec/scaleTargetRef/name").and_then(Value::as_str).unwrap_or_default();
        if rendered.get("Deployment", target).is_none() {
            problems.push(format!("HPA {} targets {target}, which is not a Deployment here", name_of(hpa)));
        }
    }
    problems
}

/// A PDB for every role whose selector matches that role's pods and no other role's, and that
/// lets a node drain go on (it allows one pod down).
fn check_pdbs(rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    let pdbs: Vec<&Value> = rendered.of_kind("PodDisruptionBudget").collect();
    for role in ROLES {
        let Some(workload) = role_workload(rendered, role) else { continue };
        let labels = workload.pod_labels();
        let replicas = rendered.least_replicas(&workload);
        let covering: Vec<&&Value> = pdbs
            .iter()
            .filter(|pdb| selector_matches(pdb.pointer("/spec/selector").unwrap_or(&Value::Null), &labels))
            .collect();
        if covering.is_empty() {
            problems.push(format!("{role}: no PodDisruptionBudget selects its pods"));
        }
        for pdb in covering {
            let allows_one_down = match (pdb.pointer("/spec/maxUnavailable"), pdb.pointer("/spec/minAvailable")) {
                (Some(max), _) => max.as_u64().is_none_or(|max| max >= 1),
                (None, Some(min)) => min.as_u64().is_none_or(|min| min < replicas),
                (None, None) => false,
            };
            if !allows_one_down {
                problems.push(format!("{role}: PDB {} lets no pod of {replicas} replicas go", name_of(pdb)));
            }
        }
    }
    for pdb in &pdbs {
        let selector = pdb.pointer("/spec/selector").unwrap_or(&Value::Null);
        let selected: Vec<String> = rendered
            .workloads()
            .iter()
            .filter(|workload| selector_matches(selector, &workload.pod_labels()))
            .map(|workload| component(&workload.pod_labels()).to_owned())
            .collect();
        if selected.is_empty() {
            problems.push(format!("PDB {} selects no pods", name_of(pdb)));
        } else if selected.len() > 1 {
            problems.push(format!("PDB {} selects the pods of several workloads: {selected:?}", name_of(pdb)));
        }
    }
    problems
}

/// Whether the NetworkPolicies let a pod with these labels take connections from pods in the
/// namespace named `namespace` (labelled `kubernetes.io/metadata.name`). A pod no policy selects
/// takes everything; a selected pod takes what some rule of a selecting policy allows.
fn admits_from_namespace(rendered: &Rendered, labels: &BTreeMap<String, String>, namespace: &str) -> bool {
    let namespace_labels: BTreeMap<String, String> =
        [("kubernetes.io/metadata.name".to_owned(), namespace.to_owned())].into_iter().collect();
    let selecting: Vec<&Value> = rendered
        .of_kind("NetworkPolicy")
        .filter(|policy| selector_matches(policy.pointer("/spec/podSelector").unwrap_or(&json!({})), labels))
        .filter(|policy| {
            let types = array(policy.pointer("/spec/policyTypes"));
            // Without policyTypes a policy is about ingress (and egress too, if it has egress rules).
            types.is_empty() || types.iter().any(|t| t.as_str() == Some("Ingress"))
        })
        .collect();
    if selecting.is_empty() {
        return true;
    }
    selecting.iter().any(|policy| {
        array(policy.pointer("/spec/ingress")).iter().any(|rule| {
            let peers = array(rule.get("from"));
            peers.is_empty()
                || peers.iter().any(|peer| {
                    if peer.get("ipBlock").is_some() {
                        return true;
                    }
                    // A peer with only a podSelector means pods of the policy's own namespace.
                    peer.get("namespaceSelector").is_some_and(|selector| selector_matches(selector, &namespace_labels))
                })
        })
    })
}

/// The components of the pods that the Ingress's backends (Services) send traffic to.
fn components_behind_ingress(rendered: &Rendered) -> BTreeSet<String> {
    let mut components = BTreeSet::new();
    for ingress in rendered.of_kind("Ingress") {
        for backend in ingress_backends(ingress) {
            let Some(service) = rendered.get("Service", &backend.0) else { continue };
            let selector = service.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
            for workload in rendered.workloads() {
                if !string_map(Some(&selector)).is_empty() && selector_matches(&selector, &workload.pod_labels()) {
                    components.insert(component(&workload.pod_labels()).to_owned());
                }
            }
        }
    }
    components
}

/// Pods behind the Ingress take connections from the ingress controller's namespace; every
/// other pod (the projector, the dev overlay's PostgreSQL and payment simulator) does not.
fn check_network_policies(rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    let behind_ingress = components_behind_ingress(rendered);
    for workload in rendered.workloads() {
        let labels = workload.pod_labels();
        let admitted = admits_from_namespace(rendered, &labels, INGRESS_NAMESPACE);
        let should = behind_ingress.contains(component(&labels)) && !component(&labels).is_empty();
        if admitted && !should {
            problems.push(format!(
                "{}/{}: takes connections from the {INGRESS_NAMESPACE} namespace, but no Ingress route leads to it",
                workload.kind(),
                workload.name()
            ));
        } else if !admitted && should {
            problems.push(format!(
                "{}/{}: the Ingress routes to it, but the {INGRESS_NAMESPACE} namespace may not connect",
                workload.kind(),
                workload.name()
            ));
        }
    }
    for role in API_ROLES {
        if !behind_ingress.contains(role) {
            problems.push(format!("{role}: no Ingress route leads to it"));
        }
    }
    problems
}

/// STAY_JWT_SECRET and the PostgreSQL URL (STAY_STORE, or STAY_READ_STORE beside EventStoreDB)
/// come from a Secret in every Stay container that uses them, never from a literal value.
fn check_secrets(rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    for workload in rendered.workloads() {
        for container in workload.all_containers().into_iter().filter(|c| runs_stay_image(c)) {
            let at = format!("{}/{} container {}", workload.kind(), workload.name(), container_name(container));
            let env = match rendered.container_env(container) {
                Ok(env) => env,
                Err(why) => {
                    problems.push(format!("{at}: {why}"));
                    continue;
                }
            };
            let subcommand = container_args(container).first().cloned().unwrap_or_default();
            if subcommand == "serve" && !matches!(env.get("STAY_JWT_SECRET"), Some(EnvSource::Secret { .. })) {
                problems.push(format!("{at}: STAY_JWT_SECRET does not come from a Secret"));
            }
            if subcommand == "serve" || subcommand == "migrate" {
                let postgres_url = ["STAY_STORE", "STAY_READ_STORE"].into_iter().find(|var| match env.get(*var) {
                    Some(EnvSource::Value(value)) => !value.starts_with("esdb"),
                    Some(EnvSource::Secret { .. }) => true,
                    _ => false,
                });
                match postgres_url.and_then(|var| env.get(var).map(|source| (var, source))) {
                    Some((_, EnvSource::Secret { .. })) => {}
                    Some((var, _)) => {
                        problems.push(format!("{at}: {var} (the PostgreSQL URL) is a literal, not a Secret"))
                    }
                    None => problems
                        .push(format!("{at}: neither STAY_STORE nor STAY_READ_STORE names the PostgreSQL database")),
                }
            }
            for (name, source) in &env {
                if let EnvSource::Value(value) = source {
                    if name.starts_with("STAY_JWT") {
                        problems.push(format!("{at}: {name} holds a token secret as a literal"));
                    }
                    if value.starts_with("postgres://") || value.starts_with("postgresql://") {
                        problems.push(format!("{at}: {name} holds a PostgreSQL URL as a literal"));
                    }
                }
            }
        }
    }
    problems
}

/// The roles never migrate (STAY_NO_MIGRATE=true): `stay migrate`, on the same stores, runs first,
/// as an init container of each role's pod or as a Job.
fn check_migration(rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    let stores = |container: &Value| -> Result<Vec<Option<EnvSource>>, String> {
        let env = rendered.container_env(container)?;
        Ok(["STAY_STORE", "STAY_READ_STORE"].iter().map(|var| env.get(*var).cloned()).collect())
    };
    let migrate_jobs: Vec<&Value> = rendered
        .workloads()
        .into_iter()
        .filter(|workload| workload.kind() == "Job")
        .flat_map(|workload| workload.containers())
        .filter(|container| container_args(container).first().map(String::as_str) == Some("migrate"))
        .collect();
    for role in ROLES {
        let Some(workload) = role_workload(rendered, role) else { continue };
        let Some(serve) = serve_container(&workload) else { continue };
        let env = rendered.container_env(serve).unwrap_or_default();
        let no_migrate = env.get("STAY_NO_MIGRATE").and_then(EnvSource::value).map(str::to_ascii_lowercase);
        let flag = container_args(serve).iter().any(|arg| arg == "--no-migrate");
        if !flag && !matches!(no_migrate.as_deref(), Some("true" | "1" | "yes" | "on")) {
            problems.push(format!(
                "{role}: `stay serve` would migrate the schema itself (STAY_NO_MIGRATE is {no_migrate:?})"
            ));
        }
        let init_migrate = workload
            .init_containers()
            .into_iter()
            .find(|container| container_args(container).first().map(String::as_str) == Some("migrate"));
        let migrators: Vec<&Value> = init_migrate.into_iter().chain(migrate_jobs.iter().copied()).collect();
        if migrators.is_empty() {
            problems.push(format!("{role}: no init container or Job runs `stay migrate`"));
            continue;
        }
        let Ok(wanted) = stores(serve) else { continue };
        if !migrators.iter().any(|migrator| stores(migrator).is_ok_and(|got| got == wanted)) {
            problems.push(format!("{role}: `stay migrate` runs on other stores than `stay serve` ({wanted:?})"));
        }
    }
    problems
}

/// Every Service selects the pods of some workload and targets a port their containers have.
fn check_services(rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    for service in rendered.of_kind("Service") {
        let name = name_of(service);
        let selector = service.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
        if string_map(Some(&selector)).is_empty() {
            problems.push(format!("Service {name}: no selector"));
            continue;
        }
        let selected: Vec<Workload<'_>> = rendered
            .workloads()
            .into_iter()
            .filter(|workload| selector_matches(&selector, &workload.pod_labels()))
            .collect();
        if selected.is_empty() {
            problems.push(format!("Service {name}: its selector matches no workload's pods"));
        }
        for port in array(service.pointer("/spec/ports")) {
            let target = port.get("targetPort").or_else(|| port.get("port")).map(port_ref).unwrap_or_default();
            for workload in &selected {
                let ports: BTreeSet<String> = workload.containers().into_iter().flat_map(container_ports).collect();
                if !ports.contains(&target) {
                    problems.push(format!(
                        "Service {name}: targetPort {target} is no port of {}'s containers",
                        workload.name()
                    ));
                }
            }
        }
    }
    problems
}

/// An Ingress's backends: (Service name, port name or number), defaultBackend included.
fn ingress_backends(ingress: &Value) -> Vec<(String, String)> {
    let mut backends: Vec<&Value> = ingress.pointer("/spec/defaultBackend").into_iter().collect();
    for rule in array(ingress.pointer("/spec/rules")) {
        backends.extend(array(rule.pointer("/http/paths")).iter().filter_map(|path| path.get("backend")));
    }
    backends
        .into_iter()
        .filter_map(|backend| backend.get("service"))
        .map(|service| {
            let name = service.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            let port = service
                .pointer("/port/name")
                .or_else(|| service.pointer("/port/number"))
                .map(port_ref)
                .unwrap_or_default();
            (name, port)
        })
        .collect()
}

/// The Service an Ingress host sends `path` to, as Kubernetes matches paths: the longest
/// matching path wins, Exact before Prefix at equal length; Prefix matches whole path elements.
pub fn route<'a>(ingress: &'a Value, host: &str, path: &str) -> Option<&'a str> {
    let rule = array(ingress.pointer("/spec/rules"))
        .iter()
        .find(|rule| rule.get("host").and_then(Value::as_str) == Some(host))?;
    let elements =
        |text: &str| -> Vec<String> { text.split('/').filter(|e| !e.is_empty()).map(str::to_owned).collect() };
    let wanted = elements(path);
    array(rule.pointer("/http/paths"))
        .iter()
        .filter_map(|candidate| {
            let rule_path = candidate.get("path").and_then(Value::as_str).unwrap_or("/");
            let exact = candidate.get("pathType").and_then(Value::as_str) == Some("Exact");
            let matches = if exact { rule_path == path } else { wanted.starts_with(&elements(rule_path)) };
            let length = rule_path.trim_end_matches('/').len();
            matches.then_some(((length, exact), candidate))
        })
        .max_by_key(|(rank, _)| *rank)
        .and_then(|(_, candidate)| candidate.pointer("/backend/service/name").and_then(Value::as_str))
}

/// Every backend names a Service here and one of its ports; the host that sends `/` to the
/// command-api and the one that sends it to the query-api route each path to the role that serves it.
fn check_ingress(rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    let ingresses: Vec<&Value> = rendered.of_kind("Ingress").collect();
    if ingresses.is_empty() {
        problems.push("no Ingress".to_owned());
    }
    for ingress in &ingresses {
        for (service, port) in ingress_backends(ingress) {
            let Some(found) = rendered.get("Service", &service) else {
                problems.push(format!("Ingress {}: backend {service} is no Service here", name_of(ingress)));
                continue;
            };
            let ports: BTreeSet<String> = array(found.pointer("/spec/ports"))
                .iter()
                .flat_map(|p| [p.get("name").map(port_ref), p.get("port").map(port_ref)])
                .flatten()
                .collect();
            if !ports.contains(&port) {
                problems.push(format!("Ingress {}: Service {service} has no port {port}", name_of(ingress)));
            }
        }
    }
    // Which role a Service's pods run.
    let role_of = |service: &str| -> String {
        let Some(found) = rendered.get("Service", service) else { return format!("missing Service {service}") };
        let selector = found.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
        rendered
            .workloads()
            .iter()
            .find(|workload| selector_matches(&selector, &workload.pod_labels()))
            .map_or_else(|| "no pods".to_owned(), |workload| component(&workload.pod_labels()).to_owned())
    };
    let hosts: Vec<(&Value, String)> = ingresses
        .iter()
        .flat_map(|ingress| {
            array(ingress.pointer("/spec/rules"))
                .iter()
                .filter_map(|rule| rule.get("host").and_then(Value::as_str))
                .map(move |host| (*ingress, host.to_owned()))
        })
        .collect();
    let host_for = |role: &str| {
        hosts.iter().find(|(ingress, host)| route(ingress, host, "/").is_some_and(|service| role_of(service) == role))
    };
    let expectations: [(&str, &[(&str, &str)]); 2] = [
        (
            "command-api",
            &[
                ("/v1/rooms", "command-api"),
                ("/v1/reservations/r-1/cancel", "command-api"),
                ("/v1/admin/sagas/s-1/retry", "saga"),
                ("/v1/admin/payments", "saga"),
            ],
        ),
        (
            "query-api",
            &[
                ("/", "query-api"),
                ("/v1/rooms", "query-api"),
                ("/v1/admin/sagas", "query-api"),
                ("/v1/admin/sagas/s-1", "saga"),
                ("/v1/admin/sagas/s-1/skip", "saga"),
                ("/v1/admin/payments", "saga"),
            ],
        ),
    ];
    for (front, paths) in expectations {
        let Some((ingress, host)) = host_for(front) else {
            problems.push(format!("no Ingress host sends / to the {front}"));
            continue;
        };
        for (path, role) in paths {
            let got = route(ingress, host, path).map_or_else(|| "nothing".to_owned(), role_of);
            if got != *role {
                problems.push(format!("Ingress host {host}: {path} goes to {got}, not the {role}"));
            }
        }
    }
    problems
}

/// A check: the problems it finds in a rendered overlay.
pub type Check = fn(&Rendered) -> Vec<String>;
/// Every check, by name, for the overlays and for the breakage test.
pub const CHECKS: [(&str, Check); 12] = [
    ("roles", check_roles),
    ("probes", check_probes),
    ("hardening", check_hardening),
    ("termination", check_termination),
    ("hpas", check_hpas),
    ("pdbs", check_pdbs),
    ("network_policies", check_network_policies),
    ("secrets", check_secrets),
    ("migration", check_migration),
    ("services", check_services),
    ("ingress", check_ingress),
    ("labels", check_labels),
];

/// Every workload, Service, HPA and PDB of Stay carries `app.kubernetes.io/name` and, for a
/// role's, `app.kubernetes.io/component`.
fn check_labels(rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    for workload in rendered.workloads() {
        let labels = string_map(workload.doc.pointer("/metadata/labels"));
        let pod_labels = workload.pod_labels();
        if !labels.contains_key("app.kubernetes.io/name") || !pod_labels.contains_key("app.kubernetes.io/name") {
            problems.push(format!("{}/{}: no app.kubernetes.io/name label", workload.kind(), workload.name()));
        }
        if pod_labels.get("app.kubernetes.io/name").map(String::as_str) == Some("stay")
            && component(&pod_labels).is_empty()
        {
            problems.push(format!(
                "{}/{}: Stay pods without app.kubernetes.io/component",
                workload.kind(),
                workload.name()
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// The flags and variables the manifests give `stay`
// ---------------------------------------------------------------------------------------------

/// `stay SUBCOMMAND -h` (clap's short help: a flag's variable and possible values in brackets),
/// run with no STAY_* variable set, for each subcommand.
#[derive(Debug)]
pub struct StayHelp {
    by_subcommand: BTreeMap<String, String>,
    /// cli/src/main.rs: the variables it reads itself (STAY_LOG, STAY_LOG_FORMAT).
    main_source: String,
}

impl StayHelp {
    /// Runs `stay SUBCOMMAND -h` for each of `subcommands` and reads cli/src/main.rs.
    pub fn load(subcommands: &BTreeSet<String>) -> Self {
        let binary = stay_binary();
        let by_subcommand = subcommands
            .iter()
            .map(|subcommand| {
                let mut command = Command::new(&binary);
                command.args([subcommand.as_str(), "-h"]);
                for (name, _) in std::env::vars_os() {
                    if name.to_string_lossy().starts_with("STAY_") {
                        command.env_remove(&name);
                    }
                }
                let output = command.output().expect("run stay --help");
                let help = String::from_utf8_lossy(&output.stdout).into_owned();
                (subcommand.clone(), if output.status.success() { help } else { String::new() })
            })
            .collect();
        let main_source =
            std::fs::read_to_string(kustomize::workspace_dir().join("cli/src/main.rs")).expect("read cli/src/main.rs");
        Self { by_subcommand, main_source }
    }

    /// The help of `stay SUBCOMMAND`, if it has that subcommand.
    pub fn help(&self, subcommand: &str) -> Option<&str> {
        self.by_subcommand.get(subcommand).map(String::as_str).filter(|help| !help.is_empty())
    }

    /// Whether `stay SUBCOMMAND` reads the variable (clap lists it as `[env: NAME=…]`), or `stay`
    /// itself does for every subcommand (cli/src/main.rs).
    fn knows_variable(&self, subcommand: &str, name: &str) -> bool {
        let listed = self
            .help(subcommand)
            .is_some_and(|help| help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]")));
        listed || self.main_source.contains(&format!("\"{name}\""))
    }

    /// The help of a flag (its line and the description under it, up to the next flag), if the
    /// subcommand has it.
    fn flag_block(&self, subcommand: &str, flag: &str) -> Option<String> {
        let mut blocks: Vec<Vec<&str>> = Vec::new();
        for line in self.help(subcommand)?.lines() {
            if line.trim_start().starts_with('-') {
                blocks.push(vec![line]);
            } else if let Some(block) = blocks.last_mut() {
                block.push(line);
            }
        }
        blocks.into_iter().map(|block| block.join(" ")).find(|block| {
            let head = block.trim_start().split("  ").next().unwrap_or_default();
            head.split(|c: char| c.is_whitespace() || c == ',' || c == '=').any(|word| word == flag)
        })
    }
}

/// The `[possible values: a, b]` of a help line.
fn possible_values(line: &str) -> Option<Vec<String>> {
    let start = line.find("[possible values: ")? + "[possible values: ".len();
    let end = line[start..].find(']')? + start;
    Some(line[start..end].split(',').map(|value| value.trim().to_owned()).collect())
}

/// Every Stay container's subcommand exists; each `--flag` it passes is one of that subcommand's
/// (with a value among the possible ones, where clap lists them); every STAY_* variable set in
/// its `env` is one the subcommand reads; every STAY_* key of a ConfigMap the containers load is
/// read by some subcommand that loads it.
pub fn check_flags(rendered: &Rendered, help: &StayHelp) -> Vec<String> {
    let mut problems = Vec::new();
    // ConfigMap or Secret name → the subcommands of the containers that load it whole.
    let mut loaded_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for workload in rendered.workloads() {
        for container in workload.all_containers().into_iter().filter(|c| runs_stay_image(c)) {
            let at = format!("{}/{} container {}", workload.kind(), workload.name(), container_name(container));
            let args = container_args(container);
            let Some(subcommand) = args.first() else {
                problems.push(format!("{at}: no args, so no stay subcommand"));
                continue;
            };
            if help.help(subcommand).is_none() {
                problems.push(format!("{at}: `stay {subcommand}` is no subcommand"));
                continue;
            }
            let mut rest = args[1..].iter().peekable();
            while let Some(arg) = rest.next() {
                let Some(flag) = arg.strip_prefix("--").map(|_| arg.split('=').next().unwrap_or_default()) else {
                    continue;
                };
                let Some(line) = help.flag_block(subcommand, flag) else {
                    problems.push(format!("{at}: `stay {subcommand}` has no flag {flag}"));
                    continue;
                };
                let takes_value = line.contains(&format!("{flag} <")) || line.contains(&format!("{flag}=<"));
                let value = match arg.split_once('=') {
                    Some((_, value)) => Some(value.to_owned()),
                    None if takes_value => rest.next().cloned(),
                    None => None,
                };
                if let (Some(value), Some(values)) = (value, possible_values(&line)) {
                    if !values.contains(&value) {
                        problems.push(format!("{at}: {flag} {value} is none of {values:?}"));
                    }
                }
            }
            for var in array(container.get("env")) {
                let name = var.get("name").and_then(Value::as_str).unwrap_or_default();
                if name.starts_with("STAY_") && !help.knows_variable(subcommand, name) {
                    problems.push(format!("{at}: `stay {subcommand}` reads no variable {name}"));
                }
            }
            for source in array(container.get("envFrom")) {
                let name = source
                    .pointer("/configMapRef/name")
                    .or_else(|| source.pointer("/secretRef/name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                loaded_by.entry(name.to_owned()).or_default().insert(subcommand.clone());
            }
        }
    }
    for (name, subcommands) in &loaded_by {
        let keys = rendered.config_map_data(name).or_else(|| rendered.secret_data(name)).unwrap_or_default();
        for key in keys.keys().filter(|key| key.starts_with("STAY_")) {
            if !subcommands.iter().any(|subcommand| help.knows_variable(subcommand, key)) {
                problems.push(format!("{name}: {key} is read by none of `stay {subcommands:?}`"));
            }
        }
    }
    problems
}
