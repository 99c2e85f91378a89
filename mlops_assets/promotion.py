"""Promotion: which registered version is the champion, changed only through a gate."""

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import DUCKDB_POOL, OBJECT_IO_MANAGER, MlflowTracking


class PromotionConfig(dg.Config):
    promote_challenger: bool = Field(
        default=False,
        description="Promote the challenger by hand. Refused while its evaluation gates fail.",
    )


@dg.asset(
    group_name="registry",
    kinds={"mlflow"},
    io_manager_key=OBJECT_IO_MANAGER,
    pool=DUCKDB_POOL,
)
def champion_model(
    context: dg.AssetExecutionContext,
    config: PromotionConfig,
    evaluation,
    mlflow: MlflowTracking,
    warehouse: DuckDBResource,
):
    """The registered version serving as champion.

    The first model to pass the evaluation gates becomes champion. Afterwards a challenger
    replaces it only through the A/B test, or by hand (`promote_challenger`).
    """
    from mlops_assets.lib import registry

    serving = mlflow.serving_models()
    champion, challenger = serving.champion, serving.challenger
    reason = None
    if champion is None and challenger is not None:
        reason = "first model to pass the evaluation gates"
    elif config.promote_challenger and challenger is not None:
        reason = "promoted by hand"
    if reason:
        with warehouse.get_connection() as con:
            registry.promote(
                mlflow.client(),
                con,
                mlflow.model_name,
                challenger.version,
                reason=reason,
                evidence={"evaluation": evaluation.metrics, "gates": evaluation.gates},
                run_id=context.run_id,
                schema=dataset_spec.name,
            )
        champion = challenger
        context.log.info(f"{mlflow.model_name} v{challenger.version} is champion: {reason}")
    elif challenger is not None and challenger.version != champion.version:
        context.log.info(
            f"challenger v{challenger.version} waits for the A/B test against "
            f"champion v{champion.version}"
        )
    # The data version is the champion's version: monitored days scored by another go stale.
    return dg.Output(
        champion,
        data_version=dg.DataVersion(champion.version),
        metadata={
            "champion_version": int(champion.version),
            "challenger_version": int(challenger.version) if challenger else 0,
            "promoted": bool(reason),
            "reason": reason or "no change",
        },
    )
