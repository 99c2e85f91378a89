"""Sensors and schedules evaluated on a real Dagster instance with real materialization events."""

import datetime as dt
import json

import dagster as dg
import pytest

from mlops_assets.automation import (
    CURSOR_DAYS_KEPT,
    RETRAIN_REASON_TAG,
    build_retraining_sensor,
    monthly_retraining_schedule,
    new_data_sensor,
    replay_retraining,
)
from mlops_assets.lib.automation import RetrainingRule
from mlops_assets_tests.conftest import SAMPLE_DAYS

RULE = RetrainingRule(consecutive_days=3, cooldown_days=10, window_days=30)
sensor = build_retraining_sensor(RULE)


def report_day(instance, day: dt.date, drift: float, auc: float = 0.70) -> None:
    partition = day.isoformat()
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            # A drift share above 0.3 stands for a day whose calibrated drift check alarmed.
            "drift_report",
            partition=partition,
            metadata={"drift_share": drift, "alarm": drift > 0.3},
        )
    )
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "performance",
            partition=partition,
            metadata={"roc_auc": auc, "reference_roc_auc": 0.72},
        )
    )


def tick(instance, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    return sensor(context), context.cursor


def test_drift_streak_requests_retraining_once_then_cools_down(instance):
    start = dt.date(2013, 9, 1)
    for offset, drift in enumerate([0.1, 0.4, 0.45]):
        report_day(instance, start + dt.timedelta(days=offset), drift)
    result, cursor = tick(instance)
    assert isinstance(result, dg.SkipReason) and "2 consecutive day(s)" in result.skip_message

    report_day(instance, dt.date(2013, 9, 4), 0.5)
    request, cursor = tick(instance, cursor)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == "retrain-2013-09-04"
    assert request.tags[RETRAIN_REASON_TAG] == "drift on 3 consecutive days to 2013-09-04"
    assert "2013-09-02: drift alarm (share 0.400)" in request.tags["mlops/retrain_evidence"]
    window = request.run_config["ops"]["training_set"]["config"]
    assert window == {"start": "2013-08-06", "end": "2013-09-04"}

    # A restart with the same cursor (or a re-evaluated tick) asks for nothing new.
    report_day(instance, dt.date(2013, 9, 5), 0.6)
    again, cursor = tick(instance, cursor)
    assert isinstance(again, dg.SkipReason) and "cooldown" in again.skip_message
    assert json.loads(cursor)["last_retrain"] == "2013-09-04"

    for offset in range(6, 17):  # past the cooldown, still drifting
        report_day(instance, dt.date(2013, 9, offset), 0.5)
    later, _ = tick(instance, cursor)
    assert isinstance(later, dg.RunRequest) and later.run_key == "retrain-2013-09-16"


def test_decay_alone_triggers(instance):
    for offset in range(3):
        report_day(instance, dt.date(2013, 11, 1 + offset), drift=0.1, auc=0.60)
    request, _ = tick(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.tags[RETRAIN_REASON_TAG].startswith("decay")


def test_the_cursor_only_reads_new_events(instance):
    for offset in range(2):
        report_day(instance, dt.date(2013, 10, 1 + offset), 0.9)
    _, cursor = tick(instance)
    state = json.loads(cursor)
    assert set(state["days"]) == {"2013-10-01", "2013-10-02"}
    assert state["after"]["drift_report"] > 0
    _, same = tick(instance, cursor)
    assert json.loads(same) == state


def test_a_replay_sees_every_day_not_only_the_cursors_latest(instance):
    """A streak older than the sensor's cursor keeps is still found by a replay of the history."""
    start = dt.date(2013, 1, 1)
    for offset in range(CURSOR_DAYS_KEPT + 20):
        drift = 0.9 if offset in (2, 3, 4) else 0.1
        report_day(instance, start + dt.timedelta(days=offset), drift)
    decisions = replay_retraining(instance, RULE)
    assert [d.last_day for d in decisions] == [dt.date(2013, 1, 5)]


def test_monthly_schedule_asks_for_the_latest_labelled_days(monkeypatch):
    monkeypatch.setenv("MLOPS_REPLAY_DATE", "2013-10-01")
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2013, 10, 1, 3))
    request = monthly_retraining_schedule(context)
    config = request.run_config["ops"]["training_set"]["config"]
    assert config == {"start": "2013-07-02", "end": "2013-09-29"}
    assert request.run_key == "monthly-retrain-2013-09-29"


@pytest.mark.parametrize("replay", ["2013-01-05", "2013-01-20"])
def test_new_data_sensor_requests_the_missing_days_up_to_today(
    monkeypatch, instance, lifecycle_resources, replay
):
    monkeypatch.setenv("MLOPS_REPLAY_DATE", replay)
    for day in ("2013-01-01", "2013-01-02"):
        instance.report_runless_asset_event(dg.AssetMaterialization("raw_records", partition=day))
    context = dg.build_sensor_context(
        instance=instance, resources={"source": lifecycle_resources["source"]}
    )
    request = new_data_sensor(context)
    last = min(dt.date.fromisoformat(replay) - dt.timedelta(days=1), dt.date(2013, 1, SAMPLE_DAYS))
    assert request.tags["dagster/asset_partition_range_start"] == "2013-01-03"
    assert request.tags["dagster/asset_partition_range_end"] == last.isoformat()
