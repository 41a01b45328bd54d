//! The Prometheus alerting rules in `monitoring/stay-alerts.yml` are ones Prometheus would load and
//! that can fire: each expression parses as PromQL, names only metrics (and label names) that
//! Stay's code exports, and each alert has a severity, a summary and a runbook section in
//! docs/operations.md that exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use promql_parser::parser::{self, Expr};
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_owned()
}

/// Every string literal that looks like a metric or label name, in the Rust sources of the crates
/// that make up `stay` (not the tests).
fn names_in_the_code() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for krate in ["cli", "command-api", "domain", "http", "projections", "query-api", "saga", "store"] {
        let mut dirs = vec![workspace().join(krate).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("source folder") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|ext| ext == "rs") {
                    let text = std::fs::read_to_string(&path).expect("source");
                    for literal in text.split('"').skip(1).step_by(2) {
                        if !literal.is_empty() && literal.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                            names.insert(literal.to_owned());
                        }
                    }
                }
            }
        }
    }
    names
}

/// Labels Prometheus adds to every scraped series, which Stay's code never names.
const SCRAPE_LABELS: &[&str] = &["instance", "job"];

/// The metric names an expression selects, and the label names it matches or groups by.
fn selected(expr: &Expr, metrics: &mut BTreeSet<String>, labels: &mut BTreeSet<String>) {
    let vector = |vs: &parser::VectorSelector, metrics: &mut BTreeSet<String>, labels: &mut BTreeSet<String>| {
        metrics.extend(vs.name.clone());
        labels.extend(vs.matchers.matchers.iter().map(|m| m.name.clone()).filter(|name| name != "__name__"));
    };
    match expr {
        Expr::Aggregate(e) => {
            // `by (…)` / `without (…)`: the labels it groups by must exist too (less the ones
            // Prometheus adds to every series it scrapes).
            if let Some(modifier) = &e.modifier {
                let grouped = modifier.labels().labels.iter().filter(|l| !SCRAPE_LABELS.contains(&l.as_str()));
                labels.extend(grouped.cloned());
            }
            selected(&e.expr, metrics, labels);
            if let Some(param) = &e.param {
                selected(param, metrics, labels);
            }
        }
        Expr::Unary(e) => selected(&e.expr, metrics, labels),
        Expr::Binary(e) => {
            selected(&e.lhs, metrics, labels);
            selected(&e.rhs, metrics, labels);
        }
        Expr::Paren(e) => selected(&e.expr, metrics, labels),
        Expr::Subquery(e) => selected(&e.expr, metrics, labels),
        Expr::VectorSelector(vs) => vector(vs, metrics, labels),
        Expr::MatrixSelector(ms) => vector(&ms.vs, metrics, labels),
        Expr::Call(call) => call.args.args.iter().for_each(|arg| selected(arg, metrics, labels)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// A metric family's name as the code registers it: a histogram's series drop their suffix.
fn family(metric: &str) -> &str {
    ["_bucket", "_count", "_sum"].iter().find_map(|suffix| metric.strip_suffix(suffix)).unwrap_or(metric)
}

/// What is wrong with one rule, if anything.
fn problems(rule: &Value, code: &BTreeSet<String>, runbook: &str) -> Vec<String> {
    let name = rule["alert"].as_str().unwrap_or("(no name)");
    let mut wrong = Vec::new();
    let expr = rule["expr"].as_str().unwrap_or_default();
    match parser::parse(expr) {
        Err(err) => wrong.push(format!("{name}: the expression does not parse: {err}")),
        Ok(parsed) => {
            let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
            selected(&parsed, &mut metrics, &mut labels);
            if metrics.is_empty() {
                wrong.push(format!("{name}: the expression selects no metric"));
            }
            for metric in metrics.iter().filter(|m| !code.contains(family(m))) {
                wrong.push(format!("{name}: {metric} is not a metric Stay exports"));
            }
            for label in labels.iter().filter(|l| !code.contains(l.as_str())) {
                wrong.push(format!("{name}: no metric of Stay has a label {label}"));
            }
        }
    }
    if !matches!(rule["labels"]["severity"].as_str(), Some("warning" | "critical")) {
        wrong.push(format!("{name}: severity is neither warning nor critical"));
    }
    if rule["annotations"]["summary"].as_str().is_none_or(str::is_empty) {
        wrong.push(format!("{name}: no summary"));
    }
    let anchor = format!("docs/operations.md#{}", name.to_lowercase());
    if rule["annotations"]["runbook"].as_str() != Some(anchor.as_str()) {
        wrong.push(format!("{name}: the runbook annotation is not {anchor}"));
    }
    if !runbook.lines().any(|line| line.trim_start_matches('#').trim() == name && line.starts_with("###")) {
        wrong.push(format!("{name}: docs/operations.md has no section \"### {name}\""));
    }
    wrong
}

fn rules(text: &str) -> Vec<Value> {
    let rules: Value = serde_yaml_ng::from_str(text).expect("the rules file is YAML");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .collect()
}

#[test]
fn every_alert_parses_names_exported_metrics_and_has_a_runbook_section() {
    let text = std::fs::read_to_string(workspace().join("monitoring/stay-alerts.yml")).expect("the rules file");
    let runbook = std::fs::read_to_string(workspace().join("docs/operations.md")).expect("the runbook");
    let code = names_in_the_code();
    let rules = rules(&text);
    assert!(rules.len() >= 5, "a handful of alerts at least");
    let wrong: Vec<String> = rules.iter().flat_map(|rule| problems(rule, &code, &runbook)).collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_checks_catch_a_misspelt_metric_a_misspelt_label_broken_promql_and_a_missing_section() {
    let code = names_in_the_code();
    let runbook = "### StayExample\n";
    let rule = |expr: &str, name: &str| {
        serde_json::json!({"alert": name, "expr": expr, "labels": {"severity": "warning"},
            "annotations": {"summary": "s", "runbook": format!("docs/operations.md#{}", name.to_lowercase())}})
    };
    assert!(problems(&rule("max(stay_sagas{status=\"parked\"}) > 0", "StayExample"), &code, runbook).is_empty());
    let misspelt = problems(&rule("max(stay_saga{status=\"parked\"}) > 0", "StayExample"), &code, runbook);
    assert!(misspelt.iter().any(|p| p.contains("stay_saga is not a metric")), "{misspelt:?}");
    let label = problems(&rule("max(stay_sagas{stauts=\"parked\"}) > 0", "StayExample"), &code, runbook);
    assert!(label.iter().any(|p| p.contains("label stauts")), "{label:?}");
    let grouped = problems(&rule("max by (projektion) (stay_projection_lag_ms) > 0", "StayExample"), &code, runbook);
    assert!(grouped.iter().any(|p| p.contains("label projektion")), "{grouped:?}");
    let scraped =
        problems(&rule("sum by (instance) (rate(stay_http_shed_total[5m])) > 1", "StayExample"), &code, runbook);
    assert!(scraped.is_empty(), "instance is Prometheus's own: {scraped:?}");
    let broken = problems(&rule("max(stay_sagas{status=\"parked\"} > ", "StayExample"), &code, runbook);
    assert!(broken.iter().any(|p| p.contains("does not parse")), "{broken:?}");
    let missing = problems(&rule("max(stay_sagas) > 0", "StayOther"), &code, runbook);
    assert!(missing.iter().any(|p| p.contains("no section")), "{missing:?}");
}
