"""A corpus of corrupted deliveries written over a stored clean week (real Dagster, real DuckDB).

Each delivery is judged before it replaces anything: it is refused with the reason named and
every stored table stays exactly as it was, or it is stored exactly as intended.
"""

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from mlops_assets_tests.conftest import make_resources_at, range_tags, write_csv
from mlops_assets_tests.test_data_assets import DATA_ASSETS

TABLES = ("raw_records", "validated_records", "quarantined_records", "features")
WEEK = ("2013-01-01", "2013-01-07")


def materialize_week(resources, instance, start=WEEK[0], end=WEEK[1], run_config=None):
    return dg.materialize(
        DATA_ASSETS,
        tags=range_tags(start, end),
        resources=resources,
        instance=instance,
        raise_on_error=False,
        run_config=run_config,
    )


def snapshot(database: str) -> dict[str, list]:
    with duckdb.connect(database, read_only=True) as con:
        return {
            t: con.execute(f"SELECT * FROM flights.{t} ORDER BY ALL").fetchall() for t in TABLES
        }


def failure(result) -> str:
    """The text of the step failures of a run (error and Failure description)."""
    texts = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        error = data.error
        while error is not None:  # with its causes: an IO manager's error is the cause
            texts.append(str(error.message))
            error = error.cause
        if data.user_failure_data is not None:
            texts.append(str(data.user_failure_data.description))
    return "\n".join(texts)


@pytest.fixture(scope="module")
def clean_week(tmp_path_factory, flights_rows) -> Path:
    """A warehouse holding the clean week 2013-01-01 .. 01-07 (30 flights a day)."""
    directory = tmp_path_factory.mktemp("clean")
    source = write_csv(directory / "clean.csv", flights_rows)
    with dg.instance_for_test() as instance:
        result = materialize_week(make_resources_at(directory, source), instance)
    assert result.success, failure(result)
    return directory / "warehouse.duckdb"


@pytest.fixture
def over_clean_week(clean_week, tmp_path, instance):
    """Run a delivery (a source file) over a copy of the clean week; returns (result, database)."""
    shutil.copy(clean_week, tmp_path / "warehouse.duckdb")

    def deliver(path: Path, **kwargs):
        resources = make_resources_at(tmp_path, path)
        return materialize_week(resources, instance, **kwargs), resources["warehouse"].database

    return deliver


def header_only(rows, path):
    path.write_text(",".join(rows[0]) + "\n")


def truncated(rows, path):
    write_csv(path, rows)
    text = path.read_bytes()
    path.write_bytes(text[: text.rindex(b"\n", 0, int(len(text) * 0.4)) + 1])  # in the 6th day


def dated_years_ahead(rows, path):
    write_csv(path, [{**r, "year": "2031"} if i % 10 == 0 else r for i, r in enumerate(rows)])


def numeric_column_all_null(rows, path):
    write_csv(path, [{**r, "dep_delay": "NA"} for r in rows])


def too_many_bad_values(rows, path):
    write_csv(path, [{**r, "distance": "far"} if i % 10 == 0 else r for i, r in enumerate(rows)])


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (header_only, "2013-01-01: no rows"),
        (truncated, "2013-01-07: 0 rows against a trailing median of 30"),
        (dated_years_ahead, "dated outside 2013-01-01..2013-12-31"),
        (numeric_column_all_null, "dep_delay: 100% null on 2013-01-01 (limit 60%)"),
        (too_many_bad_values, "type(float) (21)"),
    ],
)
def test_a_refused_delivery_changes_no_stored_table(
    corrupt, reason, over_clean_week, clean_week, flights_rows, tmp_path
):
    before = snapshot(str(clean_week))
    corrupt(flights_rows, tmp_path / "delivery.csv")
    result, database = over_clean_week(tmp_path / "delivery.csv")
    assert not result.success
    assert reason in failure(result), failure(result)
    assert "nothing stored was changed" in failure(result)
    assert snapshot(database) == before


@pytest.mark.parametrize("change", ["extra column", "shuffled columns"])
def test_a_reshaped_file_with_the_same_rows_changes_nothing(
    change, over_clean_week, clean_week, flights_rows, tmp_path
):
    if change == "extra column":
        rows = [{**r, "note": "x"} for r in flights_rows]
    else:
        rows = [dict(reversed(list(r.items()))) for r in flights_rows]
    result, database = over_clean_week(write_csv(tmp_path / "delivery.csv", rows))
    assert result.success, failure(result)
    assert snapshot(database) == snapshot(str(clean_week))
    raw = result.asset_materializations_for_node("raw_records")[-1].metadata
    # The flights file always has columns the specification does not use (arr_time, ...).
    assert ("note" in raw["extra_columns"].value) == (change == "extra column")
    with duckdb.connect(database, read_only=True) as con:
        archived = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '%_history'"
        ).fetchall()[0][0]
    assert archived == 0  # the same rows again: nothing replaced, nothing archived


def test_a_row_dated_outside_the_range_is_quarantined_in_the_nearest_day(
    over_clean_week, clean_week, flights_rows, tmp_path
):
    """One flight of Jan 3 dated 2031 leaves Jan 3 (everywhere) and is held under Dec 31."""
    moved = next(i for i, r in enumerate(flights_rows) if (r["month"], r["day"]) == ("1", "3"))
    rows = [{**r, "year": "2031"} if i == moved else r for i, r in enumerate(flights_rows)]
    # Dec 31 needs flights of its own to be a valid delivery: Jan 14's, re-dated.
    rows += [{**r, "month": "12", "day": "31"} for r in flights_rows if r["day"] == "14"]
    path = write_csv(tmp_path / "delivery.csv", rows)
    result, database = over_clean_week(path)
    assert result.success, failure(result)
    raw = result.asset_materializations_for_node("raw_records")[-1].metadata
    assert raw["rows_dated_outside_range"].value == 1
    with duckdb.connect(database, read_only=True) as con:
        for table in ("raw_records", "validated_records", "features"):
            (n,) = con.execute(
                f"SELECT count(*) FROM flights.{table} WHERE flight_date = DATE '2013-01-03'"
            ).fetchall()[0]
            assert n == 29, table
        (kept,) = con.execute(
            "SELECT count(*) FROM flights.raw_records_history WHERE flight_date = '2013-01-03'"
        ).fetchall()[0]
    assert kept == 30  # the replaced version of the day stays restorable

    resources = make_resources_at(tmp_path, path)
    with dg.instance_for_test() as instance:
        result = materialize_week(resources, instance, "2013-12-31", "2013-12-31")
    assert result.success, failure(result)
    with duckdb.connect(database, read_only=True) as con:
        held = con.execute(
            "SELECT partition_date::DATE::VARCHAR, flight_date::DATE::VARCHAR, failed_column, "
            "failed_check FROM flights.quarantined_records WHERE year = '2031'"
        ).fetchall()
    assert held == [
        (
            "2013-12-31",
            "2031-01-03",
            "year; flight_date",
            "less_than_or_equal_to(2013.0); less_than(2014-01-01 00:00:00)",
        )
    ]


def test_an_empty_day_is_stored_only_when_accepted_and_restorable(
    over_clean_week, flights_rows, tmp_path
):
    rows = [r for r in flights_rows if (r["month"], r["day"]) != ("1", "4")]
    path = write_csv(tmp_path / "gap.csv", rows)
    assert "2013-01-04: no rows" not in failure(over_clean_week(path)[0])  # judged by the trailing
    result, database = over_clean_week(
        path, run_config={"ops": {"raw_records": {"config": {"accept_refused_delivery": True}}}}
    )
    assert result.success, failure(result)
    with duckdb.connect(database, read_only=True) as con:
        days = con.execute(
            "SELECT DISTINCT flight_date::DATE::VARCHAR FROM flights.features ORDER BY 1"
        ).fetchall()
    assert ("2013-01-04",) not in days and len(days) == 6

    from mlops_assets.restore import main as restore

    assert restore(["raw_records", "2013-01-04", "--database", database]) == 0
    with duckdb.connect(database, read_only=True) as con:
        (n,) = con.execute(
            "SELECT count(*) FROM flights.raw_records WHERE flight_date = '2013-01-04'"
        ).fetchall()[0]
    assert n == 30


def edited_spec(monkeypatch, **column_changes):
    """The flights spec as a user would edit it, seen by the data assets from now on: columns
    in reverse order, then `column_changes` (None drops a column)."""
    from mlops_assets import features, ingestion, validation
    from mlops_assets.lib.spec import ColumnSpec
    from mlops_assets.partitions import dataset_spec

    columns = dict(reversed(dataset_spec.columns.items()))
    for name, change in column_changes.items():
        if change is None:
            del columns[name]
        else:
            columns[name] = ColumnSpec.model_validate(change)
    spec = dataset_spec.model_copy(update={"columns": columns})
    for stage in (ingestion, validation, features):
        monkeypatch.setattr(stage, "dataset_spec", spec)
    return spec


def stored(database: str, table: str, columns: list[str], day: str) -> tuple[list, list]:
    """(rows of `day`, rows of the other days) of `columns`, by name."""
    selected = ", ".join(columns)
    with duckdb.connect(database, read_only=True) as con:
        return tuple(
            con.execute(
                f"SELECT {selected} FROM flights.{table} "
                f"WHERE (flight_date::DATE = DATE '{day}') = ? ORDER BY ALL",
                [on_day],
            ).fetchall()
            for on_day in (True, False)
        )


def test_a_spec_edited_over_stored_days_adds_keeps_and_reorders_columns_by_name(
    monkeypatch, over_clean_week, clean_week, flights_rows, tmp_path
):
    """Columns reordered, `tailnum` dropped and `arr_delay` added, then one day re-run."""
    day = "2013-01-03"
    kept = ["flight_date", "carrier", "flight", "sched_dep_time", "dep_delay", "origin", "dest"]
    before = {t: stored(str(clean_week), t, [*kept, "tailnum"], day) for t in TABLES[:2]}
    features_before = snapshot(str(clean_week))["features"]
    edited_spec(monkeypatch, tailnum=None, arr_delay={"type": "float", "nullable": True})

    same = write_csv(tmp_path / "same.csv", flights_rows)
    result, database = over_clean_week(same, start=day, end=day)
    assert result.success, failure(result)

    arrivals = sorted(
        (float(r["arr_delay"]) if r["arr_delay"] != "NA" else None)
        for r in flights_rows
        if (r["month"], r["day"]) == ("1", "3")
    )
    for table in TABLES[:2]:
        on_day, other_days = stored(database, table, [*kept, "tailnum"], day)
        # The other days exactly as stored; the new column NULL there.
        assert other_days == before[table][1], table
        # The re-run day: every kept column holds its own values (no shift from the new order),
        # the dropped column stays, NULL in the new rows, and the added one holds the source's.
        assert [r[:-1] for r in on_day] == [r[:-1] for r in before[table][0]], table
        assert {r[-1] for r in on_day} == {None}, table
        (new_on_day, new_elsewhere) = stored(database, table, ["arr_delay"], day)
        values = [None if v is None else float(v) for (v,) in new_on_day]
        assert sorted(values, key=lambda v: (v is None, v)) == sorted(
            arrivals, key=lambda v: (v is None, v)
        ), table
        assert {v for (v,) in new_elsewhere} == {None}, table
    assert snapshot(database)["features"] == features_before


def test_a_spec_edit_that_changes_a_stored_column_type_is_refused_and_changes_nothing(
    monkeypatch, over_clean_week, clean_week, flights_rows, tmp_path
):
    edited_spec(monkeypatch, flight={"type": "string"})
    result, database = over_clean_week(write_csv(tmp_path / "same.csv", flights_rows))
    assert not result.success
    message = failure(result)
    assert "column type changed: flight (BIGINT stored, VARCHAR new)" in message, message
    assert "DROP TABLE flights.validated_records" in message  # how to start fresh
    assert snapshot(database) == snapshot(str(clean_week))
