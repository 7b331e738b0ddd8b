#!/usr/bin/env bash
# CreateVolume/DeleteVolume throughput (1, 16, 64 concurrent clients) through the CSI socket
# versus the share service in-process, on the local backend over a btrfs loop image.
# Needs root; prints a markdown table. Usage: benches/csi-bench.sh [volumes per level]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ "$(id -u)" != 0 ]]; then echo "csi-bench: SKIPPED: needs root for the btrfs loop image"; exit 0; fi
n="${1:-256}"
nice cargo build -q --release -p csi --example csi-bench
work="$(mktemp -d /tmp/lustrekit-csi-bench.XXXXXX)"
trap 'umount -l "$work/fs" 2>/dev/null; rm -rf "$work"' EXIT
truncate -s 2G "$work/fs.img"
mkfs.btrfs -q "$work/fs.img"
mkdir -p "$work/fs"
mount -o loop "$work/fs.img" "$work/fs"
btrfs quota enable "$work/fs"
target/release/examples/csi-bench "$work/fs/root" "$n"
