"""Training: the training set from a window of feature partitions, and the model in MLflow."""

import datetime as dt
import subprocess
import warnings
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.lib.sql import ident, table_exists
from mlops_assets.metadata import table_metadata
from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import DUCKDB_POOL, OBJECT_IO_MANAGER, MlflowTracking

_window = dataset_spec.default_training_window


class TrainingSetConfig(dg.Config):
    start: str = Field(
        default=_window.start.isoformat(), description="First day of the training window."
    )
    end: str = Field(
        default=_window.end.isoformat(), description="Last day of the training window (inclusive)."
    )
    validation_fraction: float = Field(
        default=0.15, description="Share of rows (whole days, after train) for validation."
    )
    test_fraction: float = Field(
        default=0.15, description="Share of rows (the latest whole days) held out for evaluation."
    )


class ModelConfig(dg.Config):
    estimator: Literal["hist_gradient_boosting", "random_forest"] = Field(
        default="hist_gradient_boosting", description="Estimator family."
    )
    params: dict[str, Any] = Field(
        default={}, description="Fixed hyperparameters over the family's defaults."
    )
    search: Literal["random", "grid", "none"] = Field(
        default="random", description="Hyperparameter search over the family's search space."
    )
    n_trials: int = Field(default=4, description="Candidates tried by a random search.")
    cv_splits: int = Field(default=3, description="Time-series cross-validation folds.")
    metric: str | None = Field(
        default=None,
        description="scikit-learn scorer the search maximises (unset: roc_auc; for a regression "
        "target the scorer of the spec's regression.gate_error, e.g. neg_mean_absolute_error).",
    )
    seed: int = Field(default=0, description="Random seed of the search and the estimator.")
    threshold_policy: str | None = Field(
        default=None,
        description="How the decision threshold is chosen on the validation days: maximise "
        "F-beta, minimise expected cost, or flag a target share (unset: the dataset spec's "
        "operating_point.policy).",
    )
    beta: float | None = Field(default=None, description="f_beta policy: beta (unset: spec).")
    false_positive_cost: float | None = Field(
        default=None, description="cost policy: cost of a false positive (unset: spec)."
    )
    false_negative_cost: float | None = Field(
        default=None, description="cost policy: cost of a false negative (unset: spec)."
    )
    target_share: float | None = Field(
        default=None, description="target_share policy: share of records flagged (unset: spec)."
    )
    calibrate: bool = Field(
        default=True,
        description="Try sigmoid and isotonic calibration on the validation days; kept only "
        "when it lowers the (cross-fitted) validation log loss (classification only).",
    )

    def search_metric(self) -> str:
        from mlops_assets.lib.regression import SEARCH_SCORER

        if self.metric is not None:
            return self.metric
        spec = dataset_spec
        return SEARCH_SCORER[spec.regression.gate_error] if spec.is_regression else "roc_auc"

    def classification_settings(self) -> list[str]:
        """The fields set here that only a classifier has (refused for a regression target)."""
        fields = ("threshold_policy", "beta", "false_positive_cost", "false_negative_cost")
        return [f for f in (*fields, "target_share") if getattr(self, f) is not None]


def operating_policy(config: ModelConfig):
    """The dataset spec's operating point with the launchpad's overrides."""
    from mlops_assets.lib.spec import OperatingPointSpec

    overrides = {
        "policy": config.threshold_policy,
        "beta": config.beta,
        "false_positive_cost": config.false_positive_cost,
        "false_negative_cost": config.false_negative_cost,
        "target_share": config.target_share,
    }
    merged = dataset_spec.operating_point.model_dump() | {
        k: v for k, v in overrides.items() if v is not None
    }
    try:
        return OperatingPointSpec.model_validate(merged)
    except ValueError as error:
        raise dg.Failure(f"operating point: {error}") from None


def describe_policy(policy) -> str:
    """The policy as JSON (the `threshold_policy` tag): evaluation judges the threshold by it."""
    return policy.model_dump_json()


def window_dates(config: TrainingSetConfig) -> tuple[dt.date, dt.date]:
    """The configured window, refused with the reason if empty or outside the data."""
    spec = dataset_spec
    try:
        start, end = dt.date.fromisoformat(config.start), dt.date.fromisoformat(config.end)
    except ValueError as error:
        raise dg.Failure(f"training window: {error} (expected YYYY-MM-DD)") from None
    if end < start:
        raise dg.Failure(f"training window {start}..{end} is empty: end is before start")
    if start < spec.date.start or end > spec.date.end:
        raise dg.Failure(
            f"training window {start}..{end} is outside the data "
            f"({spec.date.start}..{spec.date.end})"
        )
    return start, end


@dg.asset(
    deps=["features"],
    group_name="training",
    kinds={"duckdb", "pandas"},
    pool=DUCKDB_POOL,
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, warehouse: DuckDBResource
):
    """Labelled feature rows of the training window, split in time order (test = latest days).

    Days a blocking monitoring check failed are left out, and listed with the reason."""
    import pandas as pd

    from mlops_assets.lib import gates
    from mlops_assets.lib.modeling import SPLIT_COLUMN, hash_frame, time_split
    from mlops_assets.lib.sources import to_pandas

    spec = dataset_spec
    start, end = window_dates(config)
    date = spec.date.column
    with warehouse.get_connection() as con:
        if not table_exists(con, f"{spec.name}.features"):
            raise dg.Failure("no features are stored yet: materialize the data first (data_job)")
        # The date filter runs inside DuckDB: only the window's rows are read.
        frame = to_pandas(
            con.sql(
                f"SELECT * FROM {spec.name}.features WHERE {ident(date)} >= ? "
                f"AND {ident(date)} < ? AND {ident(spec.target.name)} IS NOT NULL",
                params=[start, end + dt.timedelta(days=1)],
            )
        )
        excluded = gates.excluded_days(con, spec.name, start, end)
    days = frame[date].dt.normalize().nunique()
    expected = (end - start).days + 1
    if days < expected:
        present = set(frame[date].dt.date) | set(excluded)
        missing = [
            str(start + dt.timedelta(d))
            for d in range(expected)
            if start + dt.timedelta(d) not in present
        ]
        raise dg.Failure(
            f"features are missing for {len(missing)} day(s) of the window {start}..{end}, "
            f"e.g. {missing[:5]}: materialize them first (features with --partition-range)."
        )
    if excluded:
        frame = frame[~frame[date].dt.date.isin(excluded)]
        context.log.warning(f"left out {len(excluded)} day(s) a blocking check failed")
        with warehouse.get_connection() as con:
            gates.record_exclusions(
                con, spec.name, consumer="training_set", run_id=context.run_id, excluded=excluded
            )
    if frame.empty:
        raise dg.Failure(f"every day of the window {start}..{end} was kept out by a check")
    train, validation, test = time_split(
        frame, date, config.validation_fraction, config.test_fraction
    )
    parts = {"train": train, "validation": validation, "test": test}
    frame = pd.concat(
        [part.assign(**{SPLIT_COLUMN: name}) for name, part in parts.items()], ignore_index=True
    )
    label = spec.target.name
    metadata = {
        "window": f"{start}..{end}",
        "data_hash": hash_frame(frame),
        "excluded_days": len(excluded),
        "excluded": dg.MetadataValue.md(gates.exclusions_markdown(excluded)),
        **{f"rows/{name}": len(part) for name, part in parts.items()},
        **{
            f"{'target_mean' if spec.is_regression else 'positive_rate'}/{name}": float(
                part[label].mean()
            )
            for name, part in parts.items()
            if len(part)
        },
        **{
            f"first_day/{name}": str(part[date].min().date())
            for name, part in parts.items()
            if len(part)
        },
    }
    context.log.info(f"training set {metadata}")
    return dg.Output(frame, metadata={**table_metadata(frame), **metadata})


def code_version() -> str:
    """The git commit of the code, when it runs from a checkout; else the package version."""
    from importlib.metadata import version

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return f"mlops_assets=={version('mlops_assets')}"


def _regressor(pipeline, categories):
    """A regression target's registered model: no threshold, no calibration (their tags say so)."""
    from mlops_assets.lib import decision, served

    fitted = served.RegressionModel(pipeline, categories=categories)
    tags = {"calibration": "none", "task": "regression"}
    reason = "not applicable: a regression model serves a number, not a probability"
    return fitted, None, tags, decision.Calibration(pipeline, "none", {}, reason)


@dg.asset(
    group_name="training",
    kinds={"mlflow", "scikitlearn"},
    io_manager_key=OBJECT_IO_MANAGER,
)
def model(
    context: dg.AssetExecutionContext,
    config: ModelConfig,
    training_set,
    mlflow: MlflowTracking,
):
    """A scikit-learn Pipeline trained on the train split, registered in MLflow as challenger."""
    import mlflow as mlflow_api
    from mlflow.models import infer_signature

    from mlops_assets.lib import decision, modeling, registry, served
    from mlops_assets.lib.evaluation import classification_metrics
    from mlops_assets.lib.regression import regression_metrics

    spec = dataset_spec
    categorical, numeric, label = spec.categorical_features, spec.numeric_features, spec.target.name
    task, metric = spec.task, config.search_metric()
    if spec.is_regression and (given := config.classification_settings()):
        raise dg.Failure(
            f"{given} choose a decision threshold, which a regression model has none of: "
            "leave them unset (task: regression)"
        )
    parts = modeling.split_parts(training_set)
    train, validation = parts["train"], parts.get("validation")
    if validation is None or validation.empty:
        raise dg.Failure(
            "the decision threshold and the calibration are chosen on the validation days: "
            "the training set has none (set validation_fraction > 0)"
        )
    policy = operating_policy(config)
    dates = training_set[spec.date.column]
    lineage = {
        "code_version": code_version(),
        registry.DATA_WINDOW_TAG: f"{dates.min().date()}..{dates.max().date()}",
        "data_hash": modeling.hash_frame(training_set),
        "data_rows": str(len(training_set)),
        "data_rows_train": str(len(train)),
        "features_table": f"{spec.name}.features",
    }
    with mlflow.run(context, tags=lineage) as run:
        search = modeling.search_hyperparameters(
            train,
            estimator=config.estimator,
            categorical=categorical,
            numeric=numeric,
            label=label,
            date_column=spec.date.column,
            params=config.params,
            method=config.search,
            n_trials=config.n_trials,
            n_splits=config.cv_splits,
            metric=metric,
            seed=config.seed,
            task=task,
        )
        for number, trial in enumerate(search.trials):
            with mlflow_api.start_run(run_name=f"trial-{number}", nested=True):
                mlflow_api.log_params(trial.params)
                mlflow_api.log_metrics(
                    {
                        f"cv_{metric}": trial.mean_score,
                        f"cv_{metric}_std": trial.std_score,
                    }
                )
        pipeline = modeling.fit_final(
            train,
            estimator=config.estimator,
            params=search.best_params,
            categorical=categorical,
            numeric=numeric,
            label=label,
            seed=config.seed,
            task=task,
        )
        mlflow_api.log_params(
            {"estimator": config.estimator, "search": config.search, **search.best_params}
        )
        if search.best_score is not None:
            mlflow_api.log_metric(f"cv_{metric}", search.best_score)
        X_val, y_val = modeling.features_and_label(validation, categorical, numeric, label, task)
        days_val = validation[spec.date.column]
        categories = {c: train[c].dropna().unique().tolist() for c in categorical}
        if spec.is_regression:
            # No threshold and no calibration: the prediction is the number itself.
            fitted, threshold, decision_tags, calibration = _regressor(pipeline, categories)
            validation_metrics = regression_metrics(y_val, fitted.predict_value(X_val))
        elif config.calibrate:
            calibration = decision.calibrate(pipeline, X_val, y_val, days_val)
        else:
            calibration = decision.Calibration(pipeline, "none", {}, "switched off in the config")
        if not spec.is_regression:
            context.log.info(f"calibration: {calibration.reason}")
            proba_val = calibration.model.predict_proba(X_val)[:, 1]
            threshold = decision.choose_threshold(y_val, proba_val, policy)
            fitted = served.ThresholdedModel(calibration.model, threshold, categories=categories)
            validation_metrics = classification_metrics(y_val, proba_val, threshold)
            decision_tags = {
                registry.THRESHOLD_TAG: repr(threshold),
                registry.THRESHOLD_POLICY_TAG: describe_policy(policy),
                "calibration": calibration.method,
            }
        mlflow_api.log_params(
            {k: v for k, v in decision_tags.items() if k != registry.THRESHOLD_TAG}
            | ({"threshold": threshold} if threshold is not None else {})
        )
        mlflow_api.log_metrics(
            {
                **{f"validation_{k}": float(v) for k, v in validation_metrics.items()},
                **{f"validation_log_loss_{k}": v for k, v in calibration.log_loss.items()},
            }
        )
        X_train, _ = modeling.features_and_label(train, categorical, numeric, label, task)
        # Integer columns declared as doubles: a NULL at serving time arrives as NaN, which an
        # integer column of the signature would refuse (and MLflow warns about it).
        example = X_train.head(5)
        example = example.astype({c: "float64" for c in example.select_dtypes("integer")})
        with warnings.catch_warnings():
            # The served `prediction` is an integer 0/1 that is never missing: MLflow's hint about
            # integer columns and missing values does not apply to it.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            # Served output: per record the probability and the decision at the threshold.
            signature = infer_signature(example, fitted.predict(example))
        logged = mlflow_api.sklearn.log_model(
            fitted,
            name="model",
            registered_model_name=mlflow.model_name,
            signature=signature,
            input_example=example,
            skops_trusted_types=[
                *modeling.skops_trusted_types(config.estimator),
                *served.TRUSTED_TYPES,
            ],
            pip_requirements=registry.serving_requirements(),
        )
        version = str(logged.registered_model_version)
        client = mlflow.client()
        for key, value in {**lineage, "estimator": config.estimator, **decision_tags}.items():
            client.set_model_version_tag(mlflow.model_name, version, key, value)
        client.set_registered_model_alias(mlflow.model_name, registry.CHALLENGER, version)
        run_id = run.info.run_id

    ref = registry.ModelRef(mlflow.model_name, version, run_id, config.estimator, threshold)
    return dg.Output(
        ref,
        metadata={
            "model_uri": ref.uri,
            "model_version": int(version),
            "mlflow_run_id": run_id,
            "mlflow_run": dg.MetadataValue.url(mlflow.run_url(run_id)),
            "estimator": config.estimator,
            "params": dg.MetadataValue.json(search.best_params),
            f"cv_{metric}": search.best_score if search.best_score is not None else float("nan"),
            **{f"validation_{k}": float(v) for k, v in validation_metrics.items()},
            "trials": len(search.trials),
            "task": task,
            **decision_tags,
            **({"threshold": threshold} if threshold is not None else {}),
            "calibration_reason": calibration.reason,
            **{f"validation_log_loss_{k}": v for k, v in calibration.log_loss.items()},
            **lineage,
        },
    )
