"""Monitoring of unseen data: daily predictions, drift reports and performance, and their trend.

Every daily asset runs a backfilled range as one run and reports its numbers PER DAY: in a
single-run backfill, Output metadata is copied to every partition of the range, so the per-day
numbers go through `context.add_asset_metadata(..., partition_key=day)`, which Dagster merges over
the output's metadata for that partition only (dagster PR #26562; yielding extra
AssetMaterialization events instead would add a second materialization per day, dagster #29846).

DataFrame inputs are left unannotated: Dagster resolves annotations at load time, and importing
pandas there would slow down loading the code location.
"""

import datetime as dt
import functools
import os
from typing import Literal

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.lib.clock import REPLAY_DATE_ENV
from mlops_assets.partitions import daily_partitions, dataset_spec, single_run
from mlops_assets.resources import (
    DUCKDB_POOL,
    EvidentlyWorkspace,
    MlflowTracking,
    ReportStore,
    ensure_table,
    table_exists,
)

GROUP = "monitoring"
DRIFT_CHECK = "check_drift_share"
PERFORMANCE_CHECK = "check_performance_against_test_metrics"
TRAINING_SET_SPLIT_COLUMN = "split"  # of the training_set table; its "train" rows are the reference
DEFAULT_LABEL_DELAY_DAYS = 1
PROBABILITY = "probability"

_date = dataset_spec.date.column
_daily = {
    "partitions_def": daily_partitions,
    "backfill_policy": single_run,
    "metadata": {"partition_expr": _date},
    "group_name": GROUP,
    "pool": DUCKDB_POOL,
}


# --------------------------------------------------------------------------------------------
# Models


@functools.lru_cache(maxsize=8)
def _pipeline(tracking_uri: str, name: str, version: str):
    """A registered version's pipeline, loaded once per process (predictions and drift share it)."""
    from mlops_assets.lib import registry

    registry.client(tracking_uri)
    return registry.load_pipeline(registry.ModelRef(name, version, run_id=""))


def _serving_models(mlflow: MlflowTracking) -> list[tuple[str, str]]:
    """(alias, version) of the champion, and of the challenger when it is another version."""
    from mlops_assets.lib import registry

    client = mlflow.client()
    champion = registry.version_for_alias(client, mlflow.model_name, registry.CHAMPION)
    if champion is None:
        raise dg.Failure(
            f"no model version of {mlflow.model_name!r} holds the alias 'champion': train and "
            "promote a model before monitoring"
        )
    models = [(registry.CHAMPION, champion.version)]
    challenger = registry.version_for_alias(client, mlflow.model_name, registry.CHALLENGER)
    if challenger is not None and challenger.version != champion.version:
        models.append((registry.CHALLENGER, challenger.version))
    return models


def _thresholds(mlflow: MlflowTracking, versions: list[str]) -> dict[str, float]:
    """Each version's operating point, the model version tag `threshold` (required)."""
    client = mlflow.client()
    tags = {
        v: client.get_model_version(mlflow.model_name, v).tags.get("threshold") for v in versions
    }
    missing = sorted(v for v, t in tags.items() if t is None)
    if missing:
        raise dg.Failure(
            f"{mlflow.model_name} version(s) {missing} have no `threshold` tag: a model version "
            "must carry its classification threshold before it scores"
        )
    return {v: float(t) for v, t in tags.items()}


def _champion_rows(predictions):
    from mlops_assets.lib.registry import CHAMPION

    return predictions[predictions["model_alias"] == CHAMPION]


def _days(context: dg.AssetExecutionContext) -> list[str]:
    return list(context.partition_keys)


def _day_of(frame):
    return frame[_date].dt.strftime("%Y-%m-%d")


def _skip_day(context: dg.AssetExecutionContext, day: str, reason: str) -> None:
    context.log.info(f"{day}: {reason}")
    context.add_asset_metadata(
        {"skipped": reason, "dagster/partition_row_count": 0}, partition_key=day
    )


# --------------------------------------------------------------------------------------------
# Predictions


@dg.asset(**_daily, kinds={"duckdb", "scikitlearn", "mlflow"})
def predictions(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracking,
    warehouse: DuckDBResource,
    features,
):
    """Each day's records scored by the champion (and the challenger, when one is registered):
    one row per record per model with model name, version and alias, class and probability."""
    from mlops_assets.lib.monitoring import predict_long

    spec = dataset_spec
    models = _serving_models(mlflow)
    thresholds = _thresholds(mlflow, [v for _, v in models])
    frame = predict_long(
        features,
        [(a, (v, _pipeline(mlflow.tracking_uri, mlflow.model_name, v))) for a, v in models],
        id_columns=[_date, *spec.key],
        feature_columns=[*spec.categorical_features, *spec.numeric_features],
        model_name=mlflow.model_name,
        thresholds=thresholds,
    )
    if frame.empty:
        ensure_table(warehouse, f"{dataset_spec.name}.predictions", frame)
    champion = _champion_rows(frame)
    by_day = champion.groupby(_day_of(champion))
    for day in _days(context):
        if day not in by_day.groups:
            _skip_day(context, day, "no records on this day")
            continue
        rows = by_day.get_group(day)
        context.add_asset_metadata(
            {
                "records": len(rows),
                "predicted_positive_rate": float(rows["prediction"].mean()),
                "mean_probability": float(rows[PROBABILITY].mean()),
                "dagster/partition_row_count": len(rows) * len(models),
            },
            partition_key=day,
        )
    return dg.Output(
        frame,
        metadata={
            "model_name": mlflow.model_name,
            **{f"{alias}_version": version for alias, version in models},
        },
    )


# --------------------------------------------------------------------------------------------
# Drift


class DriftConfig(dg.Config):
    drift_share_threshold: float = Field(
        default=0.5,
        description="A day drifts (and the check warns) when at least this share of the tested "
        "feature columns drift.",
    )
    numeric_threshold: float = Field(
        default=1.0, description="Normed Wasserstein distance from which a numeric column drifts."
    )
    categorical_threshold: float = Field(
        default=0.1, description="Jensen-Shannon distance from which a categorical column drifts."
    )
    prediction_threshold: float = Field(
        default=1.0, description="Normed Wasserstein distance from which the scores drift."
    )
    exclude_columns: list[str] | None = Field(
        default=None,
        description="Feature columns never tested. Unset: those constant within every day of the "
        "reference (e.g. a weekday), which would drift every day by construction.",
    )
    reference_sample_rows: int = Field(
        default=20_000, description="Rows sampled (seeded) from the reference, for speed."
    )
    reference_seed: int = Field(default=0, description="Seed of the reference sample.")
    reference_start: str | None = Field(
        default=None,
        description="With reference_end: use the features of [start, end) (YYYY-MM-DD) as the "
        "reference instead of the training set's train split.",
    )
    reference_end: str | None = Field(default=None, description="End (exclusive) of the window.")
    html: Literal["none", "last", "all"] = Field(
        default="last",
        description="Which days get an HTML report (~4 MB, +0.7 s each): none, the last day of "
        "the run, or all.",
    )
    save_to_workspace: bool = Field(
        default=True, description="Save each day's snapshot to the Evidently workspace."
    )


def _read_reference(warehouse: DuckDBResource, config: DriftConfig):
    """The reference rows (date + feature columns): the training set's train split, or a window."""
    spec = dataset_spec
    columns = ", ".join([_date, *spec.categorical_features, *spec.numeric_features])
    if (config.reference_start is None) != (config.reference_end is None):
        raise dg.Failure("set both reference_start and reference_end, or neither")
    if config.reference_start is not None:
        query = f"SELECT {columns} FROM {spec.name}.features WHERE {_date} >= ? AND {_date} < ?"
        params = [config.reference_start, config.reference_end]
        where = f"{spec.name}.features in [{config.reference_start}, {config.reference_end})"
    else:
        query = (
            f"SELECT {columns} FROM {spec.name}.training_set "
            f"WHERE {TRAINING_SET_SPLIT_COLUMN} = 'train'"
        )
        params, where = [], f"the train split of {spec.name}.training_set"
    with warehouse.get_connection() as con:
        try:
            reference = con.execute(query, params).df()
        except Exception as error:  # duckdb.CatalogException: the table is not there yet
            raise dg.Failure(f"cannot read the drift reference ({where}): {error}") from error
    if reference.empty:
        raise dg.Failure(f"the drift reference ({where}) has no rows")
    return reference, where


def _drift_row(day: str, result, n_reference: int, html: str) -> dict:
    import pandas as pd

    from mlops_assets.lib.monitoring import drift_score_column

    columns = result.columns
    row = {
        _date: pd.Timestamp(day),
        "n_rows": int(result.n_rows),
        "n_reference_rows": n_reference,
        "drift_share": float(result.drift_share),
        "n_drifted_columns": int(result.n_drifted),
        "n_tested_columns": int(result.n_columns),
        "dataset_drift": bool(result.dataset_drift),
        "prediction_drift_score": float(result.prediction_score)
        if result.prediction_score is not None
        else float("nan"),
        "prediction_drifted": bool(result.prediction_drifted),
        "drifted_columns": ", ".join(columns.index[columns["drifted"]]),
        "skipped_columns": ", ".join(result.skipped_columns),
        "html_report": html,
    }
    for column in dataset_spec.features:  # fixed order: the table inserts by position
        score = columns["score"].get(column) if column in columns.index else None
        row[drift_score_column(column)] = float("nan") if score is None else float(score)
    return row


@dg.asset(
    **_daily,
    kinds={"duckdb", "evidently"},
    check_specs=[
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset="drift_report",
            description="No day's share of drifted feature columns reaches drift_share_threshold "
            "(warning; the failing days are listed).",
        )
    ],
)
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    warehouse: DuckDBResource,
    mlflow: MlflowTracking,
    reports: ReportStore,
    evidently: EvidentlyWorkspace,
    features,
    predictions,
):
    """Evidently drift of each day's features and champion scores against the reference: one row
    per day (share and count of drifted columns, prediction drift, a score per column)."""
    import pandas as pd

    from mlops_assets.lib.drift import DriftSettings, compute_drift, save_snapshots_to_workspace
    from mlops_assets.lib.monitoring import constant_within_batches

    spec = dataset_spec
    numeric, categorical = spec.numeric_features, spec.categorical_features
    reference, where = _read_reference(warehouse, config)
    exclude = config.exclude_columns
    if exclude is None:
        exclude = constant_within_batches(reference, _date, [*categorical, *numeric])
    if len(reference) > config.reference_sample_rows:
        reference = reference.sample(
            config.reference_sample_rows, random_state=config.reference_seed
        )
    champion = _champion_rows(predictions)
    scored_by = champion["model_version"].unique()
    if len(scored_by):
        # The reference is scored by the same version as the days, so prediction drift compares
        # like with like even if the champion changed since the predictions were made.
        pipeline = _pipeline(mlflow.tracking_uri, mlflow.model_name, scored_by[0])
        reference = reference.assign(
            **{PROBABILITY: pipeline.predict_proba(reference[[*categorical, *numeric]])[:, 1]}
        )
    current = features.merge(
        champion[[_date, *spec.key, PROBABILITY]], on=[_date, *spec.key], how="inner"
    )
    settings = DriftSettings(
        exclude=tuple(exclude),
        num_threshold=config.numeric_threshold,
        cat_threshold=config.categorical_threshold,
        prediction_threshold=config.prediction_threshold,
        drift_share=config.drift_share_threshold,
    )
    days = _days(context)
    by_day = current.groupby(_day_of(current))
    rows, snapshots = [], []
    for day in days:
        if day not in by_day.groups:
            _skip_day(context, day, "no records on this day: nothing to compare")
            continue
        html = config.html == "all" or (config.html == "last" and day == days[-1])
        html_path = reports.path("drift", f"{day}.html") if html else None
        result = compute_drift(
            reference,
            by_day.get_group(day),
            numeric=numeric,
            categorical=categorical,
            prediction=PROBABILITY,
            settings=settings,
            html_path=html_path,
            timestamp=dt.datetime.fromisoformat(day),
            tags=[day],
        )
        snapshots.append(result.snapshot)
        rows.append(_drift_row(day, result, len(reference), str(html_path or "")))
        metadata = {**result.to_metadata(), "dagster/partition_row_count": 1}
        if html_path is not None:
            metadata["html_report"] = dg.MetadataValue.path(str(html_path))
            metadata["html_report_url"] = dg.MetadataValue.url(html_path.as_uri())
        context.add_asset_metadata(metadata, partition_key=day)
    if config.save_to_workspace and snapshots:
        save_snapshots_to_workspace(snapshots, evidently.directory, evidently.project_name)
    table = pd.DataFrame(rows)
    context.log.info(f"drift of {len(rows)} day(s) against {where}; excluded: {exclude}")
    yield dg.Output(
        table,
        metadata={
            "reference": where,
            "reference_rows": len(reference),
            "excluded_columns": ", ".join(exclude) or "none",
            "evidently_workspace": dg.MetadataValue.path(evidently.directory),
        },
    )
    over = table[table["dataset_drift"]] if len(table) else table
    yield dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=over.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "days_checked": len(table),
            "days_over_threshold": len(over),
            "max_drift_share": float(table["drift_share"].max()) if len(table) else 0.0,
            "threshold": config.drift_share_threshold,
            "days": dg.MetadataValue.md(
                over[[_date, "drift_share", "drifted_columns"]].to_markdown(index=False)
                if len(over)
                else "none"
            ),
        },
    )


# --------------------------------------------------------------------------------------------
# Performance


class PerformanceConfig(dg.Config):
    label_delay_days: int = Field(
        default=DEFAULT_LABEL_DELAY_DAYS,
        description="Labels of day D are usable from D + k, relative to today (the real date, or "
        f"${REPLAY_DATE_ENV} when set); earlier days are left for a later run.",
    )
    max_relative_drop: float = Field(
        default=0.1,
        description="The check warns on a day whose watched metric is worse than the champion's "
        "test metric by more than this fraction.",
    )
    watched_metrics: list[str] = Field(
        default=["roc_auc", "accuracy", "f1", "brier"],
        description="Metrics compared with the champion's test_<metric> (brier: lower is better).",
    )
    min_labelled_records: int = Field(
        default=100, description="Days with fewer labelled records are stored but not judged."
    )


def _test_metrics(mlflow: MlflowTracking, version: str) -> dict[str, float]:
    client = mlflow.client()
    run_id = client.get_model_version(mlflow.model_name, version).run_id
    metrics = client.get_run(run_id).data.metrics
    return {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")}


@dg.asset(
    **_daily,
    kinds={"duckdb", "scikitlearn"},
    check_specs=[
        dg.AssetCheckSpec(
            PERFORMANCE_CHECK,
            asset="performance",
            description="No judged day's watched metric falls more than max_relative_drop below "
            "the champion's test metric (warning; the failing days are listed).",
        )
    ],
)
def performance(
    context: dg.AssetExecutionContext,
    config: PerformanceConfig,
    mlflow: MlflowTracking,
    features,
    predictions,
):
    """The champion's metrics per day once the day's labels are usable (accuracy, F1, ROC AUC,
    Brier, actual vs predicted positive rate, ...): the performance history, one row per day."""
    import pandas as pd

    from mlops_assets.lib.clock import labels_usable, today
    from mlops_assets.lib.evaluation import METRIC_NAMES
    from mlops_assets.lib.monitoring import daily_performance, relative_drops

    spec = dataset_spec
    now = today()
    champion = _champion_rows(predictions)
    scored = champion.merge(
        features[[_date, *spec.key, spec.target.name]], on=[_date, *spec.key], how="inner"
    )
    by_day = scored.groupby(_day_of(scored))
    reference: dict[str, dict[str, float]] = {}
    rows, judged, flagged = [], 0, []
    for day in _days(context):
        date = dt.date.fromisoformat(day)
        if not labels_usable(date, now, config.label_delay_days):
            usable = date + dt.timedelta(days=config.label_delay_days)
            _skip_day(context, day, f"labels pending: usable from {usable} (today is {now})")
            continue
        if day not in by_day.groups:
            _skip_day(context, day, "no scored records on this day")
            continue
        rows_of_day = by_day.get_group(day)
        metrics = daily_performance(rows_of_day, label=spec.target.name)
        if metrics is None:
            _skip_day(context, day, "no labelled records on this day")
            continue
        version = str(rows_of_day["model_version"].iloc[0])
        if version not in reference:
            reference[version] = _test_metrics(mlflow, version)
        drops = {}
        if metrics["n"] >= config.min_labelled_records:
            judged += 1
            drops = relative_drops(
                metrics, reference[version], config.watched_metrics, config.max_relative_drop
            )
            if drops:
                flagged.append({_date: day, **{f"change/{k}": v for k, v in drops.items()}})
        rows.append(
            {
                _date: pd.Timestamp(day),
                "model_name": mlflow.model_name,
                "model_version": version,
                "label_delay_days": config.label_delay_days,
                "n_scored": metrics["n_scored"],
                **{name: metrics[name] for name in METRIC_NAMES},
                "below_reference": ", ".join(drops),
            }
        )
        context.add_asset_metadata(
            {
                **{name: metrics[name] for name in METRIC_NAMES},
                # The serving model's test score: the retraining sensor reads decay from the pair.
                "reference_roc_auc": reference[version].get("roc_auc", float("nan")),
                "dagster/partition_row_count": 1,
            },
            partition_key=day,
        )
    yield dg.Output(
        pd.DataFrame(rows),
        metadata={"today": str(now), "label_delay_days": config.label_delay_days},
    )
    yield dg.AssetCheckResult(
        check_name=PERFORMANCE_CHECK,
        passed=not flagged,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "days_measured": len(rows),
            "days_judged": judged,
            "days_below": len(flagged),
            "max_relative_drop": config.max_relative_drop,
            **{
                f"test_{name}": value
                for version_metrics in reference.values()
                for name, value in version_metrics.items()
                if name in config.watched_metrics
            },
            "days": dg.MetadataValue.md(
                pd.DataFrame(flagged).to_markdown(index=False) if flagged else "none"
            ),
        },
    )


# --------------------------------------------------------------------------------------------
# Summary


def _history(warehouse: DuckDBResource, table: str):
    """A whole history table ordered by date; an empty frame before its first write."""
    import pandas as pd

    schema = dataset_spec.name
    with warehouse.get_connection() as con:
        if not table_exists(con, f"{schema}.{table}"):
            return pd.DataFrame()
        return con.execute(f"SELECT * FROM {schema}.{table} ORDER BY {_date}").df()


class SummaryConfig(dg.Config):
    worst_days: int = Field(default=5, description="How many worst days to flag per measure.")


@dg.asset(
    deps=["drift_report", "performance"],
    group_name=GROUP,
    kinds={"duckdb", "matplotlib"},
    backfill_policy=single_run,
    # A derived view: redraw it whenever a monitored day changes, without anyone asking.
    automation_condition=dg.AutomationCondition.eager(),
)
def monitoring_summary(
    config: SummaryConfig, warehouse: DuckDBResource, reports: ReportStore
) -> dg.MaterializeResult:
    """Drift share and performance over every monitored day (PNG and a monthly table), with the
    worst days flagged: the days of highest drift share and of lowest ROC AUC."""
    import pandas as pd

    from mlops_assets.lib.monitoring import plot_summary, worst_days

    drift = _history(warehouse, "drift_report")
    perf = _history(warehouse, "performance")
    n = config.worst_days
    worst = []
    if not drift.empty:
        worst.append(worst_days(drift, "drift_share", n, largest=True).assign(flag="high drift"))
    if not perf.empty:
        worst.append(worst_days(perf, "roc_auc", n, largest=False).assign(flag="low ROC AUC"))
    worst = pd.concat(worst, ignore_index=True) if worst else pd.DataFrame()
    flagged = list(worst[_date]) if len(worst) else []
    png = plot_summary(
        drift,
        perf,
        date_column=_date,
        path=reports.path("monitoring", "summary.png"),
        flagged=flagged,
    )
    monthly = []
    for frame, columns in (
        (drift, ["drift_share", "prediction_drift_score"]),
        (perf, ["roc_auc", "f1", "accuracy", "brier", "positive_rate", "predicted_positive_rate"]),
    ):
        if not frame.empty:
            monthly.append(frame.groupby(frame[_date].dt.strftime("%Y-%m"))[columns].mean())
    table = pd.concat(monthly, axis=1).round(3) if monthly else pd.DataFrame()
    shown = [c for c in (_date, "flag", "drift_share", "roc_auc") if c in worst.columns]
    return dg.MaterializeResult(
        metadata={
            "plot": dg.MetadataValue.path(str(png)),
            "days_with_drift": len(drift),
            "days_with_performance": len(perf),
            "mean_drift_share": float(drift["drift_share"].mean()) if len(drift) else 0.0,
            "mean_roc_auc": float(perf["roc_auc"].mean()) if len(perf) else float("nan"),
            "monthly": dg.MetadataValue.md(table.to_markdown() if len(table) else "no days yet"),
            "worst_days": dg.MetadataValue.md(
                worst[shown].round(3).to_markdown(index=False) if len(worst) else "no days yet"
            ),
        }
    )


# --------------------------------------------------------------------------------------------
# Job and schedule

monitoring_assets = [predictions, drift_report, performance, monitoring_summary]

monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=dg.AssetSelection.groups(GROUP) | dg.AssetSelection.assets("ab_outcomes"),
    description="Score, check for drift and measure the selected days, record A/B outcomes "
    "when a challenger exists, then the summary.",
)


@dg.schedule(
    job=monitoring_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def monitoring_schedule(context: dg.ScheduleEvaluationContext):
    """Every morning: monitor yesterday, and measure the day whose labels land today.

    "Today" is the tick's date, or $MLOPS_REPLAY_DATE when set (to replay the 2013 data).
    """
    from mlops_assets.lib.clock import today

    replaying = bool(os.environ.get(REPLAY_DATE_ENV))
    now = today() if replaying else context.scheduled_execution_time.date()
    first, last = dataset_spec.date.start, dataset_spec.date.end
    newest = now - dt.timedelta(days=1)
    labelled = now - dt.timedelta(days=DEFAULT_LABEL_DELAY_DAYS)
    if not first <= newest <= last:
        return dg.SkipReason(
            f"no partition for {newest} (data span {first}..{last}); set {REPLAY_DATE_ENV} "
            "to replay a date of the data"
        )
    performance_config = {"label_delay_days": DEFAULT_LABEL_DELAY_DAYS}
    run_config = {"ops": {"performance": {"config": performance_config}}}
    requests = [
        dg.RunRequest(
            run_key=f"monitor-{newest}", partition_key=newest.isoformat(), run_config=run_config
        )
    ]
    if labelled != newest and first <= labelled <= last:
        requests.append(
            dg.RunRequest(
                run_key=f"labels-{labelled}",
                partition_key=labelled.isoformat(),
                run_config=run_config,
                asset_selection=[dg.AssetKey("performance"), dg.AssetKey("monitoring_summary")],
            )
        )
    return requests
