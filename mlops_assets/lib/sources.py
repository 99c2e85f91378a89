"""The source adapter: turns a CSV (plain or zipped) into a dated, typed-as-text Parquet cache.

The source file is read once per content version (keyed by its sha256) into Parquet sorted by the
record date, every column kept as text exactly as ingested. A day's read is then a DuckDB query
whose date filter is pushed into the Parquet row groups, so one day costs the same whatever the
size of the file. Problems with the file itself (missing, corrupt, truncated, a missing column,
unparsable dates) stop here with an error naming the file, the column and the problem.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pandas as pd

from mlops_assets.lib.spec import PARTITION_COLUMN
from mlops_assets.lib.sql import ident, literal


class SourceError(ValueError):
    """The source file cannot be used; the message names the file and the problem."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract_single_member(archive: Path, into: Path) -> Path:
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            if len(members) != 1:
                names = [m.filename for m in members]
                raise SourceError(f"{archive}: expected one file in the archive, found {names}")
            target = into / Path(members[0].filename).name
            with zipped.open(members[0]) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            return target
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise SourceError(f"{archive}: corrupt or truncated zip archive ({error})") from None


STAGING_MEMORY = "256MB"
"""DuckDB's memory limit while staging a source; past it the sort spills to disk."""


def stage_csv(
    path: Path,
    cache_dir: Path,
    *,
    required_columns: Iterable[str],
    null_values: list[str],
    date_column: str | None = None,
    date_expression: str | None = None,
) -> Path:
    """Stage `path` as Parquet under `cache_dir` (once per content) and return the Parquet path.

    With a date, the file gains a DATE column `date_column` computed by `date_expression` and is
    sorted by it; a row whose date cannot be computed stops the staging.
    """
    if not path.is_file():
        raise SourceError(f"{path}: source file does not exist")
    digest = file_digest(path)[:16]
    staged = cache_dir / f"{path.name.split('.')[0]}-{digest}.parquet"
    if staged.exists():
        return staged
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        csv = _extract_single_member(path, Path(scratch)) if path.suffix == ".zip" else path
        # The sort spills to the scratch directory past the limit: 1.2M rows held whole took
        # 1 GB (of 3.4M rows, more than the data step's budget).
        con = duckdb.connect(config={"memory_limit": STAGING_MEMORY, "temp_directory": scratch})
        try:
            table = con.read_csv(
                str(csv), all_varchar=True, header=True, null_padding=False, na_values=null_values
            )
            con.register("source", table)
            present = set(table.columns)
        except duckdb.Error as error:
            raise SourceError(f"{path}: cannot be read as CSV ({error})") from None
        if missing := [c for c in required_columns if c not in present]:
            raise SourceError(
                f"{path}: missing column(s) {missing}; the file has {sorted(present)}"
            )
        select, order = "SELECT * FROM source", ""
        if date_column:
            if date_column in present:
                raise SourceError(f"{path}: column {date_column!r} clashes with the date column")
            # The expression is SQL from the specification: it runs as code (see README).
            select = f"SELECT *, TRY(({date_expression})::DATE) AS {ident(date_column)} FROM source"
            order = f" ORDER BY {ident(date_column)}"
        partial = Path(scratch) / staged.name
        try:
            # COPY takes no parameters: the path is an escaped literal.
            con.execute(f"COPY ({select}{order}) TO {literal(partial)} (FORMAT parquet)")
        except duckdb.Error as error:
            raise SourceError(f"{path}: cannot be read ({error})") from None
        if date_column:
            _check_dates(con, path, partial, date_column, date_expression)
        con.close()
        # A rename is atomic: a concurrent or interrupted stage never leaves half a file behind.
        os.replace(partial, staged)
    return staged


def _check_dates(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    staged: Path,
    date_column: str,
    expression: str | None,
) -> None:
    column = ident(date_column)
    rows = f"read_parquet({literal(staged)})"
    bad = con.execute(f"SELECT count(*) FROM {rows} WHERE {column} IS NULL").fetchall()[0][0]
    if bad:
        examples = (
            con.execute(f"SELECT * EXCLUDE ({column}) FROM {rows} WHERE {column} IS NULL LIMIT 3")
            .df()
            .to_dict("records")
        )
        raise SourceError(
            f"{path}: {bad} row(s) have an unparsable date ({date_column} = {expression}); "
            f"first rows: {examples}"
        )


def to_pandas(relation: duckdb.DuckDBPyRelation) -> pd.DataFrame:
    """Arrow-backed strings and nullable ints: a quarter of the memory of object columns."""
    import pyarrow as pa

    mapping = {pa.string(): pd.StringDtype("pyarrow"), pa.int64(): pd.Int64Dtype()}
    return relation.to_arrow_table().to_pandas(types_mapper=mapping.get, date_as_object=False)


def read_dates(
    staged: Path,
    date_column: str,
    start: dt.date,
    end: dt.date,
    *,
    columns: list[str] | None = None,
    bounds: tuple[dt.date, dt.date] | None = None,
    derived: dict[str, str] | None = None,
) -> pd.DataFrame:
    """The staged rows with `start <= date < end`; the filter is pushed into the Parquet scan.

    `columns`: only these (and the date); the staged file may hold more. `bounds`: the declared
    [first, last] days; the rows gain PARTITION_COLUMN and are selected by it, so a window
    holding `first` or `last` also gets the rows dated before or after the declared range.
    `derived`: more columns, {name: SQL over the source columns} (expression keys); a row where
    one cannot be computed gets NULL there (validation quarantines it), a wrong SQL an error.
    """
    date = ident(date_column)
    selected = ", ".join([*(ident(c) for c in columns), date]) if columns else "*"
    # SQL from the specification: it runs as code, as the date's does (see README).
    selected += "".join(f", TRY(({sql})) AS {ident(name)}" for name, sql in (derived or {}).items())
    if bounds is None:
        query = f"SELECT {selected} FROM read_parquet(?) WHERE {date} >= ? AND {date} < ?"
        params = [str(staged), start, end]
    else:
        partition = f"least(greatest({date}, ?::DATE), ?::DATE)"
        query = (
            f"SELECT * FROM (SELECT {selected}, {partition} AS {PARTITION_COLUMN} "
            f"FROM read_parquet(?)) WHERE {PARTITION_COLUMN} >= ? AND {PARTITION_COLUMN} < ?"
        )
        params = [*bounds, str(staged), start, end]
    with duckdb.connect() as con:
        try:
            return to_pandas(con.sql(query, params=params))
        except duckdb.Error as error:
            if not derived:
                raise
            raise SourceError(f"{staged}: cannot compute {derived}: {error}") from None


def partition_counts(
    staged: Path, date_column: str, start: dt.date, end: dt.date, bounds: tuple[dt.date, dt.date]
) -> dict[dt.date, int]:
    """Rows per partition in [start, end) as `read_dates` with `bounds` assigns them."""
    date = ident(date_column)
    query = (
        f"SELECT p, count(*) FROM (SELECT least(greatest({date}, ?::DATE), ?::DATE) AS p "
        "FROM read_parquet(?)) WHERE p >= ? AND p < ? GROUP BY 1"
    )
    with duckdb.connect() as con:
        rows = con.execute(query, [*bounds, str(staged), start, end]).fetchall()
    return {day: n for day, n in rows}


def staged_columns(staged: Path) -> list[str]:
    with duckdb.connect() as con:
        return list(con.sql("SELECT * FROM read_parquet(?) LIMIT 0", params=[str(staged)]).columns)


def outside_range(
    staged: Path, date_column: str, first: dt.date, last: dt.date
) -> tuple[int, list[dt.date]]:
    """How many staged rows are dated outside [first, last], and a few of their dates."""
    date = ident(date_column)
    query = (
        f"SELECT count(*), list(DISTINCT {date} ORDER BY {date})[:3] FROM read_parquet(?) "
        f"WHERE {date} < ? OR {date} > ?"
    )
    with duckdb.connect() as con:
        count, examples = con.execute(query, [str(staged), first, last]).fetchall()[0]
    return int(count), list(examples or [])


def read_all(staged: Path) -> pd.DataFrame:
    with duckdb.connect() as con:
        return to_pandas(con.sql("SELECT * FROM read_parquet(?)", params=[str(staged)]))
