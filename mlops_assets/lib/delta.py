"""The distributed warehouse: Delta Lake tables that many processes write at once, queried by
DuckDB. No Dagster here.

Why Delta (delta-rs) and not Iceberg: both serialize commits (Delta through its transaction log,
whose next entry each writer creates exclusively; Iceberg through a catalog row), but DuckDB reads
a Delta table's Parquet files natively and offline once the log has listed them, while its
iceberg (and ducklake) extension downloads at run time. Measured by `bench/table_formats.py`
(bench/README.md): concurrent one-day overwrites commit several times faster on Delta, which
rebases a commit over other days' commits itself, where Iceberg redoes whole writes.

Tables live in `<root>/<schema>/<name>`. Two kinds:
- Tables of DataFrames (the IO manager): `replace_slice` replaces a partition's rows (or the whole
  table) in ONE commit, after the checks of `lib/storage.py` (partition column present, no row
  outside the slice, columns matched by name, a new column added, a changed type refused). The
  commit carries the slice as its predicate: delta-rs refuses it when a concurrent commit added
  rows the predicate matches, and the write is redone against the new version; so writers of
  other days all land, and writers of one day leave one version of it. The replaced rows stay
  in the table's earlier versions (Delta time travel) until a vacuum.
- Tables written by SQL (`session`): small ones, such as the promotion audit. A session holds the
  warehouse's lock from start to end, so such writes are serialized as in one DuckDB file.

DuckDB reads the Parquet files of a table's current version, listed by its log; delta-rs writes
no deletion vectors, so the files hold exactly the table's rows.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_assets.lib.sql import fetch_frame, ident, literal, table
from mlops_assets.lib.storage import (
    SchemaChangeError,
    Slice,
    Version,
    WriteResult,
    check_rows,
    column_types,
)

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    from deltalake import DeltaTable

COMMIT_ATTEMPTS = 8
"""Writes redone after losing a commit race (each against the newer version), then an error."""
WRITER_KEY = "mlops.writer"
"""Commit metadata naming who wrote a commit: the IO manager or SQL through a session."""
SLICE_KEYS = ("mlops.slice_column", "mlops.slice_start", "mlops.slice_end")
"""Commit metadata of a slice replacement (delta-rs rewrites the predicate's text): the days a
commit replaced, which `versions` reads back."""
IO_WRITER, SQL_WRITER = "io_manager", "sql"
LOCK_FILE = ".sql.lock"
ONE_DAY = dt.timedelta(days=1)
# Types Delta cannot store, and the DuckDB type stored instead.
_STORABLE = {
    "NULL": "VARCHAR",
    "UTINYINT": "SMALLINT",
    "USMALLINT": "INTEGER",
    "UINTEGER": "BIGINT",
    "UBIGINT": "DECIMAL(38, 0)",
    "HUGEINT": "DECIMAL(38, 0)",
    "TIMESTAMP_NS": "TIMESTAMP",
    "TIMESTAMP_MS": "TIMESTAMP",
    "TIMESTAMP_S": "TIMESTAMP",
    "UUID": "VARCHAR",
}
_held = threading.local()


def table_uri(root: str, schema: str, name: str) -> str:
    return str(Path(root) / schema / name)


def open_table(uri: str) -> DeltaTable | None:
    """The table's current version, or None if there is no table at `uri`."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(uri)
    except TableNotFoundError:
        return None


def scan(con: duckdb.DuckDBPyConnection, delta: DeltaTable) -> str:
    """A DuckDB table expression reading the rows of `delta`'s version."""
    files = delta.file_uris()
    if files:
        return f"read_parquet([{', '.join(literal(f) for f in files)}], union_by_name = true)"
    import pyarrow as pa

    name = f"_empty_{id(delta)}"  # no file yet: the table's columns, no rows
    con.register(name, pa.schema(delta.schema().to_arrow()).empty_table())
    return ident(name)


def _stored_types(con, delta: DeltaTable) -> dict[str, str] | None:
    """Column -> DuckDB type of the stored table; None when it holds no row (as in storage.py,
    the next rows then set its columns and types)."""
    source = scan(con, delta)
    if not con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0]:
        return None
    return column_types(con, f"SELECT * FROM {source}")


def _storable_select(source: str, types: dict[str, str], stored: dict[str, str] | None) -> str:
    """The rows of `source` with the types Delta stores: a stored column's own type, else the
    nearest type Delta has."""
    columns = []
    for column, kind in types.items():
        target = (stored or {}).get(column)
        if target is None:
            target = "VARCHAR" if kind.startswith("ENUM") else _STORABLE.get(kind, kind)
        cast = ident(column) if target == kind else f"CAST({ident(column)} AS {target})"
        columns.append(f"{cast} AS {ident(column)}")
    return f"SELECT {', '.join(columns)} FROM {source}"


def _predicate(target: Slice) -> str:
    """The slice as a delta-rs predicate (DataFusion SQL); "true" for the whole table."""
    if target.column is None:
        return "true"

    def moment(value) -> str:
        return value.strftime("%Y-%m-%d" if value.time() == value.time().min else "%Y-%m-%d %T")

    column = ident(target.column)
    return f"{column} >= '{moment(target.start)}' AND {column} < '{moment(target.end)}'"


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0.05, 0.2) * 2**attempt)


def replace_slice(
    con: duckdb.DuckDBPyConnection, uri: str, target: Slice, frame: str, *, run_id: str
) -> tuple[WriteResult, int]:
    """Replace `target` in the Delta table at `uri` by the rows of `frame` (registered in `con`),
    in one commit; creates the table if new. The result (`archived` = the replaced rows, kept
    in the previous version) and the table version written."""
    from deltalake import CommitProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError, DeltaError

    metadata = {WRITER_KEY: IO_WRITER, "dagster_run_id": run_id}
    if target.column is not None:
        bounds = (target.column, target.start.isoformat(), target.end.isoformat())
        metadata.update(zip(SLICE_KEYS, bounds, strict=True))
    commit = CommitProperties(custom_metadata=metadata)
    for attempt in range(COMMIT_ATTEMPTS):
        delta = open_table(uri)
        stored = None if delta is None else _stored_types(con, delta)
        try:
            new, added, missing = check_rows(con, target, frame, stored)
        except SchemaChangeError as error:
            raise SchemaChangeError(f"{error} (a Delta table: delete {uri})") from None
        deleted = 0
        if stored is not None:
            where, params = target.where()
            query = f"SELECT count(*) FROM {scan(con, delta)} WHERE {where}"
            deleted = con.execute(query, params).fetchall()[0][0]
        rows = con.sql(_storable_select(ident(frame), new, stored)).to_arrow_table()
        try:
            if delta is None:
                write_deltalake(uri, rows, mode="error", commit_properties=commit)
            else:  # an empty table: the rows set its columns and types
                write_deltalake(
                    delta,
                    rows,
                    mode="overwrite",
                    predicate="true" if stored is None else _predicate(target),
                    schema_mode="overwrite" if stored is None else "merge" if added else None,
                    commit_properties=commit,
                )
        except (CommitFailedError, DeltaError) as error:
            # A lost commit race (or a table created meanwhile): redo against the new version.
            lost_race = isinstance(error, CommitFailedError) or (
                delta is None and open_table(uri) is not None
            )
            if not lost_race or attempt == COMMIT_ATTEMPTS - 1:
                raise
            _backoff(attempt)
            continue
        version = delta.version() if delta is not None else open_table(uri).version()
        return WriteResult(rows.num_rows, deleted, deleted, added, missing), version
    raise AssertionError("unreachable")


def read_slice(con: duckdb.DuckDBPyConnection, uri: str, target: Slice) -> pd.DataFrame:
    """The rows of `target` (the whole table without a column) in the table's current version."""
    delta = open_table(uri)
    if delta is None:
        raise FileNotFoundError(f"{uri}: no Delta table here; materialize {target.name} first")
    where, params = target.where()
    return fetch_frame(con, f"SELECT * FROM {scan(con, delta)} WHERE {where}", params)


def _day(column: str) -> str:
    return f"{ident(column)} >= ? AND {ident(column)} < ?"


def _bounds(day: dt.date) -> list[dt.datetime]:
    start = dt.datetime.combine(day, dt.time())
    return [start, start + ONE_DAY]


@dataclass(frozen=True)
class DeltaVersion(Version):
    """An earlier content of a day: the table's version just before a commit replaced it."""

    column: str
    table_version: int


def versions(con: duckdb.DuckDBPyConnection, uri: str, day: dt.date) -> list[DeltaVersion]:
    """The earlier contents of one day still in the table's versions (until a vacuum), newest
    first: for each commit that replaced a slice holding `day`, the day just before it, when it
    held rows. `replaced_at` is the commit's time, `replaced_by` its run."""
    import duckdb
    from deltalake import DeltaTable

    delta = open_table(uri)
    if delta is None:
        return []
    moment = dt.datetime.combine(day, dt.time())
    found = []
    for commit in delta.history():  # newest first
        column, start, end = (commit.get(key) for key in SLICE_KEYS)
        if column is None or commit["version"] == 0:
            continue
        if not dt.datetime.fromisoformat(start) <= moment < dt.datetime.fromisoformat(end):
            continue
        before = DeltaTable(uri, version=commit["version"] - 1)
        query = f"SELECT count(*) FROM {scan(con, before)} WHERE {_day(column)}"
        try:
            (rows,) = con.execute(query, _bounds(day)).fetchone()
        except duckdb.IOException:  # its files were vacuumed: not kept any more
            continue
        if rows:
            replaced_at = dt.datetime.fromtimestamp(commit["timestamp"] / 1000, dt.UTC)
            by = commit.get("dagster_run_id", "")
            found.append(DeltaVersion(replaced_at, by, rows, column, commit["version"] - 1))
    return found


def restore_day(
    con: duckdb.DuckDBPyConnection,
    uri: str,
    schema: str,
    name: str,
    day: dt.date,
    *,
    replaced_at: dt.datetime | None = None,
) -> WriteResult:
    """Put back `day` of the table `schema.name` at `uri` as it was before a replacement (the
    latest, or the one at `replaced_at`), in one commit that is itself a version `versions`
    lists: a restore can be undone the same way."""
    from deltalake import DeltaTable

    found = versions(con, uri, day)
    if replaced_at is not None:
        found = [v for v in found if v.replaced_at == replaced_at]
    if not found:
        raise LookupError(f"{schema}.{name}: no earlier version of {day} kept")
    version = found[0]
    before = DeltaTable(uri, version=version.table_version)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE restored_rows AS "
        f"SELECT * FROM {scan(con, before)} WHERE {_day(version.column)}",
        _bounds(day),
    )
    restored = Slice(schema, name, version.column, *_bounds(day))
    run_id = f"restore of version {version.table_version}"
    try:
        result, _ = replace_slice(con, uri, restored, "restored_rows", run_id=run_id)
    finally:
        con.execute("DROP TABLE IF EXISTS restored_rows")
    return result


def tables(root: str) -> dict[tuple[str, str], str]:
    """(schema, name) -> uri of every Delta table under `root`."""
    return {
        (path.parent.name, path.name): str(path)
        for path in sorted(Path(root).glob("*/*"))
        if (path / "_delta_log").is_dir()
    }


def _last_writer(delta: DeltaTable) -> str | None:
    for commit in delta.history(10):  # newest first; maintenance commits carry no writer
        if WRITER_KEY in commit:
            return commit[WRITER_KEY]
    return None


@contextmanager
def _locked(root: str) -> Iterator[None]:
    """The warehouse's SQL lock (a file lock: every process on a shared filesystem). Re-entrant
    in a thread, so a session opened inside another does not wait for itself."""
    if getattr(_held, "count", 0):
        _held.count += 1
        try:
            yield
        finally:
            _held.count -= 1
        return
    Path(root).mkdir(parents=True, exist_ok=True)
    with (Path(root) / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _held.count = 1
        try:
            yield
        finally:
            _held.count = 0
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fingerprint(con, name: str) -> tuple:
    """Columns, row count and an order-independent hash of the rows: whether SQL changed it."""
    columns = tuple(column_types(con, f"SELECT * FROM {name}").items())
    count, digest = con.execute(f"SELECT count(*), sum(hash(t)::HUGEINT) FROM {name} t").fetchall()[
        0
    ]
    return columns, count, digest


@contextmanager
def session(root: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB where every table under `root` is `<schema>.<name>`, for SQL.

    A table last written by the IO manager is a view over its current files (read-only: writes
    to it fail). A table last written by SQL is copied in, and if the block changed it, or
    created a table in a schema other than `main` (scratch), that table is stored when the block
    exits without error (a block that raises stores nothing). The lock is held throughout.
    """
    import duckdb

    with _locked(root), duckdb.connect() as con:
        copied: dict[tuple[str, str], tuple[DeltaTable, tuple]] = {}
        for (schema, name), uri in tables(root).items():
            delta = open_table(uri)
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
            if _last_writer(delta) == SQL_WRITER:
                con.execute(f"CREATE TABLE {table(schema, name)} AS FROM {scan(con, delta)}")
                copied[schema, name] = delta, _fingerprint(con, table(schema, name))
            else:
                con.execute(f"CREATE VIEW {table(schema, name)} AS FROM {scan(con, delta)}")
        yield con
        _store(con, root, copied)


def _store(con, root: str, copied: dict[tuple[str, str], tuple[DeltaTable, tuple]]) -> None:
    """Store the tables SQL created or changed in the session (see `session`)."""
    from deltalake import CommitProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError

    commit = CommitProperties(custom_metadata={WRITER_KEY: SQL_WRITER})
    written = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() "
        "WHERE NOT temporary AND database_name = current_database() AND schema_name <> 'main'"
    ).fetchall()
    for schema, name in written:
        qualified = table(schema, name)
        delta, before = copied.get((schema, name), (None, None))
        if before == _fingerprint(con, qualified):
            continue
        types = column_types(con, f"SELECT * FROM {qualified}")
        rows = con.sql(_storable_select(qualified, types, None)).to_arrow_table()
        uri = table_uri(root, schema, name)
        if delta is None and open_table(uri) is None:
            write_deltalake(uri, rows, mode="error", commit_properties=commit)
        elif delta is None:  # created meanwhile by the IO manager (outside the lock)
            if rows.num_rows:
                raise RuntimeError(f"{schema}.{name}: the IO manager created it meanwhile")
        else:
            try:  # the predicate makes a concurrent IO manager write a conflict, not a loss
                write_deltalake(
                    delta,
                    rows,
                    mode="overwrite",
                    predicate="true",
                    schema_mode="overwrite",
                    commit_properties=commit,
                )
            except CommitFailedError as error:
                raise RuntimeError(f"{schema}.{name}: written meanwhile ({error})") from None
