"""Guardrails at each model's own operating point."""

import math

import numpy as np
import pytest

from mlops_assets.lib.ab_testing.guardrails import (
    check_guardrails,
    expected_calibration_error,
    positive_rate_distance,
)


def data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.6, n)
    return (rng.uniform(size=n) < p).astype(int), p


def test_ece_and_positive_rate_by_hand():
    y, s = np.array([0, 1, 1, 0]), np.array([0.05, 0.15, 0.95, 0.85])
    # bins [0, .1): |0 - .05|, [.1, .2): |1 - .15|, [.8, .9): |0 - .85|, [.9, 1]: |1 - .95|
    assert expected_calibration_error(y, s) == pytest.approx((0.05 + 0.85 + 0.85 + 0.05) / 4)
    assert positive_rate_distance(y, s, threshold=0.9) == pytest.approx(abs(math.log(0.25 / 0.5)))
    assert positive_rate_distance(y, s, threshold=0.99) == math.inf


def test_a_challenger_that_almost_never_predicts_positive_fails_at_its_own_threshold():
    y, p = data()
    threshold = float(np.quantile(p, 1 - y.mean()))  # the champion's rate matches the actual
    shrunk = p * 0.3  # same ranking (equal ROC AUC), but few records reach the threshold
    results = check_guardrails(y, p, shrunk, threshold, threshold, 0.25, 1.0)
    assert [(g.name, g.status) for g in results] == [
        ("positive_rate", "failed"),
        ("calibration_error", "passed"),
    ]
    # At ITS OWN operating point (a lower threshold) the same scores pass.
    own = float(np.quantile(shrunk, 1 - y.mean()))
    assert check_guardrails(y, p, shrunk, threshold, own, 0.25, 1.0)[0].status == "passed"
    # ... but its calibration is worse than the champion's by far more than 0.02.
    assert check_guardrails(y, p, shrunk, threshold, own, 0.25, 0.02)[1].status == "failed"


def test_too_few_records_are_not_judged_and_veto():
    y, p = data(n=100)
    results = check_guardrails(y, p, p, 0.3, 0.3, 0.25, 0.02)
    assert {g.status for g in results} == {"not judged"} and all(g.vetoes for g in results)
