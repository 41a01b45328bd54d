//! The rendered dev overlay (k8s/overlays/dev) describes a system that works: its pods, started as
//! local processes exactly as the manifests say (init containers first, then each Deployment's
//! container with its args, its ConfigMap and Secret environment; tests/src/deployment/ maps the
//! Services' names and ports, the in-cluster PostgreSQL and the emptyDirs), all pass their
//! readiness probes and take one reservation through the API Services to confirmed and visible in
//! roomview. A typo in a flag or variable of the manifests makes the harness refuse them.

use reqwest::Method;
use stay_tests::deployment::{k8s_stack, repository_root, send, DeployError, Deployment, Dockerfile, Image};
use stay_tests::kustomize::{render_overlay, Rendered};

fn image() -> Image {
    let text = std::fs::read_to_string(repository_root().join("Dockerfile")).expect("Dockerfile");
    Dockerfile::parse(&text).and_then(|d| d.image()).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_overlay_runs_each_pod_and_confirms_a_reservation_through_the_services() {
    let Some(rendered) = render_overlay("dev") else { return };
    let stack = k8s_stack(&rendered, &image()).unwrap_or_else(|e| panic!("{e}"));
    // Each role migrates in its init container before its own container starts.
    for role in ["command-api", "query-api", "projector", "saga"] {
        let pod = format!("stay-{role}");
        let spec = stack.service(&pod).unwrap_or_else(|| panic!("{pod}"));
        assert_eq!(spec.args, ["serve", "--role", role]);
        assert_eq!(spec.env_value("STAY_NO_MIGRATE"), Some("true"), "{pod} leaves migrating to its init container");
        assert!(spec.depends_on.iter().any(|d| stack.service(&d.service).is_some_and(|init| init.args == ["migrate"])));
    }
    // Started only once every readiness probe passes (`kubectl wait --for=condition=ready`).
    let deployment = Deployment::start(&stack).await.unwrap_or_else(|e| panic!("{e}"));

    let commands = deployment.url("stay-command-api", 8080);
    let queries = deployment.url("stay-query-api", 8080);
    let saga = deployment.url("stay-saga", 8080);
    deployment.reservation_confirmed_and_in_roomview("stay-command-api", &commands, &queries).await;

    let admin = deployment.token("stay-command-api", "admin-1", "admin");
    // The saga's admin routes answer on its Service (the Ingress sends /v1/admin/payments there).
    let (status, payments) = send(Method::GET, &format!("{saga}/v1/admin/payments"), Some(&admin), None, &[]).await;
    assert_eq!(status, 200, "{payments}");
    // Liveness, as the kubelet asks it, on every role.
    for role in ["command-api", "query-api", "projector", "saga"] {
        let (status, _) =
            send(Method::GET, &format!("{}/healthz", deployment.url(&format!("stay-{role}"), 8080)), None, None, &[])
                .await;
        assert_eq!(status, 200, "{role} /healthz");
    }
}

/// The rendered overlay with `from` replaced by `to` (which must occur).
fn mutated(rendered: &Rendered, from: &str, to: &str) -> Rendered {
    assert!(rendered.yaml.contains(from), "the rendered dev overlay no longer holds {from:?}");
    Rendered::parse(rendered.yaml.replacen(from, to, 1)).expect("still YAML")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_flag_or_variable_in_the_manifests_is_refused_with_its_name() {
    let Some(rendered) = render_overlay("dev") else { return };
    let image = image();
    let cases = [
        ("- --role\n", "- --rol\n", "--rol"),
        ("name: STAY_NO_MIGRATE\n", "name: STAY_NO_MIGRATION\n", "STAY_NO_MIGRATION"),
        ("STAY_PAYMENT_PROVIDER:", "STAY_PAYMENT_PROVIDR:", "STAY_PAYMENT_PROVIDR"),
        ("name: STAY_PAYMENT_SIM_LISTEN\n", "name: STAY_PAYMENT_SIM_LISTN\n", "STAY_PAYMENT_SIM_LISTN"),
    ];
    for (from, to, named) in cases {
        let stack = k8s_stack(&mutated(&rendered, from, to), &image).unwrap_or_else(|e| panic!("{e}"));
        let refused = Deployment::start(&stack).await.expect_err("the harness must refuse it");
        assert!(matches!(&refused, DeployError::Unknown(_)), "{to}: {refused}");
        assert!(refused.to_string().contains(named), "{to}: {refused}");
    }
    // A Service name the pods are pointed at that does not exist.
    let stack = k8s_stack(&mutated(&rendered, "http://stay-payment-sim:8090", "http://stay-payment-simm:8090"), &image)
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = Deployment::start(&stack).await.expect_err("an unknown host");
    assert!(matches!(&refused, DeployError::Mapping(why) if why.contains("stay-payment-simm")), "{refused}");
}
