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

from mlops_assets.lib.sql import ident
from mlops_assets.partitions import daily_backfill, daily_partitions, dataset_spec
from mlops_assets.resources import DUCKDB_POOL, MlflowTracking, table_exists

GROUP = "monitoring"
PROBABILITY = "probability"
# The registered champion (its data version is the model version): every monitoring asset
# depends on it, so the lineage runs model -> champion -> monitoring, and moving the alias makes
# the monitored days stale.
CHAMPION_ASSET = "champion_model"
DATE = dataset_spec.date.column

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
        return con.execute(f"SELECT * FROM {schema}.{table} ORDER BY {ident(DATE)}").df()
