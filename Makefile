# Two commands matter: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
export CARGO_TERM_COLOR ?= never

.PHONY: deps build release demo test test-rust test-web lint fmt bench clean

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace

release: deps
	$(CARGO) build --release -p sfu

demo: release
	./scripts/demo.sh

test: deps
	$(CARGO) build -p sfu -p loadtest
	$(CARGO) test --workspace
	cd web && SFU_BIN=$(TARGET_DIR)/debug/sfu LINK_RELAY_BIN=$(TARGET_DIR)/debug/link-relay node --test tests/

test-rust:
	$(CARGO) test --workspace

test-web:
	$(CARGO) build -p sfu -p loadtest
	cd web && SFU_BIN=$(TARGET_DIR)/debug/sfu LINK_RELAY_BIN=$(TARGET_DIR)/debug/link-relay node --test tests/

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench -p sfu

clean:
	$(CARGO) clean
