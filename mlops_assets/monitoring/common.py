"""What the monitoring assets share: the daily asset settings, the serving models, per-day metadata.

Every daily asset runs a backfilled range as one run and reports its numbers PER DAY: in a
single-run backfill, Output metadata is copied to every partition of the range, so the per-day
numbers go through `context.add_asset_metadata(..., partition_key=day)`, which Dagster merges over
the output's metadata for that partition only (dagster PR #26562; yielding extra
AssetMaterialization events instead would add a second materialization per day, dagster #29846).

DataFrame inputs are left unannotated: Dagster resolves annotations at load time, and importing
pandas there would slow down loading the code location.
"""

import functools

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.lib.sql import fetch_frame, ident, table_exists
from mlops_assets.partitions import daily_backfill, daily_partitions, dataset_spec
from mlops_assets.resources import DUCKDB_POOL, MlflowTracking

GROUP = "monitoring"
PROBABILITY = "probability"
# The registered champion (its data version is the model version): every monitoring asset
# depends on it, so the lineage runs model -> champion -> monitoring, and moving the alias makes
# the monitored days stale.
CHAMPION_ASSET = "champion_model"
DATE = dataset_spec.date.column
# The column that carries a model's score: the probability, or a regression target's prediction.
SCORE = "prediction" if dataset_spec.is_regression else PROBABILITY
# CBPE (lib/cbpe.py) estimates classification metrics from probabilities.
NOT_FOR_REGRESSION = (
    "not applicable to regression: CBPE estimates classification metrics from calibrated "
    "probabilities, and a regression model has none"
)

DAILY = {
    "partitions_def": daily_partitions,
    "backfill_policy": daily_backfill,
    "metadata": {"partition_expr": DATE},
    "group_name": GROUP,
    "pool": DUCKDB_POOL,
}


@functools.lru_cache(maxsize=8)
def pipeline(tracking_uri: str, name: str, version: str):
    """A registered version's pipeline, loaded once per process (predictions and drift share it)."""
    from mlops_assets.lib import registry

    return registry.load_pipeline(registry.ModelRef(name, version, run_id=""), tracking_uri)


def serving_models(mlflow: MlflowTracking) -> list:
    """(alias, ModelRef) of the champion, and of the challenger when it is another version."""
    models = mlflow.serving_models().scored()
    if not models:
        raise dg.Failure(
            f"no model version of {mlflow.model_name!r} holds the alias 'champion': train and "
            "promote a model before monitoring"
        )
    return models


def decision_threshold(mlflow: MlflowTracking, version: str) -> float:
    """The version's decision threshold (its `threshold` tag); a clear failure without one."""
    from mlops_assets.lib import registry

    try:
        return registry.decision_threshold(mlflow.client(), mlflow.model_name, version)
    except ValueError as error:
        raise dg.Failure(f"{error}: register the model's decision threshold") from error


def champion_rows(predictions):
    from mlops_assets.lib.registry import CHAMPION

    return predictions[predictions["model_alias"] == CHAMPION]


def days(context: dg.AssetExecutionContext) -> list[str]:
    return list(context.partition_keys)


def days_in(run_days: list[str], first, last) -> list[str]:
    """The run's days inside the window [first, last) of a `DayChunks`."""
    return [d for d in run_days if first.isoformat() <= d < last.isoformat()]


def day_of(frame):
    return frame[DATE].dt.strftime("%Y-%m-%d")


def skip_day(context: dg.AssetExecutionContext, day: str, reason: str) -> None:
    context.log.info(f"{day}: {reason}")
    context.add_asset_metadata(
        {"skipped": reason, "dagster/partition_row_count": 0}, partition_key=day
    )


def history(warehouse: DuckDBResource, table: str):
    """A whole history table ordered by date; an empty frame before its first write."""
    import pandas as pd

    schema = dataset_spec.name
    with warehouse.get_connection() as con:
        if not table_exists(con, f"{schema}.{table}"):
            return pd.DataFrame()
        return fetch_frame(con, f"SELECT * FROM {schema}.{table} ORDER BY {ident(DATE)}")


# One home for the default: monitoring checks flag and do not block unless configured to. On the
# embedded data the drift alarms and performance drops of the monitored months are real seasonal
# change, which the next model must learn from; block when a failing day means broken data.
BLOCKING_DEFAULT = False


def blocking_field():
    return Field(
        default=BLOCKING_DEFAULT,
        description="Blocking: a day this check judges and fails is kept out of the A/B "
        "analysis and of the next training set (the reason is recorded); otherwise it is only "
        "flagged. A day that could not be judged is never kept out.",
    )


def day_checks(
    context: dg.AssetExecutionContext,
    warehouse: DuckDBResource,
    check_name: str,
    gates: list,
    *,
    run_days: list[str],
    metadata: dict[str, dict] | None = None,
) -> list:
    """Each day's verdict (`lib.gates.DayGate`) as an evaluation of the check ON THAT DAY'S
    partition, recorded in the gates table for the consumers of the days.

    Dagster's own `blocking` stops every downstream step of the run (all days of a range) and
    only after the failing partition is stored; here the check's `blocking` setting keeps only
    the failing DAY out of what follows, by way of the gates table. So the spec is not blocking,
    and a failing blocking verdict is an ERROR, a non-blocking or unjudged one a WARN.
    """
    import datetime as dt

    from mlops_assets.lib import gates as lib_gates

    asset_key = context.assets_def.key
    with warehouse.get_connection() as con:
        lib_gates.record_gates(
            con,
            dataset_spec.name,
            asset=asset_key.to_user_string(),
            check_name=check_name,
            days=[dt.date.fromisoformat(d) for d in run_days],
            gates=gates,
            run_id=context.run_id,
        )
    key = dg.AssetCheckKey(asset_key, check_name)
    if key not in context.selected_asset_check_keys:
        return []
    targets = _target_materializations(context, asset_key, run_days)
    # The check's own output, once: Dagster requires it; the verdicts are the evaluations below.
    evaluations: list = [
        dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))
    ]
    for gate in gates:
        day = gate.day.isoformat()
        evaluations.append(
            dg.AssetCheckEvaluation(
                asset_key=asset_key,
                check_name=check_name,
                passed=gate.passed,
                severity=dg.AssetCheckSeverity.ERROR
                if gate.excludes
                else dg.AssetCheckSeverity.WARN,
                description=gate.reason,
                metadata={
                    "judged": gate.judged,
                    "blocking": gate.blocking,
                    "kept_out": gate.excludes,
                    **(metadata or {}).get(day, {}),
                },
                blocking=False,
                partition=day,
                target_materialization_data=targets.get(day),
            )
        )
    return evaluations


def _target_materializations(context, asset_key: dg.AssetKey, run_days: list[str]) -> dict:
    """The materialization of each day this run just stored, so the UI shows each day's check
    as current for it (one event-log query for the whole range)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData as Target,
    )

    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=run_days),
        limit=len(run_days),
    ).records
    targets = {}
    for record in records:
        if record.run_id == context.run_id and record.partition_key not in targets:
            targets[record.partition_key] = Target(
                run_id=record.run_id, storage_id=record.storage_id, timestamp=record.timestamp
            )
    return targets


def check_spec(name: str, asset: str, description: str) -> dg.AssetCheckSpec:
    """A check evaluated per day, on the day's partition."""
    import warnings

    with warnings.catch_warnings():
        # Checks on partitions are a preview in Dagster 1.13: the warning says nothing new.
        warnings.simplefilter("ignore", category=dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, description=description, partitions_def=daily_partitions
        )
