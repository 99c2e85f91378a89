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

    DuckDB's `fetchdf` hands VARCHAR to pandas as Python objects. On those, the null checks and
    value counts that Evidently and the drift scores run per column and per day are ~40x and ~3x
    slower than on pandas' "string[pyarrow]" (what pandas 3 makes the default, and what a frame
    read from Parquet already has): in a 184-day drift run, 9 s of object null checks alone. The
    rows come through Arrow, so text is never made into objects (the year's raw records, all
    text, in 0.06 s against 0.35 s). Every other column gets `fetchdf`'s pandas type: integers
    and booleans with NULLs nullable (Int64, boolean), DATE datetime64[us], DECIMAL float64.
    Missing text is `pd.NA`, not None.
    """
    import pyarrow as pa

    relation = con.sql(query, params=params) if params is not None else con.sql(query)
    table = relation.to_arrow_table()
    frame = table.to_pandas(types_mapper=_text_type, date_as_object=False)
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if column.null_count and (pa.types.is_integer(kind) or pa.types.is_boolean(kind)):
            frame[name] = column.to_pandas(types_mapper=_nullable_type).array
        elif pa.types.is_decimal(kind):
            frame[name] = column.cast(pa.float64()).to_pandas().array
        elif pa.types.is_date(kind):
            frame[name] = frame[name].astype("datetime64[us]")
    return frame


def _text_type(kind):
    import pandas as pd
    import pyarrow as pa

    text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    return pd.StringDtype("pyarrow") if text or pa.types.is_string_view(kind) else None


def _nullable_type(kind):
    import pandas as pd
    import pyarrow as pa

    if pa.types.is_boolean(kind):
        return pd.BooleanDtype()
    if pa.types.is_integer(kind):
        return pd.api.types.pandas_dtype(
            f"{'U' if pa.types.is_unsigned_integer(kind) else ''}Int{kind.bit_width}"
        )
    return None
