"""Metadata that the UI shows for tables: schema, preview and counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    import pandas as pd


def table_metadata(frame: pd.DataFrame, preview_rows: int = 5) -> dict[str, dg.MetadataValue]:
    """Column schema and a markdown preview of `frame`."""
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()]
    )
    return {
        "dagster/column_schema": schema,
        "preview": dg.MetadataValue.md(frame.head(preview_rows).to_markdown(index=False)),
    }


def failed_days_markdown(table: pd.DataFrame, limit: int = 20) -> dg.MetadataValue:
    return dg.MetadataValue.md(table.head(limit).to_markdown() if len(table) else "none")
