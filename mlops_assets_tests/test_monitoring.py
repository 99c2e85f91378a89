"""Monitoring through real Dagster runs: real DuckDB, MLflow (sqlite in tmp), Evidently, sklearn.

One module-scoped world: features of 2013-01-01..10 built by the data assets from real rows, a
training set of Jan 1-7, and a small pipeline registered as version 1 (champion) and version 2
(challenger). Each test copies the warehouse file, so tests that rewrite it stay independent.
"""

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from mlops_assets import ab_testing, features, ingestion, monitoring, validation
from mlops_assets.lib import registry
from mlops_assets.lib.clock import REPLAY_DATE_ENV
from mlops_assets.lib.evaluation import classification_metrics
from mlops_assets.lib.modeling import build_pipeline, features_and_label, skops_trusted_types
from mlops_assets.partitions import dataset_spec as spec
from mlops_assets.resources import EvidentlyWorkspace, MlflowTracking, ReportStore
from mlops_assets_tests.conftest import ROWS_PER_DAY, make_resources_at, range_tags, write_csv

MODEL = "flights_model"
THRESHOLD = 0.35  # the test versions' registered threshold (not 0.5: proves it is read)
DAILY = [monitoring.predictions, monitoring.drift_report, monitoring.performance]
SCORED = [monitoring.predictions, monitoring.performance]
DRIFT = [monitoring.predictions, monitoring.drift_report]
# Reference for most tests: the features of Jan 1-7 (the days the model was trained on).
WINDOW = {"reference_start": "2013-01-01", "reference_end": "2013-01-08"}
# The features table as an upstream these runs read but never build (the world built it).
FEATURES_TABLE = dg.AssetSpec(
    "features",
    partitions_def=features.features.partitions_def,
    metadata={"partition_expr": spec.date.column},
)


@pytest.fixture(scope="module")
def world(tmp_path_factory, flights_rows):
    root = tmp_path_factory.mktemp("world")
    data = make_resources_at(root, write_csv(root / "flights.csv", flights_rows))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [ingestion.raw_records, validation.validate_records, features.features],
            tags=range_tags("2013-01-01", "2013-01-10"),
            resources=data,
            instance=instance,
        )
    assert result.success
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        con.execute(
            "CREATE TABLE flights.training_set AS SELECT *, 'train' AS split FROM flights.features "
            f"WHERE flight_date < '2013-01-08' AND {spec.target.name} IS NOT NULL"
        )
        train = con.execute("SELECT * FROM flights.training_set").df()

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = registry.client(uri)
    experiment = registry.ensure_experiment(client, "test", str(root / "artifacts"))
    pipeline = build_pipeline(
        "logistic_regression", {}, spec.categorical_features, spec.numeric_features, seed=0
    )
    x, y = features_and_label(train, spec.categorical_features, spec.numeric_features, "is_delayed")
    pipeline.fit(x, y)
    # In-sample metrics stand in for the test metrics: optimistic by construction, so the unseen
    # days fall below them and the performance check has something to find.
    reference = classification_metrics(y, pipeline.predict_proba(x)[:, 1])
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_metrics({f"test_{k}": v for k, v in reference.items()})
        logged = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            registered_model_name=MODEL,
            skops_trusted_types=skops_trusted_types("logistic_regression"),
            pip_requirements=["scikit-learn"],  # skips inferring them (a uv export, seconds)
        )
    mlflow.end_run()
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.create_model_version(MODEL, logged.model_uri, run.info.run_id)
    client.set_registered_model_alias(MODEL, "challenger", "2")
    for version in ("1", "2"):  # each version's own operating point
        client.set_model_version_tag(MODEL, version, "threshold", str(THRESHOLD))
    return {"root": root, "uri": uri, "reference": reference}


def make_env(world, directory: Path, instance) -> dict:
    """Resources on a private copy of the world's warehouse, and the instance."""
    shutil.copy(world["root"] / "warehouse.duckdb", directory / "warehouse.duckdb")
    resources = make_resources_at(directory, directory / "unused.csv")
    resources |= {
        "mlflow": MlflowTracking(
            tracking_uri=world["uri"],
            artifact_location=str(world["root"] / "artifacts"),
            experiment_name="test",
            model_name=MODEL,
        ),
        "reports": ReportStore(directory=str(directory / "reports")),
        "evidently": EvidentlyWorkspace(
            directory=str(directory / "evidently"), project_name="flights drift"
        ),
    }
    return {"resources": resources, "instance": instance, "dir": directory}


@pytest.fixture
def env(world, tmp_path, instance):
    return make_env(world, tmp_path, instance)


def definitions(env) -> dg.Definitions:
    return dg.Definitions(
        assets=[FEATURES_TABLE, *monitoring.monitoring_assets, ab_testing.ab_outcomes],
        jobs=[monitoring.monitoring_job],
        schedules=[monitoring.monitoring_schedule],
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
                }
            },
        )
        assert result.success
        yield env | {"result": result}


def run(env, assets=DAILY, start="2013-01-08", end=None, drift=None, perf=None, **kwargs):
    config = {
        "drift_report": {"config": drift or WINDOW},
        "performance": {"config": perf or {"min_labelled_records": 1}},
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


def check(result, name):
    (evaluation,) = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.check_name == name
    ]
    return evaluation


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
    # Each row at its version's registered threshold, which the class follows.
    at_threshold = "SELECT DISTINCT threshold, prediction = (probability >= threshold)::INT"
    assert sql(env, f"{at_threshold} FROM flights.predictions") == [(THRESHOLD, True)]
    meta = result.asset_materializations_for_node("predictions")[0].metadata
    assert meta["champion_version"].value == "1" and meta["challenger_version"].value == "2"


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
    assert sorted(r.timestamp for r in runs) == [dt.datetime(2013, 1, d) for d in (8, 9, 10)]


def test_the_summary_plots_the_monitored_days(ranged):
    meta = ranged["result"].asset_materializations_for_node("monitoring_summary")[0].metadata
    assert Path(meta["plot"].value).read_bytes()[:4] == b"\x89PNG"
    assert meta["days_with_drift"].value == 3 and meta["days_with_performance"].value == 3
    assert "2013-01" in meta["monthly"].value and "high drift" in meta["worst_days"].value


def test_identical_frames_do_not_drift_and_a_shifted_column_does(env):
    # The reference is the training set's train split: make it exactly the day's records.
    day = "2013-01-08"
    with duckdb.connect(str(env["dir"] / "warehouse.duckdb")) as con:
        con.execute(
            "CREATE OR REPLACE TABLE flights.training_set AS SELECT *, 'train' AS split "
            f"FROM flights.features WHERE flight_date = '{day}'"
        )
    same = {"html": "none"}
    assert run(env, DRIFT, start=day, drift=same).success
    [(share, pred_score, drifted)] = sql(
        env, "SELECT drift_share, prediction_drift_score, drifted_columns FROM flights.drift_report"
    )
    assert (share, drifted) == (0.0, "") and pred_score == pytest.approx(0, abs=1e-9)

    column = next(
        c
        for c in spec.numeric_features
        if sql(env, f"SELECT stddev({c}) FROM flights.features")[0][0]
    )
    with duckdb.connect(str(env["dir"] / "warehouse.duckdb")) as con:
        con.execute(
            f"UPDATE flights.features SET {column} = {column} + 10 * "
            f"(SELECT stddev({column}) FROM flights.features) WHERE flight_date = '{day}'"
        )
    result = run(env, DRIFT, start=day, drift=same)
    assert result.success
    rows = sql(env, f"SELECT drifted_columns, drift_score__{column} FROM flights.drift_report")
    assert len(rows) == 1  # the day's row was replaced
    assert rows[0][0] == column and rows[0][1] > 1.0
    assert per_partition(result, "drift_report")[day]["n_drifted_columns"] == 1
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(env["dir"] / "evidently"))
    [project] = workspace.search_project("flights drift")
    assert len(workspace.list_runs(project.id)) == 1  # the day's snapshot was replaced too


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
    [(brier, positive_rate, n, version)] = sql(
        ranged,
        "SELECT brier, positive_rate, n, model_version FROM flights.performance "
        "WHERE flight_date = '2013-01-09'",
    )
    assert brier == pytest.approx(brier_score_loss(y, p)) and positive_rate == y.mean()
    assert n == len(y) and version == "1"
    warned = check(result, monitoring.PERFORMANCE_CHECK)
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert warned.metadata["test_roc_auc"].value == pytest.approx(world["reference"]["roc_auc"])
    assert warned.metadata["days_below"].value == 3

    lenient = {"min_labelled_records": 1, "watched_metrics": ["roc_auc"], "max_relative_drop": 1.0}
    assert check(
        run(env, SCORED, start="2013-01-08", perf=lenient), monitoring.PERFORMANCE_CHECK
    ).passed


def test_drift_check_warns_above_the_threshold(env):
    strict = {**WINDOW, "html": "none", "drift_share_threshold": 0.01, "categorical_threshold": 0.0}
    warned = check(run(env, DRIFT, start="2013-01-09", drift=strict), monitoring.DRIFT_CHECK)
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert warned.metadata["days_over_threshold"].value == 1
    lenient = {**WINDOW, "html": "none", "numeric_threshold": 100.0, "categorical_threshold": 1.0}
    assert check(run(env, DRIFT, start="2013-01-09", drift=lenient), monitoring.DRIFT_CHECK).passed


def test_a_day_without_records_is_skipped_with_a_message(env):
    result = run(env, start="2013-01-11")
    assert result.success
    for asset in ("predictions", "drift_report", "performance"):
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
