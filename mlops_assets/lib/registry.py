"""The MLflow model registry: versions, aliases (champion, challenger) and loading models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"
# Model version tags written by training and read downstream.
THRESHOLD_TAG = "threshold"
THRESHOLD_POLICY_TAG = "threshold_policy"


@dataclass(frozen=True)
class ModelRef:
    """A registered model version: what downstream assets receive instead of "the latest file"."""

    name: str
    version: str
    run_id: str
    estimator: str = ""
    # The decision threshold chosen for this version (its `threshold` tag); None for a version
    # registered without one.
    threshold: float | None = None

    @property
    def decision_threshold(self) -> float:
        """The threshold at which this version's probability becomes a positive decision."""
        if self.threshold is None:
            raise ValueError(
                f"{self.name} version {self.version} has no '{THRESHOLD_TAG}' tag: it was "
                "registered without an operating point; retrain it"
            )
        return self.threshold

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
    return ref_of(version)


def ref_of(version) -> ModelRef:
    """The ModelRef of an MLflow ModelVersion, its threshold read from its tag."""
    threshold = version.tags.get(THRESHOLD_TAG)
    return ModelRef(
        version.name,
        str(version.version),
        version.run_id,
        version.tags.get("estimator", ""),
        float(threshold) if threshold is not None else None,
    )


def load_pipeline(ref: ModelRef) -> Any:
    """The registered scikit-learn model (its preprocessing included): `predict_proba` gives the
    probabilities (calibrated when the version was calibrated)."""
    import mlflow.sklearn

    return mlflow.sklearn.load_model(ref.uri)
