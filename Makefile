# The two commands of the README:
#   make run    set up, then run the gateway in standalone mode on examples/policies
#   make test   set up, then run the whole suite (lint, types, unit, proxy, real API server, Claude Code)
# Everything is installed by these targets; slow builds are cached per machine under ~/.cache/spendgate/.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck setup control-plane claude-code postgres bench crds kind-up dashboard

run: setup
	./hack/quickstart.sh

test: setup control-plane claude-code postgres lint typecheck
	$(BIN)/pytest -ra

setup: $(STAMP)

# Reinstall only when the dependency list changes; the package itself is installed editable.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

control-plane:
	./hack/build-control-plane.sh
	./hack/third-party-crds.sh >/dev/null

claude-code:
	./hack/install-claude-code.sh

# The ledger store tests start their own throwaway PostgreSQL server from Debian's package.
postgres:
	./hack/install-postgres.sh

lint: setup
	$(BIN)/ruff check core operator proxy tests bench
	$(BIN)/spendgate crds check
	$(BIN)/hadolint Dockerfile

typecheck: setup
	$(BIN)/mypy -p spendgate -p spendgate.operator -p spendgate.proxy

crds: setup
	$(BIN)/spendgate crds generate

dashboard: setup
	$(BIN)/python hack/dashboard.py

bench: setup
	./bench/run.sh

kind-up: setup
	./hack/kind-up.sh
