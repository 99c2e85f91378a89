"""Evaluation of the trained model on the held-out test days: metrics, plots, gates, importance."""

import base64
import json

import dagster as dg
from pydantic import Field

from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import MlflowTracking, ReportStore
from mlops_assets.training import OBJECT_IO_MANAGER, split_parts

BEATS_BASELINE = "check_beats_baseline"
NOT_WORSE_THAN_CHAMPION = "check_not_worse_than_champion"
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


class EvaluationConfig(dg.Config):
    threshold: float = Field(default=0.5, description="Probability at which a record is positive.")
    gate_metric: str = Field(default="roc_auc", description="Metric the gates compare.")
    min_lift_over_baseline: float = Field(
        default=0.05, description="The model must beat the prior baseline by this much."
    )
    champion_tolerance: float = Field(
        default=0.01,
        description="The model may be at most this much worse than the champion on the same data.",
    )


def improvement(metric: str, model: float, reference: float) -> float:
    """How much better `model` is than `reference` (positive is better, whatever the metric)."""
    return reference - model if metric in LOWER_IS_BETTER else model - reference


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
            description="The model beats the prior baseline by min_lift_over_baseline.",
        ),
        dg.AssetCheckSpec(
            NOT_WORSE_THAN_CHAMPION,
            asset="evaluation",
            blocking=True,
            description="The model is not worse than the current champion on the same test "
            "days by more than champion_tolerance.",
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
    """Test metrics of the model beside the prior baseline and the champion; plots; gates."""
    from mlops_assets.lib import evaluation as lib
    from mlops_assets.lib import registry
    from mlops_assets.lib.modeling import features_and_label

    spec = dataset_spec
    parts = split_parts(training_set)
    test, train = parts["test"], parts["train"]
    X, y = features_and_label(
        test, spec.categorical_features, spec.numeric_features, spec.target.name
    )
    proba = registry.load_pipeline(model).predict_proba(X)[:, 1]
    metrics = lib.classification_metrics(y, proba, config.threshold)
    baseline = lib.baseline_metrics(train[spec.target.name].to_numpy(), y)

    client = mlflow.client()
    champion = registry.version_for_alias(client, model.name, registry.CHAMPION)
    champion_proba, champion_metrics = None, None
    if champion is not None and champion.version != model.version:
        champion_proba = registry.load_pipeline(champion).predict_proba(X)[:, 1]
        champion_metrics = lib.classification_metrics(y, champion_proba, config.threshold)

    directory = reports.folder("evaluation", f"{model.name}-v{model.version}")
    plots = lib.save_evaluation_plots(
        y, proba, directory, config.threshold, baseline=champion_proba
    )
    summary = {
        "model": model.uri,
        "metrics": metrics,
        "baseline": baseline,
        "champion": {"version": champion.version, "metrics": champion_metrics}
        if champion_metrics
        else None,
    }
    (directory / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    _log_to_run(client, model.run_id, metrics, directory)

    gate = config.gate_metric
    lift = improvement(gate, metrics[gate], baseline[gate])
    beats_baseline = lift >= config.min_lift_over_baseline
    gap = improvement(gate, metrics[gate], champion_metrics[gate]) if champion_metrics else 0.0
    not_worse = gap >= -config.champion_tolerance
    # The operating point the version was evaluated at travels with it (monitoring and A/B read it).
    client.set_model_version_tag(model.name, model.version, "threshold", str(config.threshold))
    client.set_model_version_tag(
        model.name,
        model.version,
        "evaluation_gates",
        "passed" if beats_baseline and not_worse else "failed",
    )

    yield dg.Output(
        summary,
        metadata={
            **{k: float(v) for k, v in metrics.items()},
            **{f"baseline_{k}": float(v) for k, v in baseline.items()},
            "model_version": int(model.version),
            "comparison": dg.MetadataValue.md(lib.markdown_table(metrics, baseline)),
            "report_dir": dg.MetadataValue.path(str(directory)),
            **{f"plot_{name}": png_markdown(path) for name, path in plots.items()},
        },
    )
    yield dg.AssetCheckResult(
        check_name=BEATS_BASELINE,
        passed=bool(beats_baseline),
        metadata={
            "metric": gate,
            "model": float(metrics[gate]),
            "baseline": float(baseline[gate]),
            "lift": float(lift),
            "required_lift": config.min_lift_over_baseline,
        },
    )
    yield dg.AssetCheckResult(
        check_name=NOT_WORSE_THAN_CHAMPION,
        passed=bool(not_worse),
        metadata={
            "metric": gate,
            "model": float(metrics[gate]),
            "champion_version": champion.version if champion_metrics else "none",
            "champion": float(champion_metrics[gate]) if champion_metrics else float("nan"),
            "difference": float(gap),
            "tolerance": config.champion_tolerance,
        },
    )


def _log_to_run(client, run_id: str, metrics: dict, directory) -> None:
    """Test metrics and report files go to the model's own MLflow run, whichever run evaluates."""
    for name, value in metrics.items():
        client.log_metric(run_id, f"test_{name}", float(value))
    client.log_artifacts(run_id, str(directory), artifact_path="evaluation")


class ImportanceConfig(dg.Config):
    n_repeats: int = Field(default=5, description="Shuffles per feature.")
    max_rows: int = Field(default=20_000, description="Test rows sampled for speed.")
    scoring: str = Field(default="roc_auc", description="Score whose drop measures importance.")


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
    from mlops_assets.lib import registry
    from mlops_assets.lib.modeling import features_and_label

    spec = dataset_spec
    test = split_parts(training_set)["test"]
    X, y = features_and_label(
        test, spec.categorical_features, spec.numeric_features, spec.target.name
    )
    table = lib.permutation_importance_table(
        registry.load_pipeline(model),
        X,
        y,
        scoring=config.scoring,
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
