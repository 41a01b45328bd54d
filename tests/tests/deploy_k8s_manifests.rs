//! The Kubernetes manifests (issue 14): every overlay under k8s/overlays renders with
//! `kubectl kustomize`, passes kubernetes-validate's strict schemas (unknown fields fail) for a
//! pinned Kubernetes version, and has the properties a safe deployment of Stay needs (listed and
//! checked in `stay_tests::manifest_checks`).
//!
//! Each check is a function that returns the problems it finds; `each_check_catches_what_it_guards`
//! breaks a rendered overlay once per check and asserts the check reports it, so none can pass
//! vacuously. kubectl, kubernetes-validate and the `stay` binary come from
//! `stay_tests::kustomize::deploy_tool` and `stay_binary`: under CI a missing tool fails the test.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use stay_tests::kustomize::{
    self, array, container_args, container_name, kind_of, name_of, selector_matches, EnvSource, Rendered, OVERLAYS,
};
use stay_tests::manifest_checks::{
    check_flags, parse_duration, role_workload, route, runs_stay_image, serve_container, StayHelp, CHECKS, ROLES,
};

/// The Kubernetes version whose schemas the rendered overlays must pass: the oldest one the
/// manifests are meant for (the preStop `sleep` action is on by default since 1.30).
const KUBERNETES_VERSION: &str = "1.33.0";

fn render(overlay: &str) -> Option<Rendered> {
    kustomize::render_overlay(overlay)
}

/// Problems, one line each, prefixed by the overlay's name; empty when all is well.
fn report(overlay: &str, problems: &[String]) -> String {
    problems.iter().map(|problem| format!("{overlay}: {problem}")).collect::<Vec<_>>().join("\n")
}

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
    assert_caught(&dev, "hpas", "a fixed replica count under an HPA", "stay-command-api sets replicas", |docs| {
        doc_mut(docs, "Deployment", "stay-command-api")["spec"]["replicas"] = json!(1);
    });
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
        assert_eq!(dev.least_replicas(&workload), 1, "{role}");
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
        let replicas = prod.least_replicas(&workload);
        if replicas < 2 {
            problems.push(format!("{role}: {replicas} replica(s)"));
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
