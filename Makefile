# The README's commands. `make` alone lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)

export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__EXECUTOR ?= LocalExecutor
export AIRFLOW__CORE__UNIT_TEST_MODE := False
# astronomer-cosmos would report usage to a web service at every DAG run; the pipeline makes no outside calls
export AIRFLOW__COSMOS__ENABLE_TELEMETRY := False
export TF_CPP_MIN_LOG_LEVEL := 2
DATA ?= synthetic
# the synthetic log in .data/; a real sample (make run DATA=taobao) in a data folder of its own
export IEP_DATA_DIR ?= $(CURDIR)/.data$(if $(filter-out synthetic,$(DATA)),/$(DATA))

.PHONY: help install browser lock run update test test-fast test-e2e lint bench bench-large airflow mlflow serve dbt-docs compose-env stack stack-packages clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv from requirements.txt when it is missing or stale

lock: ## regenerate requirements.txt from requirements.in (network)
	rm -rf /tmp/iep-lock && $(PYTHON) -m venv /tmp/iep-lock
	/tmp/iep-lock/bin/pip install --quiet -r requirements.in
	{ echo "# Full lock of requirements.in (every package pinned). Regenerate with: make lock"; \
	  echo "# Python 3.11, Linux x86_64."; /tmp/iep-lock/bin/pip freeze --all | grep -v "^pip=="; } > requirements.txt

run: install ## run the whole pipeline through the Airflow DAGs on synthetic data (DATA=taobao: the real sample)
	$(BIN)/python scripts/pipeline.py --data $(DATA)

update: install ## run the periodic update DAG once (after make run)
	$(BIN)/python scripts/pipeline.py --dags update_interest_model

browser: ## Debian's Chromium for the browser tests (idempotent; root or sudo)
	bash scripts/install_browser.sh

stack-packages: ## Debian's PostgreSQL and Redis for make stack and tests/stack (idempotent; root or sudo)
	bash devstack/install_stack.sh

test: install browser stack-packages lint ## set up and run every test (lint, unit, dbt, Airflow dag.test, end to end)
	$(BIN)/python -m pytest

test-fast: install ## the tests that need no engine start-up (no slow/e2e markers)
	$(BIN)/python -m pytest -m "not slow and not e2e"

test-e2e: install browser ## the browser tests against the real Airflow and MLflow servers
	$(BIN)/python -m pytest -m e2e

lint: install ## ruff, the import contract (import-linter) and sqlfluff on the dbt SQL
	$(BIN)/ruff check ml_tasks dags tests bench scripts devstack
	$(BIN)/lint-imports
	cd dbt_project && ../$(BIN)/sqlfluff lint models --processes 1

bench: install ## benchmarks against pandas and Polars (1M and 10M events, median of 3) and the model; JSON in bench/results/
	$(BIN)/python bench/bench_warehouse.py --orchestration
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_model.py

bench-large: install ## the warehouse at 50M events under a 12 GB DuckDB memory limit (not in CI; long)
	$(BIN)/python bench/bench_warehouse.py --sizes 10000000 50000000 --repeats 1 --memory-limit 12GB --no-peers --out bench/results/warehouse_large.json

airflow: install ## the Airflow UI on http://127.0.0.1:8080 (Ctrl-C stops it)
	$(BIN)/python -m devstack airflow

mlflow: install ## the MLflow UI on http://127.0.0.1:5000 over the pipeline's store
	$(BIN)/python -m devstack mlflow

serve: install ## serve user_interest_model@champion on http://127.0.0.1:5001/invocations (mlflow models serve)
	$(BIN)/python -m devstack model

dbt-docs: install ## generate and serve the dbt docs on http://127.0.0.1:8081
	$(BIN)/dbt docs generate --project-dir dbt_project --profiles-dir dbt_project
	$(BIN)/dbt docs serve --project-dir dbt_project --profiles-dir dbt_project --host 127.0.0.1 --port 8081

stack: install stack-packages ## Airflow on 2 Celery workers + PostgreSQL + Redis + MLflow (basic auth), in .stack/ (Ctrl-C stops it)
	$(BIN)/python -m devstack stack

compose-env: ## write .env for docker compose with generated secrets (never committed)
	python3 -m devstack compose-env

clean: ## remove generated state (.data, .airflow); keeps .venv
	rm -rf .data .airflow dbt_project/target dbt_project/logs
