"""A numeric target (`task: regression`): metrics, simple baselines and the evaluation gates.

Pure functions, no Dagster or MLflow imports. The intervals come from the same day-clustered
bootstrap as the classification gates (`lib.decision.day_resamples`): records of one day share
their conditions, so whole days are resampled, and every model is scored on the same resamples
(paired differences).

The gates compare errors as a skill, `1 - error(model) / error(reference)` (0: as good as the
reference, 0.1: a tenth less error), so the spec's margins are unit-free and mean the same on any
target: `baseline_margin` 0 asks the model to beat every simple predictor, `champion_margin` -0.01
lets an equivalent retrain through (at most 1% more error than the champion).

The simple predictors a model must beat, fitted on the training days only:
- the per-category mean of the most informative categorical column (picked on the validation
  days by its error), shrunk toward the overall mean for rare categories;
- the last-period mean: the target's mean over the last `LAST_PERIOD_DAYS` days before the test
  days (what a dashboard would forecast);
- the overall training mean (the degenerate gate: a model that cannot beat it learned nothing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlops_assets.lib.decision import (
    GateResult,
    best_category,
    day_interval,
    day_resamples,
    too_few_days,
)
from mlops_assets.lib.spec import GateSpec

Error = Literal["absolute", "squared"]
ERROR_METRIC: Mapping[str, str] = {"absolute": "mae", "squared": "rmse"}
# The keys of `regression_metrics`, in display order; all but r2 are lower-is-better errors.
METRIC_NAMES = ("n", "target_mean", "prediction_mean", "mean_residual", "mae", "rmse", "r2")
LAST_PERIOD_DAYS = 7
# The search's scorer for each gate error (higher is better, as scikit-learn scorers are).
SEARCH_SCORER: Mapping[str, str] = {
    "absolute": "neg_mean_absolute_error",
    "squared": "neg_root_mean_squared_error",
}


def _checked(y_true: Any, prediction: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(prediction, dtype=float)
    if y.ndim != 1 or y.shape != p.shape or y.size == 0:
        raise ValueError(f"need equal, non-empty 1-D targets and predictions: {y.shape}, {p.shape}")
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise ValueError("targets and predictions must be finite (drop unlabelled records first)")
    return y, p


def regression_metrics(y_true: Any, prediction: Any) -> dict[str, float]:
    """n, target and prediction means, mean residual (prediction - target: the bias), MAE, RMSE
    and R2 (NaN when the target is constant)."""
    y, p = _checked(y_true, prediction)
    residual = p - y
    total = float(np.sum((y - y.mean()) ** 2))
    return {
        "n": int(y.size),
        "target_mean": float(y.mean()),
        "prediction_mean": float(p.mean()),
        "mean_residual": float(residual.mean()),
        "mae": float(np.mean(np.abs(residual))),
        "rmse": float(math.sqrt(np.mean(residual**2))),
        "r2": 1 - float(np.sum(residual**2)) / total if total > 0 else math.nan,
    }


def per_record_loss(y_true: Any, prediction: Any, loss: Error) -> np.ndarray:
    """The squared or absolute error of each record (the A/B test's primary metric)."""
    residual = np.asarray(prediction, dtype=float) - np.asarray(y_true, dtype=float)
    return residual**2 if loss == "squared" else np.abs(residual)


# ---------------------------------------------------------------------------------------------
# Day-clustered bootstrap of errors


def day_bootstrap_errors(
    y_true: Any,
    predictions: Mapping[str, Any],
    days: Any,
    *,
    error: Error,
    n_resamples: int,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """MAE (absolute) or RMSE (squared) of each model on all rows and on `n_resamples` resamples
    of whole days (the same resamples for every model, so differences are paired)."""
    y = np.asarray(y_true, dtype=float)
    counts, day_of_row = day_resamples(days, n_resamples=n_resamples, seed=seed)
    n_days = counts.shape[1]
    rows_per_day = np.bincount(day_of_row, minlength=n_days).astype(float)
    weight = counts @ rows_per_day
    full, draws = {}, {}
    for name, prediction in predictions.items():
        _, p = _checked(y, prediction)
        per_record = per_record_loss(y, p, error)
        per_day = np.bincount(day_of_row, weights=per_record, minlength=n_days)
        mean, resampled = per_record.mean(), (counts @ per_day) / weight
        if error == "squared":
            mean, resampled = math.sqrt(mean), np.sqrt(resampled)
        full[name], draws[name] = float(mean), resampled
    return full, draws


def day_bootstrap_r2(
    y_true: Any, prediction: Any, days: Any, *, n_resamples: int, seed: int = 0
) -> tuple[float, np.ndarray]:
    """R2 on all rows and on whole-day resamples (weighted sums of squares)."""
    y, p = _checked(y_true, prediction)
    counts, day_of_row = day_resamples(days, n_resamples=n_resamples, seed=seed)
    n_days = counts.shape[1]

    def resampled(values: np.ndarray) -> np.ndarray:
        return counts @ np.bincount(day_of_row, weights=values, minlength=n_days)

    n, sum_y, sum_y2 = resampled(np.ones_like(y)), resampled(y), resampled(y**2)
    residual = resampled((p - y) ** 2)
    total = sum_y2 - sum_y**2 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = np.where(total > 0, 1 - residual / total, np.nan)
    return regression_metrics(y, p)["r2"], draws


def metric_intervals(
    y_true: Any, prediction: Any, days: Any, *, gates: GateSpec, seed: int = 0
) -> dict[str, float]:
    """MAE, RMSE and R2 with their day-clustered intervals: `<metric>_low`, `<metric>_high`."""
    n_days = len(np.unique(pd.to_datetime(pd.Series(np.asarray(days))).dt.floor("D")))
    figures: dict[str, float] = {}
    estimates: dict[str, tuple[float, np.ndarray]] = {}
    for error, metric in ERROR_METRIC.items():
        full, draws = day_bootstrap_errors(
            y_true, {"m": prediction}, days, error=error, n_resamples=gates.n_resamples, seed=seed
        )
        estimates[metric] = (full["m"], draws["m"])
    estimates["r2"] = day_bootstrap_r2(
        y_true, prediction, days, n_resamples=gates.n_resamples, seed=seed
    )
    for metric, (estimate, draws) in estimates.items():
        interval = day_interval(estimate, draws, gates.confidence, n_days)
        figures |= {f"{metric}_low": interval.low, f"{metric}_high": interval.high}
    return figures


# ---------------------------------------------------------------------------------------------
# Simple predictors


def most_informative_category(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    columns: Sequence[str],
    label: str,
    error: Error = "absolute",
) -> tuple[str, float]:
    """The categorical column whose per-category mean has the least error on the validation days."""

    def loss(y: pd.Series, predicted: np.ndarray) -> float:
        mean = per_record_loss(y, predicted, error).mean()
        return float(math.sqrt(mean) if error == "squared" else mean)

    return best_category(train, validation, columns, label, loss, lower_is_better=True)


def last_period_mean(
    history: pd.DataFrame, *, date_column: str, label: str, days: int = LAST_PERIOD_DAYS
) -> float:
    """The target's mean over the last `days` calendar days of `history` (the days before the
    test days): what a forecast by the recent level would say."""
    dates = pd.to_datetime(history[date_column]).dt.floor("D")
    recent = history[dates > dates.max() - pd.Timedelta(days=days)]
    return float(recent[label].mean())


# ---------------------------------------------------------------------------------------------
# Gates


def _n_days(days: Any) -> int:
    return len(np.unique(pd.to_datetime(pd.Series(np.asarray(days))).dt.floor("D")))


def skill_gate(
    name: str,
    y_true: Any,
    model: Any,
    references: Mapping[str, Any],
    days: Any,
    *,
    margin: float,
    gates: GateSpec,
    error: Error,
    seed: int = 0,
) -> GateResult:
    """Passes when, for every reference predictor, the lower bound of the day-clustered interval
    of the skill 1 - error(model) / error(reference) is above `margin`."""
    n_days = _n_days(days)
    if (skipped := too_few_days(name, n_days, gates)) is not None:
        return skipped
    metric = ERROR_METRIC[error]
    full, draws = day_bootstrap_errors(
        y_true,
        {"model": model, **references},
        days,
        error=error,
        n_resamples=gates.n_resamples,
        seed=seed,
    )
    figures: dict[str, float | str] = {
        "test_days": n_days,
        "margin": margin,
        "confidence": gates.confidence,
        f"model_{metric}": full["model"],
    }
    verdicts, lines = [], []
    for reference in references:
        with np.errstate(invalid="ignore", divide="ignore"):
            skill = day_interval(
                1 - full["model"] / full[reference],
                1 - draws["model"] / draws[reference],
                gates.confidence,
                n_days,
            )
        ok = bool(skill.low > margin)
        verdicts.append(ok)
        figures |= {
            f"{reference}_{metric}": full[reference],
            f"{reference}_skill": skill.estimate,
            f"{reference}_skill_low": skill.low,
            f"{reference}_skill_high": skill.high,
            f"{reference}_passed": "yes" if ok else "no",
        }
        lines.append(
            f"{reference}: {metric.upper()} {full[reference]:.4f}, skill {skill.estimate:+.4f} "
            f"[{skill.low:+.4f}, {skill.high:+.4f}]"
        )
    passed = all(verdicts)
    message = (
        f"{name}: {'passed' if passed else 'failed'}: model {metric.upper()} "
        f"{full['model']:.4f} over {n_days} test days against {', '.join(lines)}; a "
        f"{gates.confidence:.0%} day-clustered lower bound of the skill 1 - {metric}(model) / "
        f"{metric}(reference) must be above {margin:+.4f}"
    )
    return GateResult(name, passed, True, message, figures)


def degenerate_gate(
    y_true: Any,
    prediction: Any,
    training_mean: float,
    days: Any,
    *,
    gates: GateSpec,
    error: Error,
    name: str = "degenerate_model",
    seed: int = 0,
) -> GateResult:
    """Passes when the predictions vary (not one constant) and the model beats the overall
    training mean: the lower bound of the interval of its skill against that mean is above 0."""
    y, p = _checked(y_true, prediction)
    spread = float(np.std(p))
    constant = not spread > 1e-9 * max(1.0, float(np.abs(p).max()))
    gate = skill_gate(
        name,
        y,
        p,
        {"training_mean": np.full(y.size, float(training_mean))},
        days,
        margin=0.0,
        gates=gates,
        error=error,
        seed=seed,
    )
    if not gate.judged:
        return gate
    passed = gate.passed and not constant
    message = gate.message.replace(
        f"{name}: {'passed' if gate.passed else 'failed'}:",
        f"{name}: {'passed' if passed else 'failed'}: predictions "
        + ("are one constant" if constant else f"vary (sd {spread:.4f})")
        + ";",
        1,
    )
    return GateResult(name, passed, True, message, {**gate.figures, "prediction_sd": spread})


# ---------------------------------------------------------------------------------------------
# A/B guardrail


def bias_guardrail(
    y: np.ndarray, control: np.ndarray, treatment: np.ndarray, tolerance: float, min_records: int
):
    """|mean residual| of the challenger may exceed the champion's by at most `tolerance` x the
    champion's MAE: a model biased up or down misleads every consumer of its level, whatever its
    error. Too few records is "not judged" (a veto)."""
    from mlops_assets.lib.ab_testing.guardrails import GuardrailResult

    rule = f"|mean residual| <= champion's + {tolerance:g} x champion's MAE"
    y = np.asarray(y, dtype=float)
    if y.size < min_records:
        nan = float("nan")
        return GuardrailResult("bias", nan, nan, nan, "not judged", f"needs >= {min_records}")
    bias_c = abs(float(np.mean(control - y)))
    bias_t = abs(float(np.mean(treatment - y)))
    limit = bias_c + tolerance * float(np.mean(np.abs(control - y)))
    status = "passed" if bias_t <= limit else "failed"
    return GuardrailResult("bias", bias_c, bias_t, limit, status, rule)
