#!/usr/bin/env bash
# Runs every check `make test` promises: format, lint, the Rust test suites (with the real
# servers they need started first), and the conformance suites.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# Real servers for the integration tests; each start script prints `export VAR=...` lines.
for starter in scripts/start-*.sh; do
  [ -x "$starter" ] || continue
  echo "starting: $starter"
  eval "$("$starter")"
done

cargo test --workspace -- --test-threads=2

for suite in scripts/suite-*.sh; do
  [ -x "$suite" ] || continue
  echo "suite: $suite"
  "$suite"
done
