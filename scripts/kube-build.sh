#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl from the
# k8s.io/kubernetes module through the Go module proxy, cached by version:
#   ${LUSTREKIT_CACHE:-$HOME/.cache/lustrekit}/kube/$KUBE_VERSION/bin
# A second run with the same version finds the stamp and builds nothing.
#
# The k8s.io/kubernetes go.mod replaces its staging modules (k8s.io/api, k8s.io/client-go, ...)
# with ./staging paths, which `go install mod@version` refuses. So the build runs in a small
# wrapper module that requires k8s.io/kubernetes and replaces each staging module with its
# published v0.X.Y twin (the list is read from the kubernetes go.mod itself).
#
# Usage: scripts/kube-build.sh        prints the bin directory on stdout
# Env:   KUBE_VERSION (v1.34.4), LUSTREKIT_CACHE, KUBE_BUILD_NICE (10)
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
cache="${LUSTREKIT_CACHE:-$HOME/.cache/lustrekit}/kube/$KUBE_VERSION"
bin="$cache/bin"
stamp="$bin/.version"
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

have_all() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$KUBE_VERSION" ] || return 1
  local c
  for c in "${components[@]}"; do [ -x "$bin/$c" ] || return 1; done
}
if have_all; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "kube-build: 'go' is not installed" >&2; exit 1; }

# v1.34.4 -> staging modules are v0.34.4
staging_version="v0.${KUBE_VERSION#v1.}"
src="$cache/src"
mkdir -p "$src" "$bin"

echo "kube-build: fetching k8s.io/kubernetes@$KUBE_VERSION" >&2
gomod="$(cd "$src" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[ -f "$gomod" ] || { echo "kube-build: no go.mod for k8s.io/kubernetes@$KUBE_VERSION" >&2; exit 1; }

# The sample-* modules are not published at the staging version and nothing we build needs them.
mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod" \
  | grep -v -e '^k8s.io/sample-')
[ ${#staging[@]} -gt 10 ] || { echo "kube-build: staging list looks wrong: ${staging[*]}" >&2; exit 1; }
godebug="$(sed -n 's/^godebug \(.*\)/\1/p' "$gomod")"

{
  echo "module lustrekit.test/kubewrapper"
  echo
  echo "go $(sed -n 's/^go \(.*\)/\1/p' "$gomod")"
  [ -n "$godebug" ] && echo "godebug $godebug"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	$m => $m $staging_version"; done
  echo ")"
} > "$src/go.mod"
# A package of the wrapper's own keeps `go mod tidy` honest about what the build needs.
cat > "$src/tools.go" <<'GO'
//go:build tools

package kubewrapper

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
	_ "k8s.io/kubectl/pkg/cmd"
)
GO

pkgs=()
for c in "${components[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
ver="k8s.io/component-base/version"
cver="k8s.io/client-go/pkg/version"
major=1; minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for p in "$ver" "$cver"; do
  ldflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

start=$(date +%s)
echo "kube-build: building ${components[*]} $KUBE_VERSION (nice; about 13+ minutes on 2 cores)" >&2
(
  cd "$src"
  GOFLAGS=-mod=mod go mod tidy -e >&2 2>&1 || true
  CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n "${KUBE_BUILD_NICE:-10}" \
    go build -trimpath -ldflags "$ldflags" -o "$bin/" "${pkgs[@]}" >&2
)
echo "$KUBE_VERSION" > "$stamp"
echo "kube-build: built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
