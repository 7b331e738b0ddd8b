#!/usr/bin/env bash
# Build (once) the Python virtualenv the encryption tests' KMIP server runs from: PyKMIP from
# PyPI. Cached and idempotent: a complete venv of the same requirements is reused; a
# half-built one (no stamp) is rebuilt.
#
# Usage: scripts/install-kmip.sh
#   The venv is ${LUSTREKIT_CACHE:-$HOME/.cache/lustrekit}/kmip-venv (or $KMIP_VENV).
# Prints the venv's pykmip-server on stdout; progress goes to stderr.
set -euo pipefail

cache="${LUSTREKIT_CACHE:-$HOME/.cache/lustrekit}"
venv="${KMIP_VENV:-$cache/kmip-venv}"
python="${PYTHON:-python3}"

# What the venv holds. Changing this list rebuilds the venv.
requirements=("pykmip==0.11.0")
stamp_text="$(printf '%s\n' "${requirements[@]}")"
stamp="$venv/.lustrekit-kmip.stamp"

ready() {
    [[ -x "$venv/bin/pykmip-server" && -f "$stamp" && "$(cat "$stamp")" == "$stamp_text" ]] &&
        "$venv/bin/python" -c 'import kmip.services.server' >/dev/null 2>&1
}

if ready; then
    echo "$venv/bin/pykmip-server"
    exit 0
fi
mkdir -p "$cache"
# One builder at a time; a second caller waits (bounded) and then finds the venv ready.
exec 9>"$cache/.kmip-venv.lock"
if ! flock -w 600 9; then
    echo "install-kmip: timed out waiting for another build of $venv" >&2
    exit 1
fi
if ready; then
    echo "$venv/bin/pykmip-server"
    exit 0
fi
echo "install-kmip: building $venv (${requirements[*]})" >&2
rm -rf "$venv"
"$python" -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}" >&2
"$venv/bin/python" -c 'import kmip.services.server' >&2
# The stamp goes last: without it the venv counts as half-built and is rebuilt next time.
printf '%s\n' "${requirements[@]}" >"$stamp.tmp"
mv -f "$stamp.tmp" "$stamp"
echo "$venv/bin/pykmip-server"
