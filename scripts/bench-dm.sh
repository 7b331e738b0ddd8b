#!/usr/bin/env bash
# DataMovement copy throughput: `lustrekit operator copy` (what a copy Job runs, and the
# in-process runner's code) out to a store and back in, side by side with `rclone copy` up and
# down, on one store (Azurite), in one run, rounds alternating the order.
#
#   scripts/bench-dm.sh                                  # 256M big file, 1000 small, 3 rounds
#   BENCH_BIG=512M BENCH_SMALL=2000 BENCH_ROUNDS=5 scripts/bench-dm.sh
#
# Prints a Markdown table (also benches/dm-latest.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIG="${BENCH_BIG:-256M}"
SMALL="${BENCH_SMALL:-1000}"
JOBS="${BENCH_JOBS:-8}"
ROUNDS="${BENCH_ROUNDS:-3}"
WORK="${BENCH_DIR:-/tmp/lustrekit-bench-dm}"
TARGET="${BENCH_TARGET:-$ROOT/target/bench}"
OUT="$ROOT/benches/dm-latest.md"
RUN="d$(date +%s)"

command -v rclone >/dev/null || { echo "rclone is missing: apt-get install rclone" >&2; exit 1; }
if [[ -n "${LUSTREKIT_BIN:-}" ]]; then
    BIN="$LUSTREKIT_BIN"
else
    echo "building lustrekit (release)" >&2
    CARGO_TARGET_DIR="$TARGET" nice cargo build -q --release -p lustrekit --bin lustrekit
    BIN="$TARGET/release/lustrekit"
fi

eval "export $(scripts/start-azurite.sh)"
CONTAINER="${LUSTREKIT_TEST_AZURE_CONTAINER:-lustrekit-test}"
KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SAS=$(cd "${LUSTREKIT_CACHE:-$HOME/.cache/lustrekit}/azurite" && KEY="$KEY" node -e '
const b = require("@azure/storage-blob");
const cred = new b.StorageSharedKeyCredential("devstoreaccount1", process.env.KEY);
process.stdout.write(b.generateAccountSASQueryParameters({
  expiresOn: new Date(Date.now() + 24 * 3600 * 1000),
  permissions: b.AccountSASPermissions.parse("rwdlacup"),
  services: "b", resourceTypes: "sco", protocol: b.SASProtocol.HttpsAndHttp,
}, cred).toString());')
export RCLONE_CONFIG_R_TYPE=azureblob \
    RCLONE_CONFIG_R_SAS_URL="http://127.0.0.1:10000/devstoreaccount1?$SAS"
RCLONE=(rclone copy --transfers "$JOBS" --checkers "$JOBS"
        --azureblob-chunk-size 8M --azureblob-upload-concurrency 4)
# The copy takes the account through the Secret's way: LUSTREKIT_STORE_<key> variables.
export LUSTREKIT_STORE_azure_storage_account_name=devstoreaccount1 \
    LUSTREKIT_STORE_azure_storage_account_key="$KEY"
url() { echo "az://$CONTAINER/bench-$RUN/$1?use_emulator=true"; }

rm -rf "$WORK"; mkdir -p "$WORK/src/big" "$WORK/src/small"
head -c "$BIG" /dev/urandom >"$WORK/src/big/big.bin"
python3 - "$WORK/src/small" "$SMALL" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = os.path.join(d, f"d{i // 500:03d}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:06d}"), "wb") as f:
        f.write(os.urandom(16384))
PY
BIG_MB=$(( $(stat -c %s "$WORK/src/big/big.bin") / 1000000 ))
sync

now() { date +%s.%N; }
secs() { local t0; t0=$(now); "$@" >/dev/null 2>"$WORK/err" || { echo "FAILED: $*" >&2; tail -3 "$WORK/err" >&2; echo nan; return; }; echo "$(now) - $t0" | bc -l; }
best() { printf '%s\n' "$@" | sort -g | head -1; }

declare -A T
for round in $(seq "$ROUNDS"); do
    order=(rclone lustrekit); (( round % 2 == 0 )) && order=(lustrekit rclone)
    for tool in "${order[@]}"; do
        for w in big small; do
            back="$WORK/back-$tool-$round"; rm -rf "$back"; mkdir -p "$back"
            if [[ $tool == rclone ]]; then
                up=$(secs "${RCLONE[@]}" "$WORK/src/$w" "r:$CONTAINER/bench-$RUN/rclone-$round/$w")
                down=$(secs "${RCLONE[@]}" "r:$CONTAINER/bench-$RUN/rclone-$round/$w" "$back/$w")
            else
                u=$(url "lk-$round/$w")
                up=$(secs "$BIN" operator copy --direction out --root "$WORK/src" --path "$w" --url "$u")
                down=$(secs "$BIN" operator copy --direction in --root "$back" --path "$w" --url "$u")
            fi
            diff -r "$WORK/src/$w" "$back/$w" >/dev/null || { echo "FAILED: $tool $w: the copy back differs" >&2; exit 1; }
            T[$tool,$w,up]+="$up "; T[$tool,$w,down]+="$down "
            echo "  round $round $tool $w: out ${up}s in ${down}s" >&2
            rm -rf "$back"
        done
    done
done

rate() { echo "scale=1; $1 / $2" | bc -l 2>/dev/null || echo nan; }
ratio() { echo "scale=2; $1 / $2" | bc -l 2>/dev/null || echo nan; }
mkdir -p "$(dirname "$OUT")"
{
    echo "# DataMovement copy vs rclone (Azurite, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $JOBS transfers, best of $ROUNDS)"
    echo
    echo "| workload | direction | rclone | lustrekit | lustrekit / rclone (throughput) |"
    echo "| --- | --- | --- | --- | --- |"
    for w in big small; do
        for d in up down; do
            r=$(best ${T[rclone,$w,$d]}); l=$(best ${T[lustrekit,$w,$d]})
            if [[ $w == big ]]; then n=$BIG_MB; unit="MB/s"; label="1 × $BIG"; else n=$SMALL; unit="files/s"; label="$SMALL × 16 KiB"; fi
            dir=$([[ $d == up ]] && echo "out" || echo "in")
            echo "| $label | $dir | $(rate "$n" "$r") $unit | $(rate "$n" "$l") $unit | $(ratio "$r" "$l") |"
        done
    done
} | tee "$OUT"
