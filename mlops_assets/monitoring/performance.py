"""How well the champion does: estimated as soon as a day is scored (CBPE), measured once its
labels land, and the two side by side.

`performance_estimate` needs no label: the expected metrics and their band follow from the
champion's probabilities (`lib.cbpe`). `performance` measures the realized metrics on the
labelled records, on the day alone or, when the day has too few, on the shortest trailing window
that has enough; it stores beside them the estimate for the same records, and flags a realized
ROC AUC outside the band (the relation between features and label moved).
"""

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.lib.chunks import DayChunks
from mlops_assets.lib.clock import REPLAY_DATE_ENV
from mlops_assets.lib.sql import ident
from mlops_assets.metadata import range_totals
from mlops_assets.monitoring.common import (
    CHAMPION_ASSET,
    DAILY,
    DATE,
    NOT_FOR_REGRESSION,
    PROBABILITY,
    SCORE,
    blocking_field,
    champion_rows,
    check_spec,
    day_checks,
    day_of,
    days,
    days_in,
    decision_threshold,
    skip_day,
)
from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import MlflowTracking

ESTIMATE_CHECK = "check_estimated_performance"
PERFORMANCE_CHECK = "check_performance_against_test_metrics"
LABEL_DELAY_DAYS = dataset_spec.target.label_delay_days
BANDED = ("roc_auc", "accuracy", "f1")
# Records of one day share its conditions (weather, traffic), so a day's realized ROC AUC spreads
# wider than independent Bernoulli labels allow: on held-out days of the training period the
# simulated 95% band held the realized value on 0.545 of the days. bench/drift_signal.py measures
# the factor on 23 held-out days (3.38) and checks the coverage on 22 others (1.000).
BAND_INFLATION = 3.38


def _inflation_field() -> float:
    return Field(
        default=BAND_INFLATION,
        description="Widens the band around the estimate by this factor, for labels correlated "
        "within a day (measured by bench/drift_signal.py).",
    )


class EstimateConfig(dg.Config):
    coverage: float = Field(
        default=0.95, description="Coverage of the band around each estimated metric."
    )
    draws: int = Field(default=400, description="Simulated label sets per day.")
    band_inflation: float = _inflation_field()
    max_relative_drop: float = Field(
        default=0.1,
        description="The check warns on a day whose ESTIMATED ROC AUC is below the champion's "
        "test ROC AUC by more than this fraction.",
    )
    min_records: int = Field(default=100, description="Days with fewer records are not judged.")
    blocking: bool = blocking_field()


def _gate(day: str, check: str, passed: bool, judged: bool, blocking: bool, reason: str):
    from mlops_assets.lib.gates import DayGate

    return DayGate(dt.date.fromisoformat(day), check, passed, judged, blocking, reason)


def _band(estimate) -> dict[str, float]:
    """The estimate's columns; NaN without one, so every row has the same columns."""
    nan = float("nan")
    row = {}
    for name in BANDED:
        row[f"estimated_{name}"] = estimate.expected[name] if estimate else nan
        row[f"{name}_low"] = estimate.low[name] if estimate else nan
        row[f"{name}_high"] = estimate.high[name] if estimate else nan
    return row


@dg.asset(
    **DAILY,
    deps=[CHAMPION_ASSET],
    kinds={"duckdb", "numpy"},
    check_specs=[
        check_spec(
            ESTIMATE_CHECK,
            "performance_estimate",
            "Per day: the estimated ROC AUC is not more than max_relative_drop below the "
            "champion's test ROC AUC (a day too small to judge warns). With `blocking`, a "
            "failing day is kept out of the A/B analysis and the next training set.",
        )
    ],
)
def performance_estimate(
    context: dg.AssetExecutionContext,
    config: EstimateConfig,
    mlflow: MlflowTracking,
    warehouse: DuckDBResource,
    predictions: DayChunks,
):
    """The champion's expected ROC AUC, accuracy and F1 for each scored day, before any label,
    with a band (CBPE: labels simulated from the model's probabilities)."""
    import pandas as pd

    from mlops_assets.lib import cbpe
    from mlops_assets.lib.registry import test_metrics

    if dataset_spec.is_regression:
        for day in days(context):
            skip_day(context, day, NOT_FOR_REGRESSION)
        yield dg.Output(pd.DataFrame(), metadata={"not_applicable": NOT_FOR_REGRESSION})
        # Not a pass: nothing was estimated (a warning per day that says why; never blocks).
        gates = [
            _gate(day, ESTIMATE_CHECK, False, False, config.blocking, NOT_FOR_REGRESSION)
            for day in days(context)
        ]
        yield from day_checks(context, warehouse, ESTIMATE_CHECK, gates, run_days=days(context))
        return
    rows, flagged, unjudged, tests, gates = [], [], [], {}, []
    for day, scored in _champion_days(predictions, days(context)):
        if scored is None:
            skip_day(context, day, "no scored records on this day")
            gates.append(
                _gate(day, ESTIMATE_CHECK, False, False, config.blocking, "not judged: no records")
            )
            continue
        version = str(scored["model_version"].iloc[0])
        if version not in tests:
            threshold = decision_threshold(mlflow, version)
            tests[version] = (threshold, test_metrics(mlflow.client(), mlflow.model_name, version))
        threshold, test = tests[version]
        estimate = cbpe.estimate(
            scored[PROBABILITY].to_numpy(),
            threshold,
            draws=config.draws,
            coverage=config.coverage,
            inflation=config.band_inflation,
            seed=int(dt.date.fromisoformat(day).toordinal()),
        )
        judged = estimate.n >= config.min_records
        reason = "" if judged else f"not judged: n={estimate.n} < {config.min_records}"
        floor = test.get("roc_auc", float("nan")) * (1 - config.max_relative_drop)
        low = judged and estimate.expected["roc_auc"] < floor
        row = {
            DATE: pd.Timestamp(day),
            "model_version": version,
            "n": estimate.n,
            "threshold": threshold,
            "judged": judged,
            "not_judged_reason": reason,
            **_band(estimate),
            "below_reference": bool(low),
        }
        rows.append(row)
        (flagged if low else unjudged if not judged else []).append(row)
        verdict = (
            f"estimated ROC AUC {estimate.expected['roc_auc']:.3f} "
            f"[{estimate.low['roc_auc']:.3f}, {estimate.high['roc_auc']:.3f}] "
            f"{'below' if low else 'not below'} {floor:.3f} (the test ROC AUC less "
            f"{config.max_relative_drop:.0%})"
        )
        gates.append(
            _gate(
                day,
                ESTIMATE_CHECK,
                judged and not low,
                judged,
                config.blocking,
                verdict if judged else reason,
            )
        )
        context.add_asset_metadata(
            {
                **{k: v for k, v in row.items() if isinstance(v, float)},
                "judged": judged,
                "reference_roc_auc": test.get("roc_auc", float("nan")),
                "dagster/partition_row_count": 1,
                **({"not_judged": reason} if reason else {}),
            },
            partition_key=day,
        )
    table = pd.DataFrame(rows)
    yield dg.Output(
        table,
        metadata={
            "coverage": config.coverage,
            "draws": config.draws,
            "blocking": config.blocking,
            **range_totals(
                context, {"days_judged": len(rows) - len(unjudged), "days_below": len(flagged)}
            ),
        },
    )
    yield from day_checks(context, warehouse, ESTIMATE_CHECK, gates, run_days=days(context))


def _champion_days(predictions: DayChunks, run_days: list[str]):
    """(day, the champion's scored records of the day, or None), one window at a time."""
    for first, last in predictions.windows:
        champion = champion_rows(predictions.read(first, last))
        by_day = champion.groupby(day_of(champion))
        for day in days_in(run_days, first, last):
            yield day, by_day.get_group(day) if day in by_day.groups else None


class PerformanceConfig(dg.Config):
    label_delay_days: int = Field(
        default=LABEL_DELAY_DAYS,
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
        default=100,
        description="A day with fewer labelled records is judged on the shortest trailing "
        "window that has this many (up to max_window_days); if none has, it is not judged.",
    )
    max_window_days: int = Field(
        default=7, description="The longest trailing window a day may be judged on."
    )
    coverage: float = Field(default=0.95, description="Coverage of the estimate's band.")
    band_inflation: float = _inflation_field()
    blocking: bool = blocking_field()


def _scored_rows(warehouse: DuckDBResource, first: dt.date, last: dt.date):
    """The champion's scores of [first, last] with their labels (NULL until known)."""
    spec = dataset_spec
    keys = " AND ".join(f"p.{ident(k)} = f.{ident(k)}" for k in [DATE, *spec.key])
    date = ident(DATE)
    query = (
        f"SELECT p.{date}, p.model_version, p.{SCORE}, f.{ident(spec.target.name)} "
        f"FROM {spec.name}.predictions p JOIN {spec.name}.features f ON {keys} "
        f"WHERE p.model_alias = 'champion' AND p.{date} >= ? AND p.{date} <= ?"
    )
    with warehouse.get_connection() as con:
        return con.execute(query, [first, last]).df()


@dataclass(frozen=True)
class Measured:
    """What a task makes of the records a day is judged on."""

    metrics: Mapping[str, float]
    columns: dict[str, Any]  # the task's own columns, stored after the metrics
    metadata: dict[str, Any]  # the task's own per-day metadata
    ok: str  # the check's reason on a day that passed
    problems: list[str] = field(default_factory=list)  # besides the watched metrics' drops
    outside_band: bool = False


@dataclass(frozen=True)
class Task:
    """What `performance` does differently for a classifier and for a regression target."""

    metric_names: Sequence[str]
    watched: Sequence[str]
    # (window, window_days, enough, day, model version, its test metrics) -> Measured
    measure: Callable[[Any, int, bool, dt.date, str, dict[str, float]], Measured]
    # (rows, test metrics per version) -> the task's own output metadata, as (settings that hold
    # for every day, totals over the run's days: `range_totals` puts these on its last day)
    summary: Callable[[list[dict], dict[str, dict[str, float]]], tuple[dict, dict]]


@dg.asset(
    **DAILY,
    deps=["predictions", "features", CHAMPION_ASSET],
    kinds={"duckdb", "scikitlearn"},
    check_specs=[
        check_spec(
            PERFORMANCE_CHECK,
            "performance",
            "Per day: no watched metric falls more than max_relative_drop below the champion's "
            "test metric and the realized ROC AUC lies inside its estimate's band (a day with "
            "too few labels warns). With `blocking`, a failing day is kept out of the A/B "
            "analysis and the next training set.",
        )
    ],
)
def performance(
    context: dg.AssetExecutionContext,
    config: PerformanceConfig,
    mlflow: MlflowTracking,
    warehouse: DuckDBResource,
):
    """The champion's realized metrics per day once labels are usable (accuracy, F1, ROC AUC,
    Brier, ...), judged on a trailing window when the day alone has too few labelled records,
    beside the CBPE estimate for the same records and whether the realized value left its band.
    A regression target: MAE, RMSE, R2 and the label-revealed drift (monitoring/regression.py)."""
    if dataset_spec.is_regression:
        from mlops_assets.monitoring.regression import regression_task

        task = regression_task(config)
    else:
        task = _classifier_task(config, mlflow)
    yield from _judge_days(context, config, mlflow, warehouse, task)


def _classifier_task(config: PerformanceConfig, mlflow: MlflowTracking) -> Task:
    """lib.evaluation metrics at the version's decision threshold, and CBPE's band around the
    realized ROC AUC."""
    from mlops_assets.lib import cbpe
    from mlops_assets.lib.evaluation import METRIC_NAMES
    from mlops_assets.lib.monitoring import daily_performance

    label = dataset_spec.target.name
    thresholds: dict[str, float] = {}

    def measure(window, k, enough, date, version, test) -> Measured:
        if version not in thresholds:
            thresholds[version] = decision_threshold(mlflow, version)
        threshold = thresholds[version]
        metrics = (
            daily_performance(window, label=label, threshold=threshold) if len(window) else None
        )
        band, outside, problems = _band(None), False, []
        if enough and metrics is not None:
            estimate = cbpe.estimate(
                window[PROBABILITY].to_numpy(),
                threshold,
                coverage=config.coverage,
                inflation=config.band_inflation,
                seed=date.toordinal(),
            )
            band = _band(estimate)
            outside = bool(
                metrics["roc_auc"] == metrics["roc_auc"]
                and not estimate.inside("roc_auc", metrics["roc_auc"])
            )
            if outside:
                problems.append(
                    f"realized ROC AUC {metrics['roc_auc']:.3f} outside its estimate's band "
                    f"[{band['roc_auc_low']:.3f}, {band['roc_auc_high']:.3f}]"
                )
        return Measured(
            metrics=metrics or {},
            columns=band,
            metadata={
                "estimated_roc_auc": float(band["estimated_roc_auc"]),
                "outside_band": outside,
                # The serving model's test score: the retraining sensor reads decay from the pair.
                "reference_roc_auc": test.get("roc_auc", float("nan")),
            },
            ok=f"test metrics held, ROC AUC inside its band (on {k} day(s))",
            problems=problems,
            outside_band=outside,
        )

    def summary(rows, tests) -> tuple[dict, dict]:
        test_metrics = {
            f"test_{name}": value
            for version_metrics in tests.values()
            for name, value in version_metrics.items()
            if name in config.watched_metrics
        }
        return test_metrics, {"days_outside_band": sum(r["outside_band"] for r in rows)}

    return Task(METRIC_NAMES, config.watched_metrics, measure, summary)


def _judge_days(
    context: dg.AssetExecutionContext,
    config: PerformanceConfig,
    mlflow: MlflowTracking,
    warehouse: DuckDBResource,
    task: Task,
):
    """`performance`'s output and check: each run day whose labels are usable is measured by
    `task` on its own records or the shortest trailing window with enough of them, and judged
    against the champion's test metrics."""
    import pandas as pd

    from mlops_assets.lib.clock import labels_usable, today
    from mlops_assets.lib.monitoring import relative_drops, trailing_window
    from mlops_assets.lib.registry import test_metrics

    label = dataset_spec.target.name
    now, run_days = today(), days(context)
    first = dt.date.fromisoformat(run_days[0]) - dt.timedelta(days=config.max_window_days - 1)
    scored = _scored_rows(warehouse, first, dt.date.fromisoformat(run_days[-1]))
    labelled = scored[scored[label].notna()]
    by_day = scored.groupby(day_of(scored))
    tests: dict[str, dict[str, float]] = {}
    rows, gates = [], []

    def gate(day, passed, judged, reason):
        gates.append(_gate(day, PERFORMANCE_CHECK, passed, judged, config.blocking, reason))

    for day in run_days:
        date = dt.date.fromisoformat(day)
        if not labels_usable(date, now, config.label_delay_days):
            usable = date + dt.timedelta(days=config.label_delay_days)
            skip_day(context, day, f"labels pending: usable from {usable} (today is {now})")
            gate(day, False, False, f"not judged: labels pending until {usable}")
            continue
        if day not in by_day.groups:
            skip_day(context, day, "no scored records on this day")
            gate(day, False, False, "not judged: no scored records on this day")
            continue
        of_day = by_day.get_group(day)
        version = str(of_day["model_version"].iloc[0])
        if version not in tests:
            tests[version] = test_metrics(mlflow.client(), mlflow.model_name, version)
        test = tests[version]
        window, k, enough = trailing_window(
            labelled[labelled["model_version"] == version],
            date_column=DATE,
            day=pd.Timestamp(day),
            min_records=config.min_labelled_records,
            max_days=config.max_window_days,
        )
        reason = "" if enough else f"not judged: n={len(window)} < {config.min_labelled_records}"
        measured = task.measure(window, k, enough, date, version, test)
        drops = (
            relative_drops(measured.metrics, test, task.watched, config.max_relative_drop)
            if enough
            else {}
        )
        row = {
            DATE: pd.Timestamp(day),
            "model_name": mlflow.model_name,
            "model_version": version,
            "label_delay_days": config.label_delay_days,
            "n_scored": len(of_day),
            "n_labelled": int(of_day[label].notna().sum()),
            "window_days": k,
            "judged": enough,
            "not_judged_reason": reason,
            **{name: measured.metrics.get(name, float("nan")) for name in task.metric_names},
            "n": len(window),
            **measured.columns,
            "outside_band": measured.outside_band,
            "below_reference": ", ".join(drops),
        }
        rows.append(row)
        if not enough:
            gate(day, False, False, reason)
        else:
            problems = [
                f"{name} {change:+.1%} against the test value" for name, change in drops.items()
            ] + measured.problems
            gate(day, not problems, True, "; ".join(problems) or measured.ok)
        context.add_asset_metadata(
            {
                **{name: float(row[name]) for name in task.metric_names},
                "judged": enough,
                "window_days": k,
                **measured.metadata,
                "dagster/partition_row_count": 1,
                **({"not_judged": reason} if reason else {}),
            },
            partition_key=day,
        )
    table = pd.DataFrame(rows)
    judged = int(table["judged"].sum()) if len(table) else 0
    settings, totals = task.summary(rows, tests)
    yield dg.Output(
        table,
        metadata={
            "today": str(now),
            "label_delay_days": config.label_delay_days,
            "max_relative_drop": config.max_relative_drop,
            "blocking": config.blocking,
            **settings,
            **range_totals(
                context,
                {
                    "days_measured": len(table),
                    "days_judged": judged,
                    "days_below": sum(bool(r["below_reference"]) for r in rows),
                    **totals,
                },
            ),
        },
    )
    yield from day_checks(context, warehouse, PERFORMANCE_CHECK, gates, run_days=run_days)
