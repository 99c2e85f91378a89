"""Monitoring results gate what follows: a day failing a blocking check is kept out of the A/B
analysis and of the next training set, with the reason recorded; not blocking, it is kept.

Real Dagster runs on the monitored world (conftest): features of Jan 1-10, champion v1 and
challenger v2. The injected failure is real drift: Jan 8's departure hour moved by 3 std.
"""

import dagster as dg
import duckdb
import pytest

from mlops_assets import ab_testing, monitoring, training
from mlops_assets.lib.clock import REPLAY_DATE_ENV
from mlops_assets.monitoring.drift import DRIFT_CHECK
from mlops_assets.resources import OBJECT_IO_MANAGER
from mlops_assets_tests.conftest import FEATURES_TABLE, MODEL, make_env, range_tags

DAY = "2013-01-08"
# The sample holds 30 flights a day (test_monitoring.py judges drift the same way).
DRIFT = {"min_rows": 10, "domain_null_days": 7, "html": "none", "save_to_workspace": False}
ASSETS = [
    FEATURES_TABLE,
    *monitoring.monitoring_assets,
    ab_testing.ab_outcomes,
    ab_testing.ab_results,
    training.training_set,
]


@pytest.fixture
def env(world, tmp_path, instance, monkeypatch):
    monkeypatch.setenv(REPLAY_DATE_ENV, "2013-02-01")  # every day's labels are known
    env = make_env(world, tmp_path, instance)
    env["resources"][OBJECT_IO_MANAGER] = dg.FilesystemIOManager(base_dir=str(tmp_path / "obj"))
    with duckdb.connect(str(env["dir"] / "warehouse.duckdb")) as con:
        con.execute(
            "UPDATE flights.features SET hour = hour + 3 * "
            f"(SELECT stddev(hour) FROM flights.features) WHERE flight_date = '{DAY}'"
        )
    return env


def materialize(env, selection, config=None, **kwargs):
    result = dg.materialize(
        ASSETS,
        selection=selection,
        resources=env["resources"],
        instance=env["instance"],
        run_config={"ops": config or {}},
        **kwargs,
    )
    assert result.success
    return result


def sql(env, query):
    with duckdb.connect(str(env["dir"] / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(query).fetchall()


def drift_evaluation(result):
    [evaluation] = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.check_name == DRIFT_CHECK
    ]
    return evaluation


def metadata(result, asset):
    [materialization] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in materialization.metadata.items()}


@pytest.mark.parametrize("blocking", [True, False])
def test_a_day_failing_a_blocking_check_is_kept_out_of_the_ab_test_and_training(env, blocking):
    days = range_tags("2013-01-08", "2013-01-10")
    materialize(env, [monitoring.predictions], tags=days)
    drift = {"drift_report": {"config": {**DRIFT, "blocking": blocking}}}
    result = materialize(env, [monitoring.drift_report], drift, partition_key=DAY)
    evaluation = drift_evaluation(result)
    assert evaluation.partition == DAY and not evaluation.passed
    assert evaluation.description.startswith("alarm") and "hour" in evaluation.description
    expected = dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN
    assert evaluation.severity == expected
    assert evaluation.metadata["kept_out"].value is blocking
    # Jan 9 cannot be judged (min_rows above its 30 rows): a warning that keeps nothing out,
    # even from a blocking check.
    tiny = {"drift_report": {"config": {**DRIFT, "blocking": True, "min_rows": 1000}}}
    unjudged = drift_evaluation(
        materialize(env, [monitoring.drift_report], tiny, partition_key="2013-01-09")
    )
    assert unjudged.description.startswith("not judged")
    assert unjudged.severity == dg.AssetCheckSeverity.WARN

    # The A/B analysis: Jan 8's outcomes are stored, but not analysed when blocked.
    outcomes = materialize(env, [ab_testing.ab_outcomes], tags=days)
    assert sql(env, "SELECT count(DISTINCT flight_date) FROM flights.ab_outcomes") == [(3,)]
    # Each day shows its own records; the range's totals are on its last day only.
    per_day = dict(
        sql(
            env,
            "SELECT strftime(flight_date, '%Y-%m-%d'), count(*) FROM flights.ab_outcomes "
            "GROUP BY ALL",
        )
    )
    first, *_, last = outcomes.asset_materializations_for_node("ab_outcomes")
    for day in (first, last):
        assert day.metadata["dagster/partition_row_count"].value == per_day[day.partition]
    assert "records" not in first.metadata
    assert last.metadata["records"].value == sum(per_day.values())
    ab = metadata(materialize(env, [ab_testing.ab_results]), "ab_results")
    analysed = 2 if blocking else 3
    assert ab["status"].startswith(f"running: {analysed} of the minimum 14 days")
    assert ab["excluded_days"] == int(blocking)
    # Blocked, the experiment starts on Jan 9, and its design's baseline (the champion's days
    # before the start: Jan 8, the only one scored) leaves Jan 8 out too.
    assert sql(env, "SELECT first_day::VARCHAR, baseline_days FROM flights.ab_designs") == [
        ("2013-01-09" if blocking else DAY, 0)
    ]
    report = (env["dir"] / "reports" / "ab" / f"{MODEL}-v1-vs-v2.md").read_text()
    assert (f"| {DAY} | {DRIFT_CHECK}: alarm" in report) is blocking

    # The next training set over Jan 1-10 leaves Jan 8 out, and says why.
    window = {"training_set": {"config": {"start": "2013-01-01", "end": "2013-01-10"}}}
    trained = metadata(materialize(env, [training.training_set], window), "training_set")
    stored = {
        d
        for (d,) in sql(
            env, "SELECT DISTINCT strftime(flight_date, '%Y-%m-%d') FROM flights.training_set"
        )
    }
    assert len(stored) == 10 - blocking and (DAY in stored) is not blocking
    assert trained["excluded_days"] == int(blocking)
    assert (DAY in trained["excluded"]) is blocking

    # Who left out which day, and why: one stored row per consumer.
    rows = sql(
        env,
        "SELECT consumer, day::VARCHAR, reason FROM flights.gate_exclusions ORDER BY consumer",
    )
    if blocking:
        assert [(c, d) for c, d, _ in rows] == [("ab_results", DAY), ("training_set", DAY)]
        assert all(r.startswith(f"{DRIFT_CHECK}: alarm") and "hour" in r for _, _, r in rows)
    else:
        assert rows == []
