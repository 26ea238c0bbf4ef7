# mailcore — `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mailcore-installed
ENGINE_SRC := Cargo.toml pyproject.toml $(shell find engine -name '*.rs' -o -name Cargo.toml 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: help setup demo test lint fmt bench openapi clean

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

test: setup lint ## lint, then the Rust and Python test suites
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

bench: setup ## the benchmark suite; figures go to benchmarks/RESULTS.md
	$(PY) -m benchmarks.api --write-results
	$(PY) -m benchmarks.engine --write-results
	$(PY) -m benchmarks.webhooks --write-results

openapi: setup ## regenerate api/openapi.json from the code
	$(VENV)/bin/mailcore openapi --output api/openapi.json

clean: ## remove the virtualenv and build output
	rm -rf $(VENV) target demo-out
