"""Shared fixtures: a small slice of the real flights data, resources on a temporary directory."""

import csv
import io
import itertools
import zipfile
from pathlib import Path

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import DatasetSource, DuckDBFrameIOManager

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


def make_resources_at(directory: str | Path, source_file: str | Path) -> dict:
    """Resources like the real ones, under `directory`, reading records from `source_file`."""
    database = str(Path(directory) / "warehouse.duckdb")
    return {
        "io_manager": DuckDBFrameIOManager(database=database, schema=dataset_spec.name),
        "warehouse": DuckDBResource(database=database),
        "source": DatasetSource(
            cache_dir=str(Path(directory) / "sources"), source_file=str(source_file)
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
    from mlops_assets.resources import MlflowTracking

    return MlflowTracking(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "mlartifacts"),
        model_name="test_model",
    )


@pytest.fixture
def lifecycle_resources(tmp_path: Path, sample_csv: Path, mlflow_resource) -> dict:
    """Every resource of the platform, on tmp_path, over the 14-day sample."""
    from mlops_assets.resources import ReportStore
    from mlops_assets.training import OBJECT_IO_MANAGER

    return {
        **make_resources_at(tmp_path, sample_csv),
        "mlflow": mlflow_resource,
        "reports": ReportStore(directory=str(tmp_path / "reports")),
        OBJECT_IO_MANAGER: dg.FilesystemIOManager(base_dir=str(tmp_path / "objects")),
    }
