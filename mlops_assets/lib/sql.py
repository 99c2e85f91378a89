"""Quoting for SQL text built from names we do not control (specification fields, file paths),
and the one catalogue lookup the stages share."""

from __future__ import annotations


def ident(name: str) -> str:
    """`name` as a DuckDB identifier: always quoted, inner quotes doubled, so it is never SQL."""
    return '"' + str(name).replace('"', '""') + '"'


def table(schema: str, name: str) -> str:
    """A quoted `schema.table`."""
    return f"{ident(schema)}.{ident(name)}"


def qualified(dotted: str) -> str:
    """`schema.table` (split at the last dot) as a quoted name."""
    schema, _, name = dotted.rpartition(".")
    return table(schema, name) if schema else ident(name)


def literal(value: str) -> str:
    """`value` as a DuckDB string literal (for statements that take no parameters, e.g. COPY)."""
    return "'" + str(value).replace("'", "''") + "'"


def table_exists(con, table: str) -> bool:
    """Whether `schema.name` exists (tables are created on their first write, so a reader may come
    first)."""
    schema, _, name = table.rpartition(".")
    # fetchall, not fetchone: DuckDB refuses new work on a connection with rows left unread.
    rows = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchall()
    return bool(rows[0][0])


def fetch_frame(con, query: str, params: list | None = None):
    """The rows of `query` as a pandas DataFrame, text columns as Arrow-backed strings.

    DuckDB hands VARCHAR to pandas as Python objects. On those, the null checks and value counts
    that Evidently and the drift scores run per column and per day are ~40x and ~3x slower than
    on pandas' "string[pyarrow]" (what pandas 3 makes the default, and what a frame read from
    Parquet already has): in a 184-day drift run, 9 s of object null checks alone. Other types
    stay as DuckDB gives them (`sources.to_pandas` also makes every BIGINT a nullable Int64,
    which scikit-learn does not take everywhere). Missing text is `pd.NA`, not None.
    """
    result = con.execute(query, params) if params is not None else con.execute(query)
    text = [name for name, kind, *_ in result.description if str(kind) == "VARCHAR"]
    frame = result.fetchdf()
    if text:
        frame = frame.astype(dict.fromkeys(text, "string[pyarrow]"))
    return frame
