#!/usr/bin/env bash
# Times `lustrekit operator run` on the real API server: a LustreFileSystem listing N
# namespaces (two modes each) until every pair is Ready, with the controller's CPU time and
# peak RSS; then the API server's floor: one `kubectl apply` of the same 2N PVs and 2N PVCs
# until every PVC is Bound. Needs KUBECONFIG (scripts/kube-up.sh) and a built binary.
# Usage: scripts/operator-bench.sh [N] [path/to/lustrekit]
set -euo pipefail
n=${1:-100}
bin=${2:-target/debug/lustrekit}
kubectl=${KUBECTL:-kubectl}
k() { timeout -k 5 300 "$kubectl" "$@"; }
tag=bench$$
work=$(mktemp -d)
operator_pid=
# The chart's operator (scripts/cluster-test.sh installs it) would reconcile the same resource:
# scaled to 0 for the run, and back after.
chart_operator="deployment/${LUSTREKIT_RELEASE:-lustrekit}-operator"
chart_ns="${LUSTREKIT_NAMESPACE:-lustrekit}"
chart_replicas=$(k -n "$chart_ns" get "$chart_operator" -o 'jsonpath={.spec.replicas}' 2>/dev/null || true)
cleanup() {
    [ -n "$operator_pid" ] && kill "$operator_pid" 2>/dev/null || true
    if [ -n "$chart_replicas" ] && [ "$chart_replicas" != 0 ]; then
        k -n "$chart_ns" scale "$chart_operator" --replicas="$chart_replicas" >/dev/null 2>&1 || true
    fi
    k delete lustrefilesystems.lustrekit.io "$tag" --wait=false --ignore-not-found >/dev/null 2>&1 || true
    k delete pv -l "lustrekit.io/filesystem=$tag" --wait=false >/dev/null 2>&1 || true
    k delete pv -l "bench=$tag" --wait=false >/dev/null 2>&1 || true
    for i in $(seq 1 "$n"); do echo "$tag-$i"; done | xargs -r "$kubectl" delete namespace --wait=false >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
if [ -n "$chart_replicas" ] && [ "$chart_replicas" != 0 ]; then
    k -n "$chart_ns" scale "$chart_operator" --replicas=0 >/dev/null
    k -n "$chart_ns" wait --for=delete pod -l "app.kubernetes.io/instance=${LUSTREKIT_RELEASE:-lustrekit},app.kubernetes.io/component=operator" --timeout=90s >/dev/null
fi

k apply --server-side --force-conflicts --field-manager=lustrekit-bench -f deploy/crds/lustrefilesystems.lustrekit.io.yaml >/dev/null
for i in $(seq 1 "$n"); do printf '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"%s-%d"}}\n' "$tag" "$i"; done |
    k apply -f - >/dev/null

"$bin" --log warn operator run 2>"$work/operator.log" &
operator_pid=$!
sleep 2 # the watches' initial lists
ticks_before=$(awk '{print $14+$15}' "/proc/$operator_pid/stat")

namespaces=$(for i in $(seq 1 "$n"); do printf '"%s-%d":{"modes":["ReadWriteMany","ReadOnlyMany"]},' "$tag" "$i"; done)
start=$(date +%s.%N)
cat <<JSON | k apply -f - >/dev/null
{"apiVersion":"lustrekit.io/v1alpha1","kind":"LustreFileSystem","metadata":{"name":"$tag"},
 "spec":{"fsName":"lfs1","mgsNodes":[{"nids":["10.0.0.1@tcp"]}],"mountRoot":"/lus/lfs1",
 "subDirectory":"datasets","storageClassName":"lustre-static","namespaces":{${namespaces%,}}}}
JSON
until [ "$(k get lustrefilesystems.lustrekit.io "$tag" -o 'jsonpath={.status.readyNamespaces}')" = "$n/$n" ]; do sleep 0.2; done
end=$(date +%s.%N)
ticks_after=$(awk '{print $14+$15}' "/proc/$operator_pid/stat")
hwm=$(awk '/VmHWM/ {print $2, $3}' "/proc/$operator_pid/status")
hz=$(getconf CLK_TCK)
echo "operator: $n namespaces, $((2 * n)) pairs Ready in $(echo "$end - $start" | bc) s;" \
    "CPU $(echo "scale=2; ($ticks_after - $ticks_before) / $hz" | bc) s; peak RSS $hwm"

# The floor: the same objects, renamed and without the operator's labels, in one apply.
kill "$operator_pid"; operator_pid=
k get pv,pvc -A -l "lustrekit.io/filesystem=$tag" -o json |
    python3 -c '
import json, sys
tag = sys.argv[1]
items = []
for o in json.load(sys.stdin)["items"]:
    m = o["metadata"]
    name = m["name"].replace(tag, tag + "x", 1)
    meta = {"name": name, "labels": {"bench": tag}}
    if "namespace" in m:
        meta["namespace"] = m["namespace"]
    spec = o["spec"]
    if o["kind"] == "PersistentVolume":
        spec["claimRef"] = {"namespace": spec["claimRef"]["namespace"], "name": spec["claimRef"]["name"].replace(tag, tag + "x", 1)}
        spec["csi"]["volumeHandle"] = name
    else:
        spec["volumeName"] = spec["volumeName"].replace(tag, tag + "x", 1)
    items.append({"apiVersion": "v1", "kind": o["kind"], "metadata": meta, "spec": spec})
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)
' "$tag" >"$work/floor.json"
start=$(date +%s.%N)
k apply -f "$work/floor.json" >/dev/null
until [ "$(k get pvc -A -l "bench=$tag" -o 'jsonpath={range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Bound$')" = "$((2 * n))" ]; do sleep 0.2; done
end=$(date +%s.%N)
echo "floor: one kubectl apply of $((4 * n)) objects, all $((2 * n)) PVCs Bound in $(echo "$end - $start" | bc) s"
