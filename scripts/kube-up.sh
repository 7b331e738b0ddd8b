#!/usr/bin/env bash
# Brings up a one-node Kubernetes cluster on this machine, for the cluster tests
# (scripts/cluster-test.sh). Idempotent: what already runs is left running, what is missing is
# started. scripts/kube-down.sh takes it down.
#
#   etcd, containerd, runc, CNI plugins   Debian packages (scripts/install-kube-deps.sh)
#   kube-apiserver, controller-manager,
#   scheduler, kubelet, kubectl           built from k8s.io/kubernetes (scripts/kube-build.sh),
#                                         cached by version
#   certificates                          made here with openssl
#   images                                scripts/kube-images.sh (no registry)
#
# Networking stays on the machine: the node's address (10.250.0.1) and the `kubernetes`
# Service's cluster IP (10.96.0.1) are extra addresses on `lo`, and the API server listens on
# 443, so in-cluster clients reach it at the Service IP with no kube-proxy. Pods get a bridge
# (lkbr0, 10.244.0.0/24) from the Debian CNI plugins; host-network pods need none of it.
#
# Prints `export KUBECONFIG=...` at the end. State lives in $KUBE_STATE
# (/var/lib/lustrekit-kube); logs in $KUBE_STATE/log.
#
# Env: KUBE_VERSION (v1.34.4), KUBE_STATE, LUSTREKIT_CACHE, KUBE_NODE_IP (10.250.0.1),
#      KUBE_SERVICE_CIDR (10.96.0.0/16), KUBE_POD_CIDR (10.244.0.0/24), KUBE_SKIP_IMAGES=1
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${KUBE_STATE:-/var/lib/lustrekit-kube}"
node_ip="${KUBE_NODE_IP:-10.250.0.1}"
service_cidr="${KUBE_SERVICE_CIDR:-10.96.0.0/16}"
service_ip="${service_cidr%%/*}"; service_ip="${service_ip%.*}.1"
pod_cidr="${KUBE_POD_CIDR:-10.244.0.0/24}"
node_name="$(hostname | tr '[:upper:]' '[:lower:]')"
node_name="${KUBE_NODE_NAME:-$node_name}"
api_port=443
pki="$state/pki"
log_dir="$state/log"
run_dir="$state/run"
containerd_sock="$run_dir/containerd.sock"
export KUBECONFIG="$state/admin.kubeconfig"
t0=$(date +%s.%N)

say() { printf 'kube-up: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
elapsed() { printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)"; }

# --- prerequisites: say exactly what is missing -----------------------------------------
[ "$(id -u)" = 0 ] || die "needs root (mounts, cgroups, containerd)"
[ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || die "no cgroups at /sys/fs/cgroup"
"$repo/scripts/install-kube-deps.sh"
for tool in etcd containerd runc ctr openssl ip iptables python3 bc; do
  command -v "$tool" >/dev/null || die "missing $tool (scripts/install-kube-deps.sh)"
done
[ -x /usr/lib/cni/bridge ] || die "missing CNI plugins in /usr/lib/cni (containernetworking-plugins)"

bin="$("$repo/scripts/kube-build.sh")"
export PATH="$bin:$PATH"
mkdir -p "$pki" "$log_dir" "$run_dir" "$state/pids" "$state/cni/net.d"

# --- processes -------------------------------------------------------------------------
running() { # NAME: is the process we started still alive?
  local f="$state/pids/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -d "/proc/$pid" ] && [ "$(tr '\0' ' ' < "/proc/$pid/cmdline" | cut -d' ' -f1)" = "$2" ]
}
start() { # NAME BINARY ARGS...: start in its own session, unless already running
  local name="$1" exe="$2"
  shift 2
  if running "$name" "$exe"; then return 0; fi
  say "starting $name"
  # Only the log and /dev/null: a daemon must hold no descriptor of ours (a caller's pipe
  # it kept open would make `$(kube-up.sh)` or `$(cluster-test.sh --up)` wait forever).
  setsid "$exe" "$@" >>"$log_dir/$name.log" 2>&1 < /dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
  echo $! > "$state/pids/$name.pid"
}
wait_until() { # SECONDS WHAT COMMAND...
  local secs="$1" what="$2" i
  shift 2
  for ((i = 0; i < secs * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what not ready after ${secs}s; see $log_dir"
}

# --- addresses on lo ---------------------------------------------------------------------
for ip in "$node_ip" "$service_ip"; do
  # Here-strings, not pipes into grep -q: with pipefail, grep's early exit fails the pipe.
  grep -q " $ip/" <<< "$(ip -4 addr show dev lo)" || ip addr add "$ip/32" dev lo
done

# --- certificates ------------------------------------------------------------------------
# cert NAME CN O SANS: a key and a certificate signed by the cluster CA (10 years).
cert() {
  local name="$1" cn="$2" org="$3" sans="$4"
  [ -f "$pki/$name.crt" ] && return 0
  local ext="$pki/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$sans" ]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$sans"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } > "$ext"
  local subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org$subj"
  openssl genrsa -out "$pki/$name.key" 2048 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$ext"
}
if [ ! -f "$pki/ca.crt" ]; then
  say "making certificates in $pki"
  openssl genrsa -out "$pki/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=lustrekit-test-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$pki/ca.crt" 2>/dev/null
fi
cert apiserver kube-apiserver "" \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$node_ip,IP:$service_ip"
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
cert admin kubernetes-admin system:masters ""
cert controller-manager system:kube-controller-manager "" ""
cert scheduler system:kube-scheduler "" ""
cert kubelet "system:node:$node_name" system:nodes ""
cert kubelet-serving "$node_name" "" "DNS:$node_name,DNS:localhost,IP:127.0.0.1,IP:$node_ip"
if [ ! -f "$pki/sa.key" ]; then
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi
chmod 600 "$pki"/*.key

kubeconfig() { # FILE CERT-NAME
  local file="$1" name="$2" server="https://127.0.0.1:$api_port"
  [ -f "$file" ] && return 0
  kubectl config --kubeconfig="$file" set-cluster lustrekit --server="$server" \
    --certificate-authority="$pki/ca.crt" --embed-certs=true >/dev/null
  kubectl config --kubeconfig="$file" set-credentials "$name" \
    --client-certificate="$pki/$name.crt" --client-key="$pki/$name.key" --embed-certs=true >/dev/null
  kubectl config --kubeconfig="$file" set-context default --cluster=lustrekit --user="$name" >/dev/null
  kubectl config --kubeconfig="$file" use-context default >/dev/null
  chmod 600 "$file"
}
kubeconfig "$state/admin.kubeconfig" admin
kubeconfig "$state/controller-manager.kubeconfig" controller-manager
kubeconfig "$state/scheduler.kubeconfig" scheduler
kubeconfig "$state/kubelet.kubeconfig" kubelet

# --- etcd --------------------------------------------------------------------------------
start etcd "$(command -v etcd)" --name lustrekit --data-dir "$state/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster lustrekit=http://127.0.0.1:2380 --log-level warn
wait_until 30 etcd curl -fsS http://127.0.0.1:2379/health

# --- containerd --------------------------------------------------------------------------
cat > "$state/containerd.toml" <<EOF
version = 2
root = "$state/containerd/root"
state = "$state/containerd/state"
[grpc]
  address = "$containerd_sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # No AppArmor here; and root lacks CAP_SYS_RESOURCE, so oom_score_adj may only be raised.
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
EOF
cat > "$state/cni/net.d/10-lustrekit.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "lustrekit",
  "plugins": [
    {"type": "bridge", "bridge": "lkbr0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$state/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
start containerd "$(command -v containerd)" --config "$state/containerd.toml"
wait_until 30 containerd ctr --address "$containerd_sock" version

if [ "${KUBE_SKIP_IMAGES:-0}" != 1 ]; then
  KUBE_STATE="$state" "$repo/scripts/kube-images.sh" pause busybox
fi

# --- control plane -----------------------------------------------------------------------
start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=0.0.0.0 --secure-port="$api_port" --advertise-address="$node_ip" \
  --service-cluster-ip-range="$service_cidr" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$pki/ca.crt" \
  --kubelet-preferred-address-types=InternalIP,Hostname \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true --profiling=false
ready() { [ "$(kubectl get --raw /readyz)" = ok ]; }
wait_until 90 kube-apiserver ready

# The controller-manager exits if it starts before the API server is ready (and pods are then
# refused for a missing default service account), so it starts only now.
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig="$state/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$state/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$state/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
  --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --service-cluster-ip-range="$service_cidr" --profiling=false
start kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig="$state/scheduler.kubeconfig" \
  --authentication-kubeconfig="$state/scheduler.kubeconfig" \
  --authorization-kubeconfig="$state/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --profiling=false

# --- kubelet -----------------------------------------------------------------------------
cat > "$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# kubectl logs/exec reach the kubelet at the node address, so listen beyond loopback.
address: 0.0.0.0
port: 10250
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$pki/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$pki/kubelet-serving.crt"
tlsPrivateKeyFile: "$pki/kubelet-serving.key"
containerRuntimeEndpoint: "unix://$containerd_sock"
# This VM's cgroups are a v1/v2 hybrid without systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
# Images come from tarballs and cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"}
# Volume stats (NodeGetVolumeStats) are polled this often; the default is a minute.
volumeStatsAggPeriod: 10s
# The kubelet reads NodeGetVolumeStats' volume condition only with this alpha gate (off by
# default through 1.34): then kubelet_volume_stats_health_status_abnormal and the pod's
# VolumeConditionAbnormal events report it.
featureGates: {CSIVolumeHealth: true}
serializeImagePulls: false
EOF
start kubelet "$bin/kubelet" --config="$state/kubelet.yaml" --kubeconfig="$state/kubelet.kubeconfig" \
  --hostname-override="$node_name" --node-ip="$node_ip" --v=1
node_ready() {
  [ "$(kubectl get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_until 120 "node $node_name" node_ready
# The default ServiceAccount, made by the controller-manager, gates every pod.
wait_until 60 "default service account" kubectl -n default get serviceaccount default

say "cluster up in $(elapsed) s: node $node_name ($node_ip), API https://127.0.0.1:$api_port"
echo "export KUBECONFIG=$KUBECONFIG"
