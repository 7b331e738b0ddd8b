#!/usr/bin/env bash
# Install the upstream CSI conformance suite (kubernetes-csi/csi-test, CSI spec v1.12.0)
# from the Go module proxy. Cached and idempotent: a binary of the right version is reused.
#
# Usage: scripts/install-csi-sanity.sh [BIN_DIR]
#   BIN_DIR defaults to $CSI_SANITY_BIN_DIR or <repo>/.cache/bin (git-ignored).
# Prints the path of the installed binary on stdout.
set -euo pipefail

VERSION="${CSI_SANITY_VERSION:-v5.4.0}"
MODULE="github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${1:-${CSI_SANITY_BIN_DIR:-$repo_root/.cache/bin}}"
bin="$bin_dir/csi-sanity"
stamp="$bin_dir/.csi-sanity.version"

if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$VERSION" ]]; then
    echo "$bin"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "install-csi-sanity: 'go' is not installed; cannot build csi-sanity $VERSION" >&2
    exit 1
fi

mkdir -p "$bin_dir"
echo "install-csi-sanity: building $MODULE@$VERSION into $bin_dir" >&2
GOBIN="$bin_dir" CGO_ENABLED=0 nice go install "$MODULE@$VERSION" >&2
echo "$VERSION" > "$stamp"
echo "$bin"
