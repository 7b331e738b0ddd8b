#!/usr/bin/env bash
# Validates the Helm chart the way the API server would see it: `helm lint --strict`, then
# `helm template --include-crds` for each backend (deploy/helm/lustrekit/ci/*-values.yaml) and
# Kubernetes version, with every rendered manifest (the CRDs of crds/, a symlink to deploy/crds/,
# checked to be those, so the chart cannot ship stale ones; likewise the dashboard ConfigMap of
# monitoring/, a symlink to deploy/monitoring/), and the chart's examples/, checked by
# kubernetes-validate in strict mode (unknown fields are errors) against the Kubernetes JSON
# schemas that package bundles, so it runs offline. The driver's TOML in the ConfigMap is
# parsed too, and the PrometheusRule (no schema here) checked field by field and against
# deploy/monitoring/prometheusrule.yaml. Before any of that, self-checks feed the validator a
# Deployment with an unknown field, and a manifest of a kind it has no schema for, and fail
# unless both are rejected: a validator that accepts everything proves nothing.
#
# Usage: scripts/validate-chart.sh
#   KUBE_VERSIONS  Kubernetes versions to validate against (default: "1.26.0 1.37.0", the
#                  chart's minimum kubeVersion and the newest schemas kubernetes-validate ships)
# Exits non-zero on any failure; the last line is a one-line summary.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

KV_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
read -r -a kube_versions <<< "${KUBE_VERSIONS:-1.26.0 1.37.0}"
chart="deploy/helm/lustrekit"
venv="$repo_root/.cache/kubernetes-validate"
release="lustrekit"
namespace="kube-system"

# The summary line goes to stdout (the details of a failure went to stderr before it).
fail() {
    echo "validate-chart: FAILED: $*"
    exit 1
}

# ---- tools (both idempotent and cached under .cache/) ----
helm="$(scripts/install-helm.sh)" || fail "could not install helm"
kv="$venv/bin/kubernetes-validate"
kv_stamp="$venv/.kubernetes-validate.version"
if [[ ! -x "$kv" || ! -f "$kv_stamp" || "$(cat "$kv_stamp")" != "$KV_VERSION" ]]; then
    echo "validate-chart: installing kubernetes-validate $KV_VERSION into $venv" >&2
    python3 -m venv "$venv" >&2 || fail "python3 -m venv $venv"
    "$venv/bin/pip" install --quiet "kubernetes-validate==$KV_VERSION" >&2 \
        || fail "pip install kubernetes-validate==$KV_VERSION"
    echo "$KV_VERSION" > "$kv_stamp"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# validate FILE LABEL VERSION...: runs kubernetes-validate --strict on FILE for each Kubernetes
# VERSION. Passes only when every document passed: kubernetes-validate exits 0 on a WARN (a
# kind it has no schema for), and a manifest nobody checked must not count as valid. Adds the
# number of documents to $validated.
validated=0
validate() {
    local file="$1" label="$2" out docs passed args=(--strict)
    shift 2
    for v in "$@"; do args+=(-k "$v"); done
    docs="$("$venv/bin/python" - "$file" <<'PY'
import sys, yaml
with open(sys.argv[1]) as f:
    print(sum(1 for d in yaml.safe_load_all(f) if d))
PY
)" || fail "$label: not YAML"
    [[ "$docs" -gt 0 ]] || fail "$label: no manifests"
    if ! out="$("$kv" "${args[@]}" "$file" 2>&1)"; then
        grep -v '^INFO' <<< "$out" >&2
        fail "$label: rejected by kubernetes-validate"
    fi
    # Here-strings, not `echo | grep -q`: grep -q may exit before echo is done, and with
    # pipefail echo's SIGPIPE would make a found warning look like none.
    if grep -qv '^INFO' <<< "$out"; then
        grep -v '^INFO' <<< "$out" >&2
        fail "$label: kubernetes-validate warned (unknown kind or schema)"
    fi
    passed="$(grep -c '^INFO .* passed for resource' <<< "$out" || true)"
    [[ "$passed" -eq $((docs * $#)) ]] \
        || fail "$label: $passed of $((docs * $#)) document checks passed"
    validated=$((validated + docs))
}

# ---- self-check: the validator must reject an unknown field in a Deployment spec ----
cat > "$work/good-deployment.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: self-check
spec:
  replicas: 1
  selector:
    matchLabels: {app: self-check}
  template:
    metadata:
      labels: {app: self-check}
    spec:
      containers:
        - name: app
          image: busybox:1.36
YAML
sed 's/^  replicas: 1$/  replicas: 1\n  replicaz: 2/' "$work/good-deployment.yaml" > "$work/bad-deployment.yaml"
grep -q replicaz "$work/bad-deployment.yaml" || fail "self-check: could not build the broken manifest"
"$kv" --strict -k "${kube_versions[-1]}" --quiet "$work/good-deployment.yaml" >/dev/null \
    || fail "self-check: a valid Deployment was rejected"
if bad_out="$("$kv" --strict -k "${kube_versions[-1]}" --quiet "$work/bad-deployment.yaml" 2>&1)"; then
    fail "self-check: a Deployment with an unknown field (spec.replicaz) was accepted"
fi
grep -q "replicaz" <<< "$bad_out" \
    || fail "self-check: the rejection does not name the unknown field: $bad_out"
# kubernetes-validate itself only warns (exit 0) on a kind it has no schema for; the
# wrapper below must turn that into a failure.
sed 's/^kind: Deployment$/kind: Deploymnet/' "$work/good-deployment.yaml" > "$work/unknown-kind.yaml"
if (validate "$work/unknown-kind.yaml" "self-check" "${kube_versions[-1]}") >/dev/null 2>&1; then
    fail "self-check: a manifest of an unknown kind (Deploymnet) was accepted"
fi
echo "validate-chart: self-check ok: an unknown field, and an unknown kind, are rejected" >&2

# ---- lint and render each backend, for each Kubernetes version ----
# helm's default for .Capabilities.KubeVersion is old (v1.20 in a `go install` build), below
# the chart's kubeVersion, so each render names the version it is validated against.
value_sets=("$chart"/ci/*-values.yaml)
[[ -f "${value_sets[0]}" ]] || fail "no value sets in $chart/ci/"
renders=0
rendered_docs=0
for values in "${value_sets[@]}"; do
    name="$(basename "$values" -values.yaml)"
    for kube in "${kube_versions[@]}"; do
        if ! lint_out="$("$helm" lint --strict --kube-version "$kube" "$chart" -f "$values" 2>&1)"; then
            echo "$lint_out" >&2
            fail "helm lint ($name, Kubernetes $kube)"
        fi
        rendered="$work/$name-$kube.yaml"
        if ! "$helm" template "$release" "$chart" --namespace "$namespace" --include-crds \
            --kube-version "$kube" -f "$values" > "$rendered" 2> "$work/$name.err"; then
            cat "$work/$name.err" >&2
            fail "helm template ($name, Kubernetes $kube)"
        fi
        # The driver's TOML in the ConfigMap is no Kubernetes schema's business: parse it here.
        "$venv/bin/python" - "$rendered" "$values" <<'PY' || fail "helm template ($name): lustrekit.toml does not parse, or its tenants are not the values'"
import sys, tomllib, yaml
with open(sys.argv[1]) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
with open(sys.argv[2]) as f:
    values = yaml.safe_load(f) or {}
tomls = [d["data"]["lustrekit.toml"] for d in docs
         if d.get("kind") == "ConfigMap" and "lustrekit.toml" in d.get("data", {})]
if len(tomls) != 1:
    sys.exit(f"expected one ConfigMap with lustrekit.toml, found {len(tomls)}")
config = tomllib.loads(tomls[0])
if config.get("backend") not in ("local", "lustre") or config["backend"] not in config:
    sys.exit(f"lustrekit.toml: backend {config.get('backend')!r} has no [{config.get('backend')}] table")
# Every tenant of the values, key by key under the driver's TOML names (share::config's
# TenantSection, which refuses unknown keys), and nothing else.
toml_key = {"denyUnknown": "deny_unknown", "squashUid": "squash_uid", "squashGid": "squash_gid"}
want = [{toml_key.get(k, k): v for k, v in t.items()} for t in values.get("tenants") or []]
if config.get("tenants", []) != want:
    sys.exit(f"lustrekit.toml: tenants {config.get('tenants')!r}, values say {want!r}")
PY
        # The chart's crds/ is a symlink to deploy/crds/: a copy in its place, or a CRD missing
        # or different, is drift.
        [[ -L "$chart/crds" && "$(readlink "$chart/crds")" == "../../crds" ]] \
            || fail "$chart/crds must be the symlink ../../crds (deploy/crds/ is the one copy)"
        "$venv/bin/python" - "$rendered" deploy/crds/*.yaml <<'PY' || fail "helm template ($name): the chart's CRDs differ from deploy/crds/"
import sys, yaml
def crds(paths):
    out = {}
    for path in paths:
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d and d.get("kind") == "CustomResourceDefinition":
                    out[d["metadata"]["name"]] = d
    return out
rendered, committed = crds(sys.argv[1:2]), crds(sys.argv[2:])
if not committed:
    sys.exit("no CRDs in deploy/crds/")
if rendered != committed:
    sys.exit(f"rendered {sorted(rendered)} != deploy/crds {sorted(committed)} (or their contents differ)")
PY
        # The alerts and the dashboard: the chart's monitoring/ is a symlink to deploy/monitoring/
        # (one copy), rendered only when enabled (the `monitoring` value set enables them and
        # the PodMonitor), and equal to those files. kubernetes-validate has no schema for the
        # Prometheus Operator's kinds, so the rule (only fields its CRD knows; the spec of
        # deploy/monitoring/) and the PodMonitor (it selects the controller, node and operator
        # pods by a port they have) are checked here and left out of what it validates; the
        # dashboard's ConfigMap is validated with the rest.
        [[ -L "$chart/monitoring" && "$(readlink "$chart/monitoring")" == "../../monitoring" ]] \
            || fail "$chart/monitoring must be the symlink ../../monitoring (deploy/monitoring/ is the one copy)"
        expect_monitoring=no
        [[ "$name" == monitoring ]] && expect_monitoring=yes
        "$venv/bin/python" - "$rendered" "$rendered.k8s" "$expect_monitoring" \
            deploy/monitoring/prometheusrule.yaml deploy/monitoring/grafana-dashboard.json <<'PY' \
            || fail "helm template ($name): the monitoring manifests are wrong or differ from deploy/monitoring/"
import json, sys, yaml
rendered, rest, expect, rule_path, dashboard_path = sys.argv[1:6]
with open(rendered) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
monitors = [d for d in docs if d.get("kind") == "PodMonitor"]
dashboards = [d for d in docs if d.get("kind") == "ConfigMap"
              and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
want = 1 if expect == "yes" else 0
if len(rules) != want or len(monitors) != want or len(dashboards) != want:
    sys.exit(f"expected {want} PrometheusRule, PodMonitor and dashboard ConfigMap each, "
             f"rendered {len(rules)}, {len(monitors)} and {len(dashboards)}")
# The PodMonitor must select the controller, the node plugin and (when there) the operator,
# each through a container port of the name it scrapes.
for m in monitors:
    spec = m.get("spec", {})
    if m.get("apiVersion") != "monitoring.coreos.com/v1" or set(spec) != {"selector", "podMetricsEndpoints"}:
        sys.exit(f"PodMonitor: apiVersion {m.get('apiVersion')!r}, spec fields {sorted(spec)}")
    selector = spec["selector"].get("matchLabels", {})
    ports = {e.get("port") for e in spec["podMetricsEndpoints"]}
    if not selector or len(ports) != 1 or set().union(*map(set, spec["podMetricsEndpoints"])) - {"port", "path", "interval"}:
        sys.exit(f"PodMonitor: selector {selector}, endpoints {spec['podMetricsEndpoints']}")
    port = ports.pop()
    selected = {}
    for d in docs:
        if d.get("kind") not in ("Deployment", "DaemonSet"):
            continue
        pod = d["spec"]["template"]
        labels = pod["metadata"].get("labels", {})
        if all(labels.get(k) == v for k, v in selector.items()):
            named = {p.get("name") for c in pod["spec"]["containers"] for p in c.get("ports", [])}
            if port not in named:
                sys.exit(f"PodMonitor: {d['kind']} {d['metadata']['name']} has no container port {port!r}")
            selected[labels.get("app.kubernetes.io/component")] = d["metadata"]["name"]
    components = {"controller", "node"} | ({"operator"} if any(
        d.get("kind") == "Deployment" and d["spec"]["template"]["metadata"].get("labels", {})
        .get("app.kubernetes.io/component") == "operator" for d in docs) else set())
    if set(selected) != components:
        sys.exit(f"PodMonitor selects {selected}, not the components {sorted(components)}")
with open(rule_path) as f:
    source = yaml.safe_load(f)
group_fields = {"name", "interval", "rules", "limit", "query_offset", "labels", "partial_response_strategy"}
rule_fields = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
for r in rules:
    if r.get("apiVersion") != "monitoring.coreos.com/v1" or set(r) != {"apiVersion", "kind", "metadata", "spec"}:
        sys.exit(f"PrometheusRule: apiVersion {r.get('apiVersion')!r}, fields {sorted(r)}")
    if not r["metadata"].get("name") or not r["metadata"].get("namespace"):
        sys.exit("PrometheusRule: no metadata.name or metadata.namespace")
    if set(r["spec"]) != {"groups"} or not r["spec"]["groups"]:
        sys.exit(f"PrometheusRule: spec fields {sorted(r['spec'])}, or no groups")
    for g in r["spec"]["groups"]:
        if set(g) - group_fields or not g.get("name") or not g.get("rules"):
            sys.exit(f"PrometheusRule group {g.get('name')!r}: unknown fields "
                     f"{sorted(set(g) - group_fields)}, or no name or rules")
        for rule in g["rules"]:
            if set(rule) - rule_fields or not rule.get("expr") or ("alert" in rule) == ("record" in rule):
                sys.exit(f"PrometheusRule rule {rule.get('alert') or rule.get('record')!r}: unknown fields "
                         f"{sorted(set(rule) - rule_fields)}, no expr, or not one of alert and record")
    if r["spec"] != source["spec"]:
        sys.exit(f"the rendered PrometheusRule's spec differs from {rule_path}'s")
with open(dashboard_path) as f:
    dashboard = json.load(f)
for d in dashboards:
    data = d.get("data", {})
    if list(data) != ["lustrekit.json"] or json.loads(data["lustrekit.json"]) != dashboard:
        sys.exit(f"ConfigMap {d['metadata']['name']} does not hold {dashboard_path} as lustrekit.json")
with open(rest, "w") as f:
    yaml.safe_dump_all([d for d in docs if d.get("kind") not in ("PrometheusRule", "PodMonitor")], f)
PY
        before=$validated
        validate "$rendered.k8s" "helm template ($name, Kubernetes $kube)" "$kube"
        rendered_docs=$((rendered_docs + validated - before))
        renders=$((renders + 1))
    done
done

# ---- the chart's examples ----
examples=0
for example in "$chart"/examples/*.yaml; do
    before=$validated
    validate "$example" "$example" "${kube_versions[@]}"
    examples=$((examples + validated - before))
done

names="$(for v in "${value_sets[@]}"; do basename "$v" -values.yaml; done | paste -sd,)"
echo "validate-chart: OK: helm lint --strict and template of ${renders} renders (values ${names} x Kubernetes ${kube_versions[*]}): ${rendered_docs} rendered + ${examples} example manifests valid under kubernetes-validate ${KV_VERSION} --strict; PrometheusRule, PodMonitor and Grafana dashboard match deploy/monitoring/ and select the pods; self-checks rejected an unknown Deployment field and an unknown kind"
