#!/usr/bin/env bash
# Encryption's cost on the local backend: NodePublishVolume latency (p50/p99) and sequential
# throughput of an fscrypt volume (keys from the test PyKMIP server) against a plain one, on
# an ext4 `-O encrypt` loop image, release build. Needs root; prints a markdown table.
# Usage: benches/crypt-bench.sh [publishes] [MiB]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ "$(id -u)" != 0 ]]; then echo "crypt-bench: SKIPPED: needs root for the ext4 loop image"; exit 0; fi
publishes="${1:-100}"
mib="${2:-256}"
nice cargo build -q --release -p csi --example crypt-bench
eval "$(scripts/start-kmip.sh)"
work="$(mktemp -d /tmp/lustrekit-crypt-bench.XXXXXX)"
trap 'umount -l "$work/fs" 2>/dev/null; rm -rf "$work"' EXIT
truncate -s $(( mib * 2 + 256 ))M "$work/fs.img"
mkfs.ext4 -q -F -O encrypt "$work/fs.img"
mkdir -p "$work/fs"
mount -o loop "$work/fs.img" "$work/fs"
"${CARGO_TARGET_DIR:-target}/release/examples/crypt-bench" "$work/fs/root" "$LUSTREKIT_TEST_KMIP" \
    "$(dirname "$LUSTREKIT_TEST_KMIP_CA")" "$publishes" "$mib"
