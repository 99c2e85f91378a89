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


def null_rate_check(
    name: str, frame: pd.DataFrame, limits: dict[str, float], date_column: str
) -> dg.AssetCheckResult:
    """WARN when a column's share of nulls exceeds its limit on any day of `frame`; the metadata
    give each column's worst day and name every (column, day) over its limit."""
    from mlops_assets.lib.quality import null_rate_problems, null_rates

    rates = null_rates(frame, list(limits), date_column)
    problems = null_rate_problems(frame, limits, date_column)
    over = sorted(c for c, rate in rates.items() if rate > limits[c])
    return dg.AssetCheckResult(
        check_name=name,
        passed=not over,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            **{f"worst_day_null_rate/{c}": r for c, r in rates.items()},
            "over_limit": ", ".join(over),
            "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems[:20]) or "none"),
        },
    )
