#!/usr/bin/env bash
# What the HSM data-safety work (pins, versions kept aside, beneath-the-root opens, fsync)
# costs: archive and restore throughput of the mover before and after, side by side with
# `rclone copy` up and down, on one store, in one run.
#
#   scripts/bench-hsm-safety.sh BEFORE_COMMIT            # e.g. 695cdda
#   BENCH_STORE=azurite BENCH_BIG=256M BENCH_SMALL=1000 scripts/bench-hsm-safety.sh 695cdda
#
# Both movers are `lustrekit hsm`, built in release mode from a detached worktree of
# BEFORE_COMMIT and from this checkout, sharing one target directory so the dependencies
# build once. HSM_BEFORE_BIN may name a binary built earlier from BEFORE_COMMIT: a
# `lustrekit`, or the `hsm-cli` example older trees had (the same flags without `hsm`).
# Prints a Markdown table (also benches/hsm-safety-latest.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BEFORE="${1:?usage: $0 BEFORE_COMMIT}"
STORE="${BENCH_STORE:-garage}"
BIG="${BENCH_BIG:-512M}"
SMALL="${BENCH_SMALL:-2000}"
JOBS="${BENCH_JOBS:-8}"
ROUNDS="${BENCH_ROUNDS:-3}"
WORK="${BENCH_DIR:-/tmp/lustrekit-bench-safety}"
TARGET="${BENCH_TARGET:-$ROOT/target/bench-safety}"
OUT="$ROOT/benches/hsm-safety-latest.md"
RUN="s$(date +%s)"

command -v rclone >/dev/null || { echo "rclone is missing: apt-get install rclone" >&2; exit 1; }

# --- the two movers ---------------------------------------------------------------------
mkdir -p "$TARGET"
if [[ -n "${HSM_BEFORE_BIN:-}" ]]; then
    cp "$HSM_BEFORE_BIN" "$TARGET/hsm-before"    # built earlier from $BEFORE
else
    OLD_TREE="$TARGET/src-before"
    if [[ ! -d "$OLD_TREE" ]]; then
        git worktree add --detach "$OLD_TREE" "$BEFORE" >&2
    else
        git -C "$OLD_TREE" checkout -q --detach "$BEFORE"
    fi
    echo "building lustrekit before ($BEFORE) (release)" >&2
    (cd "$OLD_TREE" && CARGO_TARGET_DIR="$TARGET" nice cargo build -q --release -p lustrekit --bin lustrekit)
    cp "$TARGET/release/lustrekit" "$TARGET/hsm-before"
fi
if [[ -n "${HSM_AFTER_BIN:-}" ]]; then
    cp "$HSM_AFTER_BIN" "$TARGET/hsm-after"    # built earlier
else
    echo "building lustrekit after (release)" >&2
    CARGO_TARGET_DIR="$TARGET" nice cargo build -q --release -p lustrekit --bin lustrekit
    cp "$TARGET/release/lustrekit" "$TARGET/hsm-after"
fi
# Each mover's subcommand: `hsm` for `lustrekit`, none for an `hsm-cli` example.
sub_of() { if "$TARGET/hsm-$1" hsm --help >/dev/null 2>&1; then echo hsm; fi; }
declare -A SUB=([before]="$(sub_of before)" [after]="$(sub_of after)")

# --- store ------------------------------------------------------------------------------
if [[ $STORE == garage ]]; then
    eval "$(scripts/start-s3.sh)"
    export RCLONE_CONFIG_R_TYPE=s3 RCLONE_CONFIG_R_PROVIDER=Other \
        RCLONE_CONFIG_R_ACCESS_KEY_ID="$LUSTREKIT_TEST_S3_ACCESS_KEY" \
        RCLONE_CONFIG_R_SECRET_ACCESS_KEY="$LUSTREKIT_TEST_S3_SECRET_KEY" \
        RCLONE_CONFIG_R_ENDPOINT="$LUSTREKIT_TEST_S3_ENDPOINT" \
        RCLONE_CONFIG_R_REGION=garage RCLONE_CONFIG_R_FORCE_PATH_STYLE=true
    RREMOTE="r:$LUSTREKIT_TEST_S3_BUCKET/bench-$RUN"
    spec() { echo "s3://$LUSTREKIT_TEST_S3_BUCKET/bench-$RUN/$1?endpoint=$LUSTREKIT_TEST_S3_ENDPOINT&access_key_id=$LUSTREKIT_TEST_S3_ACCESS_KEY&secret_access_key=$LUSTREKIT_TEST_S3_SECRET_KEY&region=garage&virtual_hosted_style_request=false"; }
    RCLONE=(env -u AWS_CA_BUNDLE rclone copy --transfers "$JOBS" --checkers "$JOBS"
            --s3-chunk-size 8M --s3-upload-concurrency 4 --s3-upload-cutoff 8M)
else
    eval "export $(scripts/start-azurite.sh)"
    CONTAINER="${LUSTREKIT_TEST_AZURE_CONTAINER:-lustrekit-test}"
    SAS=$(cd "${LUSTREKIT_CACHE:-$HOME/.cache/lustrekit}/azurite" && node -e '
const b = require("@azure/storage-blob");
const cred = new b.StorageSharedKeyCredential("devstoreaccount1",
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==");
process.stdout.write(b.generateAccountSASQueryParameters({
  expiresOn: new Date(Date.now() + 24 * 3600 * 1000),
  permissions: b.AccountSASPermissions.parse("rwdlacup"),
  services: "b", resourceTypes: "sco", protocol: b.SASProtocol.HttpsAndHttp,
}, cred).toString());')
    export RCLONE_CONFIG_R_TYPE=azureblob \
        RCLONE_CONFIG_R_SAS_URL="http://127.0.0.1:10000/devstoreaccount1?$SAS"
    RREMOTE="r:$CONTAINER/bench-$RUN"
    spec() { echo "az://$CONTAINER/bench-$RUN/$1?use_emulator=true"; }
    RCLONE=(rclone copy --transfers "$JOBS" --checkers "$JOBS"
            --azureblob-chunk-size 8M --azureblob-upload-concurrency 4)
fi

# --- data ---------------------------------------------------------------------------------
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
# One round: each tool archives (uploads) then restores (downloads) both workloads, into
# its own fresh namespace copy and prefix.
for round in $(seq "$ROUNDS"); do
    # Alternate the order, so neither mover always runs right after the other.
    order=(rclone before after); (( round % 2 == 0 )) && order=(after before rclone)
    for tool in "${order[@]}"; do
        for w in big small; do
            ns="$WORK/ns-$tool-$round"; rm -rf "$ns"; mkdir -p "$ns"; cp -a "$WORK/src/$w" "$ns/$w"
            sync
            if [[ $tool == rclone ]]; then
                up=$(secs "${RCLONE[@]}" "$ns/$w" "$RREMOTE/rclone-$round/$w")
                rm -rf "$ns/$w"; sync
                down=$(secs "${RCLONE[@]}" "$RREMOTE/rclone-$round/$w" "$ns/$w")
            else
                bin=("$TARGET/hsm-$tool" ${SUB[$tool]}); s=$(spec "$tool-$round")
                unguarded=(); [[ $tool == after ]] && unguarded=(--unguarded)
                up=$(secs "${bin[@]}" --no-progress --store "$s" --root "$ns" -j "$JOBS" archive -r "$ns/$w")
                "${bin[@]}" --no-progress --store "$s" --root "$ns" -j "$JOBS" release "${unguarded[@]}" -r "$ns/$w" >/dev/null
                sync
                down=$(secs "${bin[@]}" --no-progress --store "$s" --root "$ns" -j "$JOBS" restore -r "$ns/$w")
            fi
            T[$tool,$w,up]+="$up "; T[$tool,$w,down]+="$down "
            echo "  round $round $tool $w: up ${up}s down ${down}s" >&2
        done
        rm -rf "$WORK/ns-$tool-$round"
    done
done

rate() { echo "scale=1; $1 / $2" | bc -l 2>/dev/null || echo nan; }
ratio() { echo "scale=2; $1 / $2" | bc -l 2>/dev/null || echo nan; }
{
    echo "# HSM data safety: cost, before ($BEFORE) and after, vs rclone ($STORE, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, -j $JOBS, best of $ROUNDS)"
    echo
    echo "| workload | direction | rclone | before | after | after / before | after / rclone |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    for w in big small; do
        for d in up down; do
            r=$(best ${T[rclone,$w,$d]}); b=$(best ${T[before,$w,$d]}); a=$(best ${T[after,$w,$d]})
            if [[ $w == big ]]; then n=$BIG_MB; unit="MB/s"; label="1 × $BIG"; else n=$SMALL; unit="files/s"; label="$SMALL × 16 KiB"; fi
            dir=$([[ $d == up ]] && echo "archive" || echo "restore")
            echo "| $label | $dir | $(rate "$n" "$r") $unit | $(rate "$n" "$b") $unit | $(rate "$n" "$a") $unit | $(ratio "$b" "$a") | $(ratio "$r" "$a") |"
        done
    done
} | tee "$OUT"
