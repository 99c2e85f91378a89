"""Replacing a slice of a DuckDB table without ever losing what was stored.

A write of a partition (or of a whole unpartitioned table) is one transaction: the previous content
of the slice is copied to `<table>_history` (when it differs from the new content), deleted, and
the new rows inserted BY NAME, so a column can never land in another column's place. If anything
fails, the transaction rolls back and the table is exactly as it was.

A frame whose columns differ from the stored table's: a new column is added (NULL in the rows
stored before); a stored column the frame lacks stays (NULL in the new rows); a column whose type
changed, or a partition column that is new, is refused with the change named and how to start
fresh. History older than the retention is deleted in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_assets.lib.sql import ident, table

if TYPE_CHECKING:
    import pandas as pd

HISTORY_SUFFIX = "_history"
# Columns a history row carries beside the replaced row: when, by which run, and which slice.
HISTORY_COLUMNS = {
    "_replaced_at": "TIMESTAMP WITH TIME ZONE",
    "_replaced_by": "VARCHAR",
    "_partition_column": "VARCHAR",
    "_partition_start": "TIMESTAMP",
    "_partition_end": "TIMESTAMP",
}
# Type families between which a stored column may take new values without loss.
_FAMILIES = {
    "int": ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT"),
    "float": ("FLOAT", "DOUBLE", "DECIMAL"),
    "time": ("TIMESTAMP", "DATE"),
}


class SchemaChangeError(ValueError):
    """The new rows do not fit the stored table; the message names the change and the remedy."""


@dataclass(frozen=True)
class Slice:
    """Rows of `schema.name` whose `column` is in [start, end); the whole table if no column."""

    schema: str
    name: str
    column: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    @property
    def qualified(self) -> str:
        return table(self.schema, self.name)

    @property
    def history(self) -> str:
        return table(self.schema, self.name + HISTORY_SUFFIX)

    def where(self) -> tuple[str, list]:
        if self.column is None:
            return "TRUE", []
        return f"{ident(self.column)} >= ? AND {ident(self.column)} < ?", [self.start, self.end]


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    deleted: int
    archived: int
    added_columns: list[str]
    missing_columns: list[str]


def replace_slice(
    con,
    target: Slice,
    frame: str,
    *,
    run_id: str,
    retention_days: int,
    chunks: Iterable[pd.DataFrame] | None = None,
) -> WriteResult:
    """Replace `target` by the rows of the registered frame/view `frame`, atomically.

    With `chunks`, `frame` is instead a table this creates from them first (in the database
    file) and drops afterwards: a failure while computing any chunk leaves the target as it was.
    The chunks are staged in statements of their own, before the replacing transaction: DuckDB
    holds the many small appends of one transaction in memory (11 windows of 100,000 rows took
    1.7 GB), while the one INSERT ... SELECT of the replacement writes its row groups out as it
    goes (0.5 GB). `retention_days` = 0 keeps no history.
    """
    if chunks is None:
        return _replace_atomically(con, target, frame, run_id, retention_days)
    try:
        stage_chunks(con, frame, chunks)
        return _replace_atomically(con, target, frame, run_id, retention_days)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {ident(frame)}")


def _replace_atomically(con, target: Slice, frame: str, run_id: str, retention_days: int):
    con.execute("BEGIN TRANSACTION")
    try:
        result = _replace(con, target, frame, run_id, retention_days)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return result


def _replace(con, target: Slice, frame: str, run_id: str, retention_days: int) -> WriteResult:
    name = target.qualified
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(target.schema)}")
    stored = _existing_types(con, target)
    if stored is not None and not _count(con, f"SELECT count(*) FROM {name}"):
        stored = None  # an empty table: the new rows set its columns and types
    new, added, missing = check_rows(con, target, frame, stored)
    if stored is None:
        con.execute(f"DROP TABLE IF EXISTS {name}")
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM {ident(frame)}")
        inserted = _count(con, f"SELECT count(*) FROM {name}")
        return WriteResult(inserted, 0, 0, [], [])

    for column in added:
        con.execute(f"ALTER TABLE {name} ADD COLUMN {ident(column)} {new[column]}")

    where, params = target.where()
    deleted = _count(con, f"SELECT count(*) FROM {name} WHERE {where}", params)
    archived = 0
    if deleted and retention_days > 0 and _differs(con, target, frame, new):
        archived = _archive(con, target, run_id, deleted)
    con.execute(f"DELETE FROM {name} WHERE {where}", params)
    con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM {ident(frame)}")
    if retention_days > 0 and _existing_types(con, target, history=True) is not None:
        con.execute(
            f"DELETE FROM {target.history} WHERE _replaced_at < current_timestamp - to_days(?)",
            [retention_days],
        )
    inserted = _count(con, f"SELECT count(*) FROM {ident(frame)}")
    return WriteResult(inserted, deleted, archived, added, missing)


def stage_chunks(con, name: str, chunks: Iterable[pd.DataFrame]) -> int:
    """Create table `name` holding the rows of every frame of `chunks`, inserted by column name;
    its types are those of the first frame with rows (or the first frame). Returns the rows."""
    created, typed, rows = False, False, 0
    for frame in chunks:
        con.register("_chunk", frame)
        try:
            if not created or (not typed and len(frame)):
                # Types from a frame with rows: an empty one may type a column as NULL.
                con.execute(f"CREATE OR REPLACE TABLE {ident(name)} AS SELECT * FROM _chunk")
                created, typed = True, bool(len(frame))
            else:
                con.execute(f"INSERT INTO {ident(name)} BY NAME SELECT * FROM _chunk")
        finally:
            con.unregister("_chunk")
        rows += len(frame)
    if not created:
        raise ValueError(f"{name}: no chunk to write (an empty range)")
    return rows


def daily_counts(con, source: str, column: str, start, end) -> dict[dt.date, int]:
    """Rows per day of the table expression `source` with `column` in [start, end)."""
    rows = con.execute(
        f"SELECT CAST({ident(column)} AS DATE), count(*) FROM {source} "
        f"WHERE {ident(column)} >= ? AND {ident(column)} < ? GROUP BY 1",
        [start, end],
    ).fetchall()
    return {day: n for day, n in rows}


def check_rows(
    con, target: Slice, frame: str, stored: dict[str, str] | None
) -> tuple[dict[str, str], list[str], list[str]]:
    """Refuse new rows that do not fit `target` (see the module); return their column types, the
    columns they add and the stored columns they lack. `stored` None: nothing stored yet."""
    new = column_types(con, f"SELECT * FROM {ident(frame)}")
    if target.column is not None and target.column not in new:
        raise SchemaChangeError(
            f"{target.schema}.{target.name}: the new rows lack the partition column "
            f"{target.column!r} (they have {sorted(new)})"
        )
    where, params = target.where()
    outside = _count(
        con, f"SELECT count(*) FROM {ident(frame)} WHERE ({where}) IS NOT TRUE", params
    )
    if outside:
        raise ValueError(
            f"{target.schema}.{target.name}: {outside} new row(s) have {target.column} outside "
            f"[{target.start}, {target.end}): they would survive the next replacement"
        )
    if stored is None:
        return new, [], []
    added = [c for c in new if c not in stored]
    missing = [c for c in stored if c not in new]
    _refuse_incompatible(con, target, frame, stored, new, added)
    return new, added, missing


def column_types(con, query: str, params: list | None = None) -> dict[str, str]:
    """Column name -> DuckDB type of a query's result."""
    return {row[0]: row[1] for row in con.execute(f"DESCRIBE {query}", params or []).fetchall()}


def stored_types(con, schema: str, name: str) -> dict[str, str] | None:
    """Column name -> DuckDB type of `schema.name`, in column order; None if there is no table."""
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, name],
    ).fetchall()
    return {c: t for c, t in rows} if rows else None


def _existing_types(con, target: Slice, history: bool = False) -> dict[str, str] | None:
    return stored_types(con, target.schema, target.name + (HISTORY_SUFFIX if history else ""))


def _count(con, query: str, params: list | None = None) -> int:
    return int(con.execute(query, params or []).fetchall()[0][0])


def _family(sql_type: str) -> str:
    upper = sql_type.upper()
    for family, prefixes in _FAMILIES.items():
        if upper.startswith(prefixes):
            return family
    return upper


def _refuse_incompatible(con, target, frame, stored, new, added) -> None:
    where = f"{target.schema}.{target.name}"
    fresh = (
        f"to start fresh, drop the table (DROP TABLE {where}) or delete the warehouse file, "
        "and materialize again"
    )
    if target.column is not None and target.column in added:
        raise SchemaChangeError(
            f"{where}: partition column {target.column!r} is new; the stored rows have no value "
            f"for it, so their partitions could never be replaced; {fresh}"
        )
    changed = []
    for column, new_type in new.items():
        old_type = stored.get(column)
        if old_type is None or _family(old_type) == _family(new_type):
            continue
        if _family(old_type) == "float" and _family(new_type) == "int":
            continue  # integers fit a floating column
        has_values = _count(
            con, f"SELECT count({ident(column)}) FROM {ident(frame)}"
        )  # an all-null column fits any type
        if has_values:
            changed.append(f"{column} ({old_type} stored, {new_type} new)")
    if changed:
        raise SchemaChangeError(f"{where}: column type changed: {', '.join(changed)}; {fresh}")


def _differs(con, target: Slice, frame: str, new: dict[str, str]) -> bool:
    """Whether the stored slice differs from the new rows (an identical rerun archives nothing).

    The two are compared as multisets of rows by their count and the sum of their rows' 64-bit
    hashes, the new values cast to the stored types as the insert casts them: `EXCEPT ALL` both
    ways took 4.6 s of a year's re-run, this a fraction of a second; a change it would miss needs
    a hash collision.
    """
    stored = _existing_types(con, target) or {}
    columns = ", ".join(ident(c) for c in stored)
    new_columns = ", ".join(
        f"CAST({ident(c) if c in new else 'NULL'} AS {t})" for c, t in stored.items()
    )
    where, params = target.where()
    old_digest = con.execute(
        f"SELECT count(*), sum(hash({columns})) FROM {target.qualified} WHERE {where}", params
    ).fetchall()
    new_digest = con.execute(f"SELECT count(*), sum(hash({new_columns})) FROM {ident(frame)}")
    return old_digest != new_digest.fetchall()


def _archive(con, target: Slice, run_id: str, rows: int) -> int:
    stored = _existing_types(con, target) or {}
    history = _existing_types(con, target, history=True)
    if history is None:
        extra = ", ".join(f"NULL::{t} AS {c}" for c, t in HISTORY_COLUMNS.items())
        con.execute(
            f"CREATE TABLE {target.history} AS SELECT *, {extra} FROM {target.qualified} LIMIT 0"
        )
        history = {**stored, **HISTORY_COLUMNS}
    for column, sql_type in stored.items():
        if column not in history:
            con.execute(f"ALTER TABLE {target.history} ADD COLUMN {ident(column)} {sql_type}")
    where, params = target.where()
    con.execute(
        f"INSERT INTO {target.history} BY NAME SELECT *, current_timestamp AS _replaced_at, "
        f"?::VARCHAR AS _replaced_by, ?::VARCHAR AS _partition_column, "
        f"?::TIMESTAMP AS _partition_start, ?::TIMESTAMP AS _partition_end "
        f"FROM {target.qualified} WHERE {where}",
        [run_id, target.column, target.start, target.end, *params],
    )
    return rows


@dataclass(frozen=True)
class Version:
    replaced_at: dt.datetime
    replaced_by: str
    rows: int


def versions(con, schema: str, name: str, day: dt.date) -> list[Version]:
    """The stored earlier versions of one day of a partitioned table, newest first."""
    target = Slice(schema, name)
    if _existing_types(con, target, history=True) is None:
        return []
    rows = con.execute(
        f"SELECT _replaced_at, any_value(_replaced_by), count(*) FROM {target.history} "
        "WHERE _partition_column IS NOT NULL AND _partition_start <= ? AND _partition_end > ? "
        "GROUP BY 1 ORDER BY 1 DESC",
        [day, day],
    ).fetchall()
    return [Version(*row) for row in rows]


def restore_day(
    con,
    schema: str,
    name: str,
    day: dt.date,
    *,
    replaced_at: dt.datetime | None = None,
    retention_days: int = 30,
) -> WriteResult:
    """Put back the rows of `day` as they were before a replacement (the latest, or `replaced_at`).

    The content it replaces goes to the history in turn, so a restore can itself be undone.
    """
    found = versions(con, schema, name, day)
    if replaced_at is not None:
        found = [v for v in found if v.replaced_at == replaced_at]
    if not found:
        raise LookupError(f"{schema}.{name}: no earlier version of {day} in the history")
    version = found[0]
    target = Slice(schema, name)
    (column,) = con.execute(
        f"SELECT DISTINCT _partition_column FROM {target.history} WHERE _replaced_at = ?",
        [version.replaced_at],
    ).fetchall()[0]
    start = dt.datetime.combine(day, dt.time())
    end = start + dt.timedelta(days=1)
    drop = ", ".join(HISTORY_COLUMNS)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE restored_rows AS SELECT * EXCLUDE ({drop}) "
        f"FROM {target.history} WHERE _replaced_at = ? AND {ident(column)} >= ? "
        f"AND {ident(column)} < ?",
        [version.replaced_at, start, end],
    )
    try:
        return replace_slice(
            con,
            Slice(schema, name, column, start, end),
            "restored_rows",
            run_id=f"restore of {version.replaced_at.isoformat()}",
            retention_days=retention_days,
        )
    finally:
        con.execute("DROP TABLE IF EXISTS restored_rows")
