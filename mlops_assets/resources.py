"""Resources: where data comes from and where it goes. Paths default under $MLOPS_DATA_DIR."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from dagster._core.storage.db_io_manager import DbTypeHandler
from dagster_duckdb import DuckDBIOManager, DuckDBResource
from pydantic import Field

from mlops_assets.lib.spec import DatasetSpec

if TYPE_CHECKING:
    import pandas as pd

DUCKDB_POOL = "duckdb"
"""Concurrency pool of every step that writes the DuckDB file (one writer at a time)."""


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


def stored_daily_counts(
    warehouse: DuckDBResource, table: str, date_column: str, start: dt.date, end: dt.date
) -> pd.Series:
    """Rows per day of `table` in [start, end) as stored; empty if the table does not exist yet."""
    import pandas as pd

    schema, _, name = table.rpartition(".")
    query = (
        f"SELECT CAST({date_column} AS DATE) AS day, count(*) AS n FROM {table} "
        f"WHERE {date_column} >= ? AND {date_column} < ? GROUP BY 1"
    )
    with warehouse.get_connection() as con:
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchone()[0]
        if not exists:
            return pd.Series(dtype="int64")
        rows = con.execute(query, [start, end]).fetchall()
    return pd.Series({pd.Timestamp(day): n for day, n in rows}, dtype="int64")
