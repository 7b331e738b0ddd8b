#!/usr/bin/env bash
# Takes down the cluster of scripts/kube-up.sh: the kubelet first (so it starts no more pods),
# then every container, containerd, the control plane and etcd; then unmounts what pods left
# under the kubelet's directory and the state directory, and removes the extra addresses on
# lo and the pod bridge. Idempotent: what is not running is skipped.
#
#   scripts/kube-down.sh           keep certificates, etcd data and imported images (a warm
#                                  kube-up.sh later starts in seconds)
#   scripts/kube-down.sh --purge   also delete the state directory and /var/lib/kubelet
#
# Only processes whose pid files kube-up.sh wrote are stopped, each by its pid.
set -uo pipefail

state="${KUBE_STATE:-/var/lib/lustrekit-kube}"
node_ip="${KUBE_NODE_IP:-10.250.0.1}"
service_cidr="${KUBE_SERVICE_CIDR:-10.96.0.0/16}"
service_ip="${service_cidr%%/*}"; service_ip="${service_ip%.*}.1"
kubelet_dir=/var/lib/kubelet
purge=0
[ "${1:-}" = --purge ] && purge=1

say() { printf 'kube-down: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root"; exit 1; }
[ -d "$state" ] || { say "nothing to do: no $state"; exit 0; }

stop() { # NAME: SIGTERM the process kube-up.sh started, SIGKILL after 20 s
  local f="$state/pids/$1.pid" pid i
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if [ -d "/proc/$pid" ]; then
    say "stopping $1 ($pid)"
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$f"
}

stop kubelet

# Every container and sandbox of the k8s.io namespace: kill the task, delete the container.
sock="$state/run/containerd.sock"
if [ -S "$sock" ] && ctr --address "$sock" version >/dev/null 2>&1; then
  ctr_() { timeout 30 ctr --address "$sock" -n k8s.io "$@"; }
  for c in $(ctr_ containers list -q 2>/dev/null); do
    ctr_ tasks kill -s SIGKILL "$c" >/dev/null 2>&1
  done
  sleep 1
  for c in $(ctr_ containers list -q 2>/dev/null); do
    ctr_ tasks delete -f "$c" >/dev/null 2>&1
    ctr_ containers delete "$c" >/dev/null 2>&1
  done
fi
stop containerd
# containerd-shim processes outlive containerd by design; stop the ones of this state dir.
for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null); do
  kill -KILL "$pid" 2>/dev/null
done

stop kube-scheduler
stop kube-controller-manager
stop kube-apiserver
stop etcd

# Unmount, deepest first, what pods and the runtime left behind.
unmount_under() {
  local root="$1" m
  [ -d "$root" ] || return 0
  for m in $(awk -v r="$root" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
}
unmount_under "$kubelet_dir"
unmount_under "$state"
# Pod network namespaces (containerd names them cni-<uuid>); other netns are not ours.
for m in /run/netns/cni-*; do
  [ -e "$m" ] || continue
  umount "$m" 2>/dev/null
  rm -f "$m"
done

ip link show lkbr0 >/dev/null 2>&1 && ip link delete lkbr0
for ip in "$node_ip" "$service_ip"; do
  # Here-strings, not pipes into grep -q: with pipefail, grep's early exit fails the pipe.
  grep -q " $ip/" <<< "$(ip -4 addr show dev lo)" && ip addr del "$ip/32" dev lo
done

if [ "$purge" = 1 ]; then
  say "purging $state and $kubelet_dir"
  rm -rf --one-file-system "$state" "$kubelet_dir"
fi
say "down"
