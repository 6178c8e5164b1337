# qkv: `make demo` runs the main job, `make test` the test suite. Each target sets up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.qkv-installed
# The CPU build of torch lies on this machine's disk as torch==2.13.0; a GPU machine takes the default build.
TORCH_CPU ?= torch==2.13.0

.PHONY: setup demo test test-all bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then $(PY) -m pip install -q torch; \
	else $(PY) -m pip install -q "$(TORCH_CPU)"; fi
	$(PY) -m pip install -q -e '.[dev,serve]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/qkv demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks experiments

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
