#!/usr/bin/env bash
# Images for the test cluster without a registry: each is a docker-archive tarball written
# from files on disk (scripts/kube/image-archive.py) and imported into containerd's k8s.io
# namespace with `ctr images import`.
#
#   pause      registry.k8s.io/pause:3.10        a static pause binary built from scripts/kube/pause.c
#   lustrekit  localhost/lustrekit/lustrekit:dev  target/debug/lustrekit (or $LUSTREKIT_BIN) with its
#                                                 shared libraries, and busybox for a shell
#   sidecars   registry.k8s.io/sig-storage/csi-provisioner:v5.3.0 and csi-resizer:v1.14.0,
#              built from the Go module proxy and cached by version
#   busybox    localhost/lustrekit/busybox:1.35   Debian's busybox-static
#
# The sidecars and the pause image carry the upstream names at the versions they were built
# from, so the chart's pinned defaults resolve to them with imagePullPolicy Never/IfNotPresent.
#
# Usage: scripts/kube-images.sh [all|pause|lustrekit|sidecars|busybox]...   (default: all)
# Env:   LUSTREKIT_CACHE, KUBE_STATE (for the containerd socket), LUSTREKIT_BIN, NO_IMPORT=1
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${LUSTREKIT_CACHE:-$HOME/.cache/lustrekit}"
state="${KUBE_STATE:-/var/lib/lustrekit-kube}"
address="${CONTAINERD_ADDRESS:-$state/run/containerd.sock}"
images="$cache/images"
mkdir -p "$images"

PAUSE_IMAGE="${PAUSE_IMAGE:-registry.k8s.io/pause:3.10}"
LUSTREKIT_IMAGE="${LUSTREKIT_IMAGE:-localhost/lustrekit/lustrekit:dev}"
BUSYBOX_IMAGE="${BUSYBOX_IMAGE:-localhost/lustrekit/busybox:1.35}"
PROVISIONER_VERSION="${PROVISIONER_VERSION:-v5.3.0}"
RESIZER_VERSION="${RESIZER_VERSION:-v1.14.0}"

log() { echo "kube-images: $*" >&2; }

import() {
  local tar="$1"
  [ "${NO_IMPORT:-0}" = 1 ] && return 0
  ctr --address "$address" -n k8s.io images import "$tar" >/dev/null
}

# write_image TAG ROOTFS OUT [image-archive.py flags...]
write_image() {
  local tag="$1" rootfs="$2" out="$3"
  shift 3
  python3 "$repo/scripts/kube/image-archive.py" --tag "$tag" --rootfs "$rootfs" --out "$out" "$@" >/dev/null
  log "wrote $tag ($(du -h "$out" | cut -f1))"
}

image_pause() {
  local out="$images/pause-3.10.tar" src="$repo/scripts/kube/pause.c"
  local stamp
  stamp="$(sha256sum "$src" | cut -c1-16)"
  if [ ! -f "$out" ] || [ "$(cat "$out.stamp" 2>/dev/null)" != "$stamp" ]; then
    local root
    root="$(mktemp -d)"
    gcc -static -Os -s -o "$root/pause" "$src"
    write_image "$PAUSE_IMAGE" "$root" "$out" --entrypoint /pause
    rm -rf "$root"
    echo "$stamp" > "$out.stamp"
  fi
  import "$out"
}

image_busybox() {
  local out="$images/busybox-1.35.tar" bb=/bin/busybox
  [ -x "$bb" ] || { log "busybox-static is not installed (scripts/install-kube-deps.sh)"; exit 1; }
  local stamp
  stamp="$(sha256sum "$bb" | cut -c1-16)"
  if [ ! -f "$out" ] || [ "$(cat "$out.stamp" 2>/dev/null)" != "$stamp" ]; then
    local root
    root="$(mktemp -d)"
    populate_busybox "$root"
    write_image "$BUSYBOX_IMAGE" "$root" "$out" --cmd /bin/sh
    rm -rf "$root"
    echo "$stamp" > "$out.stamp"
  fi
  import "$out"
}

# A minimal root with busybox and its applets, /tmp and /etc/passwd.
populate_busybox() {
  local root="$1" applet
  mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
}

image_lustrekit() {
  local bin="${LUSTREKIT_BIN:-$repo/target/debug/lustrekit}"
  [ -x "$bin" ] || { log "no lustrekit binary at $bin: run cargo build -p lustrekit"; exit 1; }
  local out="$images/lustrekit-dev.tar" root lib stamp
  # The stamp names the image's layout too (v2: CA certificates), so a change here rebuilds it.
  stamp="$(sha256sum "$bin" | cut -c1-16)-v2"
  if [ ! -f "$out" ] || [ "$(cat "$out.stamp" 2>/dev/null)" != "$stamp" ]; then
    root="$(mktemp -d)"
    populate_busybox "$root"
    mkdir -p "$root/usr/local/bin"
    # The CA bundle, as the Dockerfile's ca-certificates has it: the HSM stores' HTTP client
    # (rustls-platform-verifier) refuses to build without system roots, even for http://.
    mkdir -p "$root/etc/ssl/certs"
    cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    # Debug info is most of a debug binary; the image does not need it.
    objcopy --strip-debug "$bin" "$root/usr/local/bin/lustrekit"
    # The binary's shared libraries (glibc), at the paths the loader looks for them.
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
    write_image "$LUSTREKIT_IMAGE" "$root" "$out" --entrypoint /usr/local/bin/lustrekit
    rm -rf "$root"
    echo "$stamp" > "$out.stamp"
  fi
  import "$out"
}

# go_build_module MODULE VERSION PACKAGE OUT: builds PACKAGE of MODULE@VERSION from a copy of
# the module (its go.mod has replace directives, so `go install mod@version` refuses it).
go_build_module() {
  local module="$1" version="$2" package="$3" out="$4" dir src
  dir="$(cd /tmp && go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$dir" ] || { log "cannot download $module@$version"; exit 1; }
  src="$(dirname "$out")/src"
  rm -rf "$src"
  cp -r "$dir" "$src"
  chmod -R u+w "$src"
  log "building $package $version (nice)"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 10 go build -trimpath \
    -ldflags "-s -w -X main.version=$version" -o "$out" "./$package")
  rm -rf "$src"
}

# sidecar NAME MODULE VERSION
sidecar() {
  local name="$1" module="$2" version="$3"
  local dir="$cache/sidecars/$name/$version" out="$images/$name-$version.tar"
  if [ ! -x "$dir/$name" ]; then
    mkdir -p "$dir"
    go_build_module "$module" "$version" "cmd/$name" "$dir/$name"
  fi
  if [ ! -f "$out" ]; then
    local root
    root="$(mktemp -d)"
    mkdir -p "$root/tmp"
    chmod 1777 "$root/tmp"
    cp "$dir/$name" "$root/$name"
    write_image "registry.k8s.io/sig-storage/$name:$version" "$root" "$out" --entrypoint "/$name"
    rm -rf "$root"
  fi
  import "$out"
}

image_sidecars() {
  sidecar csi-provisioner github.com/kubernetes-csi/external-provisioner/v5 "$PROVISIONER_VERSION"
  sidecar csi-resizer github.com/kubernetes-csi/external-resizer "$RESIZER_VERSION"
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(all)
for t in "${targets[@]}"; do
  case "$t" in
    all) image_pause; image_busybox; image_sidecars; image_lustrekit ;;
    pause | busybox | lustrekit | sidecars) "image_$t" ;;
    *) echo "usage: $0 [all|pause|lustrekit|sidecars|busybox]..." >&2; exit 2 ;;
  esac
done
