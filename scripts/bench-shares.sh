#!/usr/bin/env bash
# Share create/delete throughput on the local backend over btrfs, against the bare kernel work
# it needs (`btrfs subvolume create` + `btrfs qgroup limit`, and `btrfs subvolume delete`) run
# by a shell loop on the same image in the same run. Also parser throughput on 10,000-line
# dumps. Needs root. Prints one JSON line per measurement and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${COUNT:-1000}"
[ "$(id -u)" = 0 ] || { echo "bench-shares: needs root (loop devices)"; exit 1; }
command -v mkfs.btrfs >/dev/null || scripts/install-deps.sh --demo
cargo build --release -p lustrekit -q
BIN=target/release/lustrekit

work=$(mktemp -d)
cleanup() { umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
truncate -s 4G "$work/fs.img"
mkfs.btrfs -q "$work/fs.img"
mkdir -p "$work/mnt"
mount -o loop "$work/fs.img" "$work/mnt"
btrfs quota enable "$work/mnt"

ours=$("$BIN" bench shares --root "$work/mnt/lk" --count "$COUNT")
echo "lustrekit: $ours"
ours16=$("$BIN" bench shares --root "$work/mnt/lk16" --count "$COUNT" --concurrency 16)
echo "lustrekit (16 at once): $ours16"

mkdir -p "$work/mnt/peer"
start=$(date +%s.%N)
for i in $(seq 1 "$COUNT"); do
  btrfs subvolume create "$work/mnt/peer/s$i" >/dev/null
  btrfs qgroup limit 10M "$work/mnt/peer/s$i"
done
mid=$(date +%s.%N)
for i in $(seq 1 "$COUNT"); do
  btrfs subvolume delete "$work/mnt/peer/s$i" >/dev/null
done
end=$(date +%s.%N)
peer=$(python3 -c "import json;c=$COUNT;a=$mid-$start;b=$end-$mid;print(json.dumps({'count':c,'create_per_sec':c/a,'delete_per_sec':c/b}))")
echo "shell loop: $peer"
python3 - "$ours" "$ours16" "$peer" <<'PY'
import json, sys
o, o16, p = (json.loads(a) for a in sys.argv[1:4])
for label, r in (("sequential", o), ("16 at once", o16)):
    for op in ("create", "delete"):
        k = f"{op}_per_sec"
        print(f"{op} ({label}): {r[k]:.0f} shares/s vs {p[k]:.0f}/s bare btrfs shell loop = {r[k]/p[k]:.2f}x")
PY

# Parser throughput: 10,000-line dumps built from the real formats.
python3 - "$work" <<'PY'
import sys
w = sys.argv[1]
with open(f"{w}/quota.txt", "w") as f:
    f.write("Disk prj quotas\n")
    f.write("        quota_id  kbytes   quota   limit   grace   files   quota   limit   grace\n")
    for i in range(1, 10000):
        f.write(f"{1000+i:>16} {i*7:>7}  {0:>6} {10240:>7} {'-':>7} {i:>7}  {0:>6} {0:>7} {'-':>7}\n")
with open(f"{w}/nodemap.txt", "w") as f:
    f.write("nodemap.active=1\n")
    n = 0
    i = 0
    while n < 10000:
        name = f"lk{i}rw"
        block = [f"nodemap.{name}.admin_nodemap=0", f"nodemap.{name}.deny_unknown=1",
                 f"nodemap.{name}.fileset=/shares/s{i}", f"nodemap.{name}.id={i+1}",
                 f"nodemap.{name}.idmap=", "[", "", "]",
                 f"nodemap.{name}.ranges=", "[",
                 f" {{ id: {i+1}, start_nid: 10.{i//256%256}.{i%256}.0@tcp, end_nid: 10.{i//256%256}.{i%256}.255@tcp }}", "]",
                 f"nodemap.{name}.squash_gid=65534", f"nodemap.{name}.squash_uid=65534",
                 f"nodemap.{name}.trusted_nodemap=1"]
        f.write("\n".join(block) + "\n")
        n += len(block)
        i += 1
PY
"$BIN" bench parse --kind quota "$work/quota.txt" || echo "quota parse bench failed"
"$BIN" bench parse --kind nodemap "$work/nodemap.txt" || echo "nodemap parse bench failed"
