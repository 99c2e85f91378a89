"""Dataset-level quality measures that asset checks report: row counts, null rates, schema."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from mlops_assets.lib.spec import DatasetSpec


def daily_row_counts(
    frame: pd.DataFrame, date_column: str, start: dt.date, end: dt.date
) -> pd.Series:
    """Rows per day for every day in [start, end), zero for days without rows."""
    days = pd.date_range(start, end, inclusive="left")
    counts = frame.groupby(pd.to_datetime(frame[date_column]).dt.normalize()).size()
    return counts.reindex(days, fill_value=0).astype("int64")


def row_count_anomalies(
    counts: pd.Series, history: pd.Series, *, trailing_days: int, min_ratio: float
) -> pd.DataFrame:
    """Each day's count against the median of the `trailing_days` days before it.

    `counts` holds the days under test, `history` the stored days before them (may be empty).
    A day fails when it is empty, or below `min_ratio` x the trailing median; a day with no
    history at all passes on count > 0 alone.
    """
    series = pd.concat([history, counts]).sort_index() if len(history) else counts
    series = series[~series.index.duplicated(keep="last")]
    trailing = series.shift(1).rolling(trailing_days, min_periods=1).median()
    table = pd.DataFrame({"rows": counts, "trailing_median": trailing.reindex(counts.index)})
    table["ratio"] = table["rows"] / table["trailing_median"]
    table["failed"] = (table["rows"] == 0) | (table["ratio"] < min_ratio)
    return table


def row_count_problems(table: pd.DataFrame) -> list[str]:
    """The failed days of a `row_count_anomalies` table, as sentences."""
    return [
        f"{day:%Y-%m-%d}: {row.rows} rows against a trailing median of {row.trailing_median:g}"
        if pd.notna(row.trailing_median)
        else f"{day:%Y-%m-%d}: no rows"
        for day, row in table[table["failed"]].iterrows()
    ]


def null_limits(spec: DatasetSpec) -> dict[str, float]:
    """Each declared column's limit on its daily share of nulls: its own, or the default."""
    return {
        name: column.max_null_rate
        if column.max_null_rate is not None
        else spec.quality.max_null_rate
        for name, column in spec.columns.items()
    }


def daily_null_rates(frame: pd.DataFrame, columns: list[str], date_column: str) -> pd.DataFrame:
    """Each day's share of nulls per column (days x columns); chunks of whole days concatenate."""
    days = pd.to_datetime(frame[date_column]).dt.normalize()
    return frame[list(columns)].isna().groupby(days).mean()


def null_rate_problems(
    frame: pd.DataFrame, limits: dict[str, float], date_column: str
) -> list[str]:
    """Each (column, day) whose share of nulls exceeds the column's limit, as a sentence."""
    if frame.empty:
        return []
    return rate_problems(daily_null_rates(frame, list(limits), date_column), limits)


def rate_problems(rates: pd.DataFrame, limits: dict[str, float]) -> list[str]:
    """The (column, day) cells of a `daily_null_rates` table over the column's limit."""
    return [
        f"{column}: {rate:.0%} null on {day:%Y-%m-%d} (limit {limit:.0%})"
        for column, limit in limits.items()
        for day, rate in rates[column].items()
        if rate > limit
    ]


def null_rates(frame: pd.DataFrame, columns: list[str], date_column: str) -> dict[str, float]:
    """Each column's share of nulls on its worst day: limits are daily, and one bad day must not
    hide among the good ones of a backfilled range."""
    if frame.empty:
        return dict.fromkeys(columns, 0.0)
    return worst_rates(daily_null_rates(frame, columns, date_column), columns)


def worst_rates(rates: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    """Each column's worst day in a `daily_null_rates` table (0 without days)."""
    if rates.empty:
        return dict.fromkeys(columns, 0.0)
    worst = rates.max()
    return {c: float(worst[c]) for c in columns}


def schema_mismatches(frame: pd.DataFrame, expected: dict[str, str]) -> list[str]:
    """Differences between the frame's columns/dtype kinds and `expected` (column -> kind).

    Kinds are pandas' coarse ones: "string", "int", "float", "timestamp".
    """
    problems = [f"missing column {c!r}" for c in expected if c not in frame.columns]
    for column, kind in expected.items():
        if column in frame.columns and dtype_kind(frame[column].dtype) != kind:
            problems.append(f"{column}: expected {kind}, got {frame[column].dtype}")
    return problems


def dtype_kind(dtype) -> str:
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "timestamp"
    return "string"
