"""Monitoring through real Dagster runs: real DuckDB, MLflow (sqlite in tmp), Evidently, sklearn.

One module-scoped world: features of 2013-01-01..10 built by the data assets from real rows, a
training set of Jan 1-7, and a small pipeline registered as version 1 (champion) and version 2
(challenger). Each test copies the warehouse file, so tests that rewrite it stay independent.
"""

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from mlops_assets import ab_testing, automation, monitoring
from mlops_assets.lib.clock import REPLAY_DATE_ENV
from mlops_assets.lib.dashboard import FIGURES_TAG
from mlops_assets.monitoring.drift import DRIFT_CHECK
from mlops_assets.monitoring.performance import ESTIMATE_CHECK, PERFORMANCE_CHECK
from mlops_assets.partitions import dataset_spec as spec
from mlops_assets_tests.conftest import (
    FEATURES_TABLE,
    MODEL,
    ROWS_PER_DAY,
    THRESHOLDS,
    make_env,
    range_tags,
)

DAILY = [
    monitoring.predictions,
    monitoring.drift_report,
    monitoring.performance_estimate,
    monitoring.performance,
]
SCORED = [monitoring.predictions, monitoring.performance]
DRIFT = [monitoring.predictions, monitoring.drift_report]
# The sample holds 30 flights a day: judge drift on days of 10 rows or more.
WINDOW = {"min_rows": 10, "domain_null_days": 7}


@pytest.fixture
def env(world, tmp_path, instance):
    return make_env(world, tmp_path, instance)


def definitions(env) -> dg.Definitions:
    return dg.Definitions(
        assets=[FEATURES_TABLE, *monitoring.monitoring_assets, ab_testing.ab_outcomes],
        jobs=[automation.monitoring_job],
        schedules=[automation.monitoring_schedule],
        resources=env["resources"],
    )


@pytest.fixture(scope="module")
def ranged(world, tmp_path_factory):
    """monitoring_job over Jan 8-10 as one run (read-only for the tests that use it)."""
    with dg.instance_for_test() as instance:
        env = make_env(world, tmp_path_factory.mktemp("ranged"), instance)
        defs = definitions(env)
        dg.Definitions.validate_loadable(defs)
        result = defs.resolve_job_def("monitoring_job").execute_in_process(
            instance=instance,
            tags=range_tags("2013-01-08", "2013-01-10"),
            run_config={
                "ops": {
                    "drift_report": {"config": WINDOW},
                    "performance": {"config": {"min_labelled_records": 1}},
                    "performance_estimate": {"config": {"min_records": 1}},
                }
            },
        )
        assert result.success
        yield env | {"result": result}


def run(env, assets=DAILY, start="2013-01-08", end=None, drift=None, perf=None, **kwargs):
    config = {
        "drift_report": {"config": drift or WINDOW},
        "performance": {"config": perf or {"min_labelled_records": 1}},
        "performance_estimate": {"config": {"min_records": 1}},
    }
    config = {k: v for k, v in config.items() if any(a.key.path[-1] == k for a in assets)}
    partition = {"partition_key": start} if end is None else {"tags": range_tags(start, end)}
    return dg.materialize(
        [FEATURES_TABLE, *DAILY, monitoring.monitoring_summary],
        selection=assets,
        resources=env["resources"],
        instance=env["instance"],
        run_config={"ops": config},
        **partition,
        **kwargs,
    )


def sql(env, query):
    with duckdb.connect(str(env["dir"] / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(query).fetchall()


def per_partition(result, asset):
    return {
        e.partition: {k: v.value for k, v in e.metadata.items()}
        for e in result.asset_materializations_for_node(asset)
    }


def checks(result, name):
    """The check's evaluations by partition: one per day of the run, on that day."""
    evaluations = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.check_name == name
    ]
    by_day = {e.partition: e for e in evaluations}
    assert len(by_day) == len(evaluations) and None not in by_day
    return by_day


def run_metadata(result, asset):
    """The last day's materialization: a range run's totals are there (`range_totals`)."""
    *_, materialization = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in materialization.metadata.items()}


def test_predictions_carry_the_model_version_and_a_rerun_replaces_a_day(env):
    assert run(env, [monitoring.predictions], "2013-01-08", "2013-01-10").success
    rows = sql(
        env,
        "SELECT model_alias, model_version, model_name, count(*), count(DISTINCT flight_date) "
        "FROM flights.predictions GROUP BY ALL ORDER BY 1",
    )
    assert rows == [("challenger", "2", MODEL, 90, 3), ("champion", "1", MODEL, 90, 3)]

    result = run(env, [monitoring.predictions], "2013-01-09")
    assert result.success
    day_count = "SELECT count(*) FROM flights.predictions WHERE flight_date = '2013-01-09'"
    assert sql(env, day_count) == [(2 * ROWS_PER_DAY,)]
    assert sql(env, "SELECT count(*) FROM flights.predictions") == [(180,)]
    meta = result.asset_materializations_for_node("predictions")[0].metadata
    assert meta["champion_version"].value == "1" and meta["challenger_version"].value == "2"
    # Each version decides at its own threshold, stored beside the probability.
    wrong = sql(
        env,
        "SELECT count(*) FROM flights.predictions WHERE prediction != "
        "(probability >= CASE model_version WHEN '1' THEN 0.2 ELSE 0.35 END)::INTEGER "
        "OR threshold != CASE model_version WHEN '1' THEN 0.2 ELSE 0.35 END",
    )
    assert wrong == [(0,)]
    split = sql(
        env, "SELECT count(*) FROM flights.predictions WHERE probability BETWEEN 0.2 AND 0.35"
    )
    assert split[0][0] > 0  # records on which the two versions decide differently


def test_a_range_reports_its_numbers_per_day_in_the_event_log(ranged):
    result, env = ranged["result"], ranged
    stored = dict(
        sql(env, "SELECT strftime(flight_date, '%Y-%m-%d'), drift_share FROM flights.drift_report")
    )
    assert len(stored) == 3
    # Read back from the instance's event log, not the run result: what the UI plots.
    records = env["instance"].fetch_materializations(dg.AssetKey("drift_report"), limit=10).records
    logged = {r.asset_materialization.partition: r.asset_materialization.metadata for r in records}
    assert set(logged) == set(stored)
    for day, share in stored.items():
        assert logged[day]["drift_share"].value == pytest.approx(share)
        assert logged[day]["dagster/partition_row_count"].value == 1
    proba = per_partition(result, "predictions")
    assert len({m["mean_probability"] for m in proba.values()}) == 3  # not one copy for all
    perf = sql(env, "SELECT strftime(flight_date, '%Y-%m-%d'), brier FROM flights.performance")
    assert {d: m["brier"] for d, m in per_partition(result, "performance").items()} == dict(perf)


def test_html_for_the_last_day_only_and_snapshots_in_the_workspace(ranged):
    from evidently.ui.workspace import Workspace

    reports = ranged["dir"] / "reports" / "drift"
    assert sorted(p.name for p in reports.iterdir()) == ["2013-01-10.html"]
    meta = per_partition(ranged["result"], "drift_report")
    assert Path(meta["2013-01-10"]["html_report"]).stat().st_size > 100_000
    assert "html_report" not in meta["2013-01-09"]
    workspace = Workspace(str(ranged["dir"] / "evidently"))
    [project] = workspace.search_project("flights drift")
    runs = [workspace.get_run(project.id, i) for i in workspace.list_runs(project.id)]
    drift = [r for r in runs if FIGURES_TAG not in r.tags]  # the summary adds the day's figures
    assert sorted(r.timestamp for r in drift) == [dt.datetime(2013, 1, d) for d in (8, 9, 10)]


def test_the_summary_shows_the_days_by_date(ranged):
    meta = ranged["result"].asset_materializations_for_node("monitoring_summary")[0].metadata
    assert Path(meta["plot_file"].value).read_bytes()[:4] == b"\x89PNG"
    assert meta["plot"].value.startswith("![monitoring by date](data:image/png;base64,iVBOR")
    assert meta["days_with_drift"].value == 3 and meta["days_judged"].value == 3
    daily = [record.data for record in meta["daily"].records]
    assert [row["flight_date"] for row in daily] == ["2013-01-08", "2013-01-09", "2013-01-10"]
    stored = sql(ranged, "SELECT max_z FROM flights.drift_report ORDER BY flight_date")
    assert [row["max_z"] for row in daily] == [round(z, 3) for (z,) in stored]
    assert all(row["estimated_roc_auc"] is not None for row in daily)
    # The same days went to the Evidently project, charted there by date (test_views.py).
    assert meta["evidently_days_written"].value == 3
    assert "2013-01" in meta["monthly"].value


def test_a_shifted_column_alarms_against_the_champions_training_days(env):
    day = "2013-01-08"
    quiet = {**WINDOW, "html": "none"}
    assert run(env, DRIFT, start=day, drift=quiet).success
    null = sql(env, "SELECT model_version, count(DISTINCT day) FROM flights.drift_null GROUP BY 1")
    # The null comes from the champion's data window (its tag): Jan 1-7, one row per day.
    assert null == [("1", 7)]
    column = "hour"
    with duckdb.connect(str(env["dir"] / "warehouse.duckdb")) as con:
        con.execute(
            f"UPDATE flights.features SET {column} = {column} + 3 * "
            f"(SELECT stddev({column}) FROM flights.features) WHERE flight_date = '{day}'"
        )
    result = run(env, DRIFT, start=day, drift=quiet)
    assert result.success
    rows = sql(env, f"SELECT alarm, drifted_columns, drift_z__{column} FROM flights.drift_report")
    assert len(rows) == 1  # the day's row was replaced
    alarm, drifted, z = rows[0]
    assert alarm and drifted.split(", ")[0] == column and z > 3
    # The null was not recomputed: same rows, read back from DuckDB.
    assert sql(env, "SELECT count(DISTINCT day) FROM flights.drift_null") == [(7,)]
    judged = {c for (c,) in sql(env, "SELECT DISTINCT column_name FROM flights.drift_null")}
    assert "day_of_week" not in judged and {"hour", "carrier", "__domain__"} <= judged
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(env["dir"] / "evidently"))
    [project] = workspace.search_project("flights drift")
    assert len(workspace.list_runs(project.id)) == 1  # the day's snapshot was replaced too


def test_calendar_columns_are_left_out_by_their_role():
    numeric, categorical = spec.drift_features
    assert spec.features["day_of_week"].role == "calendar"
    assert "day_of_week" not in numeric and "hour" in numeric and "carrier" in categorical


def test_the_label_delay_is_respected(env, monkeypatch):
    monkeypatch.setenv(REPLAY_DATE_ENV, "2013-01-10")
    perf = {"label_delay_days": 2, "min_labelled_records": 1}
    result = run(env, SCORED, start="2013-01-08", end="2013-01-10", perf=perf)
    assert result.success
    days = "SELECT strftime(flight_date, '%d') FROM flights.performance ORDER BY 1"
    assert sql(env, days) == [("08",)]
    skipped = per_partition(result, "performance")
    assert skipped["2013-01-10"]["skipped"].startswith("labels pending: usable from 2013-01-12")

    monkeypatch.setenv(REPLAY_DATE_ENV, "2013-01-12")
    assert run(env, SCORED, start="2013-01-08", end="2013-01-10", perf=perf).success
    assert sql(env, days) == [("08",), ("09",), ("10",)]


def test_performance_matches_an_independent_computation_and_the_check_warns(ranged, world, env):
    result = ranged["result"]
    labelled = sql(
        ranged,
        "SELECT f.is_delayed, p.probability FROM flights.predictions p JOIN flights.features f "
        "USING (flight_date, carrier, flight, sched_dep_time) WHERE p.model_alias = 'champion' "
        "AND f.is_delayed IS NOT NULL AND p.flight_date = '2013-01-09'",
    )
    y, p = np.array(labelled).T
    [(brier, positive_rate, predicted_rate, n, version)] = sql(
        ranged,
        "SELECT brier, positive_rate, predicted_positive_rate, n, model_version "
        "FROM flights.performance WHERE flight_date = '2013-01-09'",
    )
    assert brier == pytest.approx(brier_score_loss(y, p)) and positive_rate == y.mean()
    # Decisions at the champion's threshold, not at 0.5.
    assert predicted_rate == pytest.approx(np.mean(p >= THRESHOLDS["1"]))
    assert n == len(y) and version == "1"
    warned = checks(result, PERFORMANCE_CHECK)
    assert sorted(warned) == ["2013-01-08", "2013-01-09", "2013-01-10"]
    for evaluation in warned.values():  # every day below the (in-sample) test metrics
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert "against the test value" in evaluation.description
        assert evaluation.metadata["kept_out"].value is False  # not blocking: only flagged
    meta = run_metadata(result, "performance")
    assert meta["test_roc_auc"] == pytest.approx(world["reference"]["roc_auc"])
    assert meta["days_below"] == 3

    lenient = {
        "min_labelled_records": 1,
        "watched_metrics": ["roc_auc"],
        "max_relative_drop": 1.0,
        "coverage": 0.999999,
    }
    [passed] = checks(
        run(env, SCORED, start="2013-01-08", perf=lenient), PERFORMANCE_CHECK
    ).values()
    assert passed.passed and passed.partition == "2013-01-08"


def test_decisions_use_the_models_registered_threshold(ranged):
    labelled = sql(
        ranged,
        "SELECT f.is_delayed, p.probability FROM flights.predictions p JOIN flights.features f "
        "USING (flight_date, carrier, flight, sched_dep_time) WHERE p.model_alias = 'champion' "
        "AND f.is_delayed IS NOT NULL AND p.flight_date = '2013-01-09'",
    )
    y, p = np.array(labelled).T
    [(accuracy, rate, threshold)] = sql(
        ranged,
        "SELECT p.accuracy, p.predicted_positive_rate, e.threshold FROM flights.performance p "
        "JOIN flights.performance_estimate e USING (flight_date) WHERE flight_date = '2013-01-09'",
    )
    assert threshold == THRESHOLDS["1"]  # the tag, not a default
    assert accuracy == pytest.approx(((p >= threshold) == y).mean())
    assert rate == pytest.approx((p >= threshold).mean())


def test_the_estimate_comes_before_labels_and_sits_beside_the_realized_value(ranged):
    rows = sql(
        ranged,
        "SELECT e.estimated_roc_auc, e.roc_auc_low, e.roc_auc_high, p.roc_auc, "
        "p.estimated_roc_auc, p.roc_auc_low, p.roc_auc_high, p.outside_band "
        "FROM flights.performance_estimate e JOIN flights.performance p USING (flight_date) "
        "ORDER BY flight_date",
    )
    assert len(rows) == 3
    for estimated, low, high, realized, beside, low_p, high_p, outside in rows:
        assert low <= estimated <= high
        # The realized value is compared with the estimate for the same (labelled) records.
        assert low_p <= beside <= high_p
        # A day whose labelled records hold one class has no ROC AUC: never outside the band.
        assert outside == (realized is not None and not low_p <= realized <= high_p)
    estimated = checks(ranged["result"], ESTIMATE_CHECK)
    assert sorted(estimated) == ["2013-01-08", "2013-01-09", "2013-01-10"]
    assert all(e.metadata["judged"].value for e in estimated.values())
    assert run_metadata(ranged["result"], "performance_estimate")["days_judged"] == 3


def test_a_day_with_few_labels_is_judged_on_a_trailing_week_and_nothing_is_never_green(env):
    # 30 flights a day: 100 labelled records need 4 days; the first days of the data have no
    # earlier ones and are not judged (a WARN with the count), never a pass.
    weekly = {"min_labelled_records": 100, "max_window_days": 7}
    result = run(env, SCORED, start="2013-01-01", end="2013-01-10", perf=weekly)
    assert result.success
    rows = dict(
        (d, (judged, k, n, reason))
        for d, judged, k, n, reason in sql(
            env,
            "SELECT strftime(flight_date, '%d'), judged, window_days, n, not_judged_reason "
            "FROM flights.performance ORDER BY 1",
        )
    )
    assert rows["01"][0] is False and rows["01"][3] == f"not judged: n={rows['01'][2]} < 100"
    assert rows["10"][:2] == (True, 4) and rows["10"][2] >= 100
    meta = per_partition(result, "performance")
    assert meta["2013-01-01"]["not_judged"].startswith("not judged: n=")
    warned = checks(result, PERFORMANCE_CHECK)
    assert len(warned) == 10
    for day in ("2013-01-01", "2013-01-02", "2013-01-03"):
        assert not warned[day].passed and warned[day].severity == dg.AssetCheckSeverity.WARN
        assert warned[day].description.startswith("not judged: n=")

    nothing = {"min_labelled_records": 1000, "max_window_days": 7, "blocking": True}
    result = run(env, SCORED, start="2013-01-08", perf=nothing)
    [warned] = checks(result, PERFORMANCE_CHECK).values()
    # Not judged: a warning even when blocking, and the day is not kept out.
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert warned.description.startswith("not judged")
    assert warned.metadata["kept_out"].value is False


def test_a_drift_check_that_judged_nothing_is_not_green(env):
    tiny = {**WINDOW, "html": "none", "min_rows": 1000}
    result = run(env, DRIFT, start="2013-01-09", drift=tiny)
    [warned] = checks(result, DRIFT_CHECK).values()
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert warned.description.startswith("not judged") and warned.partition == "2013-01-09"
    [(judged, alarm, reason)] = sql(
        env, "SELECT judged, alarm, not_judged_reason FROM flights.drift_report"
    )
    assert (judged, alarm) == (False, False) and reason.startswith("not judged")


def test_a_day_without_records_is_skipped_with_a_message(env):
    result = run(env, start="2013-01-11")
    assert result.success
    for asset in ("predictions", "drift_report", "performance_estimate", "performance"):
        assert per_partition(result, asset)["2013-01-11"]["skipped"].startswith("no ")
    assert sql(env, "SELECT count(*) FROM flights.predictions") == [(0,)]
    tables = sql(env, "SELECT table_name FROM information_schema.tables")
    assert ("drift_report",) not in tables and ("performance",) not in tables


def test_the_schedule_monitors_yesterday_of_the_replayed_date(env, monkeypatch):
    defs = definitions(env)
    schedule = defs.resolve_schedule_def("monitoring_schedule")
    tick = dt.datetime(2026, 11, 23, 6)
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    monkeypatch.setenv(REPLAY_DATE_ENV, "2013-09-15")
    with dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    ) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2013-09-14"
    monkeypatch.delenv(REPLAY_DATE_ENV)
    with dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    ) as context:
        data = schedule.evaluate_tick(context)
    assert not data.run_requests and REPLAY_DATE_ENV in data.skip_message


def test_the_lineage_runs_from_the_champion_through_monitoring_to_the_ab_test(env):
    graph = definitions(env).resolve_asset_graph()
    champion = dg.AssetKey("champion_model")
    for asset in ("predictions", "drift_report", "performance_estimate", "performance"):
        assert champion in graph.get(dg.AssetKey(asset)).parent_keys, asset
    assert dg.AssetKey("drift_report") in graph.get(dg.AssetKey("ab_outcomes")).parent_keys


def test_a_champion_moved_by_hand_makes_the_monitored_days_stale(env):
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    from mlops_assets.automation import champion_alias_sensor

    instance, mlflow = env["instance"], env["resources"]["mlflow"]

    def tick():
        with dg.build_sensor_context(instance=instance, resources={"mlflow": mlflow}) as context:
            return champion_alias_sensor(context)

    [seen] = tick().asset_events  # nothing recorded yet: v1 is recorded
    instance.report_runless_asset_event(seen)
    assert isinstance(tick(), dg.SkipReason)  # unchanged: nothing to record
    assert run(env, [monitoring.predictions], start="2013-01-08").success

    def status():
        graph = definitions(env).resolve_asset_graph()
        resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
        return resolver.get_status(dg.AssetKey("predictions"), "2013-01-08")

    assert status() == StaleStatus.FRESH
    mlflow.client().set_registered_model_alias(MODEL, "champion", "2")  # by hand, in MLflow
    [moved] = tick().asset_events
    assert moved.tags["dagster/data_version"] == "2"
    instance.report_runless_asset_event(moved)
    assert status() == StaleStatus.STALE
