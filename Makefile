# Common commands. Every target shares one Dagster instance: the repository's dagster.yaml.
export DAGSTER_HOME := $(CURDIR)
# One "planned" event per asset for a range run, not one per day and asset (see README).
export DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS ?= true
# A range run's per-day materializations of a step stored in one transaction per shard, not one
# per event (mlops_assets/event_log.py, configured in dagster.yaml).
export DAGSTER_EVENT_BATCH_SIZE ?= 1000
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
RUN := $(UV) run --frozen
# Before any Dagster command: create the instance's storage once (concurrent first runs would race)
# and fail the runs whose process was killed, freeing their pool slots (see mlops_assets/instance.py).
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

data:  ## ingest, validate and build features for every day of 2013, as one run
	$(INSTANCE)
	$(RUN) dagster asset materialize -m mlops_assets --select 'group:ingestion or group:validation or group:features' \
		--partition-range 2013-01-01...2013-12-31

dev:  ## the Dagster UI and daemon on http://127.0.0.1:3000
	$(INSTANCE)
	$(RUN) dagster dev -h 127.0.0.1 -p 3000

mlflow:  ## the MLflow UI on http://127.0.0.1:5000 (runs, trials, artifacts, registry)
	$(RUN) mlflow ui --backend-store-uri sqlite:///data/mlflow/mlflow.db --host 127.0.0.1 --port 5000

serve:  ## the champion over REST on http://127.0.0.1:5001 (MLflow starts uvicorn from PATH)
	PATH="$(CURDIR)/.venv/bin:$$PATH" MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/data/mlflow/mlflow.db \
		$(RUN) mlflow models serve -m models:/flights_model@champion --env-manager local -h 127.0.0.1 -p 5001

evidently:  ## the Evidently UI on http://127.0.0.1:8000 (daily drift snapshots)
	$(RUN) evidently ui --workspace data/evidently --host 127.0.0.1 --port 8000

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

clean:  ## remove generated state under data/ (keeps data/README.md)
	find data -mindepth 1 ! -name README.md -exec rm -rf {} +
