# lustrekit: two commands on a fresh machine.
#   make demo   the whole share lifecycle on the embedded local backend
#   make test   installs what the tests need, then runs them all
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/debug/lustrekit

.PHONY: demo test deps build lint bench

build:
	$(CARGO) build -p lustrekit

deps:
	scripts/install-deps.sh

demo: build
	@if [ "$$(id -u)" = 0 ] && ! command -v mkfs.btrfs >/dev/null; then scripts/install-deps.sh --demo; fi
	$(BIN) demo

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: deps
	scripts/test.sh

bench: build
	scripts/bench-shares.sh
	benches/csi-bench.sh 256
	scripts/bench-hsm.sh
