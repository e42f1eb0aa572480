# The front door. Every target bootstraps .venv itself; nothing installed by hand is assumed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Pytest options for `make test`; override e.g. PYTEST_ARGS="-k recipes".
PYTEST_ARGS ?=

.PHONY: all sysdeps venv detect wheel test lint bench clean

all: wheel

sysdeps:
	@bash scripts/install-system-deps.sh

$(STAMP): build_tools/pyproject.toml requirements-dev.txt scripts/install-system-deps.sh
	@bash scripts/install-system-deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e build_tools -r requirements-dev.txt
	@touch $@

venv: $(STAMP)

detect: venv
	$(VENV)/bin/cpubuild detect

# Build the tuned wheel for this host, verify it in a fresh environment, run it on the default model.
wheel: venv
	@bash scripts/make-wheel.sh

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check build_tools engine tests benchmarks
	$(VENV)/bin/ruff format --check build_tools engine tests benchmarks

bench: venv
	@echo "benchmarks: see benchmarks/README.md"

clean:
	rm -rf build dist wheelhouse .cpubuild
