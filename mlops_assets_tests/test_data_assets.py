"""raw -> validated -> features through real Dagster runs on a real DuckDB file."""

import csv
import subprocess
import sys
import textwrap

import dagster as dg
import duckdb
import pytest

from mlops_assets import features, ingestion, validation
from mlops_assets.definitions import defs
from mlops_assets.partitions import dataset_spec
from mlops_assets_tests.conftest import ROWS_PER_DAY, make_resources_at, range_tags, write_csv

DATA_ASSETS = [ingestion.raw_records, validation.validate_records, features.features]


def materialize(resources, instance, start, end=None, assets=DATA_ASSETS):
    if end is None:
        return dg.materialize(assets, partition_key=start, resources=resources, instance=instance)
    return dg.materialize(
        assets, tags=range_tags(start, end), resources=resources, instance=instance
    )


def daily_counts(resources, table):
    with duckdb.connect(resources["warehouse"].database, read_only=True) as con:
        rows = con.execute(
            f"SELECT strftime(flight_date, '%m-%d'), count(*) FROM flights.{table} GROUP BY 1"
        ).fetchall()
    return dict(rows)


def check_results(result):
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("data_job") is not None


def test_a_week_runs_as_one_run_into_duckdb(make_resources, sample_csv, instance):
    resources = make_resources(sample_csv)
    result = materialize(resources, instance, "2013-01-01", "2013-01-07")
    assert result.success
    expected = {f"01-0{d}": ROWS_PER_DAY for d in range(1, 8)}
    for table in ("raw_records", "validated_records", "features"):
        assert daily_counts(resources, table) == expected
    # The sample's Jan 6 is real: the weather of 7 of its 30 flights is missing. Judged per day,
    # not pooled over the week, that is over the features' 5% and warns.
    checks = check_results(result)
    assert checks.pop(features.FEATURE_NULL_CHECK) is False
    assert all(checks.values()), checks
    (feature_check,) = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.check_name == features.FEATURE_NULL_CHECK
    ]
    assert "temp: 23% null on 2013-01-06 (limit 5%)" in feature_check.metadata["problems"].value
    with duckdb.connect(resources["warehouse"].database, read_only=True) as con:
        types = dict(con.execute("DESCRIBE flights.features").fetchall()[i][:2] for i in range(17))
    assert types["flight_date"].startswith("TIMESTAMP") and types["temp"] == "DOUBLE"
    # Each day shows its own row count; the week's totals are on its last day alone.
    first, *_, last = result.asset_materializations_for_node("raw_records")
    for day in (first, last):
        assert day.metadata["dagster/partition_row_count"].value == ROWS_PER_DAY
        assert "dagster/row_count" not in day.metadata and "dagster/table_name" in day.metadata
    assert "range/rows" not in first.metadata and "days" not in first.metadata
    assert last.metadata["range/rows"].value == 7 * ROWS_PER_DAY
    assert last.metadata["range/rows_replaced"].value == 0 and last.metadata["days"].value == 7
    assert "range/query" in last.metadata


def stored_rows(database, table):
    with duckdb.connect(database, read_only=True) as con:
        return con.execute(f"SELECT * FROM flights.{table} ORDER BY ALL").fetchall()


def test_a_range_in_windows_of_days_stores_exactly_the_rows_of_one_window(
    sample_csv, tmp_path, instance
):
    """Windows of one day (chunk_rows under two days' rows) against one window for the range:
    the same rows in every table, one materialization per day with that day's row count, and a
    re-run that replaces every day by identical rows (nothing archived)."""
    whole = make_resources_at(tmp_path / "whole", sample_csv, chunk_rows=10_000)
    daily = make_resources_at(tmp_path / "daily", sample_csv, chunk_rows=ROWS_PER_DAY + 5)
    assert materialize(whole, instance, "2013-01-01", "2013-01-06").success
    result = materialize(daily, instance, "2013-01-01", "2013-01-06")
    assert result.success
    assert "6 window(s)" in "".join(
        e.message for e in instance.all_logs(result.run_id) if e.user_message
    )
    tables = ("raw_records", "validated_records", "quarantined_records", "features")
    for table in tables:
        expected = stored_rows(whole["warehouse"].database, table)
        assert stored_rows(daily["warehouse"].database, table) == expected, table
    assert len(stored_rows(daily["warehouse"].database, "features")) == 6 * ROWS_PER_DAY
    # Against the source itself: every declared column of the first six days, as text.
    columns = list(dataset_spec.columns)
    with duckdb.connect(daily["warehouse"].database, read_only=True) as con:
        raw = con.execute(f"SELECT {', '.join(columns)} FROM flights.raw_records").fetchall()
    with open(sample_csv) as handle:
        source = [
            tuple(None if r[c] in ("NA", "") else r[c] for c in columns)
            for r in csv.DictReader(handle)
            if int(r["day"]) <= 6
        ]
    nulls_last = lambda row: tuple((v is None, v or "") for v in row)  # noqa: E731
    assert sorted(raw, key=nulls_last) == sorted(source, key=nulls_last)
    assert len(raw) == 6 * ROWS_PER_DAY
    for asset in ("raw_records", "validated_records", "features"):
        events = result.asset_materializations_for_node(
            "validate_records" if asset == "validated_records" else asset
        )
        counts = {
            e.partition: e.metadata["dagster/partition_row_count"].value
            for e in events
            if e.asset_key == dg.AssetKey(asset)
        }
        assert counts == {f"2013-01-0{d}": ROWS_PER_DAY for d in range(1, 7)}, asset
    again = materialize(daily, instance, "2013-01-01", "2013-01-06")
    assert again.success
    for table in tables:
        assert stored_rows(daily["warehouse"].database, table) == stored_rows(
            whole["warehouse"].database, table
        )
    with duckdb.connect(daily["warehouse"].database, read_only=True) as con:
        history = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '%_history'"
        ).fetchall()
        staged = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '_staged%'"
        ).fetchall()
    assert history == [(0,)] and staged == [(0,)]


def test_rematerializing_a_day_replaces_exactly_its_rows(
    make_resources, flights_rows, tmp_path, instance
):
    first = make_resources(write_csv(tmp_path / "v1.csv", flights_rows))
    assert materialize(first, instance, "2013-01-01", "2013-01-05").success
    jan_3 = [r for r in flights_rows if (r["month"], r["day"]) == ("1", "3")]
    fewer = [r for r in flights_rows if r not in jan_3[:5]]
    second = make_resources(write_csv(tmp_path / "v2.csv", fewer))
    assert materialize(second, instance, "2013-01-03").success
    assert materialize(second, instance, "2013-01-03").success  # and again: idempotent
    for table in ("raw_records", "validated_records", "features"):
        counts = daily_counts(second, table)
        assert counts["01-03"] == ROWS_PER_DAY - 5
        assert [counts[f"01-0{d}"] for d in (1, 2, 4, 5)] == [ROWS_PER_DAY] * 4


def test_one_day_reads_only_that_day(make_resources, sample_csv, instance):
    resources = make_resources(sample_csv)
    assert materialize(resources, instance, "2013-01-01", "2013-01-14").success
    result = materialize(resources, instance, "2013-01-09")
    features_event = result.asset_materializations_for_node("features")[0]
    assert features_event.metadata["dagster/partition_row_count"].value == ROWS_PER_DAY
    assert daily_counts(resources, "features")["01-14"] == ROWS_PER_DAY


def test_bad_rows_are_quarantined_with_their_reason(
    make_resources, flights_rows, tmp_path, instance
):
    good = make_resources(write_csv(tmp_path / "good.csv", flights_rows))
    assert materialize(good, instance, "2013-01-02").success
    assert daily_counts(good, "quarantined_records") == {}  # the table exists, empty
    rows = [dict(r) for r in flights_rows]
    jan_2 = [r for r in rows if (r["month"], r["day"]) == ("1", "2")]
    jan_2[0]["dep_delay"] = "n/a?"  # 1 of 30: under the 5% the delivery may quarantine
    bad = make_resources(write_csv(tmp_path / "bad.csv", rows))
    result = materialize(bad, instance, "2013-01-02")
    assert check_results(result)["check_quarantine_share"] is True
    for table in ("validated_records", "features"):
        assert daily_counts(bad, table)["01-02"] == ROWS_PER_DAY - 1
    with duckdb.connect(bad["warehouse"].database, read_only=True) as con:
        held = con.execute(
            "SELECT failed_column, failed_check, failure_case, dep_delay "
            "FROM flights.quarantined_records"
        ).fetchall()
    assert held == [("dep_delay", "type(float)", "n/a?", "n/a?")]


def test_a_delivery_with_too_many_bad_rows_is_refused_before_any_write(
    make_resources, flights_rows, tmp_path, instance
):
    good = make_resources(write_csv(tmp_path / "good.csv", flights_rows))
    assert materialize(good, instance, "2013-01-02").success
    rows = [dict(r) for r in flights_rows]
    for row in [r for r in rows if (r["month"], r["day"]) == ("1", "2")][:10]:
        row["dep_delay"] = "n/a?"
    bad = make_resources(write_csv(tmp_path / "bad.csv", rows))
    result = dg.materialize(
        DATA_ASSETS,
        partition_key="2013-01-02",
        resources=bad,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "33.3% of the records fail their checks (limit 5%): type(float) (10)" in (
        failure.step_failure_data.user_failure_data.description
    )
    for table in ("raw_records", "validated_records", "features"):
        assert daily_counts(bad, table)["01-02"] == ROWS_PER_DAY  # what was stored stays
    assert daily_counts(bad, "quarantined_records") == {}


def test_an_empty_day_refuses_the_delivery_and_names_the_day(
    make_resources, flights_rows, tmp_path, instance
):
    rows = [r for r in flights_rows if (r["month"], r["day"]) != ("1", "4")]
    resources = make_resources(write_csv(tmp_path / "gap.csv", rows))
    result = dg.materialize(
        DATA_ASSETS,
        tags=range_tags("2013-01-01", "2013-01-05"),
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert "- 2013-01-04: 0 rows against a trailing median of 30" in description
    with duckdb.connect(resources["warehouse"].database, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM information_schema.tables").fetchall() == [(0,)]


def test_a_collapsed_day_is_refused_against_the_trailing_days(
    make_resources, flights_rows, tmp_path, instance
):
    first = make_resources(write_csv(tmp_path / "full.csv", flights_rows))
    assert materialize(first, instance, "2013-01-01", "2013-01-07").success
    jan_8 = [r for r in flights_rows if (r["month"], r["day"]) == ("1", "8")]
    thin = [r for r in flights_rows if r not in jan_8[5:]]
    resources = make_resources(write_csv(tmp_path / "thin.csv", thin))
    result = dg.materialize(
        DATA_ASSETS,
        partition_key="2013-01-08",
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert "2013-01-08: 5 rows against a trailing median of 30" in description
    assert "01-08" not in daily_counts(resources, "raw_records")


CONCURRENT_RUN = textwrap.dedent(
    """
    import sys, dagster as dg
    from mlops_assets import features, ingestion, validation
    from mlops_assets_tests.conftest import make_resources_at
    resources = make_resources_at(sys.argv[1], sys.argv[2])
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [ingestion.raw_records, validation.validate_records, features.features],
            partition_key=sys.argv[3], resources=resources, instance=instance,
        )
    sys.exit(0 if result.success else 1)
    """
)


@pytest.mark.parametrize("writers", [3])
def test_concurrent_writers_queue_on_the_duckdb_lock(sample_csv, tmp_path, writers):
    days = [f"2013-01-{d:02d}" for d in range(1, writers + 1)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_RUN, str(tmp_path), str(sample_csv), day],
            stderr=subprocess.PIPE,
            text=True,
        )
        for day in days
    ]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    assert [code for code, _ in outcomes] == [0] * writers, outcomes
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        count = con.execute("SELECT count(*) FROM flights.features").fetchone()[0]
    assert count == writers * ROWS_PER_DAY


def test_loading_the_code_location_imports_no_heavy_library():
    heavy = ["pandas", "sklearn", "mlflow", "evidently", "matplotlib", "pandera", "pyarrow"]
    check = (
        "import sys, mlops_assets; mlops_assets.defs; "
        f"print([m for m in {heavy} if m in sys.modules])"
    )
    loaded = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", check], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_each_data_check_fails_on_the_data_it_guards(
    make_resources, flights_rows, tmp_path, instance
):
    """A delivery with a missing day, a copied record, too many null tail numbers and flights
    whose hour has no weather, stored anyway by configuration: every check it breaks says so."""
    rows = [dict(r) for r in flights_rows if (r["month"], r["day"]) != ("1", "3")]
    jan_2 = [r for r in rows if (r["month"], r["day"]) == ("1", "2")]
    for row in jan_2[:12]:  # 12 of 30: over tailnum's max_null_rate 0.3
        row["tailnum"] = ""
    for row in jan_2:  # an hour the weather station never reported: no weather joins
        row["time_hour"] = "2013-01-02 03:33:00"
    rows.append(dict(jan_2[-1]))
    resources = make_resources(write_csv(tmp_path / "bad.csv", rows))
    result = dg.materialize(
        DATA_ASSETS,
        tags=range_tags("2013-01-01", "2013-01-04"),
        resources=resources,
        instance=instance,
        run_config={"ops": {"raw_records": {"config": {"accept_refused_delivery": True}}}},
    )
    assert result.success
    assert check_results(result) == {
        ingestion.ROW_COUNT_CHECK: False,
        ingestion.DUPLICATE_KEY_CHECK: False,
        validation.QUARANTINE_SHARE_CHECK: True,  # the copy is 1 of 92 records
        validation.NULL_RATE_CHECK: False,
        validation.SCHEMA_CHECK: True,
        features.FEATURE_NULL_CHECK: False,
    }
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.metadata
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }
    assert checks[ingestion.ROW_COUNT_CHECK]["failed_days"].value == 1
    assert checks[ingestion.DUPLICATE_KEY_CHECK]["duplicate_records"].value == 1
    assert checks[validation.NULL_RATE_CHECK]["over_limit"].value == "tailnum"
    assert checks[features.FEATURE_NULL_CHECK]["over_limit"].value == (
        "dewp, humid, precip, pressure, temp, visib, wind_speed"
    )
