"""The MLflow model registry: versions, aliases (champion, challenger), promotion, loading models.

The one place that reads or moves an alias. Assets, the lifecycle, the sensors and the benchmarks
all come through here, with an `MlflowClient` bound to one tracking URI: nothing in this module
changes MLflow's process-wide settings except inside `scoped_tracking`, which restores them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    from mlflow import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"
GATES_TAG = "evaluation_gates"
GATES_PASSED = "passed"
AUDIT_TABLE = "promotion_audit"
AUDIT_COLUMNS = (
    "promoted_at TIMESTAMP, model_name VARCHAR, version VARCHAR, previous_version VARCHAR, "
    "reason VARCHAR, evidence JSON, dagster_run_id VARCHAR"
)
SERVING_PACKAGES = ("mlflow", "scikit-learn", "skops", "pandas", "numpy")
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# Model version tags written by training and read downstream.
THRESHOLD_TAG = "threshold"
THRESHOLD_POLICY_TAG = "threshold_policy"
DATA_WINDOW_TAG = "data_window"


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


@dataclass(frozen=True)
class ServingModels:
    """Who serves: the champion, and the challenger when it is another version."""

    champion: ModelRef | None
    challenger: ModelRef | None

    @property
    def experiment_running(self) -> bool:
        return (
            self.champion is not None
            and self.challenger is not None
            and self.challenger.version != self.champion.version
        )

    def scored(self) -> list[tuple[str, ModelRef]]:
        """(alias, version) of every model that scores new records: the champion first."""
        if self.champion is None:
            return []
        models = [(CHAMPION, self.champion)]
        if self.experiment_running:
            models.append((CHALLENGER, self.challenger))
        return models


def client(tracking_uri: str) -> MlflowClient:
    """A client of one tracking and registry URI; MLflow's global settings stay as they are."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextmanager
def scoped_tracking(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API (`mlflow.start_run`, `log_model`, `models:/` loading) on `tracking_uri`.

    MLflow 3.17's `set_tracking_uri` also exports MLFLOW_TRACKING_URI into `os.environ`, so child
    processes (and later tests or benchmarks in the same process) would inherit it: the previous
    values and environment come back when the block ends.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_env = {name: os.environ.get(name) for name in _URI_ENV}
    saved = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def ensure_experiment(mlflow_client: MlflowClient, name: str, artifact_location: str) -> str:
    """The experiment's id, creating it (with its artifacts under `artifact_location`) if new."""
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow_client.create_experiment(name, artifact_location=artifact_location)


def version_for_alias(mlflow_client: MlflowClient, name: str, alias: str) -> ModelRef | None:
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


def serving_models(mlflow_client: MlflowClient, name: str) -> ServingModels:
    return ServingModels(
        champion=version_for_alias(mlflow_client, name, CHAMPION),
        challenger=version_for_alias(mlflow_client, name, CHALLENGER),
    )


def test_metrics(mlflow_client: MlflowClient, name: str, version: str) -> dict[str, float]:
    """The version's metrics on its own test days (`test_<metric>` of its run), by metric name."""
    run_id = mlflow_client.get_model_version(name, version).run_id
    metrics = mlflow_client.get_run(run_id).data.metrics
    return {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")}


def decision_threshold(mlflow_client: MlflowClient, name: str, version: str) -> float:
    """The version's decision threshold (tag `threshold`): a record is positive at p >= it."""
    return ref_of(mlflow_client.get_model_version(name, version)).decision_threshold


def data_window(mlflow_client: MlflowClient, name: str, version: str) -> tuple[dt.date, dt.date]:
    """First and last day (inclusive) of the data the version was trained on (tag
    `data_window`, "YYYY-MM-DD..YYYY-MM-DD", set when the model is registered)."""
    value = mlflow_client.get_model_version(name, version).tags.get(DATA_WINDOW_TAG)
    if not value:
        raise ValueError(f"{name} version {version} has no {DATA_WINDOW_TAG!r} tag")
    try:
        first, last = (dt.date.fromisoformat(part) for part in value.split(".."))
    except ValueError:
        raise ValueError(
            f"{name} version {version}: data_window {value!r} is not YYYY-MM-DD..YYYY-MM-DD"
        ) from None
    return first, last


def load_pipeline(ref: ModelRef, tracking_uri: str) -> Any:
    """The registered scikit-learn model (its preprocessing included): `predict_proba` gives the
    probabilities (calibrated when the version was calibrated)."""
    import mlflow.sklearn

    with scoped_tracking(tracking_uri):
        return mlflow.sklearn.load_model(ref.uri)


def serving_requirements() -> list[str]:
    """What serving a model needs, pinned from this environment.

    MLflow's own inference exports the whole lock file (seconds per model) and would list far more.
    """
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in SERVING_PACKAGES]


def promote(
    mlflow_client: MlflowClient,
    con: duckdb.DuckDBPyConnection,
    name: str,
    version: str,
    *,
    reason: str,
    evidence: dict,
    run_id: str,
    schema: str,
) -> str | None:
    """Move the champion alias to `version`; audit it in `<schema>.promotion_audit` and as tags.

    Refused (ValueError) while the version's evaluation gates have not passed. Returns the
    previous champion's version. Promoting the current champion again changes nothing.
    """
    gates = mlflow_client.get_model_version(name, version).tags.get(GATES_TAG)
    if gates != GATES_PASSED:
        raise ValueError(
            f"{name} version {version} cannot be promoted: its evaluation gates are "
            f"{gates or 'not evaluated'}"
        )
    previous = version_for_alias(mlflow_client, name, CHAMPION)
    if previous is not None and previous.version == version:
        return version
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    mlflow_client.set_registered_model_alias(name, CHAMPION, version)
    tags = {
        "promoted_at": now.isoformat(),
        "promotion_reason": reason,
        "previous_champion": previous.version if previous else "none",
        "promoted_by_dagster_run": run_id,
    }
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    con.execute(f"CREATE TABLE IF NOT EXISTS {schema}.{AUDIT_TABLE} ({AUDIT_COLUMNS})")
    con.execute(
        f"INSERT INTO {schema}.{AUDIT_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)",
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
