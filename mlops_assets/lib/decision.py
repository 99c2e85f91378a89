"""Decisions from scores: the operating point, calibration, and the evaluation gates.

Pure functions, no Dagster or MLflow imports; scikit-learn is imported inside the functions.

- The operating point (the threshold at which a probability becomes a positive decision) is chosen
  on the time-ordered validation days by a policy of the dataset specification
  (`OperatingPointSpec`): maximise F-beta, minimise the expected cost of the errors, or flag a
  target share of records. It is stored with the model version, so every consumer reads it there.
- Calibration (sigmoid or isotonic on the validation days) is kept only when it lowers the
  validation log loss measured out of sample (cross-fitted over whole validation days).
- Gates compare ROC AUC through a bootstrap that resamples whole days: records of one day share
  weather and traffic, so a record-level bootstrap would give intervals far too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.lib.spec import GateSpec, OperatingPointSpec

CALIBRATION_METHODS = ("sigmoid", "isotonic")
# Records a category needs before its own mean outweighs the overall mean (a pseudo-count at the
# prior): a rare destination's delay rate would otherwise be 0 or 1 from a handful of flights.
CATEGORY_PSEUDO_COUNT = 20
# Bins of the reliability curve and of the expected calibration error.
CALIBRATION_BINS = 10
# A model that ranks no better than a coin has ROC AUC 0.5: the degenerate gate's floor.
CHANCE_AUC = 0.5


# ---------------------------------------------------------------------------------------------
# The operating point


def _scores(y_true: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(proba, dtype=float)
    if y.ndim != 1 or y.shape != p.shape or y.size == 0:
        raise ValueError(f"need equal, non-empty 1-D labels and scores, got {y.shape}, {p.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    return y, p


def objective_curve(
    y_true: Any, proba: Any, policy: OperatingPointSpec
) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, objective) at every distinct score: flag records with proba >= threshold.

    The objective is higher-is-better for every policy: F-beta; minus the expected cost per
    record (false_positive_cost * FP + false_negative_cost * FN) / n; minus the distance of the
    flagged share from the target share.
    """
    y, p = _scores(y_true, proba)
    values, inverse = np.unique(p, return_inverse=True)
    positives = np.bincount(inverse, weights=y, minlength=values.size)
    negatives = np.bincount(inverse, weights=1 - y, minlength=values.size)
    # Flagging everything at or above values[i]: suffix sums.
    tp = np.cumsum(positives[::-1])[::-1]
    fp = np.cumsum(negatives[::-1])[::-1]
    fn = positives.sum() - tp
    n = y.size
    if policy.policy == "f_beta":
        b2 = policy.beta**2
        denominator = (1 + b2) * tp + b2 * fn + fp
        objective = np.divide(
            (1 + b2) * tp, denominator, out=np.zeros_like(tp), where=denominator > 0
        )
    elif policy.policy == "cost":
        objective = -(policy.false_positive_cost * fp + policy.false_negative_cost * fn) / n
    else:
        objective = -np.abs((tp + fp) / n - policy.target_share)
    return values, objective


def choose_threshold(y_true: Any, proba: Any, policy: OperatingPointSpec) -> float:
    """The threshold that maximises the policy's objective on these records.

    It sits halfway between the best cut's score and the next lower distinct score, so it flags
    exactly the same records here and is not glued to one validation record's score.
    """
    values, objective = objective_curve(y_true, proba, policy)
    best = int(np.argmax(objective))
    return float(values[best] if best == 0 else (values[best] + values[best - 1]) / 2)


def objective_at(y_true: Any, proba: Any, threshold: float, policy: OperatingPointSpec) -> float:
    """The policy's objective (higher is better) when proba >= threshold is flagged."""
    y, p = _scores(y_true, proba)
    flagged = p >= threshold
    tp, fp = float(np.sum(flagged & (y == 1))), float(np.sum(flagged & (y == 0)))
    fn = float(np.sum(~flagged & (y == 1)))
    if policy.policy == "f_beta":
        b2 = policy.beta**2
        denominator = (1 + b2) * tp + b2 * fn + fp
        return (1 + b2) * tp / denominator if denominator else 0.0
    if policy.policy == "cost":
        return -(policy.false_positive_cost * fp + policy.false_negative_cost * fn) / y.size
    return -abs(float(flagged.mean()) - policy.target_share)


@dataclass(frozen=True)
class OperatingPointReport:
    """The chosen threshold judged on other days beside the hindsight best and the naive 0.5 cut."""

    policy: str
    threshold: float
    objective: float
    best_threshold: float
    best_objective: float
    naive_threshold: float
    naive_objective: float

    @property
    def share_of_best(self) -> float:
        """objective / best for F-beta; best / objective for costs (both 1.0 when optimal)."""
        if self.policy == "f_beta":
            return self.objective / self.best_objective if self.best_objective else math.nan
        return self.best_objective / self.objective if self.objective else 1.0

    def metadata(self) -> dict[str, float | str]:
        figures = {
            "threshold": self.threshold,
            "test_objective": self.objective,
            "hindsight_threshold": self.best_threshold,
            "hindsight_objective": self.best_objective,
            "naive_threshold": self.naive_threshold,
            "naive_objective": self.naive_objective,
            "share_of_hindsight": self.share_of_best,
        }
        return {
            "operating_point/policy": self.policy,
            **{f"operating_point/{k}": float(v) for k, v in figures.items()},
        }


# The usual default cut of `predict`, reported only as the comparison a chosen threshold must beat.
NAIVE_THRESHOLD = 0.5


def judge_operating_point(
    y_true: Any, proba: Any, threshold: float, policy: OperatingPointSpec
) -> OperatingPointReport:
    """The objective of `threshold` on these (test) records, of the best threshold picked in
    hindsight on the same records, and of the naive cut."""
    best = choose_threshold(y_true, proba, policy)
    return OperatingPointReport(
        policy=policy.policy,
        threshold=float(threshold),
        objective=objective_at(y_true, proba, threshold, policy),
        best_threshold=best,
        best_objective=objective_at(y_true, proba, best, policy),
        naive_threshold=NAIVE_THRESHOLD,
        naive_objective=objective_at(y_true, proba, NAIVE_THRESHOLD, policy),
    )


# ---------------------------------------------------------------------------------------------
# Calibration


def expected_calibration_error(y_true: Any, proba: Any, n_bins: int = CALIBRATION_BINS) -> float:
    """Sum over equal-width probability bins of |observed rate - mean probability| x bin share."""
    y, p = _scores(y_true, proba)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(
        np.bincount(bins, weights=y, minlength=n_bins)
        - np.bincount(bins, weights=p, minlength=n_bins)
    )
    return float(gap.sum() / count.sum())


def calibration_summary(y_true: Any, proba: Any) -> dict[str, float]:
    from sklearn.metrics import brier_score_loss, log_loss

    y, p = _scores(y_true, proba)
    return {
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
    }


@dataclass(frozen=True)
class Calibration:
    """Outcome of `calibrate`: `model` is the calibrated estimator, or the input one unchanged."""

    model: Any
    method: str  # "none", "sigmoid" or "isotonic"
    log_loss: Mapping[str, float]  # out-of-sample validation log loss per candidate
    reason: str


def calibrate(model: Any, X: pd.DataFrame, y: Any, days: Any, max_folds: int = 5) -> Calibration:
    """Sigmoid or isotonic calibration of a fitted `model` on validation rows, kept only when it
    lowers the log loss.

    Each candidate's log loss is cross-fitted over whole days (GroupKFold): a calibrator scored on
    the rows it was fitted on would always win. The winner is refitted on every validation row.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.metrics import log_loss
    from sklearn.model_selection import GroupKFold

    y = np.asarray(y, dtype=np.int64)
    groups = pd.to_datetime(pd.Series(np.asarray(days))).dt.floor("D").to_numpy()
    n_days = len(np.unique(groups))
    raw = float(log_loss(y, model.predict_proba(X)[:, 1], labels=[0, 1]))
    losses = {"none": raw}
    if n_days < 2 or y.min() == y.max():
        return Calibration(model, "none", losses, f"not judged: {n_days} validation day(s)")
    folds = list(GroupKFold(min(max_folds, n_days)).split(X, y, groups))
    for method in CALIBRATION_METHODS:
        held_out = np.empty(y.size)
        for fit_rows, score_rows in folds:
            if y[fit_rows].min() == y[fit_rows].max():
                break
            calibrated = CalibratedClassifierCV(FrozenEstimator(model), method=method)
            calibrated.fit(X.iloc[fit_rows], y[fit_rows])
            held_out[score_rows] = calibrated.predict_proba(X.iloc[score_rows])[:, 1]
        else:
            losses[method] = float(log_loss(y, held_out, labels=[0, 1]))
    best = min(losses, key=losses.get)
    if best == "none":
        return Calibration(model, "none", losses, "no calibration lowers the validation log loss")
    final = CalibratedClassifierCV(FrozenEstimator(model), method=best).fit(X, y)
    reason = f"{best} lowers the validation log loss from {raw:.4f} to {losses[best]:.4f}"
    return Calibration(final, best, losses, reason)


# ---------------------------------------------------------------------------------------------
# Simple baselines


def category_means(
    train: pd.Series, y_train: Any, pseudo_count: float = CATEGORY_PSEUDO_COUNT
) -> tuple[dict[Any, float], float]:
    """Per-category mean of the target (shrunk toward the overall mean) and the overall mean; of
    a 0/1 label, the positive rates."""
    y = np.asarray(y_train, dtype=float)
    prior = float(y.mean())
    grouped = pd.DataFrame({"c": train.astype(str).to_numpy(), "y": y}).groupby("c")["y"]
    means = (grouped.sum() + pseudo_count * prior) / (grouped.count() + pseudo_count)
    return means.to_dict(), prior


def category_mean_predictions(
    means: Mapping[Any, float], overall: float, values: pd.Series
) -> np.ndarray:
    """Each record predicted by its category's mean; unseen categories by the overall mean."""
    return values.astype(str).map(means).fillna(overall).to_numpy(dtype=float)


def best_category(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    columns: Sequence[str],
    label: str,
    score: Callable[[pd.Series, np.ndarray], float],
    *,
    lower_is_better: bool = False,
) -> tuple[str, float]:
    """The categorical column whose per-category mean, predicting the validation days, has the
    best `score` (of the labels and the predictions), and that score."""
    if not columns:
        raise ValueError("no categorical column to build a per-category baseline from")
    scored = {}
    for column in columns:
        means, overall = category_means(train[column], train[label])
        predicted = category_mean_predictions(means, overall, validation[column])
        scored[column] = score(validation[label], predicted)
    best = (min if lower_is_better else max)(scored, key=scored.get)
    return best, scored[best]


def most_informative_category(
    train: pd.DataFrame, validation: pd.DataFrame, columns: Sequence[str], label: str
) -> tuple[str, float]:
    """The categorical column whose per-category rate ranks the validation days best (ROC AUC)."""
    from sklearn.metrics import roc_auc_score

    return best_category(train, validation, columns, label, lambda y, p: float(roc_auc_score(y, p)))


# ---------------------------------------------------------------------------------------------
# Day-clustered bootstrap of ROC AUC


def _weighted_auc(y: np.ndarray, scores: np.ndarray):
    """A function of row weights giving the weighted ROC AUC (ties count half), sorted once."""
    values, inverse = np.unique(scores, return_inverse=True)

    def auc(weights: np.ndarray) -> float:
        pos = np.bincount(inverse, weights=weights * y, minlength=values.size)
        neg = np.bincount(inverse, weights=weights * (1 - y), minlength=values.size)
        total = pos.sum() * neg.sum()
        if total == 0:
            return math.nan
        below = np.cumsum(neg) - neg
        return float(np.sum(pos * (below + neg / 2)) / total)

    return auc


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    days: int


def day_resamples(days: Any, *, n_resamples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(counts, day_of_row): `counts[r, d]` is how often day d is drawn in resample r (whole
    days with replacement), `day_of_row` each row's day index; a row's weight in resample r is
    `counts[r, day_of_row]`. Every day-clustered interval of the gates draws from here."""
    day_codes, day_of_row = np.unique(
        pd.to_datetime(pd.Series(np.asarray(days))).dt.floor("D").to_numpy(), return_inverse=True
    )
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(
        day_codes.size, np.full(day_codes.size, 1 / day_codes.size), n_resamples
    )
    return counts, day_of_row


def day_bootstrap(
    y_true: Any,
    scores: Mapping[str, Any],
    days: Any,
    *,
    n_resamples: int,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """ROC AUC of each scored model on all rows, and on `n_resamples` resamples of whole days
    (days drawn with replacement: a day drawn twice weighs twice). Same resamples for every model,
    so differences are paired."""
    y = np.asarray(y_true, dtype=np.int64)
    counts, day_of_row = day_resamples(days, n_resamples=n_resamples, seed=seed)
    functions = {name: _weighted_auc(y, np.asarray(s, dtype=float)) for name, s in scores.items()}
    full = {name: f(np.ones(y.size)) for name, f in functions.items()}
    draws = {
        name: np.array([f(counts[r][day_of_row].astype(float)) for r in range(n_resamples)])
        for name, f in functions.items()
    }
    return full, draws


def day_interval(estimate: float, draws: np.ndarray, confidence: float, days: int) -> Interval:
    finite = draws[np.isfinite(draws)]
    tail = (1 - confidence) / 2
    if finite.size == 0:
        return Interval(estimate, math.nan, math.nan, days)
    low, high = np.quantile(finite, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), days)


# ---------------------------------------------------------------------------------------------
# Gates


@dataclass(frozen=True)
class GateResult:
    """A gate's verdict, what it compared, its figures and the sentence that explains it."""

    name: str
    passed: bool
    judged: bool
    message: str
    figures: dict[str, float | str] = field(default_factory=dict)


def too_few_days(name: str, n_days: int, gates: GateSpec) -> GateResult | None:
    if n_days >= gates.min_test_days:
        return None
    return GateResult(
        name,
        passed=False,
        judged=False,
        message=f"{name}: not judged: {n_days} test day(s), fewer than min_test_days="
        f"{gates.min_test_days}",
        figures={"test_days": n_days, "min_test_days": gates.min_test_days},
    )


def comparison_gate(
    name: str,
    y_true: Any,
    model: Any,
    references: Mapping[str, Any],
    days: Any,
    *,
    margin: float,
    gates: GateSpec,
    seed: int = 0,
) -> GateResult:
    """Passes when, for every reference, the lower bound of the day-clustered interval of
    ROC AUC(model) - ROC AUC(reference) is above `margin`."""
    n_days = len(np.unique(pd.to_datetime(pd.Series(np.asarray(days))).dt.floor("D")))
    if (skipped := too_few_days(name, n_days, gates)) is not None:
        return skipped
    full, draws = day_bootstrap(
        y_true, {"model": model, **references}, days, n_resamples=gates.n_resamples, seed=seed
    )
    figures: dict[str, float | str] = {
        "test_days": n_days,
        "margin": margin,
        "confidence": gates.confidence,
        "model_roc_auc": full["model"],
    }
    verdicts = []
    for reference in references:
        difference = day_interval(
            full["model"] - full[reference],
            draws["model"] - draws[reference],
            gates.confidence,
            n_days,
        )
        figures |= {
            f"{reference}_roc_auc": full[reference],
            f"{reference}_difference": difference.estimate,
            f"{reference}_difference_low": difference.low,
            f"{reference}_difference_high": difference.high,
        }
        ok = bool(difference.low > margin)
        verdicts.append(ok)
        figures[f"{reference}_passed"] = "yes" if ok else "no"
    passed = all(verdicts)
    lines = ", ".join(
        f"{r}: AUC {full[r]:.4f}, difference {figures[f'{r}_difference']:+.4f} "
        f"[{figures[f'{r}_difference_low']:+.4f}, {figures[f'{r}_difference_high']:+.4f}]"
        for r in references
    )
    verdict = "passed" if passed else "failed"
    message = (
        f"{name}: {verdict}: model ROC AUC {full['model']:.4f} over {n_days} test days against "
        f"{lines}; a {gates.confidence:.0%} day-clustered lower bound must be above {margin:+.4f}"
    )
    return GateResult(name, passed, True, message, figures)


def degenerate_gate(
    y_true: Any,
    proba: Any,
    threshold: float,
    days: Any,
    *,
    gates: GateSpec,
    name: str = "degenerate_model",
    seed: int = 0,
) -> GateResult:
    """Passes when the predicted positive rate at `threshold` is within `rate_factor` of the
    actual rate either way, and the lower bound of the day-clustered ROC AUC interval is above
    chance."""
    y, p = _scores(y_true, proba)
    n_days = len(np.unique(pd.to_datetime(pd.Series(np.asarray(days))).dt.floor("D")))
    if (skipped := too_few_days(name, n_days, gates)) is not None:
        return skipped
    full, draws = day_bootstrap(y, {"model": p}, days, n_resamples=gates.n_resamples, seed=seed)
    auc = day_interval(full["model"], draws["model"], gates.confidence, n_days)
    actual, predicted = float(y.mean()), float(np.mean(p >= threshold))
    ratio = predicted / actual if actual else math.inf
    rate_ok = 1 / gates.rate_factor <= ratio <= gates.rate_factor
    ranks = bool(auc.low > CHANCE_AUC)
    passed = bool(rate_ok and ranks)
    message = (
        f"{name}: {'passed' if passed else 'failed'}: at threshold {threshold:.4f} the model "
        f"flags {predicted:.3f} of test records against an actual rate of {actual:.3f} "
        f"(ratio {ratio:.2f}, allowed 1/{gates.rate_factor:g}..{gates.rate_factor:g}); ROC AUC "
        f"{auc.estimate:.4f}, {gates.confidence:.0%} day-clustered interval "
        f"[{auc.low:.4f}, {auc.high:.4f}] must be above {CHANCE_AUC}"
    )
    figures: dict[str, float | str] = {
        "test_days": n_days,
        "threshold": float(threshold),
        "predicted_positive_rate": predicted,
        "positive_rate": actual,
        "rate_ratio": ratio,
        "rate_factor": gates.rate_factor,
        "roc_auc": auc.estimate,
        "roc_auc_low": auc.low,
        "roc_auc_high": auc.high,
    }
    return GateResult(name, passed, True, message, figures)
