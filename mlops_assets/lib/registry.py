"""The MLflow model registry: versions, aliases (champion, challenger) and loading models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class ModelRef:
    """A registered model version: what downstream assets receive instead of "the latest file"."""

    name: str
    version: str
    run_id: str
    estimator: str = ""

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def client(tracking_uri: str):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(mlflow_client, name: str, artifact_location: str) -> str:
    """The experiment's id, creating it (with its artifacts under `artifact_location`) if new."""
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow_client.create_experiment(name, artifact_location=artifact_location)


def version_for_alias(mlflow_client, name: str, alias: str) -> ModelRef | None:
    """The version holding `alias`, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        version = mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return ModelRef(name, str(version.version), version.run_id, version.tags.get("estimator", ""))


def load_pipeline(ref: ModelRef) -> Any:
    """The scikit-learn pipeline of a registered version (its preprocessing included)."""
    import mlflow.sklearn

    return mlflow.sklearn.load_model(ref.uri)
