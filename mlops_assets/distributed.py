"""The distributed deployment's warehouse and executor, chosen by environment (`definitions.py`).

Unset, everything stays local: one DuckDB file, the in-process executor. `deploy/distributed.sh`
sets (README "Run it distributed"):
- `MLOPS_WAREHOUSE_ROOT`: the warehouse is Delta tables under this directory, which many workers
  write at once (`lib/delta.py`); DuckDB still runs every query;
- `MLOPS_CELERY_BROKER` (and `MLOPS_CELERY_BACKEND`): every step runs on a dagster-celery worker;
- `MLOPS_BACKFILL_PARTITIONS_PER_RUN` (read by `partitions.py`): a backfill fans out as runs of
  that many days;
- `MLFLOW_TRACKING_URI` (the MLflow server) and `MLOPS_MLFLOW_ARTIFACT_LOCATION` (its proxied
  artifact store, `mlflow-artifacts:/...`, which every worker reaches through the server).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING

import dagster as dg
from dagster._core.storage.db_io_manager import DbClient, DbIOManager
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.resources import (
    RangeFactsOnceDbIOManager,
    _QuotingDuckDbClient,
    _ReplacingPandasHandler,
    _slice_of,
)

if TYPE_CHECKING:
    from mlops_assets.lib.storage import WriteResult

WAREHOUSE_ROOT_ENV = "MLOPS_WAREHOUSE_ROOT"
CELERY_BROKER_ENV = "MLOPS_CELERY_BROKER"
CELERY_BACKEND_ENV = "MLOPS_CELERY_BACKEND"
MLFLOW_ARTIFACTS_ENV = "MLOPS_MLFLOW_ARTIFACT_LOCATION"


def _uri(table_slice) -> str:
    from mlops_assets.lib.delta import table_uri

    return table_uri(table_slice.database, table_slice.schema, table_slice.table)


class _DeltaClient(DbClient):
    """Each read or write gets its own in-memory DuckDB; Delta commits are the transactions."""

    @staticmethod
    @contextmanager
    def connect(context, table_slice):
        import duckdb

        with duckdb.connect() as con:
            yield con

    @staticmethod
    def ensure_schema_exists(context, table_slice, connection) -> None:
        """Nothing: a table's folder is created with it."""

    @staticmethod
    def delete_table_slice(context, table_slice, connection) -> None:
        """Nothing here: the type handler replaces the slice in one commit."""

    @staticmethod
    def get_select_statement(table_slice) -> str:
        # What the UI shows as the query: the same SQL runs on the table in a warehouse session.
        return _QuotingDuckDbClient.get_select_statement(table_slice)

    @staticmethod
    def get_table_name(table_slice) -> str:
        return f"{table_slice.schema}.{table_slice.table}"


class _DeltaPandasHandler(_ReplacingPandasHandler):
    """The DuckDB handler's semantics (slices replaced whole, columns by name, a frame without
    columns empties the slice), with each write one Delta commit (`lib.delta.replace_slice`)."""

    def stored_columns(self, connection, table_slice) -> list[str]:
        from mlops_assets.lib.delta import open_table

        table = open_table(_uri(table_slice))
        return [] if table is None else list(table.schema().to_arrow().names)

    def replace(
        self, context, connection, table_slice, frame: str, chunks=None
    ) -> tuple[WriteResult, dict]:
        from mlops_assets.lib.delta import replace_slice
        from mlops_assets.lib.storage import stage_chunks

        uri = _uri(table_slice)
        if chunks is not None:
            # In this write's own in-memory DuckDB; the commit below is still the one write.
            stage_chunks(connection, frame, chunks)
        result, version = replace_slice(
            connection, uri, _slice_of(table_slice), frame, run_id=context.run_id
        )
        # The replaced rows are not copied: the previous table version still holds them.
        return result, {"table_uri": uri, "delta_version": version}

    def load_input(self, context: dg.InputContext, table_slice, connection):
        import pandas as pd

        from mlops_assets.lib.chunks import DayChunks
        from mlops_assets.lib.delta import read_slice

        if context.dagster_type.typing_type is DayChunks:
            return super().load_input(context, table_slice, connection)
        if table_slice.partition_dimensions and not context.asset_partition_keys:
            return pd.DataFrame()
        return read_slice(connection, _uri(table_slice), _slice_of(table_slice))

    def daily_counts(self, connection, table_slice, target) -> dict:
        from mlops_assets.lib.delta import open_table, scan
        from mlops_assets.lib.storage import daily_counts

        delta = open_table(_uri(table_slice))
        if delta is None:
            return {}
        source = scan(connection, delta)
        return daily_counts(connection, source, target.column, target.start, target.end)

    def read_window(self, context, table_slice, days):
        import duckdb

        from mlops_assets.lib.delta import read_slice

        with duckdb.connect() as con:
            return read_slice(con, _uri(table_slice), days)


class DeltaFrameIOManager(dg.ConfigurableIOManagerFactory):
    """DataFrames as Delta tables `<root>/<schema>/<asset>`; a write replaces exactly its
    partition (the `partition_expr` column's days) in one commit, so runs writing other days of
    the same table at the same moment lose nothing (`lib/delta.py`)."""

    root: str = Field(description="Directory, shared by every worker, holding the tables.")
    schema_: str = Field(alias="schema", description="The schema: a folder under root.")
    chunk_rows: int | None = Field(
        default=None,
        description="Rows per window of an input read as DayChunks "
        "(default lib.chunks.CHUNK_ROWS).",
    )

    def create_io_manager(self, context) -> DbIOManager:
        import pandas as pd

        return RangeFactsOnceDbIOManager(
            db_client=_DeltaClient(),
            database=self.root,
            schema=self.schema_,
            type_handlers=[_DeltaPandasHandler(chunk_rows=self.chunk_rows)],
            default_load_type=pd.DataFrame,
            io_manager_name="DeltaFrameIOManager",
        )


class DeltaWarehouse(DuckDBResource):
    """DuckDB over the Delta tables, for the assets' own SQL (`lib.delta.session`).

    Each connection is an in-memory DuckDB where every table is `<schema>.<name>`: the IO
    manager's tables as views over their current files, tables written by SQL (the promotion
    audit, stored A/B designs, drift null distributions) as copies stored back when the block
    exits without error. Blocks are serialized by the warehouse's lock, as writers of one
    DuckDB file are.
    """

    database: str = Field(default=":memory:", description="Always in memory: see the class.")
    root: str = Field(description="Directory holding the Delta tables.")

    @contextmanager
    def get_connection(self):
        from mlops_assets.lib.delta import session

        with session(self.root) as con:
            yield con


def executor() -> dg.ExecutorDefinition:
    """dagster-celery workers when a broker is configured; otherwise in-process (one import,
    fast steps)."""
    if not os.environ.get(CELERY_BROKER_ENV):
        return dg.in_process_executor
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {
            "broker": {"env": CELERY_BROKER_ENV},
            "backend": {"env": CELERY_BACKEND_ENV}
            if os.environ.get(CELERY_BACKEND_ENV)
            else "rpc://",
        },
        name="celery_executor",
    )
