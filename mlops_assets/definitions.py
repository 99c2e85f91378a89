"""The one Definitions object of the code location."""

import os

import dagster as dg

from mlops_assets import (
    ab_testing,
    automation,
    evaluation,
    features,
    ingestion,
    monitoring,
    promotion,
    training,
    validation,
)
from mlops_assets.distributed import (
    MLFLOW_ARTIFACTS_ENV,
    WAREHOUSE_ROOT_ENV,
    DeltaFrameIOManager,
    DeltaWarehouse,
    executor,
)
from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import (
    OBJECT_IO_MANAGER,
    DatasetSource,
    DuckDBFrameIOManager,
    EvidentlyWorkspace,
    MlflowTracking,
    ReportStore,
    Warehouse,
    data_dir,
)


def warehouse_resources() -> dict:
    """One DuckDB file; Delta tables that many workers write at once in the distributed mode."""
    if root := os.environ.get(WAREHOUSE_ROOT_ENV):
        return {
            "io_manager": DeltaFrameIOManager(root=root, schema=dataset_spec.name),
            "warehouse": DeltaWarehouse(root=root),
        }
    database = str(data_dir() / "warehouse.duckdb")
    return {
        "io_manager": DuckDBFrameIOManager(database=database, schema=dataset_spec.name),
        "warehouse": Warehouse(database=database),
    }


def build_resources() -> dict:
    return {
        **warehouse_resources(),
        "source": DatasetSource(cache_dir=str(data_dir() / "sources")),
        "mlflow": MlflowTracking(
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{(data_dir() / 'mlflow' / 'mlflow.db').resolve()}",
            # A tracking server's proxied store (mlflow-artifacts:/...) in the distributed mode.
            artifact_location=os.environ.get(MLFLOW_ARTIFACTS_ENV)
            or str((data_dir() / "mlflow" / "artifacts").resolve()),
            model_name=f"{dataset_spec.name}_model",
        ),
        "reports": ReportStore(directory=str(data_dir() / "reports")),
        OBJECT_IO_MANAGER: dg.FilesystemIOManager(base_dir=str(data_dir() / "objects")),
        "evidently": EvidentlyWorkspace(
            directory=str(data_dir() / "evidently"), project_name=f"{dataset_spec.name} drift"
        ),
    }


data_assets = dg.AssetSelection.groups("ingestion", "validation", "features")
training_assets = dg.AssetSelection.groups("training", "evaluation", "registry")
daily_assets = data_assets | automation.monitoring_job.selection

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(
        [ingestion, validation, features, training, evaluation, promotion, monitoring, ab_testing]
    ),
    jobs=[
        dg.define_asset_job(
            "data_job",
            selection=data_assets,
            description="Ingest, validate and build features for the selected days.",
        ),
        dg.define_asset_job(
            "training_job",
            selection=training_assets,
            description="Build the training set, train, register, evaluate, explain and gate "
            "a model; the first model to pass the gates becomes champion.",
        ),
        automation.monitoring_job,
        dg.define_asset_job(
            "daily_job",
            selection=daily_assets,
            description="Ingest, validate, build features and monitor the selected days.",
        ),
        dg.define_asset_job(
            "ab_job",
            selection=dg.AssetSelection.assets(ab_testing.ab_results, ab_testing.ab_promotion),
            description="Analyse the current A/B experiment; promote the challenger if it wins.",
        ),
    ],
    schedules=[automation.monitoring_schedule, automation.monthly_retraining_schedule],
    sensors=[
        automation.retraining_sensor,
        automation.new_data_sensor,
        automation.champion_alias_sensor,
    ],
    resources=build_resources(),
    executor=executor(),
)
