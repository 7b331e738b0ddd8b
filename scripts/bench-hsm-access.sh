#!/usr/bin/env bash
# What restore on access costs a reader (the `hsm-access-bench` example of the hsm crate,
# release build), each figure a ratio to a peer measured side by side in the same run:
#   1. time to the first byte of a released file (1 GiB) read through the restore daemon,
#      against a plain GET of the same object with the same object_store client (its first
#      byte and its whole object) and the whole object in ranged GETs; on the local
#      `file://` store and on Azurite; best of BENCH_RUNS (>= 3) and every run;
#   2. open()+close() and open()+read(4 KiB)+close() of 1,000 small non-released files with
#      the restore daemon watching the filesystem against none: p50 and p99 over 100,000
#      operations per mode, in alternating blocks.
# Writes benches/hsm-access-latest.md.
#
#   sudo scripts/bench-hsm-access.sh
#   BENCH_SIZE=268435456 BENCH_RUNS=3 BENCH_OPENS=20000 scripts/bench-hsm-access.sh   # quicker
#   BENCH_STORES=local scripts/bench-hsm-access.sh                                   # no Azurite
#
# Needs root, Linux 6.14+ (fanotify pre-content events) and mkfs.btrfs: the namespace is a
# btrfs loop image made here. Azurite is started with scripts/start-azurite.sh (and left
# running, as that script's other users expect). Everything made here is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZE="${BENCH_SIZE:-1073741824}"
RUNS="${BENCH_RUNS:-5}"
OPENS="${BENCH_OPENS:-100000}"
FILES="${BENCH_FILES:-1000}"
BLOCKS="${BENCH_BLOCKS:-10}"
STORES="${BENCH_STORES:-local azurite}"
WORK="${BENCH_DIR:-/tmp/lustrekit-bench-access}"
OUT="$ROOT/benches/hsm-access-latest.md"
RUN="a$(date +%s)"

[[ $(id -u) == 0 ]] || { echo "run as root (fanotify pre-content events, a loop mount)" >&2; exit 1; }
command -v mkfs.btrfs >/dev/null || { echo "mkfs.btrfs is missing: apt-get install btrfs-progs" >&2; exit 1; }
(( RUNS >= 3 )) || { echo "BENCH_RUNS must be at least 3" >&2; exit 1; }

cleanup() {
    if mountpoint -q "$WORK/mnt" 2>/dev/null; then
        umount "$WORK/mnt" 2>/dev/null || umount -l "$WORK/mnt" || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
cleanup
mkdir -p "$WORK/mnt" "$WORK/run"

echo "building the hsm-access-bench example (release)" >&2
nice cargo build -q --release -p hsm --example hsm-access-bench
BENCH="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/hsm-access-bench"

# The namespace: a btrfs loop image big enough for the file and its restore.
truncate -s $(( SIZE * 3 + (1 << 30) )) "$WORK/img"
mkfs.btrfs -q -f "$WORK/img"
mount -o loop "$WORK/img" "$WORK/mnt"
mkdir -p "$WORK/mnt/ns"
# The daemon's watch lock, apart from any other daemon's.
export LUSTREKIT_RUN_DIR="$WORK/run"

REPORT="$WORK/report.md"
: >"$REPORT"
for store in $STORES; do
    case $store in
        local) spec="file://$WORK/store" ;;
        azurite)
            eval "export $(scripts/start-azurite.sh)"
            spec="az://${LUSTREKIT_TEST_AZURE_CONTAINER:-lustrekit-test}/bench-access-$RUN?use_emulator=true" ;;
        *) echo "unknown store $store" >&2; exit 1 ;;
    esac
    echo "== time to first byte: $store" >&2
    "$BENCH" ttfb "$spec" "$WORK/mnt/ns" "$SIZE" "$RUNS" >>"$REPORT"
done
echo "== open latency with and without the daemon" >&2
"$BENCH" opens "file://$WORK/store" "$WORK/mnt/ns" "$FILES" "$OPENS" "$BLOCKS" >>"$REPORT"

{
    echo "# Restore on access: time to first byte and open latency ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r))"
    echo
    echo "Made by \`BENCH_SIZE=$SIZE BENCH_RUNS=$RUNS BENCH_OPENS=$OPENS BENCH_FILES=$FILES BENCH_BLOCKS=$BLOCKS BENCH_STORES=\"$STORES\" scripts/bench-hsm-access.sh\`"
    echo "(the \`hsm-access-bench\` example, release build; namespace on a btrfs loop image; the"
    echo "daemon and the engine with their defaults: 8 MiB parts, 4 in flight; the store's cache warm"
    echo "for both sides)."
    echo
    cat "$REPORT"
} >"$OUT"
cat "$OUT"
