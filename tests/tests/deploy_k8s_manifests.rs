//! The Kubernetes manifests (issue 14): every overlay under k8s/overlays renders with
//! `kubectl kustomize`, passes kubernetes-validate's strict schemas (unknown fields fail) for a
//! pinned Kubernetes version, and has the properties a safe deployment of Stay needs:
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
//! Each check is a function that returns the problems it finds; `each_check_catches_what_it_guards`
//! breaks a rendered overlay once per check and asserts the check reports it, so none can pass
//! vacuously. kubectl, kubernetes-validate and the `stay` binary come from
//! `stay_tests::kustomize::deploy_tool` and `stay_binary`: under CI a missing tool fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use stay_tests::kustomize::{
    self, array, component, container_args, container_name, kind_of, name_of, selector_matches, string_map, EnvSource,
    Rendered, Workload, OVERLAYS,
};
use stay_tests::server::stay_binary;

/// The Kubernetes version whose schemas the rendered overlays must pass: the oldest one the
/// manifests are meant for (the preStop `sleep` action is on by default since 1.30).
const KUBERNETES_VERSION: &str = "1.33.0";

/// The roles of `stay serve`, each a Deployment of its own.
const ROLES: [&str; 4] = ["command-api", "query-api", "projector", "saga"];

/// The roles whose load is requests, so an HPA scales them.
const API_ROLES: [&str; 2] = ["command-api", "query-api"];

/// The namespace of the ingress controller (ingress-nginx's), which the NetworkPolicies let in.
const INGRESS_NAMESPACE: &str = "ingress-nginx";

/// `stay serve --shutdown-grace`'s default, when the manifests do not set STAY_SHUTDOWN_GRACE.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn render(overlay: &str) -> Option<Rendered> {
    kustomize::render_overlay(overlay)
}

/// Problems, one line each, prefixed by the overlay's name; empty when all is well.
fn report(overlay: &str, problems: &[String]) -> String {
    problems.iter().map(|problem| format!("{overlay}: {problem}")).collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------------------------
// What the checks look at
// ---------------------------------------------------------------------------------------------

/// Whether a container runs the Stay image (`stay`, `stay:TAG`, `REGISTRY/stay:TAG`).
fn runs_stay_image(container: &Value) -> bool {
    let image = container.get("image").and_then(Value::as_str).unwrap_or_default();
    let without_tag = image.split('@').next().unwrap_or_default();
    let repository = without_tag.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(without_tag, |(r, _)| r);
    repository.rsplit('/').next() == Some("stay")
}

/// The Deployment of a role: a workload whose pods are labelled `stay` / the role.
fn role_workload<'a>(rendered: &'a Rendered, role: &str) -> Option<Workload<'a>> {
    rendered.workloads().into_iter().find(|workload| {
        let labels = workload.pod_labels();
        workload.kind() == "Deployment"
            && labels.get("app.kubernetes.io/name").map(String::as_str) == Some("stay")
            && component(&labels) == role
    })
}

/// The container of a pod that runs `stay serve`.
fn serve_container<'a>(workload: &Workload<'a>) -> Option<&'a Value> {
    workload
        .containers()
        .into_iter()
        .find(|container| container_args(container).first().map(String::as_str) == Some("serve"))
}

/// A duration as `stay serve` reads it (humantime's forms that manifests use: `10s`, `1m30s`, `500ms`).
fn parse_duration(text: &str) -> Option<Duration> {
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
            .of_kind("HorizontalPodAutoscaler")
            .filter(|hpa| {
                hpa.pointer("/spec/scaleTargetRef/kind").and_then(Value::as_str) == Some("Deployment")
                    && hpa.pointer("/spec/scaleTargetRef/apiVersion").and_then(Value::as_str) == Some("apps/v1")
                    && hpa.pointer("/spec/scaleTargetRef/name").and_then(Value::as_str) == Some(workload.name())
            })
            .collect();
        let [hpa] = hpas.as_slice() else {
            problems.push(format!("{role}: {} HPAs target Deployment {}, not one", hpas.len(), workload.name()));
            continue;
        };
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
                (None, Some(min)) => min.as_u64().is_none_or(|min| min < workload.replicas()),
                (None, None) => false,
            };
            if !allows_one_down {
                problems.push(format!(
                    "{role}: PDB {} lets no pod of {} replicas go",
                    name_of(pdb),
                    workload.replicas()
                ));
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
fn route<'a>(ingress: &'a Value, host: &str, path: &str) -> Option<&'a str> {
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

/// Every check, by name, for the overlays and for the breakage test.
type Check = fn(&Rendered) -> Vec<String>;
const CHECKS: [(&str, Check); 12] = [
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
// Tests
// ---------------------------------------------------------------------------------------------

/// Runs kubernetes-validate (strict, the pinned version) on a YAML stream; its report on failure.
fn validate(validator: &Path, yaml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).expect("write the rendered YAML");
    let output = Command::new(validator)
        .args(["--strict", "--quiet", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(&file)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", validator.display()));
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Documents back to a YAML stream.
fn to_yaml(docs: &[Value]) -> String {
    docs.iter().map(|doc| serde_yaml_ng::to_string(doc).expect("JSON is YAML")).collect::<Vec<_>>().join("---\n")
}

#[test]
fn every_overlay_renders_and_passes_the_strict_schemas() {
    let Some(validator) = kustomize::deploy_tool("STAY_KUBERNETES_VALIDATE") else { return };
    let mut failures = Vec::new();
    for overlay in OVERLAYS {
        let Some(rendered) = render(overlay) else { return };
        assert!(rendered.docs.len() >= 15, "{overlay}: only {} documents rendered", rendered.docs.len());
        if let Err(report) = validate(&validator, &rendered.yaml) {
            failures.push(format!("{overlay}:\n{report}"));
        }
    }
    assert!(failures.is_empty(), "kubernetes-validate {KUBERNETES_VERSION} --strict failed:\n{}", failures.join("\n"));
}

#[test]
fn the_validator_rejects_an_unknown_field_and_a_wrong_type() {
    let Some(validator) = kustomize::deploy_tool("STAY_KUBERNETES_VALIDATE") else { return };
    let Some(rendered) = render("dev") else { return };
    let deployment = |docs: &mut Vec<Value>| -> usize {
        docs.iter().position(|doc| kind_of(doc) == "Deployment" && name_of(doc) == "stay-saga").expect("stay-saga")
    };

    let mut misspelt = rendered.docs.clone();
    let at = deployment(&mut misspelt);
    let security =
        misspelt[at].pointer_mut("/spec/template/spec/containers/0/securityContext").expect("a securityContext");
    let flag = security.as_object_mut().expect("an object").remove("readOnlyRootFilesystem").expect("the field");
    security["readOnlyRootFileSystem"] = flag;
    let report = validate(&validator, &to_yaml(&misspelt)).expect_err("a misspelt field must fail strict validation");
    assert!(report.contains("readOnlyRootFileSystem"), "{report}");

    let mut mistyped = rendered.docs.clone();
    let at = deployment(&mut mistyped);
    mistyped[at]["spec"]["replicas"] = json!("two");
    let report = validate(&validator, &to_yaml(&mistyped)).expect_err("replicas: \"two\" must fail validation");
    assert!(report.contains("stay-saga"), "{report}");

    // Unchanged, the same documents pass: the failures above are the edits'.
    validate(&validator, &to_yaml(&rendered.docs)).expect("the dev overlay, re-serialised, validates");
}

#[test]
fn every_overlay_has_the_properties_of_a_safe_deployment() {
    let mut failures = Vec::new();
    for overlay in OVERLAYS {
        let Some(rendered) = render(overlay) else { return };
        for (name, check) in CHECKS {
            let problems = check(&rendered);
            if !problems.is_empty() {
                failures.push(format!("[{name}]\n{}", report(overlay, &problems)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Breaks the dev overlay's documents with `edit`, and expects `check` to report a problem
/// containing `expected`, when it reported none before.
fn assert_caught(
    rendered: &Rendered,
    check_name: &str,
    what: &str,
    expected: &str,
    edit: impl FnOnce(&mut Vec<Value>),
) {
    let check = CHECKS.iter().find(|(name, _)| *name == check_name).expect("a check of that name").1;
    assert_eq!(check(rendered), Vec::<String>::new(), "[{check_name}] must pass on the dev overlay as it is");
    let mut broken = rendered.clone();
    edit(&mut broken.docs);
    let problems = check(&broken);
    assert!(
        problems.iter().any(|problem| problem.contains(expected)),
        "[{check_name}] did not catch {what}: expected a problem containing {expected:?}, got {problems:?}"
    );
}

/// The document of this kind and name, to edit.
fn doc_mut<'a>(docs: &'a mut [Value], kind: &str, name: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|doc| kind_of(doc) == kind && name_of(doc) == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The first document of this kind whose name starts with `prefix` (generated names), to edit.
fn generated_mut<'a>(docs: &'a mut [Value], kind: &str, prefix: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|doc| kind_of(doc) == kind && kustomize::generated_from(name_of(doc), prefix))
        .unwrap_or_else(|| panic!("no {kind} generated as {prefix}"))
}

/// A role's `stay serve` container in a Deployment, to edit.
fn serve_mut<'a>(docs: &'a mut [Value], role: &str) -> &'a mut Value {
    let deployment = doc_mut(docs, "Deployment", &format!("stay-{role}"));
    let containers =
        deployment.pointer_mut("/spec/template/spec/containers").and_then(Value::as_array_mut).expect("containers");
    containers.iter_mut().find(|c| c["args"][0] == "serve").expect("a serve container")
}

/// The env entry `name` of a container, to edit.
fn env_mut<'a>(container: &'a mut Value, name: &str) -> &'a mut Value {
    container["env"]
        .as_array_mut()
        .and_then(|env| env.iter_mut().find(|var| var["name"] == name))
        .expect("the variable")
}

#[test]
fn each_check_catches_what_it_guards() {
    let Some(dev) = render("dev") else { return };
    assert_caught(&dev, "roles", "a role without a Deployment", "component=projector", |docs| {
        docs.retain(|doc| name_of(doc) != "stay-projector" || kind_of(doc) != "Deployment");
    });
    assert_caught(&dev, "roles", "a Deployment running another role", "not `serve --role saga`", |docs| {
        serve_mut(docs, "saga")["args"] = json!(["serve", "--role", "all"]);
    });
    assert_caught(&dev, "probes", "liveness on /readyz", "livenessProbe is Some(\"/readyz\")", |docs| {
        serve_mut(docs, "query-api")["livenessProbe"]["httpGet"]["path"] = json!("/readyz");
    });
    assert_caught(&dev, "probes", "probes that are the same", "are the same", |docs| {
        let serve = serve_mut(docs, "command-api");
        serve["livenessProbe"] = serve["readinessProbe"].clone();
        serve["readinessProbe"]["httpGet"]["path"] = json!("/readyz");
        serve["livenessProbe"]["httpGet"]["path"] = json!("/readyz");
    });
    assert_caught(&dev, "probes", "a liveness probe less patient than readiness", "no later than readiness", |docs| {
        serve_mut(docs, "saga")["livenessProbe"]["failureThreshold"] = json!(1);
    });
    assert_caught(&dev, "probes", "a probe on a port the container lacks", "probes port \"metrics\"", |docs| {
        serve_mut(docs, "saga")["readinessProbe"]["httpGet"]["port"] = json!("metrics");
    });
    assert_caught(
        &dev,
        "hardening",
        "an init container without limits",
        "container migrate: no limits.memory",
        |docs| {
            let deployment = doc_mut(docs, "Deployment", "stay-saga");
            deployment["spec"]["template"]["spec"]["initContainers"][0]["resources"]
                .as_object_mut()
                .expect("resources")
                .remove("limits");
        },
    );
    assert_caught(&dev, "hardening", "a root container", "runAsNonRoot is not true", |docs| {
        serve_mut(docs, "projector")["securityContext"]["runAsNonRoot"] = json!(false);
    });
    assert_caught(&dev, "hardening", "a writable root filesystem", "readOnlyRootFilesystem is not true", |docs| {
        let postgres = doc_mut(docs, "StatefulSet", "postgres");
        postgres["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] =
            json!(false);
    });
    assert_caught(&dev, "hardening", "privilege escalation", "allowPrivilegeEscalation is not false", |docs| {
        let sim = doc_mut(docs, "Deployment", "stay-payment-sim");
        sim["spec"]["template"]["spec"]["containers"][0]["securityContext"]
            .as_object_mut()
            .expect("securityContext")
            .remove("allowPrivilegeEscalation");
    });
    assert_caught(&dev, "hardening", "capabilities kept", "does not drop ALL capabilities", |docs| {
        serve_mut(docs, "command-api")["securityContext"]["capabilities"]["drop"] = json!(["NET_RAW"]);
    });
    assert_caught(&dev, "hardening", "a mounted service-account token", "mounts a service-account token", |docs| {
        doc_mut(docs, "Deployment", "stay-query-api")["spec"]["template"]["spec"]["automountServiceAccountToken"] =
            json!(true);
    });
    assert_caught(&dev, "termination", "a grace too short", "is not more than the shutdown grace", |docs| {
        doc_mut(docs, "Deployment", "stay-saga")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] =
            json!(15);
    });
    assert_caught(
        &dev,
        "termination",
        "a longer shutdown grace in the ConfigMap",
        "is not more than the shutdown grace",
        |docs| {
            generated_mut(docs, "ConfigMap", "stay-config")["data"]["STAY_SHUTDOWN_GRACE"] = json!("1m");
        },
    );
    assert_caught(
        &dev,
        "hpas",
        "an HPA aimed at the wrong Deployment",
        "0 HPAs target Deployment stay-query-api",
        |docs| {
            doc_mut(docs, "HorizontalPodAutoscaler", "stay-query-api")["spec"]["scaleTargetRef"]["name"] =
                json!("stay-saga");
        },
    );
    assert_caught(&dev, "hpas", "an API role without an HPA", "command-api: 0 HPAs", |docs| {
        docs.retain(|doc| !(kind_of(doc) == "HorizontalPodAutoscaler" && name_of(doc) == "stay-command-api"));
    });
    assert_caught(&dev, "pdbs", "a PDB whose selector misses its pods", "saga: no PodDisruptionBudget", |docs| {
        doc_mut(docs, "PodDisruptionBudget", "stay-saga")["spec"]["selector"]["matchLabels"]
            ["app.kubernetes.io/component"] = json!("sagas");
    });
    assert_caught(&dev, "pdbs", "a PDB that blocks every drain", "lets no pod of 1 replicas go", |docs| {
        let pdb = doc_mut(docs, "PodDisruptionBudget", "stay-projector");
        pdb["spec"].as_object_mut().expect("spec").remove("maxUnavailable");
        pdb["spec"]["minAvailable"] = json!(1);
    });
    assert_caught(
        &dev,
        "network_policies",
        "the projector open to the ingress controller",
        "stay-projector: takes connections",
        |docs| {
            doc_mut(docs, "NetworkPolicy", "stay-from-ingress-controller")["spec"]["podSelector"]["matchExpressions"]
                [0]["values"] = json!(["command-api", "query-api", "saga", "projector"]);
        },
    );
    assert_caught(&dev, "network_policies", "no default deny", "stay-payment-sim: takes connections", |docs| {
        docs.retain(|doc| !(kind_of(doc) == "NetworkPolicy" && name_of(doc) == "stay-deny-ingress"));
        docs.retain(|doc| !(kind_of(doc) == "NetworkPolicy" && name_of(doc) == "stay-payment-sim-from-saga"));
    });
    assert_caught(
        &dev,
        "network_policies",
        "the API roles shut off from the ingress controller",
        "may not connect",
        |docs| {
            doc_mut(docs, "NetworkPolicy", "stay-from-ingress-controller")["spec"]["ingress"][0]["from"][0]
                ["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] = json!("ingress");
        },
    );
    assert_caught(
        &dev,
        "secrets",
        "the JWT secret as a literal",
        "STAY_JWT_SECRET does not come from a Secret",
        |docs| {
            let var = env_mut(serve_mut(docs, "command-api"), "STAY_JWT_SECRET");
            *var = json!({"name": "STAY_JWT_SECRET", "value": "literal"});
        },
    );
    assert_caught(
        &dev,
        "secrets",
        "the previous token secret as a literal",
        "holds a token secret as a literal",
        |docs| {
            let var = env_mut(serve_mut(docs, "query-api"), "STAY_JWT_PREVIOUS_SECRET");
            *var = json!({"name": "STAY_JWT_PREVIOUS_SECRET", "value": "old"});
        },
    );
    assert_caught(&dev, "secrets", "the PostgreSQL URL as a literal", "holds a PostgreSQL URL as a literal", |docs| {
        let var = env_mut(serve_mut(docs, "saga"), "STAY_STORE");
        *var = json!({"name": "STAY_STORE", "value": "postgres://stay:pw@postgres/stay"});
    });
    assert_caught(&dev, "secrets", "a Secret key that is not there", "has no key store-uri", |docs| {
        env_mut(serve_mut(docs, "projector"), "STAY_STORE")["valueFrom"]["secretKeyRef"]["key"] = json!("store-uri");
    });
    assert_caught(&dev, "migration", "a role that migrates itself", "would migrate the schema itself", |docs| {
        env_mut(serve_mut(docs, "query-api"), "STAY_NO_MIGRATE")["value"] = json!("false");
    });
    assert_caught(
        &dev,
        "migration",
        "no `stay migrate` before a role",
        "no init container or Job runs `stay migrate`",
        |docs| {
            let spec = &mut doc_mut(docs, "Deployment", "stay-projector")["spec"]["template"]["spec"];
            spec.as_object_mut().expect("spec").remove("initContainers");
        },
    );
    assert_caught(&dev, "migration", "`stay migrate` on another database", "runs on other stores", |docs| {
        let deployment = doc_mut(docs, "Deployment", "stay-saga");
        let migrate = &mut deployment["spec"]["template"]["spec"]["initContainers"][0];
        env_mut(migrate, "STAY_STORE")["valueFrom"]["secretKeyRef"]["key"] = json!("jwt-secret");
    });
    assert_caught(
        &dev,
        "services",
        "a Service selecting nothing",
        "Service stay-saga: its selector matches no",
        |docs| {
            doc_mut(docs, "Service", "stay-saga")["spec"]["selector"]["app.kubernetes.io/component"] = json!("sage");
        },
    );
    assert_caught(&dev, "services", "a Service targeting a port the pods lack", "targetPort 8081", |docs| {
        doc_mut(docs, "Service", "stay-query-api")["spec"]["ports"][0]["targetPort"] = json!(8081);
    });
    assert_caught(&dev, "ingress", "a backend naming no Service", "backend stay-commands is no Service", |docs| {
        doc_mut(docs, "Ingress", "stay")["spec"]["rules"][0]["http"]["paths"][2]["backend"]["service"]["name"] =
            json!("stay-commands");
    });
    assert_caught(&dev, "ingress", "a backend port the Service lacks", "has no port grpc", |docs| {
        doc_mut(docs, "Ingress", "stay")["spec"]["rules"][1]["http"]["paths"][0]["backend"]["service"]["port"]
            ["name"] = json!("grpc");
    });
    assert_caught(
        &dev,
        "ingress",
        "the saga list sent to the saga",
        "/v1/admin/sagas goes to saga, not the query-api",
        |docs| {
            let paths =
                doc_mut(docs, "Ingress", "stay")["spec"]["rules"][1]["http"]["paths"].as_array_mut().expect("paths");
            paths.retain(|path| path["pathType"] != "Exact");
        },
    );
    assert_caught(&dev, "labels", "Stay pods without a component", "without app.kubernetes.io/component", |docs| {
        let labels = &mut doc_mut(docs, "Deployment", "stay-payment-sim")["spec"]["template"]["metadata"]["labels"];
        labels.as_object_mut().expect("labels").remove("app.kubernetes.io/component");
    });
}

#[test]
fn ingress_paths_match_as_kubernetes_matches_them() {
    let ingress = json!({"spec": {"rules": [{"host": "h", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "root"}}},
        {"path": "/v1/admin/sagas", "pathType": "Exact", "backend": {"service": {"name": "list"}}},
        {"path": "/v1/admin/sagas/", "pathType": "Prefix", "backend": {"service": {"name": "saga"}}},
        {"path": "/v1/ab", "pathType": "Prefix", "backend": {"service": {"name": "ab"}}},
    ]}}]}});
    assert_eq!(route(&ingress, "h", "/v1/admin/sagas"), Some("list"), "Exact wins at equal length");
    assert_eq!(route(&ingress, "h", "/v1/admin/sagas/"), Some("saga"));
    assert_eq!(route(&ingress, "h", "/v1/admin/sagas/x/retry"), Some("saga"));
    assert_eq!(route(&ingress, "h", "/v1/abc"), Some("root"), "Prefix matches whole elements only");
    assert_eq!(route(&ingress, "h", "/v1/ab/c"), Some("ab"));
    assert_eq!(route(&ingress, "other", "/"), None);
}

#[test]
fn durations_read_as_stay_reads_them() {
    assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("ten"), None);
    assert_eq!(parse_duration(""), None);
}

#[test]
fn dev_runs_one_replica_each_with_postgres_and_the_payment_simulator_in_the_cluster() {
    let Some(dev) = render("dev") else { return };
    for role in ROLES {
        let workload = role_workload(&dev, role).expect("the role");
        assert_eq!(workload.replicas(), 1, "{role}");
    }
    for hpa in dev.of_kind("HorizontalPodAutoscaler") {
        assert_eq!(hpa["spec"]["maxReplicas"], 1, "{}: dev stays at one replica", name_of(hpa));
    }
    assert!(dev.get("StatefulSet", "postgres").is_some() && dev.get("Service", "postgres").is_some());
    let sim = dev.workload("Deployment", "stay-payment-sim");
    assert_eq!(container_args(sim.containers()[0]), ["payment-sim"]);
    // The roles' environment is complete in dev: the generated Secret holds every value, and the
    // URLs name the in-cluster Services.
    let saga = role_workload(&dev, "saga").expect("saga");
    let env = dev.container_env_values(serve_container(&saga).expect("serve")).expect("every value is in the overlay");
    assert_eq!(env["STAY_PAYMENT_PROVIDER"], "http://stay-payment-sim:8090");
    assert!(
        env["STAY_STORE"].starts_with("postgres://stay:") && env["STAY_STORE"].contains("@postgres:5432/"),
        "{env:?}"
    );
    let postgres = dev.workload("StatefulSet", "postgres");
    let postgres_env = dev.container_env_values(postgres.containers()[0]).expect("postgres' env");
    assert!(
        env["STAY_STORE"].contains(&format!(":{}@", postgres_env["POSTGRES_PASSWORD"])),
        "the store URL's password is the one PostgreSQL is started with"
    );
    let secret = dev.find_generated("Secret", "stay-secrets");
    assert!(kustomize::name_of(secret).len() > "stay-secrets".len(), "the dev Secret is generated (hash suffix)");
}

#[test]
fn prod_runs_two_replicas_or_more_spread_over_nodes_with_the_secrets_from_outside() {
    let Some(prod) = render("prod") else { return };
    let mut problems = Vec::new();
    for role in ROLES {
        let workload = role_workload(&prod, role).expect("the role");
        if workload.replicas() < 2 {
            problems.push(format!("{role}: {} replica(s)", workload.replicas()));
        }
        let labels = workload.pod_labels();
        let anti = workload.pod_spec().pointer("/affinity/podAntiAffinity").cloned().unwrap_or(Value::Null);
        let terms: Vec<&Value> = array(anti.get("requiredDuringSchedulingIgnoredDuringExecution"))
            .iter()
            .chain(
                array(anti.get("preferredDuringSchedulingIgnoredDuringExecution"))
                    .iter()
                    .filter_map(|t| t.get("podAffinityTerm")),
            )
            .collect();
        let spreads = terms.iter().any(|term| {
            term.get("topologyKey").and_then(Value::as_str) == Some("kubernetes.io/hostname")
                && selector_matches(term.get("labelSelector").unwrap_or(&Value::Null), &labels)
        });
        if !spreads {
            problems.push(format!("{role}: no pod anti-affinity by hostname against its own pods"));
        }
    }
    for hpa in prod.of_kind("HorizontalPodAutoscaler") {
        if hpa.pointer("/spec/minReplicas").and_then(Value::as_u64).unwrap_or(1) < 2 {
            problems.push(format!("HPA {}: may scale below 2", name_of(hpa)));
        }
    }
    // The Secret is made outside the overlay: none is rendered, so no value is committed.
    if prod.of_kind("Secret").next().is_some() {
        problems.push("prod renders a Secret: its values would be in the repository".to_owned());
    }
    let saga = role_workload(&prod, "saga").expect("saga");
    let env = prod.container_env(serve_container(&saga).expect("serve")).expect("env");
    if !matches!(&env["STAY_STORE"], EnvSource::Secret { value: None, .. }) {
        problems.push(format!("STAY_STORE is {:?}, not a reference to a Secret made outside", env["STAY_STORE"]));
    }
    let image = serve_container(&saga).and_then(|c| c.get("image")).and_then(Value::as_str).unwrap_or_default();
    if !image.contains('/') || image.ends_with(":dev") {
        problems.push(format!("the image {image} is not a registry's release"));
    }
    assert!(problems.is_empty(), "{}", report("prod", &problems));
}

#[test]
fn eventstoredb_keeps_the_log_on_eventstoredb_and_the_read_side_on_postgres() {
    let Some(esdb) = render("eventstoredb") else { return };
    for role in ROLES {
        let workload = role_workload(&esdb, role).expect("the role");
        for container in workload.all_containers().into_iter().filter(|c| runs_stay_image(c)) {
            let at = format!("{role} container {}", container_name(container));
            let env = esdb.container_env(container).expect("env");
            let store: stay_store::StoreUrl =
                env["STAY_STORE"].value().unwrap_or_default().parse().unwrap_or_else(|err| panic!("{at}: {err}"));
            assert!(matches!(store, stay_store::StoreUrl::EventStoreDb(_)), "{at}: STAY_STORE is {store}");
            assert!(
                matches!(&env.get("STAY_READ_STORE"), Some(EnvSource::Secret { key, .. }) if key == "read-store-url"),
                "{at}: STAY_READ_STORE is {:?}",
                env.get("STAY_READ_STORE")
            );
        }
    }
    assert!(esdb.of_kind("Secret").next().is_none(), "the eventstoredb overlay renders no Secret");
}

// ---------------------------------------------------------------------------------------------
// The flags and variables the manifests give `stay`
// ---------------------------------------------------------------------------------------------

/// A change made to rendered documents, to see a check catch it.
type Edit = Box<dyn Fn(&mut Vec<Value>)>;

/// `stay SUBCOMMAND -h` (clap's short help: a flag's variable and possible values in brackets),
/// run with no STAY_* variable set, for each subcommand.
#[derive(Debug)]
struct StayHelp {
    by_subcommand: BTreeMap<String, String>,
    /// cli/src/main.rs: the variables it reads itself (STAY_LOG, STAY_LOG_FORMAT).
    main_source: String,
}

impl StayHelp {
    fn load(subcommands: &BTreeSet<String>) -> Self {
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

    fn help(&self, subcommand: &str) -> Option<&str> {
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
fn check_flags(rendered: &Rendered, help: &StayHelp) -> Vec<String> {
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

#[test]
fn every_flag_and_variable_the_manifests_pass_is_one_stay_reads() {
    let rendered: Vec<(&str, Rendered)> =
        OVERLAYS.iter().filter_map(|overlay| render(overlay).map(|rendered| (*overlay, rendered))).collect();
    if rendered.len() < OVERLAYS.len() {
        return;
    }
    let mut subcommands: BTreeSet<String> = ["serve", "migrate"].map(str::to_owned).into();
    for (_, overlay) in &rendered {
        for workload in overlay.workloads() {
            for container in workload.all_containers().into_iter().filter(|c| runs_stay_image(c)) {
                subcommands.extend(container_args(container).first().cloned());
            }
        }
    }
    // A misspelt subcommand must be looked up too, so it shows as missing.
    subcommands.insert("serv".to_owned());
    let help = StayHelp::load(&subcommands);
    assert!(
        help.help("serve").is_some_and(|text| text.contains("[env: STAY_LISTEN=")),
        "stay serve --help lists its variables"
    );
    assert!(help.help("serv").is_none());

    let failures: Vec<String> = rendered
        .iter()
        .map(|(name, overlay)| report(name, &check_flags(overlay, &help)))
        .filter(|r| !r.is_empty())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Typos are caught: in a flag, a flag's value, a subcommand, a variable, a ConfigMap key.
    let (_, dev) = rendered.iter().find(|(name, _)| *name == "dev").expect("dev");
    let cases: [(&str, &str, Edit); 6] = [
        (
            "a misspelt flag",
            "has no flag --rol",
            Box::new(|docs| serve_mut(docs, "saga")["args"] = json!(["serve", "--rol", "saga"])),
        ),
        (
            "an unknown role",
            "--role command-apis is none of",
            Box::new(|docs| serve_mut(docs, "command-api")["args"] = json!(["serve", "--role", "command-apis"])),
        ),
        (
            "a misspelt subcommand",
            "`stay serv` is no subcommand",
            Box::new(|docs| serve_mut(docs, "projector")["args"] = json!(["serv", "--role", "projector"])),
        ),
        (
            "a misspelt variable",
            "reads no variable STAY_NO_MIGRATION",
            Box::new(|docs| {
                env_mut(serve_mut(docs, "query-api"), "STAY_NO_MIGRATE")["name"] = json!("STAY_NO_MIGRATION")
            }),
        ),
        (
            "a misspelt ConfigMap key",
            "STAY_SHUTDOWN_GRCE is read by none",
            Box::new(|docs| {
                let data = generated_mut(docs, "ConfigMap", "stay-config")["data"].as_object_mut().expect("data");
                let value = data.remove("STAY_SHUTDOWN_GRACE").expect("the key");
                data.insert("STAY_SHUTDOWN_GRCE".to_owned(), value);
            }),
        ),
        (
            "a serve variable given to `stay payment-sim`",
            "`stay payment-sim` reads no variable STAY_LISTEN",
            Box::new(|docs| {
                let sim = doc_mut(docs, "Deployment", "stay-payment-sim");
                env_mut(&mut sim["spec"]["template"]["spec"]["containers"][0], "STAY_PAYMENT_SIM_LISTEN")["name"] =
                    json!("STAY_LISTEN");
            }),
        ),
    ];
    for (what, expected, edit) in cases {
        let mut broken = dev.clone();
        edit(&mut broken.docs);
        let problems = check_flags(&broken, &help);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{what} not caught: expected {expected:?} in {problems:?}"
        );
    }
}
