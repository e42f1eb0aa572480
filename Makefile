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
	$(PY) -m pip install -q --disable-pip-version-check -e "build_tools[build]" -r requirements-dev.txt
	@touch $@

venv: $(STAMP)

detect: venv
	$(VENV)/bin/cpubuild detect

# Build the tuned wheel for this host, verify it in a fresh environment, run it on the default model.
wheel: venv
	@bash scripts/make-wheel.sh

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff for the Python, clang-format (pinned in requirements-dev.txt, style in .clang-format) for csrc/.
lint: venv
	$(VENV)/bin/ruff check build_tools engine tests benchmarks
	$(VENV)/bin/ruff format --check build_tools engine tests benchmarks
	git ls-files 'csrc/*.cc' 'csrc/*.h' | xargs $(VENV)/bin/clang-format --dry-run --Werror

# llama.cpp for `make bench`, in its own environment (never a test dependency). pip builds it from
# source, tuned for this host: several minutes the first time, cached by pip afterwards.
BENCH_VENV := .bench-venv
LLAMA_CPP_PYTHON ?= llama-cpp-python==0.3.36
# Options for the engine benchmark, e.g. BENCH_ARGS="--threads 2 --reps 9".
BENCH_ARGS ?=

$(BENCH_VENV)/.installed:
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	@echo "installing $(LLAMA_CPP_PYTHON) into $(BENCH_VENV) (built from source: minutes the first time)"
	$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check "$(LLAMA_CPP_PYTHON)"
	@touch $@

# cpullm vs llama.cpp on the default model, interleaved (benchmarks/README.md); table on stdout.
bench: venv $(BENCH_VENV)/.installed
	@mkdir -p build/bench
	$(PY) benchmarks/engine_vs_llamacpp.py --llama-python $(BENCH_VENV)/bin/python \
		--json build/bench/engine_vs_llamacpp.json $(BENCH_ARGS)

clean:
	rm -rf build dist wheelhouse .cpubuild
