"""Closing the loop: retraining on drift or decay, ingesting new days, and the schedules.

Sensors read Dagster's own event log (the per-day metadata that monitoring writes), never the
DuckDB file: a tick costs a few small queries and never waits on a run holding the DuckDB lock.
"""

import datetime as dt
import json
import os

import dagster as dg

from mlops_assets.lib.automation import (
    DayResult,
    RetrainDecision,
    RetrainingRule,
    evaluate_rule,
    replay_rule,
)
from mlops_assets.lib.clock import REPLAY_DATE_ENV
from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import DatasetSource, MlflowTracking

RETRAIN_REASON_TAG = "mlops/retrain_reason"
RETRAIN_EVIDENCE_TAG = "mlops/retrain_evidence"
REPLAY_NOTE = "in replay (MLOPS_REPLAY_DATE) 'today' is the replay date"
CURSOR_DAYS_KEPT = 180


def _new_partition_metadata(instance: dg.DagsterInstance, asset: str, after: int | None):
    """(storage id, partition, metadata) of materializations of `asset` after `after`."""
    records, cursor, has_more = [], None, True
    while has_more:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), after_storage_id=after),
            limit=1000,
            cursor=cursor,
            ascending=True,
        )
        records.extend(result.records)
        cursor, has_more = result.cursor, result.has_more
    return [
        (r.storage_id, r.asset_materialization.partition, r.asset_materialization.metadata)
        for r in records
        if r.asset_materialization and r.asset_materialization.partition
    ]


def _value(metadata, key: str) -> float | None:
    entry = metadata.get(key)
    return float(entry.value) if entry is not None and entry.value is not None else None


MONITORED = (
    ("drift_report", ("alarm", "drift_share")),
    ("performance", ("roc_auc", "reference_roc_auc", "outside_band", "error_ratio")),
)


def collect_day_results(
    instance: dg.DagsterInstance, state: dict, keep_days: int | None = CURSOR_DAYS_KEPT
) -> dict:
    """`state` (the sensor cursor) updated with the monitoring events logged since it was made.

    The sensor's cursor keeps the latest `keep_days` days (the rule looks back far less); a
    replay keeps every day (`keep_days=None`).
    """
    after, days = dict(state.get("after", {})), dict(state.get("days", {}))
    for asset, keys in MONITORED:
        for storage_id, day, metadata in _new_partition_metadata(instance, asset, after.get(asset)):
            days[day] = {
                **days.get(day, {}),
                **{k: _value(metadata, k) for k in keys if k in metadata},
            }
            after[asset] = storage_id
    if keep_days is not None:
        days = {d: days[d] for d in sorted(days)[-keep_days:]}
    return {**state, "after": after, "days": days}


def day_results(days: dict) -> list[DayResult]:
    return [
        DayResult(
            dt.date.fromisoformat(day),
            drift_alarm=bool(values["alarm"]) if values.get("alarm") is not None else None,
            drift_share=values.get("drift_share"),
            roc_auc=values.get("roc_auc"),
            reference_auc=values.get("reference_roc_auc"),
            outside_band=bool(values["outside_band"]) if values.get("outside_band") else None,
            error_ratio=values.get("error_ratio"),
        )
        for day, values in days.items()
    ]


def replay_retraining(instance: dg.DagsterInstance, rule: RetrainingRule) -> list[RetrainDecision]:
    """The retrainings the sensor would have requested, had it ticked once per monitored day."""
    days = collect_day_results(instance, {}, keep_days=None)["days"]
    return replay_rule(day_results(days), rule)


def retraining_request(decision: RetrainDecision, rule: RetrainingRule) -> dg.RunRequest:
    start, end = decision.training_window(rule)
    start = max(start, dataset_spec.date.start)
    return dg.RunRequest(
        run_key=f"retrain-{decision.last_day}",
        run_config={"ops": {"training_set": {"config": {"start": str(start), "end": str(end)}}}},
        tags={
            RETRAIN_REASON_TAG: decision.reason,
            RETRAIN_EVIDENCE_TAG: decision.evidence()[:4000],
            "mlops/training_window": f"{start}..{end}",
        },
    )


def build_retraining_sensor(
    rule: RetrainingRule, job_name: str = "training_job", name: str = "retraining_sensor"
) -> dg.SensorDefinition:
    """A sensor that requests `job_name` when `rule` holds over the monitored days.

    The cursor keeps the event-log position per asset, the recent days' numbers and the day of
    the last retraining (the cooldown), so restarts neither miss nor repeat anything; the
    run_key (the streak's last day) makes a duplicate request a no-op.
    """

    @dg.sensor(
        name=name,
        job_name=job_name,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Retrain when the calibrated drift check alarms, or ROC AUC < "
        f"{rule.min_auc_ratio} x the test ROC AUC on {rule.consecutive_days} consecutive days; "
        f"cooldown {rule.cooldown_days} days; trains on the latest {rule.window_days} days.",
    )
    def retraining_sensor(context: dg.SensorEvaluationContext):
        state = collect_day_results(
            context.instance, json.loads(context.cursor) if context.cursor else {}
        )
        last = state.get("last_retrain")
        decision = evaluate_rule(
            day_results(state["days"]),
            rule,
            last_retrain=dt.date.fromisoformat(last) if last else None,
        )
        if not decision.retrain:
            context.update_cursor(json.dumps(state))
            return dg.SkipReason(decision.reason)
        context.update_cursor(json.dumps({**state, "last_retrain": str(decision.last_day)}))
        return retraining_request(decision, rule)

    return retraining_sensor


retraining_sensor = build_retraining_sensor(RetrainingRule())


@dg.sensor(
    job_name="daily_job",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Ingest and monitor the days up to today that the source holds and the "
    f"warehouse does not ({REPLAY_NOTE}).",
)
def new_data_sensor(context: dg.SensorEvaluationContext, source: DatasetSource):
    """Requests one run over the source's days (up to today) not materialized yet."""
    from mlops_assets.lib.clock import today

    spec = dataset_spec
    now = today()
    done = context.instance.get_materialized_partitions(dg.AssetKey("raw_records"))
    available = source.dates(spec)
    missing = sorted(d for d in available if d < now and d.isoformat() not in done)
    if not missing:
        return dg.SkipReason(f"no new days in the source before {now}")
    first, last = missing[0].isoformat(), missing[-1].isoformat()
    return dg.RunRequest(
        run_key=f"new-data-{first}-{last}-{len(missing)}",
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
            "mlops/new_days": str(len(missing)),
        },
    )


@dg.schedule(
    cron_schedule="0 3 1 * *",
    job_name="training_job",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain on the latest 90 days with labels, on the first of each month "
    f"({REPLAY_NOTE}). The new model is a challenger until it wins the A/B test.",
)
def monthly_retraining_schedule(context: dg.ScheduleEvaluationContext):
    from mlops_assets.lib.clock import today

    spec = dataset_spec
    end = min(today() - dt.timedelta(days=2), spec.date.end)
    start = max(end - dt.timedelta(days=RetrainingRule().window_days - 1), spec.date.start)
    if end < start:
        return dg.SkipReason(f"no labelled days before {today()}")
    return dg.RunRequest(
        run_key=f"monthly-retrain-{end}",
        run_config={"ops": {"training_set": {"config": {"start": str(start), "end": str(end)}}}},
        tags={RETRAIN_REASON_TAG: "monthly schedule", "mlops/training_window": f"{start}..{end}"},
    )


# --------------------------------------------------------------------------------------------
# Monitoring: the daily job and schedule, and the champion as seen in the registry

MONITORING_GROUP = "monitoring"
DATA_VERSION_TAG = "dagster/data_version"  # where a materialization carries its data version
CHAMPION_ASSET = dg.AssetKey("champion_model")

monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=dg.AssetSelection.groups(MONITORING_GROUP) | dg.AssetSelection.assets("ab_outcomes"),
    description="Score, check for drift, estimate and measure performance of the selected days, "
    "record A/B outcomes when a challenger exists, then the summary.",
)


@dg.schedule(
    job=monitoring_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def monitoring_schedule(context: dg.ScheduleEvaluationContext):
    """Every morning: monitor yesterday, and measure the day whose labels land today.

    "Today" is the tick's date, or $MLOPS_REPLAY_DATE when set (to replay the 2013 data).
    """
    from mlops_assets.lib.clock import today

    delay = dataset_spec.target.label_delay_days
    replaying = bool(os.environ.get(REPLAY_DATE_ENV))
    now = today() if replaying else context.scheduled_execution_time.date()
    first, last = dataset_spec.date.start, dataset_spec.date.end
    newest = now - dt.timedelta(days=1)
    labelled = now - dt.timedelta(days=delay)
    if not first <= newest <= last:
        return dg.SkipReason(
            f"no partition for {newest} (data span {first}..{last}); set {REPLAY_DATE_ENV} "
            "to replay a date of the data"
        )
    run_config = {"ops": {"performance": {"config": {"label_delay_days": delay}}}}
    requests = [
        dg.RunRequest(
            run_key=f"monitor-{newest}", partition_key=newest.isoformat(), run_config=run_config
        )
    ]
    if labelled != newest and first <= labelled <= last:
        requests.append(
            dg.RunRequest(
                run_key=f"labels-{labelled}",
                partition_key=labelled.isoformat(),
                run_config=run_config,
                asset_selection=[dg.AssetKey("performance"), dg.AssetKey("monitoring_summary")],
            )
        )
    return requests


def recorded_champion(instance: dg.DagsterInstance) -> str | None:
    """The champion version Dagster last recorded (the data version of `champion_model`)."""
    event = instance.get_latest_materialization_event(CHAMPION_ASSET)
    if event is None or event.asset_materialization is None:
        return None
    return event.asset_materialization.tags.get(DATA_VERSION_TAG)


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Records a champion moved outside Dagster (by hand in the MLflow UI) as a new "
    "version of champion_model, so the monitored days it served go stale.",
)
def champion_alias_sensor(context: dg.SensorEvaluationContext, mlflow: MlflowTracking):
    champion = mlflow.serving_models().champion
    if champion is None:
        return dg.SkipReason(f"no version of {mlflow.model_name} holds the alias 'champion'")
    recorded = recorded_champion(context.instance)
    if recorded == champion.version:
        return dg.SkipReason(f"champion is still v{champion.version}")
    return dg.SensorResult(
        asset_events=[
            dg.AssetMaterialization(
                CHAMPION_ASSET,
                description=f"alias moved outside Dagster: v{recorded} -> v{champion.version}",
                metadata={"champion_version": int(champion.version), "observed_by": "sensor"},
                tags={DATA_VERSION_TAG: champion.version},
            )
        ]
    )
