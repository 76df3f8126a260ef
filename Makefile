# Two commands do everything on a fresh machine:
#   make repro   set up .venv, then `dvc repro` (the default Shapes profile)
#   make test    set up .venv, then the tests (unit + a real `dvc repro` on smoke params)
# Set-up is idempotent: it reinstalls only when pyproject.toml changed.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test clean-data

setup: $(STAMP)

# torch first and exactly: a CPU build lies on disk here, and a looser request lets pip
# pull a multi-GB CUDA build. llama-cpp-python compiles from source the first time.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	@touch $@

repro: setup
	dvc repro

test: setup
	pytest

clean-data:
	rm -rf data/videos metrics .dvc/tmp/runs
