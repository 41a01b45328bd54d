//! Renders the kustomize overlays under k8s/ with `kubectl kustomize` and reads the documents.
//!
//! [`render_overlay`] gives a [`Rendered`]: every document as JSON, with look-ups by kind and name,
//! the pod templates of the workloads, and each container's environment resolved the way the
//! kubelet would (`env`, `envFrom`, ConfigMap and Secret references, from the rendered objects).
//!
//! The tools the deployment tests use (kubectl, kubernetes-validate, hadolint) come from
//! [`deploy_tool`]: the `STAY_KUBECTL`, `STAY_KUBERNETES_VALIDATE` or `STAY_HADOLINT` variable that
//! `.ci/run` exports, else what `.ci/deploy-tools` installs or finds. A tool that cannot be had
//! fails the test under CI (`CI=true`) and otherwise skips it with a note.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

/// The workspace's root directory.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate sits in the workspace").to_path_buf()
}

/// `k8s/overlays/NAME` in the workspace.
pub fn overlay_dir(name: &str) -> PathBuf {
    workspace_dir().join("k8s").join("overlays").join(name)
}

/// The overlays the repository ships, each a complete deployment.
pub const OVERLAYS: [&str; 3] = ["dev", "prod", "eventstoredb"];

/// Whether this runs under CI, where a missing tool is a failure rather than a skip.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true" || ci == "1")
}

/// The path of a deployment tool: `var` (`STAY_KUBECTL`, `STAY_KUBERNETES_VALIDATE` or
/// `STAY_HADOLINT`) when set, else the one `.ci/deploy-tools` reports (it installs the pinned
/// versions into a virtualenv on first use). `None`, after a note on stderr, when it cannot be
/// had; under CI that is a panic instead, so a missing tool never passes as a skipped test.
pub fn deploy_tool(var: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|path| !path.is_empty()) {
        return Some(PathBuf::from(path));
    }
    static FROM_SCRIPT: OnceLock<Result<BTreeMap<String, String>, String>> = OnceLock::new();
    let found = FROM_SCRIPT.get_or_init(run_deploy_tools_script);
    let missing = match found {
        Ok(tools) => match tools.get(var) {
            Some(path) => return Some(PathBuf::from(path)),
            None => format!(".ci/deploy-tools did not report {var}"),
        },
        Err(why) => why.clone(),
    };
    assert!(!under_ci(), "{var} is not set and the tool cannot be had under CI: {missing}");
    eprintln!("note: skipped, {var} is not set and the tool cannot be had: {missing}");
    None
}

/// Runs `.ci/deploy-tools` and reads its `export NAME=PATH` lines.
fn run_deploy_tools_script() -> Result<BTreeMap<String, String>, String> {
    let script = workspace_dir().join(".ci").join("deploy-tools");
    let output =
        Command::new("bash").arg(&script).output().map_err(|err| format!("cannot run {}: {err}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(parse_exports(&String::from_utf8_lossy(&output.stdout)))
}

/// `export NAME=VALUE` lines (VALUE as bash's `printf %q` writes it) as a map.
fn parse_exports(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| (name.to_owned(), unquote_bash(value)))
        .collect()
}

/// Undoes `printf %q` for what a path can hold: backslash escapes, or a `'...'` quoting.
fn unquote_bash(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('\'').and_then(|rest| rest.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// Renders an overlay of the repository (`dev`, `prod`, `eventstoredb`); `None` (after a note)
/// when kubectl cannot be had outside CI. Panics when kubectl fails to render it.
pub fn render_overlay(name: &str) -> Option<Rendered> {
    let kubectl = deploy_tool("STAY_KUBECTL")?;
    Some(render(&kubectl, &overlay_dir(name)).unwrap_or_else(|why| panic!("overlay {name}: {why}")))
}

/// Renders the kustomization in `dir` with `kubectl kustomize`.
pub fn render(kubectl: &Path, dir: &Path) -> Result<Rendered, String> {
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|err| format!("cannot run {}: {err}", kubectl.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`{} kustomize {}` failed ({}): {}",
            kubectl.display(),
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let yaml = String::from_utf8(output.stdout).map_err(|err| format!("kubectl wrote no UTF-8: {err}"))?;
    Rendered::parse(yaml)
}

/// The documents of a rendered overlay.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The YAML as kubectl wrote it (for a validator that reads files).
    pub yaml: String,
    /// Every document, in order.
    pub docs: Vec<Value>,
}

/// Where a container's environment variable gets its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    /// A literal `value`, or a ConfigMap's entry (through `envFrom` or `configMapKeyRef`).
    Value(String),
    /// A Secret's key (through `envFrom` or `secretKeyRef`), and its value when the Secret is part
    /// of the rendered output (a generated dev Secret); `None` for a Secret made outside it.
    Secret {
        /// The Secret's name.
        name: String,
        /// The key in it.
        key: String,
        /// Its decoded value, when the Secret was rendered.
        value: Option<String>,
    },
    /// A field of the pod (`fieldRef`, `resourceFieldRef`): known only in a cluster.
    Field(String),
}

impl EnvSource {
    /// The value, when the rendered output holds it.
    pub fn value(&self) -> Option<&str> {
        match self {
            EnvSource::Value(value) => Some(value),
            EnvSource::Secret { value, .. } => value.as_deref(),
            EnvSource::Field(_) => None,
        }
    }
}

impl Rendered {
    /// Reads a multi-document YAML stream; empty documents are dropped.
    pub fn parse(yaml: String) -> Result<Self, String> {
        let mut docs = Vec::new();
        for document in serde_yaml_ng::Deserializer::from_str(&yaml) {
            let doc = Value::deserialize(document).map_err(|err| format!("the rendered YAML does not parse: {err}"))?;
            if !doc.is_null() {
                docs.push(doc);
            }
        }
        Ok(Self { yaml, docs })
    }

    /// Every document of this kind (`Deployment`, `Service`, …).
    pub fn of_kind(&self, kind: &str) -> impl Iterator<Item = &Value> + '_ {
        let kind = kind.to_owned();
        self.docs.iter().filter(move |doc| kind_of(doc) == kind)
    }

    /// The document of this kind and name, if any.
    pub fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind).find(|doc| name_of(doc) == name)
    }

    /// The document of this kind and name; panics, listing what there is, when it is missing.
    pub fn find(&self, kind: &str, name: &str) -> &Value {
        self.get(kind, name).unwrap_or_else(|| {
            let names: Vec<String> = self.docs.iter().map(|doc| format!("{}/{}", kind_of(doc), name_of(doc))).collect();
            panic!("no {kind} named {name} in the rendered output: {names:?}")
        })
    }

    /// The one document of this kind whose name starts with `prefix`: for generated ConfigMaps and
    /// Secrets, whose names end in a hash of their content (`stay-config-5t8m2…`).
    pub fn find_generated(&self, kind: &str, prefix: &str) -> &Value {
        let found: Vec<&Value> = self.of_kind(kind).filter(|doc| generated_from(name_of(doc), prefix)).collect();
        match found.as_slice() {
            [one] => one,
            _ => panic!("expected one {kind} generated as {prefix}, found {}", found.len()),
        }
    }

    /// The workloads that run pods (Deployment, StatefulSet, DaemonSet, Job, CronJob's job template),
    /// each with its pod template (`{metadata, spec}`).
    pub fn workloads(&self) -> Vec<Workload<'_>> {
        self.docs
            .iter()
            .filter_map(|doc| {
                let template = match kind_of(doc) {
                    "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => doc.pointer("/spec/template"),
                    "CronJob" => doc.pointer("/spec/jobTemplate/spec/template"),
                    _ => None,
                }?;
                Some(Workload { doc, template })
            })
            .collect()
    }

    /// The workload of this kind and name; panics when it is missing.
    pub fn workload(&self, kind: &str, name: &str) -> Workload<'_> {
        let doc = self.find(kind, name);
        self.workloads()
            .into_iter()
            .find(|workload| std::ptr::eq(workload.doc, doc))
            .unwrap_or_else(|| panic!("{kind}/{name} has no pod template"))
    }

    /// The HorizontalPodAutoscalers that scale `workload`.
    pub fn hpas_of<'s>(&'s self, workload: &Workload<'_>) -> Vec<&'s Value> {
        self.of_kind("HorizontalPodAutoscaler")
            .filter(|hpa| {
                hpa.pointer("/spec/scaleTargetRef/kind").and_then(Value::as_str) == Some(workload.kind())
                    && hpa.pointer("/spec/scaleTargetRef/name").and_then(Value::as_str) == Some(workload.name())
            })
            .collect()
    }

    /// How many pods `workload` runs at least once applied: the floor of the HPA that scales it,
    /// or its own `spec.replicas`.
    pub fn least_replicas(&self, workload: &Workload<'_>) -> u64 {
        match self.hpas_of(workload).first() {
            Some(hpa) => hpa.pointer("/spec/minReplicas").and_then(Value::as_u64).unwrap_or(1),
            None => workload.replicas(),
        }
    }

    /// A ConfigMap's `data`, by its name as the pods reference it.
    pub fn config_map_data(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let doc = self.get("ConfigMap", name)?;
        Some(string_map(doc.get("data")))
    }

    /// A Secret's entries, decoded (`data` is base64, `stringData` plain), by its name as the pods
    /// reference it; `None` when the Secret is not part of the rendered output.
    pub fn secret_data(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let doc = self.get("Secret", name)?;
        let mut entries: BTreeMap<String, String> = string_map(doc.get("data"))
            .into_iter()
            .map(|(key, encoded)| {
                let decoded = decode_base64(&encoded).unwrap_or_else(|| panic!("Secret {name}: {key} is not base64"));
                (key, decoded)
            })
            .collect();
        entries.extend(string_map(doc.get("stringData")));
        Some(entries)
    }

    /// A container's environment as the kubelet builds it: `envFrom` first (in order, a later
    /// source overriding an earlier one, with its `prefix`), then `env` over it. References to a
    /// ConfigMap missing from the output, or to a key missing from a rendered ConfigMap or Secret,
    /// are errors, as they would stop the pod from starting.
    pub fn container_env(&self, container: &Value) -> Result<BTreeMap<String, EnvSource>, String> {
        let mut env = BTreeMap::new();
        for source in array(container.get("envFrom")) {
            let prefix = source.get("prefix").and_then(Value::as_str).unwrap_or("");
            if let Some(name) = source.pointer("/configMapRef/name").and_then(Value::as_str) {
                let data =
                    self.config_map_data(name).ok_or_else(|| format!("envFrom names a missing ConfigMap {name}"))?;
                for (key, value) in data {
                    env.insert(format!("{prefix}{key}"), EnvSource::Value(value));
                }
            } else if let Some(name) = source.pointer("/secretRef/name").and_then(Value::as_str) {
                let data = self
                    .secret_data(name)
                    .ok_or_else(|| format!("envFrom takes every key of Secret {name}, which is not rendered"))?;
                for (key, value) in data {
                    env.insert(
                        format!("{prefix}{key}"),
                        EnvSource::Secret { name: name.to_owned(), key, value: Some(value) },
                    );
                }
            }
        }
        for var in array(container.get("env")) {
            let name = var.get("name").and_then(Value::as_str).ok_or("an env entry without a name")?.to_owned();
            let source = if let Some(value) = var.get("value") {
                EnvSource::Value(value.as_str().map_or_else(|| value.to_string(), str::to_owned))
            } else if let Some(reference) = var.pointer("/valueFrom/secretKeyRef") {
                let secret = reference.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                let key = reference.get("key").and_then(Value::as_str).unwrap_or_default().to_owned();
                let optional = reference.get("optional").and_then(Value::as_bool) == Some(true);
                let value = match self.secret_data(&secret) {
                    Some(data) => match data.get(&key) {
                        Some(value) => Some(value.clone()),
                        // The kubelet leaves an optional variable out when its key is missing.
                        None if optional => continue,
                        None => return Err(format!("{name}: Secret {secret} has no key {key}")),
                    },
                    None => None,
                };
                EnvSource::Secret { name: secret, key, value }
            } else if let Some(reference) = var.pointer("/valueFrom/configMapKeyRef") {
                let map = reference.get("name").and_then(Value::as_str).unwrap_or_default();
                let key = reference.get("key").and_then(Value::as_str).unwrap_or_default();
                let data = self.config_map_data(map).ok_or_else(|| format!("{name}: no ConfigMap {map}"))?;
                EnvSource::Value(data.get(key).cloned().ok_or_else(|| format!("{name}: ConfigMap {map} has no {key}"))?)
            } else if let Some(reference) = var.get("valueFrom") {
                EnvSource::Field(reference.to_string())
            } else {
                EnvSource::Value(String::new())
            };
            env.insert(name, source);
        }
        Ok(env)
    }

    /// [`Rendered::container_env`] with every value known: for starting the container as a local
    /// process. Errors name a variable whose value only a cluster would know (a Secret made outside
    /// the overlay, a pod field).
    pub fn container_env_values(&self, container: &Value) -> Result<BTreeMap<String, String>, String> {
        self.container_env(container)?
            .into_iter()
            .map(|(name, source)| match source.value() {
                Some(value) => Ok((name, value.to_owned())),
                None => Err(format!("{name} comes from {source:?}, which the rendered output does not hold")),
            })
            .collect()
    }
}

/// A workload and its pod template.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    /// The whole document (a Deployment, StatefulSet, …).
    pub doc: &'a Value,
    /// Its pod template: `metadata` (the pods' labels) and `spec`.
    pub template: &'a Value,
}

impl<'a> Workload<'a> {
    /// `Deployment`, `StatefulSet`, …
    pub fn kind(&self) -> &'a str {
        kind_of(self.doc)
    }

    /// The workload's name.
    pub fn name(&self) -> &'a str {
        name_of(self.doc)
    }

    /// The pods' labels.
    pub fn pod_labels(&self) -> BTreeMap<String, String> {
        string_map(self.template.pointer("/metadata/labels"))
    }

    /// The pod spec.
    pub fn pod_spec(&self) -> &'a Value {
        self.template.get("spec").unwrap_or(&Value::Null)
    }

    /// The init containers, in order.
    pub fn init_containers(&self) -> Vec<&'a Value> {
        array(self.pod_spec().get("initContainers")).iter().collect()
    }

    /// The (main) containers, in order.
    pub fn containers(&self) -> Vec<&'a Value> {
        array(self.pod_spec().get("containers")).iter().collect()
    }

    /// Init containers then containers.
    pub fn all_containers(&self) -> Vec<&'a Value> {
        let mut all = self.init_containers();
        all.extend(self.containers());
        all
    }

    /// The container or init container named `name`.
    pub fn container(&self, name: &str) -> Option<&'a Value> {
        self.all_containers().into_iter().find(|container| container_name(container) == name)
    }

    /// `spec.replicas` (1 when left out, as the API server defaults it).
    pub fn replicas(&self) -> u64 {
        self.doc.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1)
    }
}

/// A document's `kind`, or "".
pub fn kind_of(doc: &Value) -> &str {
    doc.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// A document's `metadata.name`, or "".
pub fn name_of(doc: &Value) -> &str {
    doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

/// A container's `name`, or "".
pub fn container_name(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("")
}

/// A container's `args` (the `stay` subcommand and its flags, the image's entrypoint being `stay`).
pub fn container_args(container: &Value) -> Vec<String> {
    array(container.get("args")).iter().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// The component label (`app.kubernetes.io/component`) of a set of labels, or "".
pub fn component(labels: &BTreeMap<String, String>) -> &str {
    labels.get("app.kubernetes.io/component").map_or("", String::as_str)
}

/// Whether a name is `prefix` plus kustomize's content hash (`prefix-<hash>`), or `prefix` itself.
pub fn generated_from(name: &str, prefix: &str) -> bool {
    name == prefix
        || name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|hash| !hash.is_empty() && hash.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
}

/// Whether a label selector (`matchLabels` and `matchExpressions`) selects pods with these labels.
/// An empty selector selects everything, as in a NetworkPolicy's `podSelector: {}`.
pub fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    // A Service's selector is a plain map; other selectors have matchLabels/matchExpressions.
    let plain = selector.get("matchLabels").is_none() && selector.get("matchExpressions").is_none();
    let match_labels = if plain { string_map(Some(selector)) } else { string_map(selector.get("matchLabels")) };
    if match_labels.iter().any(|(key, value)| labels.get(key) != Some(value)) {
        return false;
    }
    array(selector.get("matchExpressions")).iter().all(|expression| {
        let key = expression.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = array(expression.get("values")).iter().filter_map(Value::as_str).collect();
        let has = labels.get(key);
        match expression.get("operator").and_then(Value::as_str).unwrap_or_default() {
            "In" => has.is_some_and(|value| values.contains(&value.as_str())),
            "NotIn" => has.is_none_or(|value| !values.contains(&value.as_str())),
            "Exists" => has.is_some(),
            "DoesNotExist" => has.is_none(),
            _ => false,
        }
    })
}

/// A JSON array's items, or none.
pub fn array(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// A JSON object of strings (labels, ConfigMap data) as a map; other values as their JSON text.
pub fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|object| {
            object
                .iter()
                .map(|(key, value)| (key.clone(), value.as_str().map_or_else(|| value.to_string(), str::to_owned)))
                .collect()
        })
        .unwrap_or_default()
}

/// Standard base64 (with padding, as Kubernetes writes Secret data) to UTF-8 text.
fn decode_base64(text: &str) -> Option<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0u32;
    // kubectl folds long values over lines: whitespace is no part of the encoding.
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    for c in compact.trim_end_matches('=').bytes() {
        let sextet = ALPHABET.iter().position(|&a| a == c)?;
        buffer = (buffer << 6) | u32::try_from(sextet).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_what_kubernetes_writes() {
        assert_eq!(decode_base64("cG9zdGdyZXM6Ly9zdGF5QGRiL3N0YXk=").as_deref(), Some("postgres://stay@db/stay"));
        assert_eq!(decode_base64("YQ==").as_deref(), Some("a"));
        assert_eq!(decode_base64("YWI=").as_deref(), Some("ab"));
        assert_eq!(decode_base64("YWJj").as_deref(), Some("abc"));
        assert_eq!(decode_base64("YWJj\nZA\n==\n").as_deref(), Some("abcd"), "folded over lines, as kubectl writes it");
        assert_eq!(decode_base64("not base64!"), None);
    }

    #[test]
    fn exports_are_read_back_from_printf_q() {
        let exports =
            parse_exports("export STAY_KUBECTL=/usr/bin/kubectl\nexport STAY_HADOLINT=/a\\ b/hadolint\nnoise\n");
        assert_eq!(exports.get("STAY_KUBECTL").map(String::as_str), Some("/usr/bin/kubectl"));
        assert_eq!(exports.get("STAY_HADOLINT").map(String::as_str), Some("/a b/hadolint"));
        assert_eq!(exports.len(), 2);
    }

    #[test]
    fn generated_names_carry_a_hash_suffix() {
        assert!(generated_from("stay-config-g996k59bc4", "stay-config"));
        assert!(generated_from("stay-config", "stay-config"));
        assert!(!generated_from("stay-config-extra-g996k59bc4", "stay-config"));
        assert!(!generated_from("stay-configmap", "stay-config"));
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> =
            [("app.kubernetes.io/name", "stay"), ("app.kubernetes.io/component", "saga")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let plain = serde_json::json!({"app.kubernetes.io/component": "saga"});
        assert!(selector_matches(&plain, &labels));
        let other = serde_json::json!({"app.kubernetes.io/component": "query-api"});
        assert!(!selector_matches(&other, &labels));
        let expression = serde_json::json!({"matchLabels": {"app.kubernetes.io/name": "stay"},
            "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": ["command-api", "saga"]}]});
        assert!(selector_matches(&expression, &labels));
        let not_in = serde_json::json!({"matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "NotIn", "values": ["saga"]}]});
        assert!(!selector_matches(&not_in, &labels));
        assert!(selector_matches(&serde_json::json!({}), &labels));
    }

    #[test]
    fn env_resolves_config_maps_and_secrets() {
        let yaml = r"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings-abc}
data: {STAY_LISTEN: '0.0.0.0:8080', STAY_ROLE: all}
---
apiVersion: v1
kind: Secret
metadata: {name: secrets-xyz}
data: {jwt: c2VjcmV0}
"
        .to_owned();
        let rendered = Rendered::parse(yaml).unwrap();
        let container = serde_json::json!({
            "envFrom": [{"configMapRef": {"name": "settings-abc"}}],
            "env": [
                {"name": "STAY_ROLE", "value": "saga"},
                {"name": "STAY_JWT_SECRET", "valueFrom": {"secretKeyRef": {"name": "secrets-xyz", "key": "jwt"}}},
                {"name": "STAY_STORE", "valueFrom": {"secretKeyRef": {"name": "outside", "key": "url"}}},
            ],
        });
        let env = rendered.container_env(&container).unwrap();
        assert_eq!(env["STAY_LISTEN"], EnvSource::Value("0.0.0.0:8080".into()));
        assert_eq!(env["STAY_ROLE"], EnvSource::Value("saga".into()), "env overrides envFrom");
        assert_eq!(env["STAY_JWT_SECRET"].value(), Some("secret"));
        assert_eq!(env["STAY_STORE"].value(), None, "a Secret made outside the overlay has no value here");
        assert!(rendered.container_env_values(&container).unwrap_err().contains("STAY_STORE"));

        let missing_key = serde_json::json!({"env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "secrets-xyz", "key": "nope"}}}]});
        assert!(rendered.container_env(&missing_key).unwrap_err().contains("no key nope"));
        let optional = serde_json::json!({"env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "secrets-xyz", "key": "nope", "optional": true}}}]});
        assert!(rendered.container_env(&optional).unwrap().is_empty(), "an optional key that is missing sets nothing");
        let missing_map = serde_json::json!({"envFrom": [{"configMapRef": {"name": "settings"}}]});
        assert!(rendered.container_env(&missing_map).is_err());
    }
}
