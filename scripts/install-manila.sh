#!/usr/bin/env bash
# Build (once) the Python virtualenv the Manila driver's tests run in: OpenStack Manila 23.0.1
# from PyPI, with its test harness's dependencies and pytest. Cached and idempotent: a
# complete venv of the same requirements is reused; a half-built one (no stamp) is rebuilt.
#
# Usage: scripts/install-manila.sh
#   The venv is ${LUSTREKIT_CACHE:-$HOME/.cache/lustrekit}/manila-venv (or $MANILA_VENV).
# Prints the venv's python on stdout; progress goes to stderr.
set -euo pipefail

cache="${LUSTREKIT_CACHE:-$HOME/.cache/lustrekit}"
venv="${MANILA_VENV:-$cache/manila-venv}"
python="${PYTHON:-python3}"

# What the venv holds. Changing this list rebuilds the venv.
requirements=(
    "manila==23.0.1"
    # manila.test.TestCase's own imports (Manila's test-requirements, not its runtime ones)
    "fixtures>=3.0.0"
    "oslotest>=4.5.0"
    "ddt>=1.4.1"
    "pytest>=8"
)
stamp_text="$(printf '%s\n' "${requirements[@]}")"
stamp="$venv/.lustrekit-manila.stamp"

ready() {
    [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$stamp_text" ]] &&
        "$venv/bin/python" -c 'import manila.share.driver, manila.test, pytest' >/dev/null 2>&1
}

if ready; then
    echo "$venv/bin/python"
    exit 0
fi

if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
    echo "install-manila: $python is missing or older than 3.10 (manila 23 needs >= 3.10)" >&2
    exit 1
fi

mkdir -p "$cache"
# One builder at a time; a second caller waits (bounded) and then finds the venv ready.
exec 9>"$cache/.manila-venv.lock"
if ! flock -w 1800 9; then
    echo "install-manila: timed out waiting for another build of $venv" >&2
    exit 1
fi
if ready; then
    echo "$venv/bin/python"
    exit 0
fi

echo "install-manila: building $venv (manila 23.0.1 + test harness + pytest)" >&2
rm -rf "$venv"
"$python" -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}" >&2
"$venv/bin/python" -c 'import manila.share.driver, manila.test, pytest' >&2
# The stamp goes last: without it the venv counts as half-built and is rebuilt next time.
printf '%s\n' "${requirements[@]}" >"$stamp.tmp"
mv -f "$stamp.tmp" "$stamp"
echo "$venv/bin/python"
