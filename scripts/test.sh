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

log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT
# Tests that need root, a kernel feature or a server are #[ignore = "needs ..."]. As root
# (CI) they all run, and one that cannot have what it needs fails rather than pass. In CI the
# captured output of passing tests is shown too, so that a test still skipping by printing
# a reason and returning is caught below.
test_args=(--test-threads=2)
[ "$(id -u)" = 0 ] && test_args+=(--include-ignored)
[ "${CI:-}" = true ] && test_args+=(--show-output)
# A one-node Kubernetes cluster with the chart installed, for the cluster tests
# (crates/*/tests/cluster*.rs, #[ignore]d "needs a cluster"); it stays up for the next run.
# Without root it prints why it skips (in CI that fails).
export $(scripts/cluster-test.sh --up)
cargo test --workspace -- "${test_args[@]}" 2>&1 | tee "$log_dir/cargo.log"
if [ "${CI:-}" = true ]; then
  # No Rust test may skip in CI: nothing left ignored, and no "skipping: <reason>" line.
  ignored=$(sed -nE 's/^test result: .* ([0-9]+) ignored;.*/\1/p' "$log_dir/cargo.log" | awk '{n += $1} END {print n + 0}')
  skips=$(grep -ciE '^(skip|skipped|skipping)\b' "$log_dir/cargo.log" || true)
  if [ "$ignored" -gt 0 ] || [ "$skips" -gt 0 ]; then
    grep -iE '^(skip|skipped|skipping)\b' "$log_dir/cargo.log" >&2 || true
    echo "ERROR: in CI no Rust test may skip: $ignored ignored, $skips printed a skip (run as root, start the servers)" >&2
    exit 1
  fi
fi

# The Manila driver, inside Manila 23.0.1's own test harness, over the real binary.
cargo build -p lustrekit
manila_python=$(scripts/install-manila.sh)
export LUSTREKIT_BIN="$PWD/target/debug/lustrekit"
(cd contrib/manila && "$manila_python" -m pytest -q tests) 2>&1 | tee "$log_dir/pytest.log"

scripts/validate-chart.sh
# Conformance: the upstream csi-sanity against `lustrekit csi` on a btrfs loop image.
scripts/csi-sanity.sh 2>&1 | tee "$log_dir/sanity.log"

# One closing line for everything that ran (every step above already failed the run on error).
python3 - "$log_dir" <<'PY'
import re, sys
d = sys.argv[1]
passed = failed = skipped = 0
for line in open(f"{d}/cargo.log", errors="replace"):
    m = re.match(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", line)
    if m:
        passed += int(m[1]); failed += int(m[2]); skipped += int(m[3])
for name in ("pytest.log", "sanity.log"):
    text = open(f"{d}/{name}", errors="replace").read()
    for n, kind in re.findall(r"(\d+) (passed|failed|skipped)", text.splitlines()[-1] if text.strip() else ""):
        if kind == "passed": passed += int(n)
        elif kind == "failed": failed += int(n)
        else: skipped += int(n)
print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
PY
