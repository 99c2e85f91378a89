"""The confidence sequence: the boundary by hand, and time-uniform coverage by simulation."""

import math

import numpy as np
import pytest

from mlops_assets.lib.ab_testing.sequential import boundary_factor, confidence_sequence


def test_the_boundary_matches_the_formula_by_hand():
    alpha, t_star, t = 0.05, 14, 20
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / t_star
    by_hand = math.sqrt(
        2 * (t * rho2 + 1) / (t**2 * rho2) * math.log(math.sqrt(t * rho2 + 1) / alpha)
    )
    assert float(boundary_factor(t, alpha, t_star)) == pytest.approx(by_hand)
    x = np.array([0.3, -0.1, 0.2, 0.0])
    last = confidence_sequence(x, alpha, t_star)[-1]
    half = x.std(ddof=1) * float(boundary_factor(4, alpha, t_star))
    assert (last.mean, last.low, last.high) == pytest.approx((0.1, 0.1 - half, 0.1 + half))
    assert math.isinf(confidence_sequence(x, alpha, t_star)[0].high)


def test_daily_looks_keep_the_error_at_alpha_where_a_daily_t_test_does_not():
    from scipy.stats import t as student

    rng = np.random.default_rng(7)
    runs, days, alpha = 1000, 56, 0.05
    data = rng.standard_t(df=5, size=(runs, days)) * 0.01  # heavy-ish tails, true mean 0
    sequence_errors = sum(
        any(look.excludes_zero for look in confidence_sequence(x, alpha, 14)[13:]) for x in data
    )
    # The wrong way: a fixed-horizon t-test repeated every day from day 14.
    n = np.arange(1, days + 1)
    means = np.cumsum(data, axis=1) / n
    sds = np.sqrt((np.cumsum(data**2, axis=1) - n * means**2) / np.maximum(n - 1, 1))
    t_stat = np.abs(means[:, 13:]) / (sds[:, 13:] / np.sqrt(n[13:]))
    peeks = int(np.any(t_stat > student.ppf(0.975, n[13:] - 1), axis=1).sum())
    assert sequence_errors / runs <= alpha  # 1,000 runs: Monte Carlo sd 0.007
    assert peeks / runs > 2 * alpha
