"""Performance estimated before labels land: confidence-based performance estimation (CBPE).

If the model's probabilities are calibrated, a record scored p is positive with probability p, so
a day's labels are a draw of independent Bernoulli(p) variables. The day's expected confusion
matrix at the decision threshold t follows directly (TP = sum of p over records predicted
positive, FP = sum of 1 - p over them, ...), and so does the whole sampling distribution of any
metric: simulate the labels, compute the metric. The estimate is that distribution's mean and the
band its central interval; the realized value of a calibrated model on an unchanged population
falls inside the band as often as the band's coverage says. A realized value OUTSIDE the band
says that P(label | features) moved (the probabilities are no longer calibrated), which covariate
drift cannot see. The method is NannyML's CBPE; numpy only, no Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NORMAL_MEDIAN_ABS = 0.6744897501960817  # median of |Z| for a standard normal Z
ESTIMATED = ("roc_auc", "accuracy", "precision", "recall", "f1", "positive_rate")


@dataclass(frozen=True)
class Estimate:
    """A day's estimated metrics (the mean over simulated label draws) with their band."""

    n: int
    threshold: float
    coverage: float
    expected: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]
    confusion: dict[str, float]
    sd: dict[str, float]

    def inside(self, metric: str, realized: float) -> bool:
        return bool(self.low[metric] <= realized <= self.high[metric])


def expected_confusion(proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Expected counts of TP, FP, FN, TN when each label ~ Bernoulli(proba)."""
    p = np.asarray(proba, dtype=float)
    return _confusion(p, p >= threshold)


def _confusion(p: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "tp": float(p[predicted].sum()),
        "fp": float((1 - p[predicted]).sum()),
        "fn": float(p[~predicted].sum()),
        "tn": float((1 - p[~predicted]).sum()),
    }


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (as the Mann-Whitney AUC needs)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=float)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2
    return ranks


def metrics_of_draws(
    labels: np.ndarray, scores: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """Metrics of every row of `labels` (draws x records) against fixed `scores`, vectorised.
    A draw with one class only has NaN ROC AUC; an empty denominator gives NaN."""
    y = np.atleast_2d(labels).astype(float)
    n = y.shape[1]
    predicted = (scores >= threshold).astype(float)
    ranks = _average_ranks(np.asarray(scores, dtype=float))
    positives = y.sum(axis=1)
    negatives = n - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (y @ ranks - positives * (positives + 1) / 2) / (positives * negatives)
        tp = y @ predicted
        fp = predicted.sum() - tp
        fn = positives - tp
        precision = tp / (tp + fp)
        recall = tp / positives
        f1 = 2 * tp / (2 * tp + fp + fn)
    return {
        "roc_auc": auc,
        "accuracy": (tp + (n - positives - fp)) / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "positive_rate": positives / n,
    }


def realized_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """The same metrics on the real labels (one draw)."""
    return {k: float(v[0]) for k, v in metrics_of_draws(labels, scores, threshold).items()}


def estimate(
    proba: np.ndarray,
    threshold: float,
    *,
    scores: np.ndarray | None = None,
    draws: int = 400,
    coverage: float = 0.95,
    inflation: float = 1.0,
    seed: int = 0,
) -> Estimate:
    """CBPE of one batch of calibrated probabilities: expected metrics and a `coverage` band
    from `draws` simulated label sets. `scores` (default: `proba`) rank the records and are
    compared with `threshold`; pass the raw scores when `proba` went through a calibrator.
    `inflation` widens the band around the mean by that factor: records of one day share the
    day's conditions, so their labels are not independent and the simulated spread is too narrow
    (`band_inflation` measures the factor on labelled days). Raises ValueError on an empty batch."""
    p = np.clip(np.asarray(proba, dtype=float), 0.0, 1.0)
    if p.size == 0:
        raise ValueError("no records to estimate on")
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    s = p if scores is None else np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    labels = rng.random((draws, p.size)) < p
    simulated = metrics_of_draws(labels, s, threshold)
    tail = (1 - coverage) / 2
    expected, low, high, sd = {}, {}, {}, {}
    for name, values in simulated.items():
        values = values[np.isfinite(values)]
        if values.size == 0:
            expected[name] = low[name] = high[name] = sd[name] = float("nan")
            continue
        mean = expected[name] = float(values.mean())
        sd[name] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        q_low, q_high = (float(q) for q in np.quantile(values, [tail, 1 - tail]))
        # The band always holds the mean: with a skewed distribution (AUC near 1, nearly every
        # draw at 1.0) the 2.5% quantile can lie above it. Inflated, it stays within the
        # metrics' range [0, 1] (a small day's band would otherwise reach below 0).
        low[name] = max(mean - inflation * max(mean - q_low, 0.0), 0.0)
        high[name] = min(mean + inflation * max(q_high - mean, 0.0), 1.0)
    return Estimate(
        n=int(p.size),
        threshold=float(threshold),
        coverage=coverage,
        expected=expected,
        low=low,
        high=high,
        confusion=_confusion(p, s >= threshold),
        sd=sd,
    )


def band_inflation(expected: np.ndarray, sd: np.ndarray, realized: np.ndarray) -> float:
    """How much wider than the simulated spread the realized values actually fall, measured on
    labelled days: the median of |realized - expected| / sd over the normal's (0.6745), bias
    included, never below 1; 1 when labels are as independent as simulated. A median, not a
    root mean square or a high quantile: a few freak days (a storm) would widen every band."""
    z = (np.asarray(realized, dtype=float) - np.asarray(expected, dtype=float)) / np.asarray(
        sd, dtype=float
    )
    z = np.abs(z[np.isfinite(z)])
    if z.size == 0:
        raise ValueError("no labelled day to measure the band's inflation on")
    return float(max(1.0, np.median(z) / NORMAL_MEDIAN_ABS))
