//! The Grafana dashboard and the PrometheusRule of `deploy/monitoring/` against the metrics the
//! processes expose: every `lustrekit_*` name they mention must be a sample name one of the
//! registries renders (a renamed metric would otherwise leave an empty panel and an alert that
//! can never fire), every query must parse as PromQL, every metric family must have a panel,
//! and the files must have the shape Grafana and the Prometheus Operator read.
//!
//! It lives in the operator's tests because this crate sees every registry: its own, the CSI
//! driver's (which holds the PCC and per-volume HSM metrics) and the HSM engines'.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const PREFIX: &str = "lustrekit_";

/// Metric families registered: CSI 4, HSM engine 3, HSM volumes 10, PCC 8, operator 6.
const EXPECTED_FAMILIES: usize = 31;

fn monitoring_file(name: &str) -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/monitoring")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    (path, text)
}

/// The expositions of every registry, after a sample in each family (a family without a
/// series is not written at all).
fn expositions() -> Vec<String> {
    let csi = csi::metrics::Metrics::default();
    csi.set_ready(true);
    let volumes = csi.hsm_volumes();
    let engine = hsm::Metrics::for_volume(Arc::clone(&volumes), "vol-1");
    engine.record("restore", true, 42, Duration::from_millis(30));
    engine.record_read_wait(Duration::from_millis(40));
    volumes.pass_done(
        "vol-1",
        Duration::from_millis(3),
        true,
        Some(&[hsm::metrics::StateCount::default(); 4]),
        1_700_000_000,
    );
    volumes.store_reachable("vol-1", true);

    csi.finished("CreateVolume", tonic::Code::Ok, Duration::from_millis(5));
    purge_a_pcc_cache(&csi.pcc());

    let operator = operator::Metrics::default();
    operator.reconciled("lustrefilesystems.lustrekit.io", Duration::from_millis(5));
    operator.failed(
        "lustrefilesystems.lustrekit.io",
        &operator::OperatorError::Timeout {
            action: "apply",
            object: "lus".to_string(),
        },
    );
    operator.set_ready_pairs("lustrefilesystems.lustrekit.io", "lus", 1);
    operator.moved(
        operator::movement::Direction::Out,
        operator::movement::MoveResult::Success,
        7,
    );

    vec![csi.render(), engine.render(), operator.render()]
}

/// A cache filesystem that always reads full.
struct Full;

impl hsm::pcc::UsageSource for Full {
    fn usage(&self) -> std::io::Result<hsm::pcc::CacheUsage> {
        Ok(hsm::pcc::CacheUsage {
            used_bytes: 100,
            total_bytes: 100,
        })
    }
}

/// One purge of a cache holding one file, so the purge's detaches are counted.
fn purge_a_pcc_cache(metrics: &hsm::pcc::PccMetrics) {
    let cache = tempfile::tempdir().expect("a temporary cache directory");
    std::fs::write(cache.path().join("cached"), b"data").expect("a cache file");
    let usage: Arc<dyn hsm::pcc::UsageSource> = Arc::new(Full);
    let detach = hsm::pcc::RemoveCacheFile {
        cache: cache.path().to_path_buf(),
    };
    let policy = hsm::pcc::PurgePolicy::new(90, 80).expect("watermarks");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime
        .block_on(hsm::pcc::purge_once(
            cache.path(),
            policy,
            &usage,
            &detach,
            Some(metrics),
        ))
        .expect("the purge");
    assert_eq!(report.detached, 1, "{report:?}");
}

/// Metric family -> the sample names it is exposed as (counters get `_total`, histograms
/// `_bucket`, `_sum` and `_count`), from the `# TYPE` lines; every sample line is checked to
/// be one of those names.
fn exposed_families() -> BTreeMap<String, BTreeSet<String>> {
    let mut families = BTreeMap::new();
    let mut samples = BTreeSet::new();
    for text in expositions() {
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let (family, kind) = declared
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("TYPE line without a type: {line}"));
                let names: BTreeSet<String> = match kind {
                    "counter" => [format!("{family}_total")].into(),
                    "gauge" => [family.to_string()].into(),
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .map(|suffix| format!("{family}{suffix}"))
                        .collect(),
                    other => panic!("{family}: a metric type this test does not know: {other}"),
                };
                families.insert(family.to_string(), names);
            } else if !line.starts_with('#') && !line.is_empty() {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                samples.insert(name.to_string());
            }
        }
    }
    let sample_names: BTreeSet<&String> = families.values().flatten().collect();
    for sample in &samples {
        assert!(
            sample_names.contains(sample),
            "the exposition has a sample {sample} that no TYPE line accounts for"
        );
    }
    // The encoder writes no TYPE line for a family without a series, so each family is
    // sampled above; a new metric must be sampled there too (and given a panel).
    assert_eq!(
        families.len(),
        EXPECTED_FAMILIES,
        "families exposed: {:?}; a new metric? sample it in expositions()",
        families.keys()
    );
    families
}

/// Every `lustrekit_...` metric name in `text` (alert names are `Lustrekit...`, group names
/// `lustrekit-...`, so they are not taken).
fn referenced_names(text: &str) -> BTreeSet<String> {
    let is_name_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices(PREFIX) {
        if text[..at].chars().next_back().is_some_and(is_name_char) {
            continue;
        }
        let name: String = text[at..]
            .chars()
            .take_while(|&c| is_name_char(c))
            .collect();
        names.insert(name);
    }
    names
}

fn unknown_names(file: &str, text: &str) -> Vec<String> {
    let families = exposed_families();
    let exposed: BTreeSet<&String> = families.values().flatten().collect();
    let referenced = referenced_names(text);
    assert!(!referenced.is_empty(), "{file} names no lustrekit metric");
    referenced
        .into_iter()
        .filter(|name| !exposed.contains(name))
        .collect()
}

#[test]
fn the_dashboard_and_the_rules_name_only_exposed_metrics() {
    for file in ["grafana-dashboard.json", "prometheusrule.yaml"] {
        let (path, text) = monitoring_file(file);
        let unknown = unknown_names(file, &text);
        assert!(
            unknown.is_empty(),
            "{} names metrics no registry exposes: {unknown:?}",
            path.display()
        );
    }
}

#[test]
fn a_misspelt_metric_is_caught() {
    let text =
        r#"{"expr": "rate(lustrekit_hsm_volume_operation_total[5m]) + lustrekit_csi_ready"}"#;
    assert_eq!(
        unknown_names("inline", text),
        ["lustrekit_hsm_volume_operation_total"]
    );
}

#[test]
fn every_metric_family_has_a_panel() {
    let (_, text) = monitoring_file("grafana-dashboard.json");
    let referenced = referenced_names(&text);
    let missing: Vec<String> = exposed_families()
        .into_iter()
        .filter(|(_, names)| names.is_disjoint(&referenced))
        .map(|(family, _)| family)
        .collect();
    assert!(
        missing.is_empty(),
        "metric families without a panel in the dashboard: {missing:?}"
    );
}

fn str_at<'a>(value: &'a serde_json::Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_else(|| panic!("{pointer}: no string there"))
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_over_a_chosen_prometheus() {
    let (path, text) = monitoring_file("grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
    let schema = dashboard["schemaVersion"].as_u64().unwrap_or(0);
    assert!(schema >= 39, "schemaVersion {schema}");
    assert!(!str_at(&dashboard, "/uid").is_empty());
    assert!(!str_at(&dashboard, "/title").is_empty());

    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let volume = variable("volume");
    assert_eq!(volume["type"], "query");
    assert_eq!(
        str_at(volume, "/query/query"),
        "label_values(lustrekit_hsm_volume_files, volume)"
    );
    assert_eq!(str_at(volume, "/datasource/uid"), "${datasource}");

    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut exprs = 0;
    for panel in panels {
        let title = str_at(panel, "/title");
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "{title}: id {id} used twice");
        for field in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][field].is_u64(), "{title}: gridPos.{field}");
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            str_at(panel, "/datasource/uid"),
            "${datasource}",
            "{title}: the panel must query the chosen data source"
        );
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for target in targets {
            let expr = str_at(target, "/expr");
            assert!(expr.contains(PREFIX), "{title}: {expr} names no metric");
            assert_eq!(str_at(target, "/datasource/uid"), "${datasource}");
            exprs += 1;
        }
    }
    // Every per-volume panel follows the variable.
    assert!(
        text.matches(r#"volume=~\"$volume\""#).count() >= 10,
        "the per-volume panels must filter on $volume"
    );
    assert!(exprs >= 20, "only {exprs} queries");
}

/// A Prometheus duration as `for:` takes it (`5m`, `1h30m`).
fn is_duration(text: &str) -> bool {
    let mut rest = text;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|unit| rest[digits..].starts_with(unit));
        let (Some(unit), true) = (unit, digits > 0) else {
            return false;
        };
        rest = &rest[digits + unit.len()..];
        parts += 1;
    }
    parts > 0
}

#[test]
fn every_alert_has_an_expression_a_delay_a_severity_and_words_for_people() {
    let (path, text) = monitoring_file("prometheusrule.yaml");
    let rule: serde_yaml::Value = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
    assert_eq!(
        rule["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    assert!(rule["metadata"]["name"].as_str().is_some());
    let groups = rule["spec"]["groups"].as_sequence().expect("spec.groups");
    let mut alerts = BTreeSet::new();
    for group in groups {
        let group_name = group["name"].as_str().expect("a group without a name");
        for alert in group["rules"].as_sequence().expect("rules") {
            let name = alert["alert"]
                .as_str()
                .unwrap_or_else(|| panic!("{group_name}: a rule without `alert`"));
            assert!(alerts.insert(name.to_string()), "{name} twice");
            let expr = alert["expr"].as_str().unwrap_or_default();
            assert!(expr.contains(PREFIX), "{name}: expr {expr:?}");
            let delay = alert["for"].as_str().unwrap_or_default();
            assert!(is_duration(delay), "{name}: for {delay:?}");
            let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{name}: severity {severity:?}"
            );
            for annotation in ["summary", "description", "runbook"] {
                let words = alert["annotations"][annotation]
                    .as_str()
                    .unwrap_or_default();
                assert!(!words.is_empty(), "{name}: no annotations.{annotation}");
            }
            // The people paged must learn which volume (or which process) it is about.
            let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
            assert!(
                summary.contains("{{ $labels."),
                "{name}: the summary names no volume or instance: {summary:?}"
            );
        }
    }
    for wanted in [
        "LustrekitHsmRestoresFailing",
        "LustrekitHsmStoreUnreachable",
        "LustrekitHsmPolicyStalled",
        "LustrekitHsmPolicyPassesFailing",
        "LustrekitHsmReadsHeldLong",
        "LustrekitCsiErrorRate",
        "LustrekitCsiDriverNotReady",
        "LustrekitOperatorReconcileErrors",
        "LustrekitPccCacheFull",
    ] {
        assert!(alerts.contains(wanted), "no alert {wanted}");
    }
}

#[test]
fn durations_are_read_as_prometheus_reads_them() {
    for good in ["5m", "10m", "1h30m", "30s", "500ms"] {
        assert!(is_duration(good), "{good}");
    }
    for bad in ["", "5", "m", "5 m", "5min", "-5m"] {
        assert!(!is_duration(bad), "{bad}");
    }
}

/// Every query of the dashboard (Grafana's variables replaced by what they expand to) and
/// every alert's expression, with where it is.
fn queries() -> Vec<(String, String)> {
    let (_, text) = monitoring_file("grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard parses");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = str_at(target, "/expr")
                .replace("$__rate_interval", "5m")
                .replace("$volume", ".*");
            queries.push((format!("panel {}", str_at(panel, "/title")), expr));
        }
    }
    let (_, text) = monitoring_file("prometheusrule.yaml");
    let rule: serde_yaml::Value = serde_yaml::from_str(&text).expect("the rule parses");
    for group in rule["spec"]["groups"].as_sequence().expect("groups") {
        for alert in group["rules"].as_sequence().expect("rules") {
            let name = alert["alert"].as_str().unwrap_or_default();
            let expr = alert["expr"].as_str().unwrap_or_default();
            queries.push((format!("alert {name}"), expr.to_string()));
        }
    }
    queries
}

#[test]
fn every_query_is_promql() {
    let queries = queries();
    assert!(queries.len() >= 40, "only {} queries", queries.len());
    let wrong: Vec<String> = queries
        .iter()
        .filter_map(|(place, expr)| {
            let error = promql_parser::parser::parse(expr).err()?;
            Some(format!("{place}: {error}: {expr}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "queries that do not parse:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_broken_query_is_caught() {
    assert!(
        promql_parser::parser::parse("sum by (volume) (rate(lustrekit_csi_ready[5m])").is_err()
    );
    assert!(promql_parser::parser::parse("lustrekit_csi_ready ==").is_err());
}
