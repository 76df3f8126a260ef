# Two commands do everything on a fresh machine:
#   make repro   set up .venv, then `dvc repro` (the default Shapes profile)
#   make test    set up .venv (and Chromium), then every test: unit, a real `dvc repro` on smoke
#                params, and the real Prefect/MLflow servers with the MLflow UI in headless Chromium
#   make test-services  only the tests with the real servers and the browser
#   make serve   serve the Prefect deployments (ablation, sweep, reproduce), with a local server if none is set
#   make ui      the MLflow UI over the project's store on http://127.0.0.1:$(UI_PORT)
# Set-up is idempotent: it reinstalls only when pyproject.toml changed.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
export PATH := $(BIN):$(PATH)

.PHONY: setup browser repro test test-services serve ui clean-data

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

# Debian's Chromium and ChromeDriver for the browser test of the MLflow UI (tests/test_services.py)
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) || \
	  (echo "could not install chromium and chromium-driver (apt-get, as root); the browser test needs them" && false)

# The suite runs on every core (pytest-xdist): each end-to-end pipeline's tests keep to one
# worker, which builds the project they share once (tests/conftest.py, SHARED_WORKER).
# `TEST_WORKERS=0 make test` runs it in one process.
TEST_WORKERS ?= auto

test: setup browser
	pytest -n $(TEST_WORKERS)

# only the tests with real Prefect / MLflow servers and headless Chromium (make test runs them too)
test-services: setup browser
	pytest -m services

PREFECT_PORT ?= 4200
UI_PORT ?= 5000

serve: setup
	python -m flows.serve --port $(PREFECT_PORT)

# MLflow 3 opens on its GenAI views unless told otherwise: the printed link opens the model-training ones
ui: setup
	@echo "MLflow UI: http://127.0.0.1:$(UI_PORT)/#/experiments?workflowType=machine_learning"
	mlflow ui --host 127.0.0.1 --port $(UI_PORT) --backend-store-uri sqlite:///$(abspath mlflow.db) --workers 1

clean-data:
	rm -rf data/videos metrics .dvc/tmp/runs
