"""Evaluation of the trained model on the held-out test days: metrics, plots, gates, importance."""

import base64
import json

import dagster as dg
from pydantic import Field

from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import OBJECT_IO_MANAGER, MlflowTracking, ReportStore

BEATS_BASELINE = "check_beats_baseline"
NOT_WORSE_THAN_CHAMPION = "check_not_worse_than_champion"
NOT_DEGENERATE = "check_not_degenerate"
GATES = (BEATS_BASELINE, NOT_WORSE_THAN_CHAMPION, NOT_DEGENERATE)


class EvaluationConfig(dg.Config):
    """Overrides of the dataset spec's `gates` section (unset: the spec's value)."""

    baseline_margin: float | None = Field(
        default=None,
        description="The lower bound of the day-clustered interval of ROC AUC(model) - ROC "
        "AUC(simple baseline) must be above this.",
    )
    champion_margin: float | None = Field(
        default=None,
        description="The lower bound of the interval of ROC AUC(model) - ROC AUC(champion) must "
        "be above this (negative: non-inferiority).",
    )
    rate_factor: float | None = Field(
        default=None,
        description="The predicted positive rate must stay within this factor of the actual rate.",
    )
    n_resamples: int | None = Field(default=None, description="Day-clustered bootstrap resamples.")
    confidence: float | None = Field(default=None, description="Two-sided interval level.")
    min_test_days: int | None = Field(
        default=None, description="Fewer test days than this: the gates are not judged (fail)."
    )


def gate_settings(config: EvaluationConfig):
    """The spec's gate settings with the launchpad's overrides."""
    from mlops_assets.lib.spec import GateSpec

    overrides = {k: v for k, v in config.model_dump().items() if v is not None}
    try:
        return GateSpec.model_validate(dataset_spec.gates.model_dump() | overrides)
    except ValueError as error:
        raise dg.Failure(f"evaluation gates: {error}") from None


def png_markdown(path) -> dg.MetadataValue:
    """The PNG inline, so the UI shows the plot itself rather than a path on the server."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{path.stem}](data:image/png;base64,{encoded})")


@dg.asset(
    group_name="evaluation",
    kinds={"mlflow", "scikitlearn"},
    io_manager_key=OBJECT_IO_MANAGER,
    check_specs=[
        dg.AssetCheckSpec(
            BEATS_BASELINE,
            asset="evaluation",
            blocking=True,
            description="The model out-ranks a logistic regression on the same features and a "
            "per-category base rate on the most informative categorical column: the lower bound "
            "of the day-clustered interval of the ROC AUC difference is above baseline_margin.",
        ),
        dg.AssetCheckSpec(
            NOT_WORSE_THAN_CHAMPION,
            asset="evaluation",
            blocking=True,
            description="The same interval against the current champion on the same test days "
            "is above champion_margin.",
        ),
        dg.AssetCheckSpec(
            NOT_DEGENERATE,
            asset="evaluation",
            blocking=True,
            description="At the model's threshold the predicted positive rate is within "
            "rate_factor of the actual rate, and the ROC AUC interval is above chance.",
        ),
    ],
)
def evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    model,
    training_set,
    mlflow: MlflowTracking,
    reports: ReportStore,
):
    """Test metrics at the model's threshold, the operating point judged against hindsight,
    calibration before/after, simple baselines and the champion; plots; gates."""
    from mlops_assets.lib import decision, registry
    from mlops_assets.lib import evaluation as lib
    from mlops_assets.lib.modeling import features_and_label, fit_final, split_parts
    from mlops_assets.lib.spec import OperatingPointSpec

    spec = dataset_spec
    gates = gate_settings(config)
    if spec.is_regression:
        if config.rate_factor is not None:
            raise dg.Failure(
                "rate_factor judges a predicted positive rate at a threshold: a regression "
                "model has neither (task: regression); leave it unset"
            )
        yield from evaluate_regression(context, gates, model, training_set, mlflow, reports)
        return
    categorical, numeric, label = spec.categorical_features, spec.numeric_features, spec.target.name
    parts = split_parts(training_set)
    test, train, validation = parts["test"], parts["train"], parts["validation"]
    X, y = features_and_label(test, categorical, numeric, label)
    days = test[spec.date.column]
    threshold = model.decision_threshold
    fitted = mlflow.load_pipeline(model)
    proba = fitted.predict_proba(X)[:, 1]
    metrics = lib.classification_metrics(y, proba, threshold)

    client = mlflow.client()
    tags = client.get_model_version(model.name, model.version).tags
    policy = OperatingPointSpec.model_validate_json(tags[registry.THRESHOLD_POLICY_TAG])
    operating_point = decision.judge_operating_point(y, proba, threshold, policy)
    uncalibrated = fitted.uncalibrated_proba(X)[:, 1] if fitted.calibrated else None
    calibration = {"after": decision.calibration_summary(y, proba)}
    if uncalibrated is not None:
        calibration["before"] = decision.calibration_summary(y, uncalibrated)

    # The simple baselines, fitted on the same train days; their own thresholds are chosen on the
    # validation days by the same policy, so the comparison table is like for like.
    X_val, y_val = features_and_label(validation, categorical, numeric, label)
    logistic = fit_final(
        train,
        estimator="logistic_regression",
        params={},
        categorical=categorical,
        numeric=numeric,
        label=label,
        seed=0,
    )
    logistic_threshold = decision.choose_threshold(
        y_val, logistic.predict_proba(X_val)[:, 1], policy
    )
    logistic_proba = logistic.predict_proba(X)[:, 1]
    baseline = lib.classification_metrics(y, logistic_proba, logistic_threshold)
    column, _ = decision.most_informative_category(train, validation, categorical, label)
    rates, prior = decision.category_means(train[column], train[label])
    category_scores = decision.category_mean_predictions(rates, prior, test[column])

    baseline_gate = decision.comparison_gate(
        BEATS_BASELINE,
        y,
        proba,
        {"logistic_regression": logistic_proba, f"rate_by_{column}": category_scores},
        days,
        margin=gates.baseline_margin,
        gates=gates,
    )
    champion = mlflow.serving_models().champion
    champion_proba, champion_metrics = None, None
    if champion is not None and champion.version != model.version:
        champion_proba = mlflow.load_pipeline(champion).predict_proba(X)[:, 1]
        champion_metrics = lib.classification_metrics(
            y, champion_proba, champion.decision_threshold
        )
        champion_gate = decision.comparison_gate(
            NOT_WORSE_THAN_CHAMPION,
            y,
            proba,
            {"champion": champion_proba},
            days,
            margin=gates.champion_margin,
            gates=gates,
        )
    else:
        champion_gate = _no_champion_gate()
    degenerate = decision.degenerate_gate(
        y, proba, threshold, days, gates=gates, name=NOT_DEGENERATE
    )
    verdicts = (baseline_gate, champion_gate, degenerate)
    directory = reports.folder("evaluation", f"{model.name}-v{model.version}")
    plots = lib.save_evaluation_plots(
        y, proba, directory, threshold, baseline=champion_proba, uncalibrated=uncalibrated
    )
    yield from _publish(
        context,
        client,
        model,
        verdicts,
        report={
            "model": model.uri,
            "threshold": threshold,
            "metrics": metrics,
            "operating_point": operating_point.metadata(),
            "calibration": calibration,
            "baseline": baseline,
        },
        champion=champion,
        champion_metrics=champion_metrics,
        threshold=threshold,
        metrics=metrics,
        logged=metrics,
        baseline=("logistic_regression", baseline),
        metadata={
            **operating_point.metadata(),
            **{
                f"calibration_{when}/{k}": v
                for when, figures in calibration.items()
                for k, v in figures.items()
            },
        },
        directory=directory,
        plots=plots,
    )


def gate_checks(verdicts):
    for gate in verdicts:
        yield dg.AssetCheckResult(
            check_name=gate.name,
            passed=bool(gate.passed),
            # Too little data to judge is a warning, never a pass (the version is not promoted).
            severity=dg.AssetCheckSeverity.ERROR if gate.judged else dg.AssetCheckSeverity.WARN,
            description=gate.message,
            metadata={"verdict": gate.message, **gate.figures},
        )


def evaluate_regression(context, gates, model, training_set, mlflow: MlflowTracking, reports):
    """`task: regression`: MAE, RMSE and R2 on the test days with day-clustered intervals; the
    same three gates on the skill 1 - error(model) / error(reference) (lib/regression.py):
    against the per-category mean and the last-period mean, against the champion, and against
    the overall training mean with non-constant predictions (the degenerate gate)."""
    import math

    import numpy as np

    from mlops_assets.lib import decision
    from mlops_assets.lib import regression as lib
    from mlops_assets.lib.modeling import features_and_label, split_parts

    spec = dataset_spec
    error = spec.regression.gate_error
    categorical, numeric, label = spec.categorical_features, spec.numeric_features, spec.target.name
    parts = split_parts(training_set)
    test, train, validation = parts["test"], parts["train"], parts["validation"]
    X, y = features_and_label(test, categorical, numeric, label, "regression")
    days = test[spec.date.column]
    predicted = mlflow.load_pipeline(model).predict_value(X)
    metrics = lib.regression_metrics(y, predicted)
    intervals = lib.metric_intervals(y, predicted, days, gates=gates)

    column, _ = lib.most_informative_category(train, validation, categorical, label, error)
    means, overall = decision.category_means(train[column], train[label])
    history = validation if len(validation) else train
    references = {
        f"mean_by_{column}": decision.category_mean_predictions(means, overall, test[column]),
        "last_period_mean": np.full(
            len(y), lib.last_period_mean(history, date_column=spec.date.column, label=label)
        ),
    }
    baseline_gate = lib.skill_gate(
        BEATS_BASELINE,
        y,
        predicted,
        references,
        days,
        margin=gates.baseline_margin,
        gates=gates,
        error=error,
    )
    champion = mlflow.serving_models().champion
    champion_metrics = None
    if champion is not None and champion.version != model.version:
        champion_predicted = mlflow.load_pipeline(champion).predict_value(X)
        champion_metrics = lib.regression_metrics(y, champion_predicted)
        champion_gate = lib.skill_gate(
            NOT_WORSE_THAN_CHAMPION,
            y,
            predicted,
            {"champion": champion_predicted},
            days,
            margin=gates.champion_margin,
            gates=gates,
            error=error,
        )
    else:
        champion_gate = _no_champion_gate()
    degenerate = lib.degenerate_gate(
        y,
        predicted,
        float(train[label].mean()),
        days,
        gates=gates,
        error=error,
        name=NOT_DEGENERATE,
    )
    verdicts = (baseline_gate, champion_gate, degenerate)
    predictor = next(iter(references))
    baseline = {"n": metrics["n"], **lib.regression_metrics(y, references[predictor])}
    yield from _publish(
        context,
        mlflow.client(),
        model,
        verdicts,
        report={
            "model": model.uri,
            "task": "regression",
            "metrics": metrics,
            "intervals": intervals,
            "baseline": {"predictor": predictor, "metrics": baseline},
        },
        champion=champion,
        champion_metrics=champion_metrics,
        threshold=math.nan,
        metrics=metrics,
        logged={**metrics, **intervals},
        baseline=(predictor, baseline),
        directory=reports.folder("evaluation", f"{model.name}-v{model.version}"),
    )


def _no_champion_gate():
    from mlops_assets.lib.decision import GateResult

    return GateResult(
        NOT_WORSE_THAN_CHAMPION,
        passed=True,
        judged=True,
        message=f"{NOT_WORSE_THAN_CHAMPION}: passed: no other version is champion yet, "
        "nothing to compare",
    )


def _publish(
    context: dg.AssetExecutionContext,
    client,
    model,
    verdicts,
    *,
    report: dict,
    champion,
    champion_metrics: dict | None,
    threshold: float,
    metrics: dict,
    logged: dict,
    baseline: tuple[str, dict],
    directory,
    metadata: dict | None = None,
    plots: dict | None = None,
):
    """What every task does with its verdicts: the report (the task's own `report`, then the
    gates and the champion's metrics) in `directory`, the `logged` test metrics and the report on
    the model's run, the version tagged with the gates' outcome, and the Output and the checks."""
    from mlops_assets.lib import registry
    from mlops_assets.lib.evaluation import EvaluationResult, markdown_table

    passed = all(g.passed for g in verdicts)
    summary = {
        **report,
        "gates": {
            g.name: {"passed": g.passed, "message": g.message, **g.figures} for g in verdicts
        },
        "champion": {"version": champion.version, "metrics": champion_metrics}
        if champion_metrics
        else None,
    }
    (directory / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    _log_to_run(client, model.run_id, logged, directory)
    client.set_model_version_tag(
        model.name, model.version, registry.GATES_TAG, registry.GATES_PASSED if passed else "failed"
    )
    for gate in verdicts:
        context.log.info(gate.message)
    predictor, baseline_metrics = baseline
    yield dg.Output(
        EvaluationResult(
            model_version=model.version,
            threshold=float(threshold),
            metrics={k: float(v) for k, v in metrics.items()},
            gates={g.name: bool(g.passed) for g in verdicts},
            report=summary,
        ),
        metadata={
            **{k: float(v) for k, v in logged.items()},
            **{f"{predictor}_{k}": float(v) for k, v in baseline_metrics.items()},
            **(metadata or {}),
            "model_version": int(model.version),
            "comparison": dg.MetadataValue.md(markdown_table(metrics, baseline_metrics)),
            "report_dir": dg.MetadataValue.path(str(directory)),
            **{f"plot_{name}": png_markdown(path) for name, path in (plots or {}).items()},
        },
    )
    yield from gate_checks(verdicts)


def _log_to_run(client, run_id: str, metrics: dict, directory) -> None:
    """Test metrics and report files go to the model's own MLflow run, whichever run evaluates."""
    for name, value in metrics.items():
        client.log_metric(run_id, f"test_{name}", float(value))
    client.log_artifacts(run_id, str(directory), artifact_path="evaluation")


class ImportanceConfig(dg.Config):
    n_repeats: int = Field(default=5, description="Shuffles per feature.")
    max_rows: int = Field(default=20_000, description="Test rows sampled for speed.")
    scoring: str | None = Field(
        default=None,
        description="Score whose drop measures importance (unset: roc_auc; for a regression "
        "target the scorer of the spec's regression.gate_error).",
    )


@dg.asset(group_name="evaluation", kinds={"scikitlearn", "duckdb"})
def feature_importance(
    context: dg.AssetExecutionContext,
    config: ImportanceConfig,
    model,
    training_set,
    mlflow: MlflowTracking,
    reports: ReportStore,
):
    """Permutation importance of each feature on the test days: the drop in score when shuffled."""
    from mlops_assets.lib import evaluation as lib
    from mlops_assets.lib.modeling import features_and_label, split_parts

    spec = dataset_spec
    test = split_parts(training_set)["test"]
    X, y = features_and_label(
        test, spec.categorical_features, spec.numeric_features, spec.target.name, spec.task
    )
    fitted, scoring = mlflow.load_pipeline(model), config.scoring or "roc_auc"
    if spec.is_regression:
        from mlops_assets.lib.regression import SEARCH_SCORER

        # The scorer calls predict: the inner pipeline's, a number (the served one is a frame).
        fitted = fitted.estimator
        scoring = config.scoring or SEARCH_SCORER[spec.regression.gate_error]
    table = lib.permutation_importance_table(
        fitted,
        X,
        y,
        scoring=scoring,
        n_repeats=config.n_repeats,
        max_rows=config.max_rows,
    )
    chart = lib.save_importance_chart(
        table, reports.path("evaluation", f"{model.name}-v{model.version}", "importance.png")
    )
    mlflow.client().log_artifact(model.run_id, str(chart), artifact_path="evaluation")
    table = table.assign(model_version=int(model.version))
    return dg.Output(
        table,
        metadata={
            "top_feature": str(table["feature"].iloc[0]),
            "importance": dg.MetadataValue.md(table.to_markdown(index=False, floatfmt=".4f")),
            "chart": png_markdown(chart),
        },
    )
