"""Resources: where data comes from and where it goes. Paths default under $MLOPS_DATA_DIR."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster._core.storage.db_io_manager import DbTypeHandler
from dagster_duckdb import DuckDBIOManager, DuckDBResource
from pydantic import Field, PrivateAttr

from mlops_assets.lib.spec import DatasetSpec

if TYPE_CHECKING:
    import pandas as pd

DUCKDB_POOL = "duckdb"
"""Concurrency pool of every step that writes the DuckDB file (one writer at a time)."""
OBJECT_IO_MANAGER = "object_io_manager"
"""IO manager of small Python values (model references, results): pickled on the filesystem."""


def data_dir() -> Path:
    return Path(os.environ.get("MLOPS_DATA_DIR", "data"))


class DatasetSource(dg.ConfigurableResource):
    """The dataset's source files, staged once per content version as Parquet in `cache_dir`."""

    cache_dir: str = Field(description="Where staged Parquet copies of the sources are kept.")
    source_file: str | None = Field(
        default=None,
        description="Read the records from this file instead of the specification's source path "
        "(e.g. a new extract with the same columns).",
    )

    def _stage(self, spec: DatasetSpec, source, required: list[str], dated: bool) -> Path:
        from mlops_assets.lib.sources import stage_csv

        path = self.source_file if dated and self.source_file else spec.resolve(source.path)
        return stage_csv(
            Path(path),
            Path(self.cache_dir),
            required_columns=required,
            null_values=source.null_values,
            date_column=spec.date.column if dated else None,
            date_expression=spec.date.expression if dated else None,
        )

    def records(self, spec: DatasetSpec, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Source rows dated in [start, end), every column as text, plus the date column."""
        from mlops_assets.lib.sources import read_dates

        staged = self._stage(spec, spec.source, list(spec.columns), dated=True)
        return read_dates(staged, spec.date.column, start, end)

    def dates(self, spec: DatasetSpec) -> list[dt.date]:
        """The distinct dates the source holds (staging it first if its content changed)."""
        import duckdb

        staged = self._stage(spec, spec.source, list(spec.columns), dated=True)
        with duckdb.connect() as con:
            rows = con.execute(
                f"SELECT DISTINCT {spec.date.column} FROM read_parquet(?) ORDER BY 1", [str(staged)]
            ).fetchall()
        return [row[0] for row in rows]

    def lookup(self, spec: DatasetSpec, name: str) -> pd.DataFrame:
        """A lookup table's rows, every column as text."""
        from mlops_assets.lib.sources import read_all

        lookup = spec.lookups[name]
        return read_all(self._stage(spec, lookup, list(lookup.columns), dated=False))


class DuckDBFrameIOManager(DuckDBIOManager):
    """DataFrames in DuckDB tables `<schema>.<asset>`: dagster-duckdb-pandas, imported lazily.

    The same as `DuckDBPandasIOManager`, except that pandas is imported on first use rather than
    when the code location loads (it would nearly double the load time).
    """

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        from dagster_duckdb_pandas import DuckDBPandasTypeHandler

        return [DuckDBPandasTypeHandler()]

    @staticmethod
    def default_load_type() -> type:
        import pandas as pd

        return pd.DataFrame


def table_exists(con, table: str) -> bool:
    """Whether `schema.name` exists: the IO manager creates a table on its first non-empty write."""
    schema, _, name = table.rpartition(".")
    # fetchall, not fetchone: DuckDB refuses new work on a connection with rows left unread.
    rows = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchall()
    return bool(rows[0][0])


def ensure_table(warehouse: DuckDBResource, table: str, frame: pd.DataFrame) -> None:
    """Create `schema.name` with the frame's columns if it does not exist yet.

    The DuckDB IO manager writes nothing for an empty frame, not even the table: without this,
    a first run that met only empty days leaves nothing for SQL or downstream inputs to read.
    """
    schema = table.rpartition(".")[0]
    with warehouse.get_connection() as con:
        con.register("empty_frame", frame)
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM empty_frame LIMIT 0")


def stored_daily_counts(
    warehouse: DuckDBResource, table: str, date_column: str, start: dt.date, end: dt.date
) -> pd.Series:
    """Rows per day of `table` in [start, end) as stored; empty if the table does not exist yet."""
    import pandas as pd

    query = (
        f"SELECT CAST({date_column} AS DATE) AS day, count(*) AS n FROM {table} "
        f"WHERE {date_column} >= ? AND {date_column} < ? GROUP BY 1"
    )
    with warehouse.get_connection() as con:
        if not table_exists(con, table):
            return pd.Series(dtype="int64")
        rows = con.execute(query, [start, end]).fetchall()
    return pd.Series({pd.Timestamp(day): n for day, n in rows}, dtype="int64")


class MlflowTracking(dg.ConfigurableResource):
    """MLflow tracking and model registry, through one client bound to `tracking_uri`.

    `tracking_uri` defaults to a local SQLite store under $MLOPS_DATA_DIR/mlflow; set it (or
    MLFLOW_TRACKING_URI) to use a tracking server. Nothing process-wide is changed outside `run`.
    """

    tracking_uri: str = Field(description="MLflow tracking and registry URI.")
    artifact_location: str = Field(description="Where a new experiment stores its artifacts.")
    experiment_name: str = Field(default="mlops_assets", description="MLflow experiment.")
    model_name: str = Field(description="Registered model name.")
    ui_url: str = Field(
        default="http://127.0.0.1:5000",
        description="Base URL of the MLflow UI, for links in Dagster metadata.",
    )
    _client: Any = PrivateAttr(default=None)

    def client(self):
        """The MlflowClient of this store, with the experiment created on first use."""
        if self._client is None:
            from mlops_assets.lib import registry

            if self.tracking_uri.startswith("sqlite:///"):
                Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                    parents=True, exist_ok=True
                )
            mlflow_client = registry.client(self.tracking_uri)
            registry.ensure_experiment(mlflow_client, self.experiment_name, self.artifact_location)
            self._client = mlflow_client
        return self._client

    def serving_models(self):
        """The champion, and the challenger when it is another version."""
        from mlops_assets.lib import registry

        return registry.serving_models(self.client(), self.model_name)

    def load_pipeline(self, ref):
        from mlops_assets.lib import registry

        return registry.load_pipeline(ref, self.tracking_uri)

    @contextmanager
    def run(self, context: dg.AssetExecutionContext, tags: dict[str, str] | None = None):
        """The MLflow run of this Dagster run, active inside the block; ended when it exits.

        dagster-mlflow finds the MLflow run tagged with this Dagster run's id (or starts it), so
        every step of one Dagster run logs to one MLflow run. Its resource would leave that run
        active and RUNNING in the process, and the tracking URI set process-wide; here each step
        ends the run, FINISHED or FAILED, the next step of the same Dagster run reopens it, and
        MLflow's global settings are restored afterwards.
        """
        import mlflow
        from dagster_mlflow.resources import MlFlow

        from mlops_assets.lib.registry import scoped_tracking

        self.client()
        with scoped_tracking(self.tracking_uri):
            stale = mlflow.active_run()
            if stale is not None and stale.data.tags.get("dagster_run_id") != context.run_id:
                mlflow.end_run("KILLED")  # left behind by another Dagster run in this process
            init_context = dg.InitResourceContext(
                resource_config={
                    "experiment_name": self.experiment_name,
                    "mlflow_tracking_uri": self.tracking_uri,
                    "extra_tags": tags or {},
                },
                resources=context.resources,
                resource_def=None,
                all_resource_defs={},
                instance=context.instance,
                dagster_run=context.run,
                log_manager=context.log,
            )
            MlFlow(init_context)
            run = mlflow.active_run()
            try:
                yield run
            except BaseException:
                mlflow.end_run("FAILED")
                raise
            mlflow.end_run("FINISHED")

    def run_url(self, run_id: str) -> str:
        experiment = self.client().get_run(run_id).info.experiment_id
        return f"{self.ui_url}/#/experiments/{experiment}/runs/{run_id}"


class ReportStore(dg.ConfigurableResource):
    """Where reports (plots, HTML, JSON) are written: `directory`/<kind>/<name>."""

    directory: str = Field(description="Root directory of the reports.")

    def path(self, *parts: str) -> Path:
        """A file's absolute path under the store; its folder exists."""
        path = Path(self.directory).joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.resolve()

    def folder(self, *parts: str) -> Path:
        """A folder's absolute path under the store, created if new."""
        folder = Path(self.directory).joinpath(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder.resolve()


class EvidentlyWorkspace(dg.ConfigurableResource):
    """A local Evidently workspace holding each monitored day's drift snapshot.

    Browse it with `evidently ui --workspace <directory>`: the snapshots carry the partition's
    date as their timestamp, so the dashboard charts the monitored days, not the run times.
    """

    directory: str = Field(description="The workspace directory (created on first use).")
    project_name: str = Field(description="The Evidently project the daily snapshots go to.")
