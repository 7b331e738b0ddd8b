#!/usr/bin/env bash
# The import rate (stubs/s) of `lustrekit hsm import`, before and after a change, side by side
# in one run, from the local store and from Azurite, into fresh directories on a btrfs loop
# image; with the listing alone of the same store as the floor (objects listed/s), and each
# rate as a ratio to it. Prints a Markdown report (also written to benches/hsm-import-latest.md).
#
#   scripts/bench-hsm-import.sh                       # 100,000 objects, before = merge-base with main
#   BENCH_IMPORT=10000 BENCH_BEFORE=<rev> scripts/bench-hsm-import.sh
#   BENCH_STORES=local scripts/bench-hsm-import.sh    # skip Azurite
#
# The objects carry our metadata as an archive writes it: one small file and its directory
# are archived by the binary under test into a scratch store, and their metadata (a fresh
# version ID each) is copied onto every object (local: sidecars; Azurite: blob metadata and
# folder blobs). Needs root (the loop image), mkfs.btrfs, python3, node (Azurite's SDK).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N="${BENCH_IMPORT:-100000}"
PER_DIR="${BENCH_PER_DIR:-1000}"
STORES="${BENCH_STORES:-local azurite}"
BEFORE="${BENCH_BEFORE:-$(git merge-base HEAD main)}"
WORK="${BENCH_DIR:-/tmp/lustrekit-bench-import}"
OUT="$ROOT/benches/hsm-import-latest.md"
CONTAINER="${BENCH_AZURE_CONTAINER:-lustrekit-bench-import}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

[[ $(id -u) == 0 ]] || { echo "needs root (a btrfs loop image)" >&2; exit 1; }
mkdir -p "$WORK/bin"

# --- binaries: before (a clean export of $BEFORE) and after (this tree) ---------------------
# Both build into the same target dir, so the dependencies are compiled once.
echo "building before ($BEFORE) and after (release)" >&2
BEFORE_REV=$(git rev-parse "$BEFORE")
if [[ ! -x "$WORK/bin/before" || $(cat "$WORK/bin/before.rev" 2>/dev/null) != "$BEFORE_REV" ]]; then
    rm -rf "$WORK/before-src"; mkdir -p "$WORK/before-src"
    git archive "$BEFORE" | tar -x -C "$WORK/before-src"
    (cd "$WORK/before-src" && nice cargo build -q --release -p lustrekit --bin lustrekit)
    cp "$CARGO_TARGET_DIR/release/lustrekit" "$WORK/bin/before"
    echo "$BEFORE_REV" >"$WORK/bin/before.rev"
fi
nice cargo build -q --release -p lustrekit --bin lustrekit
cp "$CARGO_TARGET_DIR/release/lustrekit" "$WORK/bin/after"
nice cargo build -q --release -p hsm --example list-store
cp "$CARGO_TARGET_DIR/release/examples/list-store" "$WORK/bin/list-store"

# --- btrfs loop image: the stubs go here -----------------------------------------------------
MNT="$WORK/mnt"
cleanup() {
    mountpoint -q "$MNT" && umount "$MNT"
    rm -f "$WORK/btrfs.img"
}
trap cleanup EXIT
mountpoint -q "$MNT" && umount "$MNT"
mkdir -p "$MNT"; rm -f "$WORK/btrfs.img"
truncate -s "${BENCH_IMAGE:-4G}" "$WORK/btrfs.img"
mkfs.btrfs -q "$WORK/btrfs.img"
mount -o loop "$WORK/btrfs.img" "$MNT"

# --- the metadata an archive writes: one file and its directory, archived once -------------
TPL="$WORK/template"; rm -rf "$TPL"; mkdir -p "$TPL/ns/d"
head -c 100 /dev/zero | tr '\0' x >"$TPL/ns/d/f"
chmod 0640 "$TPL/ns/d/f"; chown 1000:1000 "$TPL/ns/d/f" "$TPL/ns/d"
python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.origin", b"bench")' "$TPL/ns/d/f"
"$WORK/bin/after" hsm --no-progress --store "file://$TPL/store" --root "$TPL/ns" \
    archive -r "$TPL/ns/d" >/dev/null
FILE_META="$TPL/store/.lustrekit-meta/d/f.meta"
DIR_META="$TPL/store/.lustrekit-meta/d.meta"

# --- the local store: N objects of 100 bytes in N/PER_DIR directories, with sidecars -------
LOCAL="$WORK/store-$N"
if [[ ! -f "$LOCAL/.complete" ]]; then
    echo "making $N objects in $LOCAL" >&2
    rm -rf "$LOCAL"
    python3 - "$LOCAL" "$N" "$PER_DIR" "$FILE_META" "$DIR_META" <<'PY'
import json, os, sys
root, n, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fmeta, dmeta = json.load(open(sys.argv[4])), json.load(open(sys.argv[5]))
side = os.path.join(root, ".lustrekit-meta")
for i in range(n):
    d = f"data/d{i // per:04d}"
    if i % per == 0:
        os.makedirs(os.path.join(root, d), exist_ok=True)
        os.makedirs(os.path.join(side, d), exist_ok=True)
        with open(os.path.join(side, d + ".meta"), "w") as f:
            json.dump(dmeta, f)
    with open(os.path.join(root, d, f"obj{i:07d}"), "wb") as f:
        f.write(b"x" * 100)
    m = dict(fmeta, lustrekit_version=f"v-{i:032x}")
    with open(os.path.join(side, d, f"obj{i:07d}.meta"), "w") as f:
        json.dump(m, f)
PY
    touch "$LOCAL/.complete"
fi

# --- Azurite: the same objects as blobs with metadata, and folder blobs --------------------
# (Azurite takes them slowly, about 40 blobs/s here: BENCH_AZURE_IMPORT makes fewer, and
# BENCH_AZURE_PREFIX imports one directory of them, `data/d0001`, since the sequential
# HEADs before the pipeline run at a few dozen a second against it.)
AZ_N="${BENCH_AZURE_IMPORT:-$N}"
AZ_IMPORT_PREFIX="${BENCH_AZURE_PREFIX:-data}"
AZ_PREFIX="imp-$AZ_N"
if [[ " $STORES " == *" azurite "* ]]; then
    scripts/start-azurite.sh >/dev/null
    (cd "${LUSTREKIT_CACHE:-$HOME/.cache/lustrekit}/azurite" && \
     CONTAINER="$CONTAINER" PREFIX="$AZ_PREFIX" N="$AZ_N" PER="$PER_DIR" FMETA="$FILE_META" DMETA="$DIR_META" node -e '
const b = require("@azure/storage-blob");
const fs = require("fs");
const acct = "devstoreaccount1";
const key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const svc = new b.BlobServiceClient(`http://127.0.0.1:10000/${acct}`, new b.StorageSharedKeyCredential(acct, key));
const c = svc.getContainerClient(process.env.CONTAINER);
const [n, per, prefix] = [+process.env.N, +process.env.PER, process.env.PREFIX];
const fmeta = JSON.parse(fs.readFileSync(process.env.FMETA)), dmeta = JSON.parse(fs.readFileSync(process.env.DMETA));
(async () => {
  await c.createIfNotExists();
  const done = c.getBlockBlobClient(`${prefix}.complete`);
  if (await done.exists()) return;
  console.error(`uploading ${n} blobs to Azurite`);
  const body = Buffer.from("x".repeat(100));
  const jobs = [];
  for (let i = 0; i < n; i++) {
    const d = `data/d${String(Math.floor(i / per)).padStart(4, "0")}`;
    if (i % per == 0) jobs.push([`${prefix}/${d}`, Buffer.alloc(0), dmeta]);
    jobs.push([`${prefix}/${d}/obj${String(i).padStart(7, "0")}`, body,
               { ...fmeta, lustrekit_version: `v-${i.toString(16).padStart(32, "0")}` }]);
  }
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const [name, data, metadata] = jobs[next++];
      await c.getBlockBlobClient(name).upload(data, data.length, { metadata });
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  await done.upload("", 0);
})().catch((e) => { console.error(e.message); process.exit(1); });
')
fi

# --- runs -------------------------------------------------------------------------------------
now() { date +%s.%N; }
rate() { echo "scale=0; $1 / $2" | bc -l 2>/dev/null || echo nan; }
ratio() { echo "scale=2; $1 / $2" | bc -l 2>/dev/null || echo nan; }
prefix_of() {
    case $1 in
        local) echo data ;;
        azurite) echo "$AZ_IMPORT_PREFIX" ;;
    esac
}
spec_of() {
    case $1 in
        local) echo "file://$LOCAL" ;;
        azurite) echo "az://$CONTAINER/$AZ_PREFIX?use_emulator=true" ;;
    esac
}
declare -A R
for store in $STORES; do
    spec=$(spec_of "$store")
    echo "== $store" >&2
    t0=$(now)
    prefix=$(prefix_of "$store")
    "$WORK/bin/list-store" "$spec" "$prefix" >"$WORK/list.$store"
    t1=$(now)
    R[$store,list]=$(echo "$t1 - $t0" | bc -l)
    R[$store,listed]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["objects"])' "$WORK/list.$store")
    echo "  list: ${R[$store,listed]} objects in ${R[$store,list]}s" >&2
    for which in before after; do
        sync
        dst="$MNT/$store-$which"
        t0=$(now)
        if ! "$WORK/bin/$which" hsm --no-progress --json --store "$spec" --root "$MNT" \
            import --prefix "$prefix" "$dst" >"$WORK/out.$store.$which" 2>"$WORK/err.$store.$which"; then
            echo "FAILED: $store $which" >&2; tail -5 "$WORK/err.$store.$which" >&2
        fi
        t1=$(now)
        R[$store,$which]=$(echo "$t1 - $t0" | bc -l)
        R[$store,$which,files]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["files"])' "$WORK/out.$store.$which" 2>/dev/null || echo 0)
        echo "  $which: ${R[$store,$which,files]} stubs in ${R[$store,$which]}s" >&2
        rm -rf "$dst"
    done
done

# --- report -----------------------------------------------------------------------------------
{
    echo "# hsm import: stubs/s before and after ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
    echo
    echo "\`BENCH_IMPORT=$N scripts/bench-hsm-import.sh\`: objects of 100 bytes, $PER_DIR to a directory,"
    echo "with the metadata an archive writes (local: sidecars; Azurite: blob metadata and folder"
    echo "blobs), imported as released stubs into a fresh directory on a btrfs loop image (release"
    echo "build). Before: \`$(git rev-parse --short "$BEFORE")\`; after: \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD || echo ' + uncommitted changes')."
    echo "Floor: the listing alone of the same store (\`examples/list-store.rs\`: the objects and, on"
    echo "the local store, the sidecar tree, as import lists them)."
    echo
    echo "| store | objects | listing (objects/s) | before (stubs/s) | after (stubs/s) | after / before | after / listing |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    for store in $STORES; do
        l=$(rate "${R[$store,listed]}" "${R[$store,list]}")
        b=$(rate "${R[$store,before,files]}" "${R[$store,before]}")
        a=$(rate "${R[$store,after,files]}" "${R[$store,after]}")
        echo "| $store | ${R[$store,listed]} | $l | $b | $a | $(ratio "$a" "$b") | $(ratio "$a" "$l") |"
    done
    echo
    for store in $STORES; do
        echo "- $store (\`$(spec_of "$store" | sed 's/?.*//')\`, prefix \`$(prefix_of "$store")\`): listed ${R[$store,listed]} in ${R[$store,list]}s; before ${R[$store,before,files]} stubs in ${R[$store,before]}s; after ${R[$store,after,files]} stubs in ${R[$store,after]}s."
    done
} | tee "$OUT"
