"""Promotion: which registered version is the champion, changed only through a gate."""

import datetime as dt
import json

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import DUCKDB_POOL, MlflowTracking
from mlops_assets.training import OBJECT_IO_MANAGER

AUDIT_TABLE = f"{dataset_spec.name}.promotion_audit"


class PromotionConfig(dg.Config):
    promote_challenger: bool = Field(
        default=False,
        description="Promote the challenger by hand. Refused while its evaluation gates fail.",
    )


def promote(
    mlflow: MlflowTracking,
    warehouse: DuckDBResource,
    version: str,
    *,
    reason: str,
    evidence: dict,
    run_id: str,
) -> str | None:
    """Move the champion alias to `version`; audit it in DuckDB and as MLflow tags.

    Refused (ValueError) while the version's evaluation gates have not passed. Returns the
    previous champion's version. Promoting the current champion again changes nothing.
    """
    from mlops_assets.lib import registry

    client = mlflow.client()
    name = mlflow.model_name
    gates = client.get_model_version(name, version).tags.get("evaluation_gates")
    if gates != "passed":
        raise ValueError(
            f"{name} version {version} cannot be promoted: its evaluation gates are "
            f"{gates or 'not evaluated'}"
        )
    previous = registry.version_for_alias(client, name, registry.CHAMPION)
    if previous is not None and previous.version == version:
        return version
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    client.set_registered_model_alias(name, registry.CHAMPION, version)
    tags = {
        "promoted_at": now.isoformat(),
        "promotion_reason": reason,
        "previous_champion": previous.version if previous else "none",
        "promoted_by_dagster_run": run_id,
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    with warehouse.get_connection() as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {dataset_spec.name}")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {AUDIT_TABLE} (promoted_at TIMESTAMP, model_name VARCHAR,"
            " version VARCHAR, previous_version VARCHAR, reason VARCHAR, evidence JSON,"
            " dagster_run_id VARCHAR)"
        )
        con.execute(
            f"INSERT INTO {AUDIT_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                now.replace(tzinfo=None),
                name,
                version,
                tags["previous_champion"],
                reason,
                json.dumps(evidence, default=str),
                run_id,
            ],
        )
    return previous.version if previous else None


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

    client = mlflow.client()
    challenger = registry.version_for_alias(client, mlflow.model_name, registry.CHALLENGER)
    champion = registry.version_for_alias(client, mlflow.model_name, registry.CHAMPION)
    reason = None
    if champion is None and challenger is not None:
        reason = "first model to pass the evaluation gates"
    elif config.promote_challenger and challenger is not None:
        reason = "promoted by hand"
    if reason:
        promote(
            mlflow,
            warehouse,
            challenger.version,
            reason=reason,
            evidence={"evaluation": evaluation["metrics"]},
            run_id=context.run_id,
        )
        champion = challenger
        context.log.info(f"{mlflow.model_name} v{challenger.version} is champion: {reason}")
    elif challenger is not None and challenger.version != champion.version:
        context.log.info(
            f"challenger v{challenger.version} waits for the A/B test against "
            f"champion v{champion.version}"
        )
    return dg.Output(
        champion,
        metadata={
            "champion_version": int(champion.version),
            "challenger_version": int(challenger.version) if challenger else 0,
            "promoted": bool(reason),
            "reason": reason or "no change",
        },
    )
