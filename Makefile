# Two commands matter: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
export CARGO_TERM_COLOR ?= never

.PHONY: deps build release demo demo-cluster test test-rust test-web test-adaptive lint fmt bench clean

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace

release: deps
	$(CARGO) build --release -p sfu -p scheduler

demo: release
	./scripts/demo.sh

# The same lesson across three SFU nodes (redis-server directory, QUIC relays): see README.md.
demo-cluster: release
	./scripts/demo-cluster.sh

WEB_ENV = SFU_BIN=$(TARGET_DIR)/debug/sfu AGENT_BIN=$(TARGET_DIR)/debug/classroom-agent LINK_RELAY_BIN=$(TARGET_DIR)/debug/link-relay SCHEDULER_BIN=$(TARGET_DIR)/debug/scheduler

# `cargo test --workspace` also builds every binary into target/debug, with the features the
# tests resolve. A separate `cargo build -p ...` first would compile some 50 crates (tokio,
# hyper, sqlx, str0m...) a second time with other features: minutes of CI.
test: deps
	$(CARGO) test --workspace
	cd web && $(WEB_ENV) node --test --test-concurrency=1 tests/

test-rust:
	$(CARGO) test --workspace

test-web:
	$(CARGO) test --workspace --no-run
	cd web && $(WEB_ENV) node --test --test-concurrency=1 tests/

# Issue 3 acceptance alone (adaptive layers on emulated links; also part of `make test`).
test-adaptive:
	$(CARGO) test --workspace --no-run
	cd web && SFU_BIN=$(TARGET_DIR)/debug/sfu LINK_RELAY_BIN=$(TARGET_DIR)/debug/link-relay node --test tests/adaptive.test.mjs

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench -p sfu

clean:
	$(CARGO) clean
