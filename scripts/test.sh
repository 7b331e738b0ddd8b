#!/usr/bin/env bash
# Runs every check `make test` promises: format, lint, the Rust test suites (with the real
# servers they need started first), and the conformance suites.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# Real servers for the integration tests; each start script prints VAR=value lines, which
# are exported for the test processes. A server that cannot start is reported, and the tests
# that need it skip with that reason (they never pass without it).
for starter in scripts/start-*.sh; do
  [ -x "$starter" ] || continue
  echo "starting: $starter"
  if env_lines=$("$starter"); then
    set -a
    eval "$env_lines"
    set +a
  elif [ "${CI:-}" = true ]; then
    echo "ERROR: $starter failed; in CI every test server must run" >&2
    exit 1
  else
    echo "WARNING: $starter failed; the tests that need it will skip" >&2
  fi
done

cargo test --workspace -- --test-threads=2

# The Manila shim, against the real binary.
(cd contrib/manila && python3 -m pytest -q tests)

scripts/validate-chart.sh
# Conformance: the upstream csi-sanity against `lustrekit csi` on a btrfs loop image.
scripts/csi-sanity.sh
