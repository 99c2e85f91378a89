"""Quoting for SQL text built from names we do not control (specification fields, file paths)."""

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
