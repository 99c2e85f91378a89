"""Monitoring of unseen data: the clock, label delay, long-format predictions, daily metrics.

Pure functions, no Dagster imports; column names always come from the caller (the dataset
specification). pandas is imported at module level: only the monitoring asset bodies import this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.lib.evaluation import LOWER_IS_BETTER, classification_metrics

PREDICTION_COLUMNS = (
    "model_name",
    "model_version",
    "model_alias",
    "prediction",
    "probability",
    "threshold",
)


def predict_long(
    frame: pd.DataFrame,
    models: Sequence[tuple[str, Any]],
    *,
    id_columns: Sequence[str],
    feature_columns: Sequence[str],
    model_name: str,
) -> pd.DataFrame:
    """One row per record per model: ids, model name/version/alias, the decision (`prediction`,
    1 when probability >= the version's threshold), the probability and the threshold itself.

    `models` holds (alias, (version, threshold, pipeline)) tuples; each pipeline's
    `predict_proba` takes the feature columns. An empty `frame` gives an empty frame with the
    same columns. A regression model (threshold None) stores its numeric `prediction` only:
    no probability, no threshold.
    """
    parts = []
    for alias, (version, threshold, pipeline) in models:
        ids = frame[list(id_columns)].reset_index(drop=True)
        if threshold is None:
            values = pipeline.predict_value(frame[list(feature_columns)]) if len(frame) else []
            parts.append(
                ids.assign(
                    model_name=model_name,
                    model_version=str(version),
                    model_alias=alias,
                    prediction=np.asarray(values, dtype=float),
                )
            )
            continue
        if len(frame):
            proba = pipeline.predict_proba(frame[list(feature_columns)])[:, 1]
        else:
            proba = np.empty(0, dtype=float)
        parts.append(
            ids.assign(
                model_name=model_name,
                model_version=str(version),
                model_alias=alias,
                prediction=(proba >= threshold).astype(np.int64),
                probability=proba.astype(float),
                threshold=float(threshold),
            )
        )
    return pd.concat(parts, ignore_index=True)


def constant_within_batches(
    frame: pd.DataFrame, batch_column: str, columns: Sequence[str]
) -> list[str]:
    """Columns holding at most one distinct value within every batch of `frame` (e.g. a weekday
    within a day). Against a multi-batch reference they drift in every batch by construction."""
    if frame.empty:
        return []
    distinct = frame.groupby(batch_column)[list(columns)].nunique(dropna=True).max()
    return [c for c in columns if distinct[c] <= 1]


def daily_performance(
    scored: pd.DataFrame,
    *,
    label: str,
    threshold: float,
    probability: str = "probability",
) -> dict[str, float] | None:
    """lib.evaluation metrics of one model version's labelled records, decided at its threshold;
    None when no record has a label. Records without a label (e.g. cancelled flights) are scored
    but left out here.
    """

    labelled = scored[scored[label].notna()]
    if labelled.empty:
        return None
    metrics = classification_metrics(
        labelled[label].to_numpy(dtype=np.int64), labelled[probability], threshold
    )
    return {**metrics, "n_scored": len(scored)}


def relative_drops(
    metrics: Mapping[str, float],
    reference: Mapping[str, float],
    watched: Sequence[str],
    max_relative_drop: float,
) -> dict[str, float]:
    """Watched metrics worse than the reference by more than `max_relative_drop` (a fraction):
    name -> the relative change (negative = worse). Missing or NaN values are not judged."""
    flagged = {}
    for name in watched:
        value, base = metrics.get(name), reference.get(name)
        if value is None or base is None or math.isnan(value) or math.isnan(base) or base == 0:
            continue
        change = (value - base) / abs(base)
        worse = -change if name in LOWER_IS_BETTER else change
        if worse < -max_relative_drop:
            flagged[name] = float(worse)
    return flagged


def drift_score_column(column: str) -> str:
    return f"drift_score__{column}"


def drift_row(
    result: Any,
    *,
    date_column: str,
    day: str,
    features: Sequence[str],
    n_reference: int,
    html: str = "",
) -> dict[str, Any]:
    """One day's row of the drift history from a `lib.drift.DriftResult`: the share and count of
    drifted columns, prediction drift, and a score per feature (NaN where it was not tested)."""
    columns = result.columns
    row = {
        date_column: pd.Timestamp(day),
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
    for column in features:  # every feature, in spec order, tested or not
        score = columns["score"].get(column) if column in columns.index else None
        row[drift_score_column(column)] = float("nan") if score is None else float(score)
    return row


def worst_days(table: pd.DataFrame, column: str, n: int, *, largest: bool) -> pd.DataFrame:
    """The `n` days with the largest (or smallest) `column`, ignoring missing values."""
    valid = table.dropna(subset=[column])
    return valid.nlargest(n, column) if largest else valid.nsmallest(n, column)


def plot_summary(
    drift: pd.DataFrame,
    estimates: pd.DataFrame,
    performance: pd.DataFrame,
    *,
    date_column: str,
    path: str | Path,
) -> Path:
    """PNG by date: the daily drift statistic against its calibrated threshold, alarms marked
    (top); the estimated ROC AUC with its band and the realized ROC AUC once labels land, days
    outside the band marked (bottom). Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True)
    if not drift.empty:
        top.plot(drift[date_column], drift["max_z"], label="largest column z", lw=1.2)
        top.plot(drift[date_column], drift["threshold"], "--", label="calibrated threshold", lw=1)
        alarms = drift[drift["alarm"].astype(bool)]
        top.scatter(alarms[date_column], alarms["max_z"], color="red", label="alarm", zorder=3)
    top.set_ylabel("drift (z)")
    top.set_title("Daily drift against the champion's training data")
    if not estimates.empty:
        bottom.fill_between(
            estimates[date_column],
            estimates["roc_auc_low"],
            estimates["roc_auc_high"],
            alpha=0.25,
            label="estimated ROC AUC band",
        )
        bottom.plot(
            estimates[date_column], estimates["estimated_roc_auc"], label="estimated", lw=1.2
        )
    # A regression champion's realized MAE (no estimate, no band).
    metric = "roc_auc" if performance.empty or "roc_auc" in performance else "mae"
    if not performance.empty:
        judged = performance[performance["judged"].astype(bool)]
        bottom.plot(judged[date_column], judged[metric], ".", label="realized", ms=4)
        outside = judged[judged["outside_band"].astype(bool)]
        bottom.scatter(
            outside[date_column], outside[metric], color="red", label="outside band", zorder=3
        )
    bottom.set_ylabel(metric.upper() if metric == "mae" else "ROC AUC")
    bottom.set_title("Champion performance: estimated before labels, realized after")
    for axis in (top, bottom):
        if axis.lines or axis.collections:
            axis.legend(loc="upper left", fontsize=8)
        axis.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=80)
    figure.clear()
    return path


def daily_series(
    drift: pd.DataFrame,
    estimates: pd.DataFrame,
    performance: pd.DataFrame,
    *,
    date_column: str,
) -> pd.DataFrame:
    """One row per monitored day: drift alarm, statistic and threshold, drift share and drifted
    columns, estimated and realized ROC AUC (and whether each part was judged)."""
    parts = []
    for frame, columns in (
        (
            drift,
            [
                "judged",
                "alarm",
                "max_z",
                "threshold",
                "drift_share",
                "n_drifted_columns",
                "drifted_columns",
                "domain_auc",
            ],
        ),
        (estimates, ["estimated_roc_auc", "roc_auc_low", "roc_auc_high"]),
        (performance, ["judged", "roc_auc", "mae", "rmse", "r2", "window_days", "outside_band"]),
    ):
        if not frame.empty:
            present = [c for c in columns if c in frame.columns]
            part = frame.set_index(date_column)[present]
            judged = "drift_judged" if frame is drift else "performance_judged"
            parts.append(part.rename(columns={"judged": judged}))
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, axis=1).sort_index()
    table.index = table.index.strftime("%Y-%m-%d")
    return table.rename_axis(date_column).reset_index()


def trailing_window(
    labelled: pd.DataFrame,
    *,
    date_column: str,
    day: pd.Timestamp,
    min_records: int,
    max_days: int,
) -> tuple[pd.DataFrame, int, bool]:
    """The records a day is judged on: its own when they reach `min_records`, else those of the
    shortest trailing window [day - k + 1, day] (k <= `max_days`) that does. Returns the rows,
    k, and whether they reach `min_records` (if not: the whole max window, to be reported as not
    judged). Days after `day` are never used."""
    if max_days < 1:
        raise ValueError(f"max_days must be >= 1, got {max_days}")
    day = pd.Timestamp(day)
    dates = labelled[date_column]
    for k in range(1, max_days + 1):
        rows = labelled[(dates > day - pd.Timedelta(days=k)) & (dates <= day)]
        if len(rows) >= min_records:
            return rows, k, True
    return rows, max_days, False
