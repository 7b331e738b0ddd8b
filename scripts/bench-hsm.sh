#!/usr/bin/env bash
# The HSM data mover against `rclone copy`, side by side in one run, on the same Azurite and
# Garage S3 servers:
#   - 1 file of 2 GiB (MB/s, and the peak RSS of each tool while it copies it);
#   - 10,000 files of 16 KiB (files/s);
# each as a ratio to rclone; plus the import rate (stubs/s) of 100,000 objects from the local
# store. Prints a Markdown report (also written to benches/hsm-latest.md).
#
#   scripts/bench-hsm.sh                 # everything
#   BENCH_BIG=512M BENCH_SMALL=2000 BENCH_IMPORT=10000 scripts/bench-hsm.sh   # quicker
#
# Needs: rclone (Debian), node (Azurite's SDK makes the account SAS rclone needs),
# /usr/bin/time; starts Azurite and Garage with scripts/start-*.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIG="${BENCH_BIG:-2G}"
SMALL="${BENCH_SMALL:-10000}"
IMPORT="${BENCH_IMPORT:-100000}"
JOBS="${BENCH_JOBS:-8}"
WORK="${BENCH_DIR:-/tmp/lustrekit-bench-hsm}"
OUT="$ROOT/benches/hsm-latest.md"
RUN="r$(date +%s)"

command -v rclone >/dev/null || { echo "rclone is missing: apt-get install rclone" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time is missing: apt-get install time" >&2; exit 1; }

echo "building lustrekit (release)" >&2
nice cargo build -q --release -p lustrekit --bin lustrekit
HSM=("$ROOT/target/release/lustrekit" hsm)

AZ_ENV=$(scripts/start-azurite.sh)
eval "export $AZ_ENV"
eval "$(scripts/start-s3.sh)"
CONTAINER="${LUSTREKIT_TEST_AZURE_CONTAINER:-lustrekit-test}"

# --- data ---------------------------------------------------------------------------------
rm -rf "$WORK"; mkdir -p "$WORK/ns/big" "$WORK/ns/small"
echo "making $BIG of data and $SMALL files of 16 KiB in $WORK" >&2
head -c "$BIG" /dev/urandom >"$WORK/ns/big/big.bin"
python3 - "$WORK/ns/small" "$SMALL" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = os.path.join(d, f"d{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:06d}"), "wb") as f:
        f.write(os.urandom(16384))
PY
BIG_BYTES=$(stat -c %s "$WORK/ns/big/big.bin")
sync

# --- rclone configuration (env only: no config file) ---------------------------------------
# Garage: rclone 1.60 fails when AWS_CA_BUNDLE is set, so it runs without it.
export RCLONE_CONFIG_GARAGE_TYPE=s3 RCLONE_CONFIG_GARAGE_PROVIDER=Other \
    RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID="$LUSTREKIT_TEST_S3_ACCESS_KEY" \
    RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY="$LUSTREKIT_TEST_S3_SECRET_KEY" \
    RCLONE_CONFIG_GARAGE_ENDPOINT="$LUSTREKIT_TEST_S3_ENDPOINT" \
    RCLONE_CONFIG_GARAGE_REGION=garage RCLONE_CONFIG_GARAGE_FORCE_PATH_STYLE=true
# Azurite: rclone 1.60 builds a wrong URL from use_emulator/endpoint; an account SAS URL works.
SAS=$(cd "${LUSTREKIT_CACHE:-$HOME/.cache/lustrekit}/azurite" && node -e '
const b = require("@azure/storage-blob");
const acct = "devstoreaccount1";
const key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const cred = new b.StorageSharedKeyCredential(acct, key);
const sas = b.generateAccountSASQueryParameters({
  expiresOn: new Date(Date.now() + 24 * 3600 * 1000),
  permissions: b.AccountSASPermissions.parse("rwdlacup"),
  services: "b", resourceTypes: "sco", protocol: b.SASProtocol.HttpsAndHttp,
}, cred).toString();
process.stdout.write(sas);')
export RCLONE_CONFIG_AZ_TYPE=azureblob \
    RCLONE_CONFIG_AZ_SAS_URL="http://127.0.0.1:10000/devstoreaccount1?$SAS"

S3_SPEC() { echo "s3://$LUSTREKIT_TEST_S3_BUCKET/$1?endpoint=$LUSTREKIT_TEST_S3_ENDPOINT&access_key_id=$LUSTREKIT_TEST_S3_ACCESS_KEY&secret_access_key=$LUSTREKIT_TEST_S3_SECRET_KEY&region=garage&virtual_hosted_style_request=false"; }
AZ_SPEC() { echo "az://$CONTAINER/$1?use_emulator=true"; }

now() { date +%s.%N; }
# timed LABEL CMD...: runs under /usr/bin/time -v; sets SECS and RSS_KB.
timed() {
    local label=$1; shift
    local t0 t1
    t0=$(now)
    if ! /usr/bin/time -v -o "$WORK/time.$label" "$@" >"$WORK/out.$label" 2>"$WORK/err.$label"; then
        echo "FAILED: $label: $*" >&2; tail -5 "$WORK/err.$label" >&2; SECS=nan; RSS_KB=0; return 0
    fi
    t1=$(now)
    SECS=$(echo "$t1 - $t0" | bc -l)
    RSS_KB=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$WORK/time.$label")
    echo "  $label: ${SECS}s, peak RSS ${RSS_KB} KiB" >&2
}
rate() { echo "scale=1; $1 / $2" | bc -l 2>/dev/null || echo nan; }
ratio() { echo "scale=2; $1 / $2" | bc -l 2>/dev/null || echo nan; }

declare -A R
for store in garage azurite; do
    echo "== $store" >&2
    if [[ $store == garage ]]; then
        RDST="garage:$LUSTREKIT_TEST_S3_BUCKET/bench-$RUN/rclone"
        SPEC=$(S3_SPEC "bench-$RUN/hsm")
        RCLONE=(env -u AWS_CA_BUNDLE rclone copy --transfers "$JOBS" --checkers "$JOBS"
                --s3-chunk-size 8M --s3-upload-concurrency 4 --s3-upload-cutoff 8M)
    else
        RDST="az:$CONTAINER/bench-$RUN/rclone"
        SPEC=$(AZ_SPEC "bench-$RUN/hsm")
        RCLONE=(rclone copy --transfers "$JOBS" --checkers "$JOBS"
                --azureblob-chunk-size 8M --azureblob-upload-concurrency 4)
    fi
    # The mover skips files it already archived: mark them dirty between stores.
    "${HSM[@]}" --no-progress --store "$SPEC" --root "$WORK/ns" dirty -r "$WORK/ns" >/dev/null 2>&1 || true

    timed "$store-rclone-big" "${RCLONE[@]}" "$WORK/ns/big" "$RDST/big"
    R[$store,rclone,big]=$SECS; R[$store,rclone,big,rss]=$RSS_KB
    timed "$store-hsm-big" "${HSM[@]}" --no-progress --store "$SPEC" --root "$WORK/ns" -j "$JOBS" \
        archive "$WORK/ns/big/big.bin"
    R[$store,hsm,big]=$SECS; R[$store,hsm,big,rss]=$RSS_KB

    timed "$store-rclone-small" "${RCLONE[@]}" "$WORK/ns/small" "$RDST/small"
    R[$store,rclone,small]=$SECS
    timed "$store-hsm-small" "${HSM[@]}" --no-progress --store "$SPEC" --root "$WORK/ns" -j "$JOBS" \
        archive -r "$WORK/ns/small"
    R[$store,hsm,small]=$SECS
done

# --- import: 100,000 objects from the local store ----------------------------------------
echo "== import of $IMPORT objects (local store)" >&2
IMP="$WORK/import"; rm -rf "$IMP"; mkdir -p "$IMP/store" "$IMP/ns"
python3 - "$IMP/store" "$IMPORT" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = os.path.join(d, "data", f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"obj{i:07d}"), "wb") as f:
        f.write(b"x" * 100)
PY
timed import "${HSM[@]}" --no-progress --json --store "file://$IMP/store" --root "$IMP/ns" \
    import "$IMP/ns/imported"
IMPORT_SECS=$SECS
IMPORTED=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["files"])' "$WORK/out.import" 2>/dev/null || echo 0)

# --- report --------------------------------------------------------------------------------
MB=$(echo "$BIG_BYTES / 1000000" | bc -l)
{
    echo "# HSM mover vs rclone copy ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, -j $JOBS)"
    echo
    echo "| store | workload | rclone | lustrekit hsm | ratio (hsm / rclone) |"
    echo "| --- | --- | --- | --- | --- |"
    for store in garage azurite; do
        rb=$(rate "$MB" "${R[$store,rclone,big]}"); hb=$(rate "$MB" "${R[$store,hsm,big]}")
        rs=$(rate "$SMALL" "${R[$store,rclone,small]}"); hs=$(rate "$SMALL" "${R[$store,hsm,small]}")
        echo "| $store | 1 × $BIG | $rb MB/s | $hb MB/s | $(ratio "$hb" "$rb") |"
        echo "| $store | $SMALL × 16 KiB | $rs files/s | $hs files/s | $(ratio "$hs" "$rs") |"
        echo "| $store | peak RSS, 1 × $BIG | $(( ${R[$store,rclone,big,rss]} / 1024 )) MiB | $(( ${R[$store,hsm,big,rss]} / 1024 )) MiB | $(ratio "${R[$store,hsm,big,rss]}" "${R[$store,rclone,big,rss]}") |"
    done
    echo
    echo "Import: $IMPORTED stubs in ${IMPORT_SECS}s = $(rate "$IMPORTED" "$IMPORT_SECS") stubs/s (local store, objects without metadata)."
} | tee "$OUT"
