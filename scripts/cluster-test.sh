#!/usr/bin/env bash
# The cluster tests: brings the one-node cluster up once (scripts/kube-up.sh), builds and
# imports the images, mounts a btrfs loop image for the `local` backend, installs the Helm
# chart for real, then runs every cluster test file against it: each crates/*/tests/cluster*.rs
# (their tests are #[ignore]d, "needs a cluster"). A new file of cluster tests is picked up by
# its name alone; tests/kube/mod.rs has the helpers.
#
# Usage: scripts/cluster-test.sh [--keep] [-- TEST-FILTER...]
#   --keep   leave the cluster and the release running afterwards (the next run is warm);
#            by default everything is taken down (scripts/kube-down.sh)
#        scripts/cluster-test.sh --up
#            bring the cluster up and install the chart, run no tests, leave it running, and
#            print the test environment as VAR=value lines on stdout (everything else goes to
#            stderr), for a test run that includes the cluster tests itself:
#            `export $(scripts/cluster-test.sh --up)` before `cargo test ... --include-ignored`
# When root, loop devices, cgroups or btrfs are missing, the tests are skipped with the reason
# printed; with CI=true a skip is a failure.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

keep="${KEEP_CLUSTER:-0}"
up_only=0
filters=()
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --up) up_only=1; keep=1 ;;
    --) shift; filters=("$@"); break ;;
    *) echo "usage: $0 [--keep] [-- TEST-FILTER...] | $0 --up" >&2; exit 2 ;;
  esac
  shift
done
# Only the environment lines reach stdout (fd 3); every tool's output goes to stderr.
exec 3>&1 1>&2

state="${KUBE_STATE:-/var/lib/lustrekit-kube}"
export KUBE_STATE="$state"
local_root="${LUSTREKIT_LOCAL_ROOT:-/var/lib/lustrekit-e2e}"
namespace=lustrekit
release=lustrekit
t_start=$(date +%s)
say() { printf 'cluster-test: %s\n' "$*" >&2; }

skip() {
  if [ "${CI:-}" = true ]; then
    say "FAILED: cluster tests cannot run in CI: $*"
    exit 1
  fi
  say "SKIPPED: $*"
  exit 0
}
[ "$(id -u)" = 0 ] || skip "not root (the cluster needs mounts, cgroups and containerd)"
[ -e /dev/loop-control ] || skip "no loop devices (/dev/loop-control)"
[ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || skip "no cgroups at /sys/fs/cgroup"
grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || skip "no btrfs in this kernel"
command -v go >/dev/null || skip "no Go toolchain to build the cluster binaries"

scripts/install-kube-deps.sh
helm="$(scripts/install-helm.sh)"

# --- the cluster ---------------------------------------------------------------------------
t0=$(date +%s)
up_env="$(scripts/kube-up.sh 3>&-)" || { say "FAILED: scripts/kube-up.sh (logs in $state/log)"; exit 1; }
eval "$up_env"
t_up=$(( $(date +%s) - t0 ))
kubectl="$("$repo/scripts/kube-build.sh")/kubectl"
export KUBECTL="$kubectl"

cleanup() {
  local rc=$?
  if [ "$keep" = 1 ]; then
    say "leaving the cluster up: export KUBECONFIG=$KUBECONFIG KUBECTL=$KUBECTL"
  else
    "$helm" uninstall "$release" -n "$namespace" --wait --timeout 2m >/dev/null 2>&1 || true
    scripts/kube-down.sh || true
    umount "$local_root" 2>/dev/null && rm -f "$state/lustrekit-e2e.img"
  fi
  exit $rc
}
trap cleanup EXIT

# --- images --------------------------------------------------------------------------------
t0=$(date +%s)
cargo build -p lustrekit
bin="${CARGO_TARGET_DIR:-$repo/target}/debug/lustrekit"
# The tag follows the binary, so a rebuilt driver rolls the pods on `helm upgrade`.
tag="dev-$(sha256sum "$bin" | cut -c1-12)"
LUSTREKIT_BIN="$bin" LUSTREKIT_IMAGE="localhost/lustrekit/lustrekit:$tag" scripts/kube-images.sh all
t_images=$(( $(date +%s) - t0 ))

# --- the backend's btrfs ---------------------------------------------------------------------
# A fresh filesystem per cluster run; a kept (--keep) run reuses its mount.
if ! mountpoint -q "$local_root"; then
  img="$state/lustrekit-e2e.img"
  rm -f "$img"
  truncate -s 1G "$img"
  mkfs.btrfs -q "$img"
  mkdir -p "$local_root"
  mount -o loop "$img" "$local_root"
fi
# The node plugin's Bidirectional mount of this directory needs a shared mount.
mount --make-rshared "$local_root"

# --- the chart -----------------------------------------------------------------------------
t0=$(date +%s)
"$helm" upgrade --install "$release" deploy/helm/lustrekit -n "$namespace" --create-namespace \
  -f deploy/helm/lustrekit/ci/cluster-values.yaml --set image.tag="$tag" \
  --wait --timeout 5m
"$kubectl" -n "$namespace" rollout status "daemonset/$release-node" --timeout=3m
"$kubectl" -n "$namespace" rollout status "deployment/$release-controller" --timeout=3m
# The chart's operator (two replicas in cluster-values.yaml): Ready, and one replica holds its
# Lease. The tests that run their own operator process scale it to 0 while they run.
"$kubectl" -n "$namespace" rollout status "deployment/$release-operator" --timeout=3m
operator_holder() {
  local holder pod
  holder="$("$kubectl" -n "$namespace" get lease "$release-operator" -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null)" || return 1
  for pod in $("$kubectl" -n "$namespace" get pods -l "app.kubernetes.io/instance=$release,app.kubernetes.io/component=operator" -o 'jsonpath={.items[*].metadata.name}'); do
    case "$holder" in "$pod"-*) echo "$holder"; return 0 ;; esac
  done
  return 1
}
for _ in $(seq 1 60); do holder="$(operator_holder)" && break; sleep 1; done
[ -n "${holder:-}" ] || { say "FAILED: no replica of the chart's operator holds the Lease $namespace/$release-operator"; exit 1; }
say "the chart's operator leader: $holder"
t_chart=$(( $(date +%s) - t0 ))
# Images of earlier driver builds cannot be collected by the kubelet (image GC is off, as
# nothing can be pulled back): drop their tags now that the pods run the new one.
ctr_="ctr --address $state/run/containerd.sock -n k8s.io"
for old in $($ctr_ images ls -q | grep '^localhost/lustrekit/lustrekit:dev-' | grep -vx "localhost/lustrekit/lustrekit:$tag" || true); do
  $ctr_ images rm "$old" >/dev/null || true
done

# --- the tests -----------------------------------------------------------------------------
export LUSTREKIT_NAMESPACE="$namespace" LUSTREKIT_RELEASE="$release" LUSTREKIT_LOCAL_ROOT="$local_root"
if [ "$up_only" = 1 ]; then
  for var in KUBECONFIG KUBECTL LUSTREKIT_NAMESPACE LUSTREKIT_RELEASE LUSTREKIT_LOCAL_ROOT; do
    echo "$var=${!var}" >&3
  done
  say "cluster and chart up in $(( $(date +%s) - t_start ))s; tests: crates/*/tests/cluster*.rs"
  exit 0
fi
t0=$(date +%s)
status=0
for file in crates/*/tests/cluster*.rs; do
  crate="$(basename "$(dirname "$(dirname "$file")")")"
  test="$(basename "$file" .rs)"
  say "running $crate --test $test"
  cargo test -p "$crate" --test "$test" -- --include-ignored --test-threads=3 --show-output \
    "${filters[@]}" || status=1
done
t_tests=$(( $(date +%s) - t0 ))
say "cluster up ${t_up}s, images ${t_images}s, chart ${t_chart}s, tests ${t_tests}s, total $(( $(date +%s) - t_start ))s"
exit $status
