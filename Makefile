# mailcore — `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mailcore-installed
ENGINE_SRC := Cargo.toml pyproject.toml $(shell find engine -path engine/fuzz -prune -o \( -name '*.rs' -o -name Cargo.toml \) -print 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: help setup demo test lint fmt bench openapi clean fuzz

help: ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

setup: $(STAMP) ## virtualenv, the Rust extension built (release) and installed with dev tools

$(STAMP): $(ENGINE_SRC)
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)"; exit 1; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup ## the main job: API on loopback, an account, contacts imported, a campaign and its cost
	$(VENV)/bin/mailcore demo

test: setup lint ## lint, then the Rust and Python test suites (Python: on SQLite and PostgreSQL)
	cargo test --quiet -p mailcore-engine
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup ## ruff, mypy --strict, rustfmt, clippy -D warnings, stubtest of _engine.pyi
	$(VENV)/bin/ruff check python tests benchmarks
	$(VENV)/bin/ruff format --check python tests benchmarks
	$(VENV)/bin/mypy
	cargo fmt --all --check
	cargo clippy --quiet --workspace --all-targets -- -D warnings
	$(PY) -m mypy.stubtest mailcore._engine

fmt: setup ## format Python and Rust
	$(VENV)/bin/ruff format python tests benchmarks
	$(VENV)/bin/ruff check --fix python tests benchmarks
	cargo fmt --all

bench: setup ## the benchmark suite (send needs Postfix's smtp-sink/smtp-source); figures go to benchmarks/RESULTS.md
	$(PY) -m benchmarks.api --write-results
	$(PY) -m benchmarks.engine --write-results
	$(PY) -m benchmarks.webhooks --write-results
	$(PY) -m benchmarks.send --profile --write-results
	$(PY) -m benchmarks.send --store postgres --senders 1,2,3 --write-results

openapi: setup ## regenerate api/openapi.json from the code
	$(VENV)/bin/mailcore openapi --output api/openapi.json

FUZZ_DIR := engine/fuzz
FUZZ_TARGETS := template_parser mime_writer tracking_links
FUZZ_TIME ?= 20
# cargo-fuzz passes -Z flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
FUZZ := RUSTC_BOOTSTRAP=1 cargo fuzz

fuzz: ## cargo-fuzz targets in engine/fuzz, 20 s each (FUZZ_TIME=); fails on a crash
	@command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz not found: cargo install cargo-fuzz --locked"; exit 1; }
	$(FUZZ) build --fuzz-dir $(FUZZ_DIR)
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/target/corpus/$$t; \
	  $(FUZZ) run --fuzz-dir $(FUZZ_DIR) $$t $(FUZZ_DIR)/target/corpus/$$t $(FUZZ_DIR)/corpus/$$t \
	    -- -max_total_time=$(FUZZ_TIME) -print_final_stats=1 || exit 1; \
	done

clean: ## remove the virtualenv and build output
	rm -rf $(VENV) target demo-out
