# Common commands. Every target shares one Dagster instance: the repository's dagster.yaml.
export DAGSTER_HOME := $(CURDIR)
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
RUN := $(UV) run --frozen

.PHONY: setup run data dev test lint format bench clean

setup:  ## install uv if missing, then the locked environment into .venv
	@command -v uv >/dev/null 2>&1 || test -x "$(UV)" || python3 -m pip install --user --quiet uv
	$(UV) sync --frozen

run: setup data  ## set up, then run the pipeline on the embedded dataset

data:  ## ingest, validate and build features for every day of 2013, as one run
	$(RUN) dagster asset materialize -m mlops_assets --select 'group:ingestion or group:validation or group:features' \
		--partition-range 2013-01-01...2013-12-31

dev:  ## the Dagster UI and daemon on http://127.0.0.1:3000
	$(RUN) dagster dev -h 127.0.0.1 -p 3000

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
