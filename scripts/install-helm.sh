#!/usr/bin/env bash
# Install helm (the chart linter and renderer that scripts/validate-chart.sh uses) from the Go
# module proxy. Cached and idempotent: a binary whose version stamp matches is reused, so CI
# builds it once per cache.
#
# Usage: scripts/install-helm.sh [BIN_DIR]
#   BIN_DIR defaults to $HELM_BIN_DIR or <repo>/.cache/bin (git-ignored).
# Prints the path of the installed binary on stdout.
set -euo pipefail

VERSION="${HELM_VERSION:-v3.22.0}"
MODULE="helm.sh/helm/v3/cmd/helm"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${1:-${HELM_BIN_DIR:-$repo_root/.cache/bin}}"
bin="$bin_dir/helm"
stamp="$bin_dir/.helm.version"

if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$VERSION" ]]; then
    echo "$bin"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "install-helm: 'go' is not installed; cannot build helm $VERSION" >&2
    exit 1
fi

mkdir -p "$bin_dir"
echo "install-helm: building $MODULE@$VERSION into $bin_dir" >&2
# `go install` leaves helm's built-in version at its source default (e.g. "v3.22"); set the
# full version so `helm version` says exactly what was installed.
GOBIN="$bin_dir" CGO_ENABLED=0 nice go install \
    -ldflags "-X helm.sh/helm/v3/internal/version.version=$VERSION" \
    "$MODULE@$VERSION" >&2
echo "$VERSION" > "$stamp"
echo "$bin"
