"""Resources: where data comes from and where it goes. Paths default under $MLOPS_DATA_DIR."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster._core.definitions.partitions.utils import TimeWindow
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler
from dagster_duckdb import DuckDBIOManager, DuckDBResource
from dagster_duckdb.io_manager import DuckDbClient
from pydantic import Field, PrivateAttr

from mlops_assets.lib.spec import DatasetSpec
from mlops_assets.lib.sql import fetch_frame

if TYPE_CHECKING:
    import pandas as pd

    from mlops_assets.lib.storage import WriteResult

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
    chunk_rows: int | None = Field(
        default=None,
        description="Rows per window of days read at a time (default lib.chunks.CHUNK_ROWS).",
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
        """Source rows of the partitions [start, end): the declared columns as text, the date,
        the derived key columns (typed as their SQL makes them) and `partition_date` (rows dated
        outside the declared range go to its nearest day)."""
        staged = self._stage(spec, spec.source, list(spec.columns), dated=True)
        return self._read(spec, staged, start, end)

    @staticmethod
    def _read(spec: DatasetSpec, staged: Path, start: dt.date, end: dt.date) -> pd.DataFrame:
        from mlops_assets.lib.sources import read_dates

        return read_dates(
            staged,
            spec.date.column,
            start,
            end,
            columns=list(spec.columns),
            bounds=(spec.date.start, spec.date.end),
            derived=spec.key_expressions,
        )

    def chunks(self, spec: DatasetSpec, start: dt.date, end: dt.date, max_rows: int | None = None):
        """`records` of [start, end) as `DayChunks` of whole days, read one window at a time."""
        from mlops_assets.lib.chunks import CHUNK_ROWS, DayChunks, chunk_windows
        from mlops_assets.lib.sources import partition_counts

        staged = self._stage(spec, spec.source, list(spec.columns), dated=True)
        bounds = (spec.date.start, spec.date.end)
        counts = partition_counts(staged, spec.date.column, start, end, bounds)
        windows = chunk_windows(counts, start, end, max_rows or self.chunk_rows or CHUNK_ROWS)
        # Staged once here: staging hashes the source file, which costs per call.
        return DayChunks(windows, lambda first, last: self._read(spec, staged, first, last))

    def extra_columns(self, spec: DatasetSpec) -> list[str]:
        """Columns of the source file that the specification does not declare (not read)."""
        from mlops_assets.lib.sources import staged_columns

        staged = self._stage(spec, spec.source, list(spec.columns), dated=True)
        known = {*spec.columns, spec.date.column}
        return [c for c in staged_columns(staged) if c not in known]

    def outside_range(self, spec: DatasetSpec) -> tuple[int, list[dt.date]]:
        """Rows of the source dated outside the declared range, and a few of their dates."""
        from mlops_assets.lib.sources import outside_range

        staged = self._stage(spec, spec.source, list(spec.columns), dated=True)
        return outside_range(staged, spec.date.column, spec.date.start, spec.date.end)

    def dates(self, spec: DatasetSpec) -> list[dt.date]:
        """The distinct dates the source holds (staging it first if its content changed)."""
        import duckdb

        from mlops_assets.lib.sql import ident

        staged = self._stage(spec, spec.source, list(spec.columns), dated=True)
        with duckdb.connect() as con:
            rows = con.execute(
                f"SELECT DISTINCT {ident(spec.date.column)} FROM read_parquet(?) ORDER BY 1",
                [str(staged)],
            ).fetchall()
        return [row[0] for row in rows]

    def lookup(self, spec: DatasetSpec, name: str) -> pd.DataFrame:
        """A lookup table's rows, every column as text."""
        from mlops_assets.lib.sources import read_all

        lookup = spec.lookups[name]
        return read_all(self._stage(spec, lookup, list(lookup.columns), dated=False))


class DuckDBFrameIOManager(DuckDBIOManager):
    """DataFrames in DuckDB tables `<schema>.<asset>`, built on dagster-duckdb-pandas.

    Each write replaces its partition (or the whole table) in one transaction, inserting by
    column name, and keeps the replaced rows in `<table>_history` for `history_retention_days`
    (see `lib/storage.py`; `python -m mlops_assets.restore` puts a day back). pandas is imported
    on first use rather than when the code location loads (it would nearly double the load time).
    """

    history_retention_days: int = Field(
        default=30,
        ge=0,
        description="Days the replaced content of a partition stays restorable (0: keep none).",
    )
    chunk_rows: int | None = Field(
        default=None,
        description="Rows per window of an input read as DayChunks "
        "(default lib.chunks.CHUNK_ROWS).",
    )

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [_ReplacingPandasHandler()]

    @staticmethod
    def default_load_type() -> type:
        import pandas as pd

        return pd.DataFrame

    def create_io_manager(self, context) -> DbIOManager:
        _sleep_while_waiting_for_a_pool()
        handler = _ReplacingPandasHandler(self.history_retention_days, self.chunk_rows)
        return RangeFactsOnceDbIOManager(
            db_client=_QuotingDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=[handler],
            default_load_type=self.default_load_type(),
            io_manager_name="DuckDBIOManager",
        )


# The IO manager's facts of a write: the table stays on every day, the others are the range's.
TABLE_NAME = "dagster/table_name"
RANGE_NAMES = {"dagster/row_count": "rows", "Query": "query"}


class RangeFactsOnceDbIOManager(DbIOManager):
    """`DbIOManager` that states the facts of a multi-day write once, not on every day.

    Dagster copies an output's metadata to the materialization of every partition it covers. A
    range run of 365 days stored the whole range's row count (shown as each day's "row count"),
    the rows it replaced and its SELECT 365 times per asset: wrong for a day in the UI, and most
    of each event's bytes. For a range those facts go, prefixed `range/`, on its last day's
    materialization (where `describe_once` puts the schema) and in the run log; every day keeps
    the table name and its own `dagster/partition_row_count`.
    """

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        super().handle_output(context, obj)
        days = context.asset_partition_keys if context.has_asset_partitions else []
        if len(days) < 2:
            return
        facts = dict(context.consume_logged_metadata())
        table = facts.pop(TABLE_NAME, None)
        if table is not None:
            context.add_output_metadata({TABLE_NAME: table})
        facts = {RANGE_NAMES.get(k, k): v for k, v in facts.items()}
        context.step_context.add_asset_metadata(
            {f"range/{k}": v for k, v in facts.items()},
            asset_key=context.asset_key,
            partition_key=days[-1],
        )
        if "rows" in facts:  # not when nothing was written (no columns and no table yet)
            context.log.info(
                f"{context.asset_key.to_user_string()}: {facts['rows'].value} rows written for "
                f"{len(days)} days ({days[0]}..{days[-1]}), {facts['rows_replaced'].value} "
                f"replaced, {facts['rows_archived'].value} archived"
            )


def _sleep_while_waiting_for_a_pool() -> None:
    """Make a step waiting for a `duckdb` pool slot sleep between claims instead of spinning.

    In Dagster 1.13 `InstanceConcurrencyContext.interval_to_next_pending_claim_check` returns
    `min(0, ...)`, never a positive time, so the executor polls the instance in a busy loop: a run
    queued behind another took a whole core and starved the run it waited for. This returns the
    time to the next scheduled claim instead (at most 15 s, Dagster's own back-off), and the
    executor sleeps, interruptibly, until then. Applied when the run sets up its IO manager.
    """
    import time

    from dagster._core.execution.plan.instance_concurrency_context import (
        InstanceConcurrencyContext,
    )

    def interval_to_next_pending_claim_check(self) -> float:
        if not self._pending_claims:
            return 0.0
        now = time.time()
        return max(0.0, min((t - now for t in self._pending_timeouts.values()), default=0.0))

    InstanceConcurrencyContext.interval_to_next_pending_claim_check = (
        interval_to_next_pending_claim_check
    )


class _QuotingDuckDbClient(DuckDbClient):
    """The library's client, with quoted names, no delete outside the write's transaction, and
    connections closed when a write raises (as `Warehouse` does)."""

    @staticmethod
    @contextmanager
    def connect(context, table_slice):
        # The library closes its connection only when the block succeeds: a refused write (a
        # schema change) kept the file open, and locked, in an in-process run.
        with DuckDbClient.connect(context, table_slice) as con:
            try:
                yield con
            finally:
                con.close()

    @staticmethod
    def delete_table_slice(context, table_slice, connection) -> None:
        """Nothing here: the type handler deletes and inserts in one transaction."""

    @staticmethod
    def ensure_schema_exists(context, table_slice, connection) -> None:
        from mlops_assets.lib.sql import ident

        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(table_slice.schema)}")

    @staticmethod
    def get_select_statement(table_slice) -> str:
        from mlops_assets.lib.sql import ident, literal, table

        columns = ", ".join(ident(c) for c in table_slice.columns or []) or "*"
        query = f"SELECT {columns} FROM {table(table_slice.schema, table_slice.table)}"
        conditions = []
        for dimension in table_slice.partition_dimensions or []:
            column = ident(dimension.partition_expr)
            window = dimension.partitions
            if isinstance(window, TimeWindow):
                start, end = (literal(t.strftime("%Y-%m-%d %H:%M:%S")) for t in window)
                conditions.append(f"{column} >= {start} AND {column} < {end}")
            else:
                values = ", ".join(literal(v) for v in window)
                conditions.append(f"{column} IN ({values})")
        return f"{query} WHERE {' AND '.join(conditions)}" if conditions else query


def _slice_of(table_slice):
    """The table slice as `lib.storage.Slice` (one time-window partition dimension at most)."""
    from mlops_assets.lib.storage import Slice

    dimensions = table_slice.partition_dimensions or []
    if not dimensions:
        return Slice(table_slice.schema, table_slice.table)
    if len(dimensions) > 1 or not isinstance(dimensions[0].partitions, TimeWindow):
        raise NotImplementedError("only one time-window partition dimension is supported")
    start, end = dimensions[0].partitions
    return Slice(
        table_slice.schema,
        table_slice.table,
        dimensions[0].partition_expr,
        start.replace(tzinfo=None),
        end.replace(tzinfo=None),
    )


class _ReplacingPandasHandler(DbTypeHandler):
    """dagster-duckdb-pandas' handler, writing through `lib.storage.replace_slice`.

    The library's handler deletes the partition outside any transaction, inserts by position
    (`SELECT *`) and skips the insert for an empty frame: a crash between the two, a column
    order that changed, or an empty delivery lost stored rows.

    Besides DataFrames it writes and reads `DayChunks` (`lib/chunks.py`): an output given as
    chunks is staged window by window, then replaces its slice in one transaction; an input
    annotated `DayChunks` is read window by window of at most `chunk_rows` rows, when iterated.
    """

    def __init__(self, retention_days: int = 30, chunk_rows: int | None = None):
        from mlops_assets.lib.chunks import CHUNK_ROWS

        self.retention_days = retention_days
        self.chunk_rows = chunk_rows or CHUNK_ROWS

    def stored_columns(self, connection, table_slice) -> list[str]:
        """The columns of the stored table; none if there is no table yet."""
        from mlops_assets.lib.storage import stored_types

        return list(stored_types(connection, table_slice.schema, table_slice.table) or {})

    def replace(
        self, context, connection, table_slice, frame: str, chunks=None
    ) -> tuple[WriteResult, dict]:
        """Replace the slice by the registered `frame` (or by `chunks`, staged as `frame`): the
        `WriteResult`, and more metadata."""
        from mlops_assets.lib.storage import replace_slice

        target = _slice_of(table_slice)
        result = replace_slice(
            connection,
            target,
            frame,
            run_id=context.run_id,
            retention_days=self.retention_days,
            chunks=chunks,
        )
        return result, {}

    def handle_output(self, context: dg.OutputContext, table_slice, obj, connection):
        from dagster._core.definitions.metadata import TableMetadataSet

        from mlops_assets.lib.chunks import DayChunks

        target = _slice_of(table_slice)
        if isinstance(obj, DayChunks):
            staged = f"_staged_{target.schema}_{target.name}"
            result, extra = self.replace(context, connection, table_slice, staged, chunks=obj)
            rows = result.inserted
        else:
            if len(obj.columns) == 0:
                # "Nothing for this partition" from an asset that has no columns to give (a
                # skipped day): the stored slice is emptied (and archived); no table is created.
                import pandas as pd

                stored = self.stored_columns(connection, table_slice)
                if not stored:
                    context.log.warning(f"{target.name}: no columns and no table yet; not written")
                    return {}
                obj = pd.DataFrame({c: pd.Series(dtype=object) for c in stored})
            connection.register("_new_rows", obj)
            try:
                result, extra = self.replace(context, connection, table_slice, "_new_rows")
            finally:
                connection.unregister("_new_rows")
            rows = len(obj)
        if result.added_columns:
            context.log.warning(f"{target.name}: new column(s) {result.added_columns} added")
        if result.missing_columns:
            context.log.warning(
                f"{target.name}: stored column(s) {result.missing_columns} are not in the new "
                "rows; they stay, NULL in the new rows"
            )
        if not rows and result.deleted:
            context.log.warning(f"{target.name}: {result.deleted} stored rows replaced by none")
        counts = (
            TableMetadataSet(partition_row_count=rows)
            if context.has_partition_key
            else TableMetadataSet(row_count=rows)
        )
        return {
            **counts,
            "rows_replaced": result.deleted,
            "rows_archived": result.archived,
            "added_columns": ", ".join(result.added_columns) or "none",
            **extra,
        }

    def load_input(self, context: dg.InputContext, table_slice, connection):
        import pandas as pd

        from mlops_assets.lib.chunks import DayChunks

        wants_chunks = context.dagster_type.typing_type is DayChunks
        if table_slice.partition_dimensions and not context.asset_partition_keys:
            return (
                DayChunks([], lambda first, last: pd.DataFrame())
                if wants_chunks
                else (pd.DataFrame())
            )
        if wants_chunks:
            return self.load_chunks(context, table_slice, connection)
        # The library's handler builds its SELECT with unquoted names; this one quotes them.
        return fetch_frame(connection, _QuotingDuckDbClient.get_select_statement(table_slice))

    def load_chunks(self, context: dg.InputContext, table_slice, connection):
        """The slice as `DayChunks`: windows from its rows per day, each read on its own
        connection when iterated (this one is closed once the input is loaded)."""
        import dataclasses
        import datetime as dt

        from mlops_assets.lib.chunks import DayChunks, chunk_windows

        target = _slice_of(table_slice)
        if target.column is None:
            raise NotImplementedError(f"{target.name}: DayChunks need a daily partitioned table")
        counts = self.daily_counts(connection, table_slice, target)
        windows = chunk_windows(counts, target.start.date(), target.end.date(), self.chunk_rows)

        def read(first: dt.date, last: dt.date):
            days = dataclasses.replace(
                target,
                start=dt.datetime.combine(first, dt.time()),
                end=dt.datetime.combine(last, dt.time()),
            )
            return self.read_window(context, table_slice, days)

        return DayChunks(windows, read)

    def daily_counts(self, connection, table_slice, target) -> dict:
        from mlops_assets.lib.storage import daily_counts

        if not self.stored_columns(connection, table_slice):
            return {}
        return daily_counts(connection, target.qualified, target.column, target.start, target.end)

    def read_window(self, context, table_slice, days):
        where, params = days.where()
        with _QuotingDuckDbClient.connect(context, table_slice) as con:
            return fetch_frame(con, f"SELECT * FROM {days.qualified} WHERE {where}", params)

    @property
    def supported_types(self):
        import pandas as pd

        from mlops_assets.lib.chunks import DayChunks

        return [pd.DataFrame, DayChunks]


class Warehouse(DuckDBResource):
    """The DuckDB warehouse. dagster-duckdb closes a connection only when the block succeeds; a
    block that raises in an in-process run would keep the file open (and its lock) for good."""

    @contextmanager
    def get_connection(self):
        with super().get_connection() as con:
            try:
                yield con
            finally:
                con.close()


def ensure_table(warehouse: DuckDBResource, table: str, frame: pd.DataFrame) -> None:
    """Create `schema.name` with the frame's columns if it does not exist yet.

    For tables written with SQL rather than through the IO manager (which creates a table even
    from an empty frame): a first run that met only empty days still leaves a table to read.
    """
    from mlops_assets.lib.sql import ident, qualified

    schema = table.rpartition(".")[0]
    with warehouse.get_connection() as con:
        con.register("empty_frame", frame)
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {qualified(table)} AS SELECT * FROM empty_frame LIMIT 0"
        )


def stored_daily_counts(
    warehouse: DuckDBResource, table: str, date_column: str, start: dt.date, end: dt.date
) -> pd.Series:
    """Rows per day of `table` in [start, end) as stored; empty if the table does not exist yet."""
    import pandas as pd

    from mlops_assets.lib.sql import ident, qualified, table_exists

    date = ident(date_column)
    query = (
        f"SELECT CAST({date} AS DATE) AS day, count(*) AS n FROM {qualified(table)} "
        f"WHERE {date} >= ? AND {date} < ? GROUP BY 1"
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
