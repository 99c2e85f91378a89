"""The distributed mode's warehouse, chosen by environment, stores what the DuckDB file stores:
the same asset code run on both gives the same tables, a rerun of a day replaces only it, and two
runs writing other days of one table at the same moment both land."""

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from mlops_assets import features, ingestion, validation
from mlops_assets.distributed import DeltaFrameIOManager, DeltaWarehouse
from mlops_assets.lib import delta
from mlops_assets.lib.storage import HISTORY_SUFFIX
from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import DatasetSource
from mlops_assets_tests.conftest import ROWS_PER_DAY, make_resources_at, range_tags

DATA_ASSETS = [ingestion.raw_records, validation.validate_records, features.features]


def duckdb_tables(path) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(path), read_only=True) as con:
        names = [
            name
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                [dataset_spec.name],
            ).fetchall()
            if not name.endswith(HISTORY_SUFFIX)
        ]
        return {n: con.execute(f'FROM "{dataset_spec.name}"."{n}"').fetchdf() for n in names}


def delta_tables(root) -> dict[str, pd.DataFrame]:
    with delta.session(str(root)) as con:
        return {
            name: con.execute(f'FROM "{schema}"."{name}"').fetchdf()
            for schema, name in delta.tables(str(root))
        }


def ordered(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The values as text in one row order (DuckDB keeps milliseconds, Delta microseconds)."""
    frame = frame[columns].copy()
    for column in frame.select_dtypes("datetime"):
        frame[column] = frame[column].astype("datetime64[us]")
    return frame.astype(str).sort_values(columns).reset_index(drop=True)


def test_the_data_assets_store_the_same_rows_in_delta_as_in_duckdb(
    tmp_path, sample_csv, instance, monkeypatch
):
    monkeypatch.setenv("MLOPS_WAREHOUSE_ROOT", str(tmp_path / "delta"))
    from mlops_assets.definitions import warehouse_resources

    chosen = warehouse_resources()
    assert isinstance(chosen["io_manager"], DeltaFrameIOManager)
    assert isinstance(chosen["warehouse"], DeltaWarehouse)
    # Delta in windows of one day (DayChunks), DuckDB in one window: the same rows.
    one_day = ROWS_PER_DAY + 5
    source = DatasetSource(
        cache_dir=str(tmp_path / "sources"), source_file=str(sample_csv), chunk_rows=one_day
    )
    io_manager = DeltaFrameIOManager(
        root=str(tmp_path / "delta"), schema=dataset_spec.name, chunk_rows=one_day
    )
    on_delta = {**chosen, "io_manager": io_manager, "source": source}
    on_duckdb = make_resources_at(tmp_path / "duckdb", sample_csv)
    for resources in (on_duckdb, on_delta):
        result = dg.materialize(
            DATA_ASSETS,
            tags=range_tags("2013-01-01", "2013-01-10"),
            resources=resources,
            instance=instance,
        )
        assert result.success
    # A rerun of one day replaces that day alone.
    rerun = dg.materialize(
        DATA_ASSETS, partition_key="2013-01-05", resources=on_delta, instance=instance
    )
    assert rerun.success
    metadata = rerun.asset_materializations_for_node("raw_records")[0].metadata
    assert metadata["rows_replaced"].value == 30

    expected = duckdb_tables(tmp_path / "duckdb" / "warehouse.duckdb")
    stored = delta_tables(tmp_path / "delta")
    assert {"raw_records", "validated_records", "features"} <= set(expected)
    assert set(stored) == set(expected)
    for name, frame in expected.items():
        assert list(stored[name].columns) == list(frame.columns), name
        columns = list(frame.columns)
        pd.testing.assert_frame_equal(ordered(stored[name], columns), ordered(frame, columns))


WRITE_DAY = """
import sys, time
from pathlib import Path
import dagster as dg
from mlops_assets.distributed import DeltaFrameIOManager, DeltaWarehouse
from mlops_assets.ingestion import raw_records
from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import DatasetSource
root, source, day, go = sys.argv[1:]
resources = {
    "io_manager": DeltaFrameIOManager(root=root, schema=dataset_spec.name),
    "warehouse": DeltaWarehouse(root=root),
    "source": DatasetSource(cache_dir=str(Path(root).parent / "sources"), source_file=source),
}
Path(f"{go}-{day}").touch()  # imported: ready
while not Path(go).exists():  # both runs start at the same moment
    time.sleep(0.005)
result = dg.materialize([raw_records], partition_key=day, resources=resources)
sys.exit(0 if result.success else 1)
"""


def test_two_runs_write_different_days_of_one_table_at_the_same_moment(tmp_path, sample_csv):
    """Two Dagster runs in two processes write two days of the same Delta table, released at
    once: both succeed and the table holds exactly the source's rows of both days."""
    root, go = tmp_path / "delta", tmp_path / "go"
    days = ["2013-01-04", "2013-01-05"]
    # Staged once beforehand, so that the runs race on the table, not on the staging.
    DatasetSource(cache_dir=str(tmp_path / "sources"), source_file=str(sample_csv)).dates(
        dataset_spec
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITE_DAY, str(root), str(sample_csv), day, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for day in days
    ]
    while not all(Path(f"{go}-{day}").exists() for day in days):
        assert all(p.poll() is None for p in processes), processes[0].communicate()[0][-3000:]
        time.sleep(0.05)
    go.touch()
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
    raw = delta_tables(root)["raw_records"]
    stored = raw.groupby(raw[dataset_spec.date.column].dt.date).size().to_dict()
    assert stored == {dt.date(2013, 1, 4): ROWS_PER_DAY, dt.date(2013, 1, 5): ROWS_PER_DAY}
