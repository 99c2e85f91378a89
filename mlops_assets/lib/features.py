"""Model-ready features: the spec's SQL expressions over validated records and their lookups."""

from __future__ import annotations

import duckdb
import pandas as pd

from mlops_assets.lib.sources import to_pandas
from mlops_assets.lib.spec import DatasetSpec
from mlops_assets.lib.sql import ident


def feature_columns(spec: DatasetSpec) -> list[str]:
    """Columns of the features table, in order: date, key, features, target."""
    return spec.feature_table_columns


def build_features(
    records: pd.DataFrame, lookups: dict[str, pd.DataFrame], spec: DatasetSpec
) -> pd.DataFrame:
    """One row per record: date, key, each feature and the target (NULL where unlabelled).

    Lookups are LEFT-joined on their keys (unique per key, see `validate_lookup`), so every record
    keeps its row; a record without a lookup match gets nulls in that lookup's features.
    """
    date = spec.date.column
    selected = [f"r.{ident(date)}", *(f"r.{ident(k)}" for k in spec.key)]
    for name, feature in spec.features.items():
        if name in spec.key:
            continue
        sql_type = "VARCHAR" if feature.kind == "categorical" else "DOUBLE"
        # Expressions are SQL from the specification: they run as code (see README).
        selected.append(f"CAST(({feature.expression}) AS {sql_type}) AS {ident(name)}")
    # A class label is an integer; a regression target keeps its decimals.
    target_type = "DOUBLE" if spec.is_regression else "BIGINT"
    selected.append(
        f"CAST(({spec.target.expression}) AS {target_type}) AS {ident(spec.target.name)}"
    )
    joins = "".join(
        f" LEFT JOIN {ident(name)} USING ({', '.join(ident(k) for k in lookup.join_on)})"
        for name, lookup in spec.lookups.items()
    )
    order = ", ".join(f"r.{ident(c)}" for c in [date, *spec.key])
    query = f"SELECT {', '.join(selected)} FROM records AS r{joins} ORDER BY {order}"
    with duckdb.connect() as con:
        con.register("records", records)
        for name in spec.lookups:
            con.register(name, lookups[name])
        try:
            return to_pandas(con.sql(query))
        except duckdb.Error as error:
            raise ValueError(f"feature SQL of dataset {spec.name!r} failed: {error}") from None
