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

# A record is predicted positive when its probability is >= this (as lib.evaluation scores it).
DECISION_THRESHOLD = 0.5
PREDICTION_COLUMNS = (
    "model_name",
    "model_version",
    "model_alias",
    "prediction",
    "probability",
    "threshold",
)
# Performance metrics checked against the champion's test metrics; Brier is lower-is-better.
LOWER_IS_BETTER = frozenset({"brier", "log_loss"})


def predict_long(
    frame: pd.DataFrame,
    models: Sequence[tuple[str, Any]],
    *,
    id_columns: Sequence[str],
    feature_columns: Sequence[str],
    model_name: str,
    thresholds: Mapping[str, float],
) -> pd.DataFrame:
    """One row per record per model: ids, model name/version/alias, predicted class, probability
    and the model's threshold (its operating point: prediction = probability >= threshold).

    `models` holds (alias, (version, pipeline)) pairs; each pipeline's `predict_proba` takes the
    feature columns. `thresholds` maps each version to its threshold (the registry's model
    version tag `threshold`); a version without one is an error. An empty `frame` gives an empty
    frame with the same columns.
    """
    missing = [str(v) for _, (v, _) in models if str(v) not in thresholds]
    if missing:
        raise ValueError(
            f"model version(s) {missing} of {model_name!r} have no threshold: tag each "
            "registered version with its `threshold`"
        )
    parts = []
    for alias, (version, pipeline) in models:
        threshold = float(thresholds[str(version)])
        ids = frame[list(id_columns)].reset_index(drop=True)
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
                threshold=threshold,
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
    probability: str = "probability",
    threshold: float = DECISION_THRESHOLD,
) -> dict[str, float] | None:
    """lib.evaluation metrics of one day's labelled records; None when no record has a label.

    Records without a label (e.g. cancelled flights) are scored but left out here.
    """
    from mlops_assets.lib.evaluation import classification_metrics

    labelled = scored[scored[label].notna()]
    if labelled.empty:
        return None
    metrics = classification_metrics(
        labelled[label].to_numpy(dtype=np.int64), labelled[probability], threshold=threshold
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


def worst_days(table: pd.DataFrame, column: str, n: int, *, largest: bool) -> pd.DataFrame:
    """The `n` days with the largest (or smallest) `column`, ignoring missing values."""
    valid = table.dropna(subset=[column])
    return valid.nlargest(n, column) if largest else valid.nsmallest(n, column)


def plot_summary(
    drift: pd.DataFrame,
    performance: pd.DataFrame,
    *,
    date_column: str,
    path: str | Path,
    flagged: Sequence[pd.Timestamp] = (),
) -> Path:
    """PNG: daily drift share and prediction drift (top), daily ROC AUC and F1 with the actual and
    predicted positive rates (bottom); `flagged` days marked. Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True)
    if not drift.empty:
        top.plot(drift[date_column], drift["drift_share"], label="drift share", lw=1.2)
        top.plot(
            drift[date_column],
            drift["prediction_drift_score"],
            label="prediction drift score",
            lw=1.0,
        )
    top.set_ylabel("drift")
    top.set_title("Daily drift against the reference")
    if not performance.empty:
        for name in ("roc_auc", "f1", "positive_rate", "predicted_positive_rate"):
            bottom.plot(performance[date_column], performance[name], label=name, lw=1.0)
    bottom.set_ylabel("metric")
    bottom.set_title("Daily performance of the champion (labelled records)")
    for axis in (top, bottom):
        for day in flagged:
            axis.axvline(day, color="red", alpha=0.25, lw=2)
        if axis.lines:
            axis.legend(loc="upper left", fontsize=8)
        axis.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    figure.clear()
    return path
