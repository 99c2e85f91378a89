"""Guardrails: each model judged at its OWN operating point (its registered threshold).

- positive rate: predicted positive rate / actual positive rate. Consumers size their work on the
  predicted positives; a model that flags 0.1% of flights when 20% are late is useless at its
  threshold, whatever its log loss. The challenger fails when its ratio is further from 1 (on the
  log scale) than the champion's by more than log(1 + tolerance).
- calibration: expected calibration error (10 equal-width bins, Naeini et al. 2015); the
  challenger's may exceed the champion's by at most the tolerance.
- scoring latency: not recorded by the predictions table, so not judged (said in the report).

A guardrail needs both classes and MIN_RECORDS records; otherwise it is "not judged", which
vetoes a promotion as a failure does: no promotion without the evidence that it is safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

MIN_RECORDS = 200
LATENCY_NOTE = "scoring latency: not judged (the predictions table records no latency)"

Status = Literal["passed", "failed", "not judged"]


@dataclass(frozen=True)
class GuardrailResult:
    name: str
    control: float
    treatment: float
    limit: float  # the largest treatment value that passes
    status: Status
    rule: str

    @property
    def vetoes(self) -> bool:
        return self.status != "passed"


def expected_calibration_error(y: np.ndarray, score: np.ndarray, n_bins: int = 10) -> float:
    """sum_b (n_b / n) |mean(y_b) - mean(score_b)| over equal-width bins; 1.0 falls in the last."""
    y, s = np.asarray(y, float), np.asarray(score, float)
    bins = np.minimum((s * n_bins).astype(int), n_bins - 1)
    gap = np.abs(np.bincount(bins, y, n_bins) - np.bincount(bins, s, n_bins))
    return float(gap.sum() / y.size)


def positive_rate_distance(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    """|log(predicted positive rate / actual rate)| at the model's own threshold (inf if none)."""
    predicted = float(np.mean(np.asarray(score) >= threshold))
    actual = float(np.mean(y))
    return math.inf if predicted == 0 else abs(math.log(predicted / actual))


def check_guardrails(
    y: np.ndarray,
    score_control: np.ndarray,
    score_treatment: np.ndarray,
    threshold_control: float,
    threshold_treatment: float,
    positive_rate_tolerance: float,
    calibration_tolerance: float,
) -> tuple[GuardrailResult, ...]:
    """Both guardrails on the same (paired) records."""
    y = np.asarray(y)
    judged = y.size >= MIN_RECORDS and 0 < y.sum() < y.size
    results = []
    for name, metric, tolerance, slack in (
        (
            "positive_rate",
            lambda s, thr: positive_rate_distance(y, s, thr),
            positive_rate_tolerance,
            math.log1p(positive_rate_tolerance),
        ),
        (
            "calibration_error",
            lambda s, _: expected_calibration_error(y, s),
            calibration_tolerance,
            calibration_tolerance,
        ),
    ):
        if not judged:
            nan = float("nan")
            rule = f"needs >= {MIN_RECORDS} records with both classes"
            results.append(GuardrailResult(name, nan, nan, nan, "not judged", rule))
            continue
        control = metric(score_control, threshold_control)
        treatment = metric(score_treatment, threshold_treatment)
        limit = control + slack
        rule = (
            f"|log(predicted/actual positive rate)| <= champion's + log(1 + {tolerance:g})"
            if name == "positive_rate"
            else f"ECE <= champion's + {tolerance:g}"
        )
        status: Status = "passed" if treatment <= limit else "failed"
        results.append(GuardrailResult(name, control, treatment, limit, status, rule))
    return tuple(results)
