# Common commands. One Dagster instance per data directory: MLOPS_DATA_DIR (default data/) holds
# the warehouse, the MLflow store, the reports and, in dagster/, the Dagster instance (its runs,
# sensor cursors and materializations), so two datasets in two data directories never mix:
#   make run MLOPS_DATA_DIR=data-other MLOPS_DATASET_SPEC=path/to/other.yaml
override MLOPS_DATA_DIR := $(abspath $(or $(MLOPS_DATA_DIR),data))
export MLOPS_DATA_DIR
# Always the data directory's own instance, whatever the shell exports (its dagster.yaml is
# copied from the repository's by `python -m mlops_assets.instance`).
override DAGSTER_HOME := $(MLOPS_DATA_DIR)/dagster
export DAGSTER_HOME
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
RUN := $(UV) run --frozen
# Before any Dagster command: put dagster.yaml in DAGSTER_HOME, create the instance's storage once
# (concurrent first runs would race) and fail the runs whose process was killed, freeing their
# pool slots (see mlops_assets/instance.py).
INSTANCE := $(RUN) python -m mlops_assets.instance

.PHONY: setup run lifecycle data dev mlflow serve evidently test lint format bench clean \
	distributed-up distributed-down

setup:  ## install uv if missing, then the locked environment into .venv
	@command -v uv >/dev/null 2>&1 || test -x "$(UV)" || python3 -m pip install --user --quiet uv
	$(UV) sync --frozen

run: setup lifecycle  ## set up, then run the whole lifecycle on the embedded dataset

lifecycle:  ## data -> champion -> monitoring -> retraining -> challenger -> A/B -> promotion
	$(INSTANCE)
	$(RUN) python -m mlops_assets.lifecycle

# The dataset's first...last day, from its specification (2013-01-01...2013-12-31 for flights).
DATE_RANGE := $(RUN) python -c "from mlops_assets.lib.spec import load_spec; d = load_spec().date; print(f'{d.start}...{d.end}')"

data:  ## ingest, validate and build features for every day of the dataset, as one run
	$(INSTANCE)
	$(RUN) dagster asset materialize -m mlops_assets --select 'group:ingestion or group:validation or group:features' \
		--partition-range "$$($(DATE_RANGE))"

DEV_PORT ?= 3000
dev:  ## the Dagster UI and daemon on http://127.0.0.1:3000 (DEV_PORT)
	$(INSTANCE)
	$(RUN) dagster dev -h 127.0.0.1 -p $(DEV_PORT)

MLFLOW_PORT ?= 5000
mlflow:  ## the MLflow UI on http://127.0.0.1:5000 (MLFLOW_PORT): runs, trials, artifacts, registry
	$(RUN) mlflow ui --backend-store-uri sqlite:///$(MLOPS_DATA_DIR)/mlflow/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

# The registered model is "<spec name>_model": MODEL=other_model for another dataset.
MODEL ?= flights_model
serve:  ## the champion over REST on http://127.0.0.1:5001 (MLflow starts uvicorn from PATH)
	PATH="$(CURDIR)/.venv/bin:$$PATH" MLFLOW_TRACKING_URI=sqlite:///$(MLOPS_DATA_DIR)/mlflow/mlflow.db \
		$(RUN) mlflow models serve -m models:/$(MODEL)@champion --env-manager local -h 127.0.0.1 -p 5001

evidently:  ## the Evidently UI on http://127.0.0.1:8000 (daily drift snapshots)
	$(RUN) evidently ui --workspace $(MLOPS_DATA_DIR)/evidently --host 127.0.0.1 --port 8000

distributed-up: setup  ## PostgreSQL, Redis, MLflow server, Dagster and 2 Celery workers (README)
	deploy/distributed.sh up

distributed-down:  ## stop everything distributed-up started (its state stays in data/distributed)
	deploy/distributed.sh down

test: setup  ## the test suite
	$(RUN) pytest -q

lint:
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format:
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

bench:  ## benchmarks that print figures (see bench/README.md)
	$(RUN) python bench/run.py

clean:  ## remove generated state under the data directory (keeps data/README.md)
	[ ! -d "$(MLOPS_DATA_DIR)" ] || find "$(MLOPS_DATA_DIR)" -mindepth 1 ! -name README.md -exec rm -rf {} +
