//! The Dockerfile lints clean with hadolint (no rule ignored) and holds what a lint cannot check:
//! a non-root final stage with `stay` as its entrypoint and a health check through `stay probe`,
//! the OCI labels, a release build with the features docker-compose.yml's eventstoredb profile
//! needs, and a .dockerignore that keeps target/ out of the build context.

use std::process::Command;

use stay_tests::deployment::{repository_root, Compose, Dockerfile, Health, ServiceKind};
use stay_tests::kustomize::deploy_tool;

fn dockerfile_text() -> String {
    std::fs::read_to_string(repository_root().join("Dockerfile")).expect("Dockerfile")
}

#[test]
fn hadolint_passes_without_ignored_rules() {
    let text = dockerfile_text();
    assert!(!text.contains("hadolint ignore"), "no rule is ignored in the Dockerfile");
    // Outside CI a missing hadolint skips (after a note); under CI it fails (deploy_tool panics).
    let Some(hadolint) = deploy_tool("STAY_HADOLINT") else { return };
    let output = Command::new(&hadolint)
        .arg("--no-color")
        .arg(repository_root().join("Dockerfile"))
        .current_dir(repository_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", hadolint.display()));
    assert!(
        output.status.success(),
        "hadolint found problems:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // And it does fail on what it should: a base image without a pinned tag.
    let dir = tempfile::tempdir().expect("temp dir");
    let unpinned = dir.path().join("Dockerfile");
    let pinned = text.lines().find(|line| line.starts_with("FROM rust:")).expect("a pinned Rust build stage");
    let unpinned_text = text.replacen(pinned, "FROM rust AS build", 1);
    assert_ne!(unpinned_text, text);
    std::fs::write(&unpinned, unpinned_text).expect("write");
    let output = Command::new(&hadolint).arg("--no-color").arg(&unpinned).output().expect("hadolint");
    assert!(!output.status.success(), "hadolint accepted an unpinned base image");
}

#[test]
fn the_final_stage_runs_stay_as_a_non_root_user_with_a_health_check_and_labels() {
    let dockerfile = Dockerfile::parse(&dockerfile_text()).unwrap_or_else(|e| panic!("{e}"));
    assert!(dockerfile.stages.len() >= 2, "a multi-stage build");
    let image = dockerfile.image().unwrap_or_else(|e| panic!("{e}"));

    let user = image.user.as_deref().expect("the final stage sets USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(uid.parse::<u32>().is_ok_and(|uid| uid != 0), "USER {user}: a numeric, non-root uid");
    assert_eq!(image.entrypoint, ["stay"]);
    assert_eq!(image.cmd, ["serve"]);
    match image.health.as_ref().map(|h| &h.check) {
        Some(Health::Command(argv)) => assert_eq!(argv[..2], ["stay", "probe"], "HEALTHCHECK runs `stay probe`"),
        other => panic!("HEALTHCHECK CMD [\"stay\", \"probe\"] expected, found {other:?}"),
    }
    assert!(image.volumes.iter().any(|v| v == "/var/lib/stay"), "VOLUME /var/lib/stay");
    let env: Vec<(&str, &str)> = image.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert!(env.contains(&("STAY_DATA_DIR", "/var/lib/stay")), "{env:?}");
    assert!(env.contains(&("STAY_LISTEN", "0.0.0.0:8080")), "{env:?}");
    for label in ["title", "description", "version", "revision", "licenses"] {
        let key = format!("org.opencontainers.image.{label}");
        assert!(image.labels.get(&key).is_some_and(|v| !v.is_empty()), "LABEL {key} missing");
    }

    // Every base image is pinned to a tag that is neither missing nor `latest`.
    for stage in &dockerfile.stages {
        let from = stage.first().expect("a stage starts with FROM");
        let base = from.rest.split_whitespace().next().unwrap_or_default();
        let tag = base.rsplit_once(':').map(|(_, tag)| tag).unwrap_or_default();
        assert!(!tag.is_empty() && tag != "latest" && !tag.contains('/'), "FROM {base} is not pinned");
    }
}

#[test]
fn the_binary_is_built_in_release_with_the_features_the_eventstoredb_profile_needs() {
    let dockerfile = Dockerfile::parse(&dockerfile_text()).unwrap_or_else(|e| panic!("{e}"));
    let builds: Vec<&str> = dockerfile
        .stages
        .iter()
        .flatten()
        .filter(|i| i.keyword == "RUN")
        .map(|i| i.rest.as_str())
        .filter(|run| run.contains("cargo build"))
        .collect();
    // The dependency layer and the real build: both with the same profile and features, or the
    // cached layer would be of no use to the second.
    assert_eq!(builds.len(), 2, "{builds:?}");
    for build in &builds {
        for needed in ["--release", "--locked", "-p stay-cli", "--features eventstoredb"] {
            assert!(build.contains(needed), "`{needed}` missing from: {build}");
        }
    }

    // The eventstoredb profile runs this image against an esdb:// store.
    let compose = Compose::repository().unwrap_or_else(|e| panic!("{e}"));
    let stack = compose.stack(&["eventstoredb"], &[]).unwrap_or_else(|e| panic!("{e}"));
    let on_esdb = stack
        .services
        .iter()
        .filter(|s| s.kind == ServiceKind::Stay && s.env_value("STAY_STORE").is_some_and(|u| u.starts_with("esdb://")))
        .count();
    assert!(on_esdb >= 5, "migrate and the four roles run on EventStoreDB in that profile");
    // The feature exists under that name in the binary's crate.
    let manifest = std::fs::read_to_string(repository_root().join("cli/Cargo.toml")).expect("cli/Cargo.toml");
    assert!(manifest.contains("eventstoredb = [\"stay-store/eventstoredb\"]"), "stay-cli's eventstoredb feature");
}

#[test]
fn the_build_context_leaves_out_target_and_local_secrets() {
    let ignore = std::fs::read_to_string(repository_root().join(".dockerignore")).expect(".dockerignore");
    let patterns: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for needed in ["target/", "stay.env", ".git/"] {
        assert!(patterns.contains(&needed), ".dockerignore must exclude {needed}: {patterns:?}");
    }
    assert!(!patterns.iter().any(|p| p.starts_with('!')), "nothing is let back in: {patterns:?}");
    let gitignore = std::fs::read_to_string(repository_root().join(".gitignore")).expect(".gitignore");
    assert!(gitignore.lines().any(|l| l.trim() == "/stay.env"), "stay.env (the real secrets) is git-ignored");
}

/// The dependency layer copies every workspace member's manifest and gives each an empty crate:
/// a member left out there breaks `docker build` (cargo cannot load the workspace), which no
/// other test would notice.
#[test]
fn the_dependency_layer_copies_every_workspace_member() {
    let manifest = std::fs::read_to_string(repository_root().join("Cargo.toml")).expect("Cargo.toml");
    let members_line = manifest.lines().find(|line| line.starts_with("members")).expect("a members list");
    let members: Vec<&str> = members_line.split('"').skip(1).step_by(2).collect();
    assert!(members.len() >= 9, "{members:?}");
    let text = dockerfile_text();
    let empty_crates = text.lines().find(|line| line.contains("for crate in")).expect("the empty crates' loop");
    for member in members {
        assert!(
            text.contains(&format!("COPY {member}/Cargo.toml {member}/")),
            "the Dockerfile copies {member}/Cargo.toml"
        );
        let stubbed =
            member == "cli" || empty_crates.split_whitespace().any(|word| word.trim_end_matches(';') == member);
        assert!(stubbed, "the dependency layer makes an empty crate for {member}: {empty_crates}");
    }
}
