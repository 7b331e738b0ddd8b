#!/usr/bin/env bash
# Runs the upstream CSI conformance suite (csi-sanity, kubernetes-csi/csi-test v5.4.0) against
# `lustrekit csi --mode all` on the `local` backend, on a fresh btrfs loop image (so project
# quotas are real qgroup limits).
#
# Needs root (loop devices, mounts), btrfs-progs and Go (for csi-sanity). Without root it says
# why and skips (exit 0). Exits non-zero when any spec fails or the driver does not stop
# cleanly on SIGTERM.
#
# Environment:
#   LUSTREKIT_BIN   a prebuilt lustrekit binary (default: build target/debug/lustrekit)
#   CSI_SANITY_ARGS extra arguments for csi-sanity (e.g. --ginkgo.focus=Node)
#   KEEP_WORKDIR=1  keep the work directory for inspection
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if [[ "$(id -u)" != 0 ]]; then
    echo "csi-sanity: SKIPPED: needs root for loop devices and bind mounts (run as root, e.g. sudo make test)"
    exit 0
fi
for tool in mkfs.btrfs btrfs losetup; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "csi-sanity: $tool is missing (install btrfs-progs: scripts/install-deps.sh)" >&2
        exit 1
    fi
done

sanity="$(scripts/install-csi-sanity.sh)"

# The driver: the real binary, `lustrekit csi`.
bin="${LUSTREKIT_BIN:-target/debug/lustrekit}"
[[ -n "${LUSTREKIT_BIN:-}" ]] || nice cargo build -q -p lustrekit
driver=("$bin" csi)

work="$(mktemp -d /tmp/lustrekit-csi-sanity.XXXXXX)"
driver_pid=""
cleanup() {
    set +e
    if [[ -n "$driver_pid" ]] && kill -0 "$driver_pid" 2>/dev/null; then
        kill -TERM "$driver_pid"; sleep 1; kill -KILL "$driver_pid" 2>/dev/null
    fi
    # Anything csi-sanity left mounted under the work directory, deepest first.
    awk -v w="$work" '$5 ~ "^"w {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
    if [[ "${KEEP_WORKDIR:-0}" != 1 ]]; then rm -rf "$work"; else echo "csi-sanity: kept $work" >&2; fi
}
trap cleanup EXIT

truncate -s 1G "$work/fs.img"
mkfs.btrfs -q "$work/fs.img"
mkdir -p "$work/fs"   # csi-sanity makes target/ and staging/ itself
mount -o loop "$work/fs.img" "$work/fs"
btrfs quota enable "$work/fs"

cat > "$work/lustrekit.toml" <<TOML
backend = "local"
fsname = "sanity"
share_prefix = "shares"
project_ids = "20000-29999"
trash_ttl_hours = 1

[local]
root = "$work/fs/root"
TOML

cat > "$work/params.yaml" <<YAML
reclaimPolicy: delete
inodeLimit: "100000"
YAML

socket="$work/csi.sock"
"${driver[@]}" --mode all --endpoint "unix://$socket" --node-id csi-sanity-node \
    --config "$work/lustrekit.toml" --metrics-address 127.0.0.1:0 \
    >"$work/driver.log" 2>&1 &
driver_pid=$!
for _ in $(seq 1 100); do
    [[ -S "$socket" ]] && break
    if ! kill -0 "$driver_pid" 2>/dev/null; then
        echo "csi-sanity: the driver exited before serving:" >&2
        cat "$work/driver.log" >&2
        exit 1
    fi
    sleep 0.2
done
if [[ ! -S "$socket" ]]; then
    echo "csi-sanity: no socket at $socket after 20 s" >&2
    cat "$work/driver.log" >&2
    exit 1
fi
mode="$(stat -c %a "$socket")"
if [[ "$mode" != 600 ]]; then
    echo "csi-sanity: socket mode is $mode, expected 600" >&2
    exit 1
fi

status=0
# Two passes against the same driver: directory volumes, then block volumes (an image file on
# a loop device at a target file). CSI_SANITY_ACCESS_TYPES picks them.
access_types="${CSI_SANITY_ACCESS_TYPES:-mount block}"
for access in $access_types; do
    echo "csi-sanity: pass with --csi.testvolumeaccesstype=$access"
    # shellcheck disable=SC2086
    "$sanity" \
        --csi.endpoint "$socket" \
        --csi.mountdir "$work/target" \
        --csi.stagingdir "$work/staging" \
        --csi.testvolumeparameters "$work/params.yaml" \
        --csi.testvolumesize 67108864 \
        --csi.testvolumeexpandsize 134217728 \
        --csi.testvolumeaccesstype "$access" \
        --ginkgo.no-color \
        ${CSI_SANITY_ARGS:-} >"$work/sanity-$access.log" 2>&1 || status=$?
    cat "$work/sanity-$access.log"
done

# A clean stop: SIGTERM, then exit 0 within 10 s and the socket gone.
kill -TERM "$driver_pid"
stopped=1
for _ in $(seq 1 50); do
    kill -0 "$driver_pid" 2>/dev/null || { stopped=0; break; }
    sleep 0.2
done
driver_status=0
if [[ $stopped == 0 ]]; then wait "$driver_pid" || driver_status=$?; else driver_status=124; fi
driver_pid=""
if [[ $driver_status != 0 ]]; then
    echo "csi-sanity: the driver did not stop cleanly on SIGTERM (status $driver_status)" >&2
    tail -20 "$work/driver.log" >&2
    status=1
fi
if [[ -e "$socket" ]]; then
    echo "csi-sanity: the driver left its socket behind" >&2
    status=1
fi
if grep -qiE 'secret-value|"secrets": *\{[^}]' "$work/driver.log"; then
    echo "csi-sanity: a secret reached the driver log" >&2
    status=1
fi

# Ginkgo's summary: "Ran N of M Specs ... X Passed | Y Failed | Z Pending | W Skipped"
# One line per pass, then the totals last (scripts/test.sh reads the last line).
total_passed=0 total_failed=0 total_skipped=0
for access in $access_types; do
    summary="$(grep -E '[0-9]+ Passed \| [0-9]+ Failed' "$work/sanity-$access.log" | tail -1 || true)"
    passed="$(grep -oE '[0-9]+ Passed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)"
    failed="$(grep -oE '[0-9]+ Failed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)"
    skipped="$(grep -oE '[0-9]+ Skipped' <<<"$summary" | grep -oE '[0-9]+' || echo 0)"
    echo "csi-sanity ($access pass): ${passed:-0} Passed / ${failed:-0} Failed / ${skipped:-0} Skipped"
    total_passed=$((total_passed + ${passed:-0}))
    total_failed=$((total_failed + ${failed:-0}))
    total_skipped=$((total_skipped + ${skipped:-0}))
done
echo "csi-sanity: $total_passed passed, $total_failed failed, $total_skipped skipped"
if [[ $status != 0 ]]; then
    echo "csi-sanity: FAILED (driver log: $work/driver.log)" >&2
    KEEP_WORKDIR="${KEEP_WORKDIR:-0}"
fi
exit "$status"
