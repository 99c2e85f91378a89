"""Shared fixtures: a small slice of the real flights data, resources on a temporary directory,
and a monitored world (features of 2013-01-01..10, a champion and a challenger in MLflow)."""

import csv
import io
import itertools
import os
import shutil
import zipfile
from pathlib import Path

# The suite tests the embedded flights specification: a spec exported in the developer's shell
# would reshape every asset before the first test runs. (Tests of other specs pass them explicitly.)
os.environ.pop("MLOPS_DATASET_SPEC", None)

import dagster as dg
import duckdb
import pytest

from mlops_assets import features, ingestion, validation
from mlops_assets.lib import registry
from mlops_assets.partitions import daily_partitions, dataset_spec
from mlops_assets.resources import (
    OBJECT_IO_MANAGER,
    DatasetSource,
    DuckDBFrameIOManager,
    EvidentlyWorkspace,
    MlflowTracking,
    ReportStore,
    Warehouse,
)

ROWS_PER_DAY = 30
SAMPLE_DAYS = 14


@pytest.fixture(scope="session")
def flights_rows() -> list[dict[str, str]]:
    """The first ROWS_PER_DAY flights of each of the first SAMPLE_DAYS days of 2013, as text."""
    archive = dataset_spec.resolve(dataset_spec.source.path)
    with zipfile.ZipFile(archive) as zipped, zipped.open(zipped.namelist()[0]) as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw))
        rows = []
        for _, day in itertools.groupby(reader, key=lambda r: (r["month"], r["day"])):
            rows.extend(itertools.islice(day, ROWS_PER_DAY))
            if len(rows) >= ROWS_PER_DAY * SAMPLE_DAYS:
                return rows
    raise AssertionError("the embedded dataset has fewer days than expected")


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def sample_csv(tmp_path: Path, flights_rows) -> Path:
    return write_csv(tmp_path / "flights.csv", flights_rows)


def make_resources_at(
    directory: str | Path, source_file: str | Path, chunk_rows: int | None = None
) -> dict:
    """Resources like the real ones, under `directory`, reading records from `source_file`
    (ranges read and written `chunk_rows` rows at a time, whole days)."""
    database = str(Path(directory) / "warehouse.duckdb")
    return {
        "io_manager": DuckDBFrameIOManager(
            database=database, schema=dataset_spec.name, chunk_rows=chunk_rows
        ),
        "warehouse": Warehouse(database=database),
        "source": DatasetSource(
            cache_dir=str(Path(directory) / "sources"),
            source_file=str(source_file),
            chunk_rows=chunk_rows,
        ),
    }


@pytest.fixture
def make_resources(tmp_path: Path):
    return lambda source_file: make_resources_at(tmp_path, source_file)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def range_tags(start: str, end: str) -> dict[str, str]:
    """Run tags of a single-run backfill of the partitions start..end (inclusive)."""
    return {
        "dagster/asset_partition_range_start": start,
        "dagster/asset_partition_range_end": end,
    }


@pytest.fixture
def mlflow_resource(tmp_path: Path):
    return MlflowTracking(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "mlartifacts"),
        model_name="test_model",
    )


@pytest.fixture
def lifecycle_resources(tmp_path: Path, sample_csv: Path, mlflow_resource) -> dict:
    """Every resource of the platform, on tmp_path, over the 14-day sample."""
    return {
        **make_resources_at(tmp_path, sample_csv),
        "mlflow": mlflow_resource,
        "reports": ReportStore(directory=str(tmp_path / "reports")),
        OBJECT_IO_MANAGER: dg.FilesystemIOManager(base_dir=str(tmp_path / "objects")),
    }


MODEL = "flights_model"
# The same pipeline registered twice, with different operating points.
# Gates for test runs on a few sample days: far too few test days to judge a model, so these runs
# judge anyway (min_test_days=1) with margins no model misses; the gates' logic is tested in
# lib/test_decision.py on data large enough to mean something.
LENIENT_GATES = {
    "baseline_margin": -1.0,
    "champion_margin": -1.0,
    "rate_factor": 1000.0,
    "min_test_days": 1,
    "n_resamples": 100,
}
THRESHOLDS = {"1": 0.2, "2": 0.35}
# The features table as an upstream these runs read but never build (the world built it).
FEATURES_TABLE = dg.AssetSpec(
    "features",
    partitions_def=daily_partitions,
    metadata={"partition_expr": dataset_spec.date.column},
)


@pytest.fixture(scope="module")
def world(tmp_path_factory, flights_rows):
    """Features of Jan 1-10, a training set of Jan 1-7, and a small pipeline registered as
    version 1 (champion) and version 2 (challenger)."""
    import mlflow

    from mlops_assets.lib.evaluation import classification_metrics
    from mlops_assets.lib.modeling import build_pipeline, features_and_label, skops_trusted_types

    root = tmp_path_factory.mktemp("world")
    data = make_resources_at(root, write_csv(root / "flights.csv", flights_rows))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [ingestion.raw_records, validation.validate_records, features.features],
            tags=range_tags("2013-01-01", "2013-01-10"),
            resources=data,
            instance=instance,
        )
    assert result.success
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        con.execute(
            "CREATE TABLE flights.training_set AS SELECT *, 'train' AS split FROM flights.features "
            f"WHERE flight_date < '2013-01-08' AND {dataset_spec.target.name} IS NOT NULL"
        )
        train = con.execute("SELECT * FROM flights.training_set").df()

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = registry.client(uri)
    experiment = registry.ensure_experiment(client, "test", str(root / "artifacts"))
    pipeline = build_pipeline(
        "logistic_regression",
        {},
        dataset_spec.categorical_features,
        dataset_spec.numeric_features,
        seed=0,
    )
    x, y = features_and_label(
        train, dataset_spec.categorical_features, dataset_spec.numeric_features, "is_delayed"
    )
    pipeline.fit(x, y)
    # In-sample metrics stand in for the test metrics: optimistic by construction, so the unseen
    # days fall below them and the performance check has something to find.
    reference = classification_metrics(y, pipeline.predict_proba(x)[:, 1], THRESHOLDS["1"])
    with registry.scoped_tracking(uri), mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_metrics({f"test_{k}": v for k, v in reference.items()})
        logged = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            registered_model_name=MODEL,
            skops_trusted_types=skops_trusted_types("logistic_regression"),
            pip_requirements=["scikit-learn"],  # skips inferring them (a uv export, seconds)
        )
    client.set_registered_model_alias(MODEL, "champion", "1")
    with registry.scoped_tracking(uri):  # MLflow resolves a models:/ source on its global URI
        client.create_model_version(MODEL, logged.model_uri, run.info.run_id)
    client.set_registered_model_alias(MODEL, "challenger", "2")
    for version, threshold in THRESHOLDS.items():
        client.set_model_version_tag(MODEL, version, registry.THRESHOLD_TAG, str(threshold))
        # The training days (the drift reference), as the model asset registers them.
        client.set_model_version_tag(
            MODEL, version, registry.DATA_WINDOW_TAG, "2013-01-01..2013-01-07"
        )
    return {"root": root, "uri": uri, "reference": reference}


def make_env(world, directory: Path, instance) -> dict:
    """Resources on private copies of the world's warehouse and registry, and the instance.

    A test may promote, retag or rewrite freely: the next test starts from the world as built.
    (The model artifacts stay shared: nothing writes them.)
    """
    shutil.copy(world["root"] / "warehouse.duckdb", directory / "warehouse.duckdb")
    shutil.copy(world["root"] / "mlflow.db", directory / "mlflow.db")
    resources = make_resources_at(directory, directory / "unused.csv")
    resources |= {
        "mlflow": MlflowTracking(
            tracking_uri=f"sqlite:///{directory / 'mlflow.db'}",
            artifact_location=str(world["root"] / "artifacts"),
            experiment_name="test",
            model_name=MODEL,
        ),
        "reports": ReportStore(directory=str(directory / "reports")),
        "evidently": EvidentlyWorkspace(
            directory=str(directory / "evidently"), project_name="flights drift"
        ),
    }
    return {"resources": resources, "instance": instance, "dir": directory}
