#!/usr/bin/env bash
# Installs the Debian packages the one-node test cluster needs (scripts/kube-up.sh): etcd,
# containerd, runc, the CNI plugins, busybox-static (the test image), the CA bundle the
# driver image copies, and the C toolchain bits the pause image is built with. Idempotent;
# without root it only reports what is missing.
# The Kubernetes binaries themselves are built by scripts/kube-build.sh (cached by version).
set -euo pipefail

packages=(etcd-server containerd runc containernetworking-plugins busybox-static
          btrfs-progs openssl iproute2 iptables conntrack socat ethtool util-linux gcc libc6-dev curl bc binutils
          ca-certificates)

missing=()
for p in "${packages[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-kube-deps: not root: cannot install ${missing[*]}; cluster tests will skip" >&2
  exit 0
fi
echo "install-kube-deps: installing ${missing[*]}" >&2
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
  apt-get update -qq
fi
# policy-rc.d keeps dpkg from starting etcd/containerd as system services: kube-up.sh runs its
# own instances with their own state directories.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
