"""Evaluation of a binary classifier: metrics, plots and permutation importance.

Pure functions, no Dagster imports. scikit-learn and matplotlib are imported inside the functions
so that importing this module stays cheap for the Dagster code location.

Plots are drawn on `matplotlib.figure.Figure` objects attached to an Agg canvas, never through
`pyplot`: no global figure registry, no backend switch, nothing left open after saving.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The keys of `classification_metrics`, in display order.
METRIC_NAMES = (
    "n",
    "positive_rate",
    "predicted_positive_rate",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
)
# Errors of a regression target (lib/regression.py) are lower-is-better too.
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "mae", "rmse"})


PLOT_NAMES = ("confusion_matrix", "roc_curve", "pr_curve", "calibration_curve")


@dataclass(frozen=True)
class EvaluationResult:
    """What the evaluation asset hands on: the version judged, its test metrics at its threshold,
    and each gate's verdict (`report` is the whole summary written to metrics.json)."""

    model_version: str
    threshold: float
    metrics: dict[str, float]
    gates: dict[str, bool]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def gates_passed(self) -> bool:
        return bool(self.gates) and all(self.gates.values())


def _labels(y_true: Any) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    if pd.isna(y).any() or not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1 (drop rows without a label first)")
    return y.astype(np.int64)


def _checked(y_true: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(y_true)
    p = np.asarray(proba, dtype=float)
    if p.ndim != 1:
        raise ValueError(
            f"proba must be 1-D (the positive-class column, predict_proba(X)[:, 1]), "
            f"got shape {p.shape}"
        )
    if p.shape != y.shape:
        raise ValueError(f"y_true has {y.size} values but proba has {p.size}")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("proba must be finite probabilities in [0, 1]")
    return y, p


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.min() != y.max())


def classification_metrics(y_true: Any, proba: Any, threshold: float) -> dict[str, float]:
    """Threshold and ranking metrics of positive-class probabilities `proba` against 0/1 `y_true`.

    A record is predicted positive when proba >= threshold (the model version's operating point,
    `ModelRef.decision_threshold`). Precision, recall and f1 are 0 where undefined. When `y_true`
    holds a single class, roc_auc and pr_auc are undefined and come back as NaN (no warning, no
    error); the other metrics are still computed. `n` is the record count (an int).
    """
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        brier_score_loss,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y, p = _checked(y_true, proba)
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    predicted = (p >= threshold).astype(np.int64)
    ranked = _both_classes(y)
    return {
        "n": int(y.size),
        "positive_rate": float(y.mean()),
        "predicted_positive_rate": float(predicted.mean()),
        "accuracy": float(accuracy_score(y, predicted)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)) if ranked else math.nan,
        "pr_auc": float(average_precision_score(y, p)) if ranked else math.nan,
        # labels= keeps log loss defined on a single-class slice.
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p, pos_label=1)),
    }


# ---------------------------------------------------------------------------------------------
# Plots


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    # An explicit Agg canvas: PNG output whatever MPLBACKEND says, no pyplot state touched.
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    # Not registered with pyplot, so nothing to close: releasing the artists frees the memory.
    figure.clear()
    return path


def _require_both_classes(y: np.ndarray, what: str) -> None:
    if not _both_classes(y):
        raise ValueError(f"a {what} needs both classes in y_true; got only {int(y[0])}")


def save_confusion_matrix(
    y_true: Any,
    y_pred: Any,
    path: str | Path,
    class_names: tuple[str, str] = ("0", "1"),
) -> Path:
    """A 2x2 confusion matrix (counts and share of each actual class) saved as PNG."""
    from sklearn.metrics import confusion_matrix

    y, predicted = _labels(y_true), _labels(y_pred)
    if y.shape != predicted.shape:
        raise ValueError(f"y_true has {y.size} values but y_pred has {predicted.size}")
    matrix = confusion_matrix(y, predicted, labels=[0, 1])
    row_share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure = _figure(4.5, 4)
    ax = figure.add_subplot()
    image = ax.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, label="share of actual class")
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if row_share[i, j] > 0.5 else "black"
        ax.text(j, i, f"{count:,}\n{row_share[i, j]:.1%}", ha="center", va="center", color=color)
    ax.set_xticks([0, 1], labels=list(class_names))
    ax.set_yticks([0, 1], labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix (n={y.size:,})")
    return _save(figure, path)


def save_roc_curve(y_true: Any, proba: Any, path: str | Path, baseline: Any | None = None) -> Path:
    """ROC curve of `proba`, with the chance diagonal and optionally a `baseline` model's scores."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y, p = _checked(y_true, proba)
    _require_both_classes(y, "ROC curve")
    figure = _figure(5, 5)
    ax = figure.add_subplot()
    curves = [("model", p)] if baseline is None else [("model", p), ("baseline", baseline)]
    for name, scores in curves:
        _, s = _checked(y, scores)
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance (AUC 0.500)")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    ax.legend(loc="lower right")
    return _save(figure, path)


def save_pr_curve(y_true: Any, proba: Any, path: str | Path, baseline: Any | None = None) -> Path:
    """Precision-recall curve of `proba`, with the positive rate (the prior's precision) and
    optionally a `baseline` model's scores."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y, p = _checked(y_true, proba)
    _require_both_classes(y, "precision-recall curve")
    figure = _figure(5, 5)
    ax = figure.add_subplot()
    curves = [("model", p)] if baseline is None else [("model", p), ("baseline", baseline)]
    for name, scores in curves:
        _, s = _checked(y, scores)
        precision, recall, _ = precision_recall_curve(y, s)
        ax.step(
            recall,
            precision,
            where="post",
            label=f"{name} (AP {average_precision_score(y, s):.3f})",
        )
    ax.axhline(y.mean(), linestyle="--", color="grey", label=f"positive rate {y.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve")
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper right")
    return _save(figure, path)


def save_calibration_curve(
    y_true: Any,
    proba: Any,
    path: str | Path,
    n_bins: int = 10,
    uncalibrated: Any | None = None,
) -> Path:
    """Reliability diagram (equal-width bins) above a histogram of the predicted probabilities;
    with `uncalibrated`, the model's scores before calibration are drawn beside them."""
    from sklearn.calibration import calibration_curve

    y, p = _checked(y_true, proba)
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    figure = _figure(5, 6)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    curves = [("model", p)]
    if uncalibrated is not None:
        curves = [("before calibration", _checked(y, uncalibrated)[1]), ("calibrated", p)]
    for name, scores in curves:
        # Empty bins are dropped by calibration_curve, so the points are the non-empty bins only.
        observed, predicted = calibration_curve(y, scores, n_bins=n_bins, strategy="uniform")
        top.plot(predicted, observed, marker="o", label=name)
    top.set(ylabel="observed positive rate", title="Calibration", xlim=(0, 1), ylim=(0, 1))
    top.legend(loc="upper left")
    bottom.hist(p, bins=np.linspace(0, 1, n_bins + 1), color="grey")
    bottom.set(xlabel="predicted probability", ylabel="records")
    return _save(figure, path)


def save_evaluation_plots(
    y_true: Any,
    proba: Any,
    directory: str | Path,
    threshold: float,
    baseline: Any | None = None,
    uncalibrated: Any | None = None,
) -> dict[str, Path]:
    """All evaluation plots as `<name>.png` in `directory`, keyed by the names in PLOT_NAMES.

    On a single-class `y_true` the ROC and precision-recall curves are undefined and left out of
    the result; the confusion matrix and calibration plot are still drawn.
    """
    y, p = _checked(y_true, proba)
    directory = Path(directory)
    plots = {
        "confusion_matrix": save_confusion_matrix(
            y, (p >= threshold).astype(np.int64), directory / "confusion_matrix.png"
        )
    }
    if _both_classes(y):
        plots["roc_curve"] = save_roc_curve(y, p, directory / "roc_curve.png", baseline)
        plots["pr_curve"] = save_pr_curve(y, p, directory / "pr_curve.png", baseline)
    plots["calibration_curve"] = save_calibration_curve(
        y, p, directory / "calibration_curve.png", uncalibrated=uncalibrated
    )
    return plots


# ---------------------------------------------------------------------------------------------
# Feature importance


def permutation_importance_table(
    pipeline: Any,
    X: pd.DataFrame,
    y: Any,
    *,
    scoring: str = "roc_auc",
    n_repeats: int = 5,
    max_rows: int = 20_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Permutation importance of each input column of `X` (columns feature, importance_mean,
    importance_std), most important first.

    Columns are permuted before the pipeline's preprocessing, so a categorical column counts once
    however it is encoded. Above `max_rows` rows a seeded random subsample (kept in the original
    order) is scored: the cost grows with rows x columns x repeats.
    """
    from sklearn.inspection import permutation_importance

    labels = np.asarray(y)
    if len(X) != labels.size:
        raise ValueError(f"X has {len(X)} rows but y has {labels.size} values")
    if max_rows < 1 or n_repeats < 1:
        raise ValueError("max_rows and n_repeats must be >= 1")
    if len(X) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))
        X, labels = X.iloc[rows], labels[rows]
    result = permutation_importance(
        pipeline, X, labels, scoring=scoring, n_repeats=n_repeats, random_state=seed, n_jobs=1
    )
    table = pd.DataFrame(
        {
            "feature": [str(c) for c in X.columns],
            "importance_mean": result.importances_mean,
            "importance_std": result.importances_std,
        }
    )
    return table.sort_values("importance_mean", ascending=False, kind="stable", ignore_index=True)


def save_importance_chart(table: pd.DataFrame, path: str | Path, max_features: int = 20) -> Path:
    """Horizontal bar chart (mean with std error bars) of a `permutation_importance_table`,
    the most important feature on top."""
    missing = {"feature", "importance_mean", "importance_std"} - set(table.columns)
    if missing:
        raise ValueError(f"table lacks columns {sorted(missing)}")
    if table.empty:
        raise ValueError("the importance table is empty")
    top = table.sort_values("importance_mean", ascending=False, kind="stable").head(max_features)
    top = top.iloc[::-1]  # barh draws bottom-up
    figure = _figure(6, 1 + 0.35 * len(top))
    ax = figure.add_subplot()
    ax.barh(top["feature"], top["importance_mean"], xerr=top["importance_std"], color="steelblue")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(xlabel="drop in score when the column is permuted", title="Permutation importance")
    return _save(figure, path)


# ---------------------------------------------------------------------------------------------
# Reporting


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    value = float(value)
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def markdown_table(
    metrics: Mapping[str, float], baseline: Mapping[str, float], digits: int = 4
) -> str:
    """A Markdown table of model vs baseline metrics (and their difference) for Dagster metadata.

    Rows follow `metrics`, then any key only the baseline has; NaN shows as "n/a".
    """
    names = [*metrics, *(k for k in baseline if k not in metrics)]
    lines = ["| metric | model | baseline | model - baseline |", "|---|---:|---:|---:|"]
    for name in names:
        model_value, base_value = metrics.get(name), baseline.get(name)
        difference = ""
        if isinstance(model_value, int) and isinstance(base_value, int):
            difference = f"{model_value - base_value:+,}"
        elif model_value is not None and base_value is not None:
            delta = float(model_value) - float(base_value)
            difference = "n/a" if math.isnan(delta) else f"{delta:+.{digits}f}"
        label = f"{name} (lower is better)" if name in LOWER_IS_BETTER else name
        lines.append(
            f"| {label} | {_cell(model_value, digits)} | {_cell(base_value, digits)} "
            f"| {difference} |"
        )
    return "\n".join(lines)
