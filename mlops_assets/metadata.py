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


def describe_once(
    context: dg.AssetExecutionContext, frame: pd.DataFrame, asset_key: str | None = None
) -> None:
    """Schema and preview on the run's last partition only: the same for every day of a range,
    they were stored once per day (a year-long range run serialized them 365 times per asset)."""
    key = dg.AssetKey(asset_key) if asset_key else None
    context.add_asset_metadata(
        table_metadata(frame), partition_key=context.partition_keys[-1], asset_key=key
    )


def range_totals(
    context: dg.AssetExecutionContext, totals: dict, asset_key: str | None = None
) -> dict:
    """Totals over the run's days (days judged, rows quarantined, ...) as the output's metadata
    of a one-day run. Dagster copies an output's metadata to every day of a range, where each day
    would show the range's totals as its own (and store them 365 times in a year's run): in a
    range run they go on its last day's materialization only, and {} is returned."""
    if not context.has_partition_key_range or len(context.partition_keys) < 2:
        return totals
    key = dg.AssetKey(asset_key) if asset_key else None
    context.add_asset_metadata(totals, partition_key=context.partition_keys[-1], asset_key=key)
    return {}


def daily_metadata(
    context: dg.AssetExecutionContext,
    frame: pd.DataFrame,
    date_column: str,
    first,
    last,
    asset_key: str | None = None,
    **per_day,
) -> None:
    """Each day of [first, last): its row count (the IO manager's is the whole range's), and
    `name=function(rows of the day)` for each keyword."""
    import pandas as pd

    key = dg.AssetKey(asset_key) if asset_key else None
    days = pd.to_datetime(frame[date_column]).dt.normalize()
    groups = dict(tuple(frame.groupby(days))) if per_day else {}
    counts, none = days.value_counts(), frame.iloc[:0]
    for day in pd.date_range(first, last, inclusive="left"):
        metadata = {"dagster/partition_row_count": int(counts.get(day, 0))}
        rows = groups.get(day, none)
        metadata |= {name: function(rows) for name, function in per_day.items()}
        context.add_asset_metadata(metadata, partition_key=f"{day:%Y-%m-%d}", asset_key=key)


def failed_days_markdown(table: pd.DataFrame, limit: int = 20) -> dg.MetadataValue:
    return dg.MetadataValue.md(table.head(limit).to_markdown() if len(table) else "none")


def null_rate_check(
    name: str, daily_rates: pd.DataFrame, limits: dict[str, float]
) -> dg.AssetCheckResult:
    """WARN when a column's share of nulls exceeds its limit on any day of `daily_rates` (days x
    columns, `quality.daily_null_rates` of each chunk); the metadata give each column's worst day
    and name every (column, day) over its limit."""
    from mlops_assets.lib.quality import rate_problems, worst_rates

    rates = worst_rates(daily_rates, list(limits))
    problems = rate_problems(daily_rates, limits)
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
