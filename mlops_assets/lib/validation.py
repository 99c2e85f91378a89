"""Row-level validation: typed, checked records out; failing records quarantined with the reason.

Two stages, so that every failing row gets one precise reason per column:
1. typing: each text value is cast to the column's type with DuckDB's TRY_CAST; a value that does
   not parse fails the `type(<type>)` check;
2. pandera (lazy, so all failures are collected): nullability, ranges, allowed values, patterns,
   the date inside the partition window, and duplicate keys (every copy after the first fails).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import pandas as pd

from mlops_assets.lib.sources import to_pandas
from mlops_assets.lib.spec import PARTITION_COLUMN, SQL_TYPES, ColumnSpec, DatasetSpec
from mlops_assets.lib.sql import ident

REASON_COLUMNS = ["failed_column", "failed_check", "failure_case"]


@dataclass(frozen=True)
class ValidationResult:
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    duplicate_keys: int

    @property
    def quarantine_share(self) -> float:
        total = len(self.valid) + len(self.quarantined)
        return len(self.quarantined) / total if total else 0.0


def cast_columns(
    frame: pd.DataFrame, columns: dict[str, ColumnSpec], keep: list[str]
) -> pd.DataFrame:
    """`keep` columns as they are, plus every spec column cast to its type (NULL where it fails)."""
    casts = [ident(c) for c in keep] + [_cast(name, col) for name, col in columns.items()]
    with duckdb.connect() as con:
        con.register("frame", frame)
        return to_pandas(con.sql(f"SELECT {', '.join(casts)} FROM frame"))


def _cast(name: str, col: ColumnSpec) -> str:
    cast = f"TRY_CAST({ident(name)} AS {SQL_TYPES[col.type]})"
    if col.type == "int":
        # DuckDB would round "5.5" to 6: an integer column accepts integer text only.
        cast = f"CASE WHEN regexp_full_match(trim({ident(name)}), '[+-]?[0-9]+') THEN {cast} END"
    return f"{cast} AS {ident(name)}"


def row_checks(name: str, col: ColumnSpec) -> list:
    import pandera.pandas as pa

    checks = []
    if col.ge is not None:
        checks.append(pa.Check.ge(col.ge))
    if col.le is not None:
        checks.append(pa.Check.le(col.le))
    if col.isin is not None:
        checks.append(pa.Check.isin(col.isin))
    if col.regex is not None:
        checks.append(pa.Check.str_matches(col.regex))
    return checks


def build_schema(spec: DatasetSpec, start: dt.date, end: dt.date):
    """The pandera schema of typed records dated in [start, end)."""
    import pandera.pandas as pa

    columns = {
        name: pa.Column(nullable=col.nullable, checks=row_checks(name, col))
        for name, col in spec.columns.items()
    }
    columns[spec.date.column] = pa.Column(
        checks=[pa.Check.ge(pd.Timestamp(start)), pa.Check.lt(pd.Timestamp(end))]
    )
    # A derived key is NULL where its SQL failed on the row: such a record has no identity.
    columns |= {name: pa.Column(nullable=False) for name in spec.key_expressions}
    return pa.DataFrameSchema(
        columns,
        unique=[spec.date.column, *spec.key],
        report_duplicates="exclude_first",
        name=f"{spec.name} records",
    )


def _schema_failures(schema, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (row index, column, check) that failed; schema-level failures raise."""
    import pandera.pandas as pa

    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        if cases["index"].isna().any():
            structural = cases[cases["index"].isna()][["column", "check", "failure_case"]]
            raise ValueError(f"records do not fit the schema:\n{structural.to_string()}") from None
        cases = cases.assign(failure_case=cases["failure_case"].astype(str))
        return cases[["index", "column", "check", "failure_case"]]
    return pd.DataFrame(columns=["index", "column", "check", "failure_case"])


def validate_records(
    raw: pd.DataFrame, spec: DatasetSpec, start: dt.date, end: dt.date
) -> ValidationResult:
    """Split raw text records into typed valid rows and quarantined rows with their reasons.

    Quarantined rows keep their raw text and `partition_date` (the raw row's partition, else the
    row's date, or `start` when dated outside the window) so that re-running a partition replaces
    them too.
    """
    date = spec.date.column
    raw = raw.reset_index(drop=True)
    typed = cast_columns(raw, spec.columns, keep=[date, *spec.key_expressions])

    parse_failures = []
    for name, col in spec.columns.items():
        failed = raw[name].notna() & typed[name].isna()
        parse_failures.append(
            pd.DataFrame(
                {
                    "index": raw.index[failed],
                    "column": name,
                    "check": f"type({col.type})",
                    "failure_case": raw.loc[failed, name].astype(str),
                }
            )
        )
    parse_failures = pd.concat(parse_failures, ignore_index=True)
    check_failures = _schema_failures(build_schema(spec, start, end), typed)
    # A value that did not parse is null after the cast: report the parse, not the null.
    check_failures = check_failures[
        ~check_failures.set_index(["index", "column"]).index.isin(
            parse_failures.set_index(["index", "column"]).index
        )
    ]
    failures = pd.concat([parse_failures, check_failures], ignore_index=True)
    duplicates = check_failures.loc[
        check_failures["check"] == "multiple_fields_uniqueness", "index"
    ].nunique()

    reasons = (
        failures.astype({"index": "int64"})
        .groupby("index", sort=True)
        .agg(
            failed_column=("column", _join),
            failed_check=("check", _join),
            failure_case=("failure_case", _join),
        )
        .astype("string")
    )
    # Text as ingested, typed as text even when empty: the table's first write fixes its types.
    text = [c for c in raw.columns if c not in (date, PARTITION_COLUMN)]
    quarantined = raw.loc[reasons.index].astype(dict.fromkeys(text, "string")).join(reasons)
    if PARTITION_COLUMN not in raw.columns:
        in_window = quarantined[date].between(
            pd.Timestamp(start), pd.Timestamp(end), inclusive="left"
        )
        quarantined[PARTITION_COLUMN] = quarantined[date].where(in_window, pd.Timestamp(start))
    valid = typed.drop(index=reasons.index)
    return ValidationResult(
        valid=valid.reset_index(drop=True),
        quarantined=quarantined.reset_index(drop=True),
        duplicate_keys=int(duplicates),
    )


def _join(values: pd.Series) -> str:
    return "; ".join(dict.fromkeys(str(v) for v in values))


def validate_lookup(raw: pd.DataFrame, columns: dict[str, ColumnSpec], keys: list[str]):
    """Typed lookup rows passing their checks, one per key; returns (rows, number dropped).

    A lookup row that fails is dropped rather than quarantined: the records it would have
    enriched keep their other features and get nulls for its columns.
    """
    import pandera.pandas as pa

    typed = cast_columns(raw, columns, keep=[])
    parse_failed = pd.concat([raw[c].notna() & typed[c].isna() for c in columns], axis=1).any(
        axis=1
    )
    parsed = typed[~parse_failed]
    schema = pa.DataFrameSchema(
        {n: pa.Column(nullable=c.nullable, checks=row_checks(n, c)) for n, c in columns.items()},
        unique=keys,
        report_duplicates="exclude_first",
    )
    failed = _schema_failures(schema, parsed)["index"].unique()
    kept = parsed.drop(index=failed)
    return kept.reset_index(drop=True), len(raw) - len(kept)
