"""CBPE: expected confusion by hand, AUC against scikit-learn, band coverage by simulation."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from mlops_assets.lib import cbpe


def test_expected_confusion_by_hand():
    got = cbpe.expected_confusion(np.array([0.9, 0.6, 0.2, 0.1]), threshold=0.5)
    assert got == pytest.approx({"tp": 1.5, "fp": 0.5, "fn": 0.3, "tn": 1.7})


def test_metrics_of_draws_match_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.choice([0.1, 0.3, 0.3, 0.55, 0.7, 0.9], size=300)
    labels = (rng.random(300) < scores).astype(int)
    got = cbpe.realized_metrics(labels, scores, threshold=0.5)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert got["accuracy"] == pytest.approx(accuracy_score(labels, scores >= 0.5))
    assert got["f1"] == pytest.approx(f1_score(labels, scores >= 0.5))


def test_the_threshold_is_the_models_not_a_constant():
    p = np.array([0.9, 0.6, 0.4, 0.35, 0.1])
    low = cbpe.estimate(p, threshold=0.3, draws=50)
    high = cbpe.estimate(p, threshold=0.7, draws=50)
    assert low.confusion["fp"] == pytest.approx(0.1 + 0.4 + 0.6 + 0.65)
    assert high.confusion["fp"] == pytest.approx(0.1)


def test_a_calibrated_model_lands_in_its_band_and_a_broken_one_does_not():
    rng = np.random.default_rng(1)
    inside, broken_inside, days = 0, 0, 150
    for day in range(days):
        p = rng.beta(2, 5, size=300)  # one day's calibrated probabilities
        estimate = cbpe.estimate(p, 0.5, draws=200, seed=day)
        labels = rng.random(300) < p
        inside += estimate.inside("roc_auc", roc_auc_score(labels, p))
        # The relation between features and label is gone: labels no longer follow p.
        shuffled = rng.permutation(labels)
        broken_inside += estimate.inside("roc_auc", roc_auc_score(shuffled, p))
    # A 95% band covers about 95% of calibrated days (binomial sd ~1.8% over 150 days).
    assert 0.9 <= inside / days <= 0.99
    assert broken_inside / days < 0.05


def test_an_empty_batch_is_refused():
    with pytest.raises(ValueError, match="no records"):
        cbpe.estimate(np.array([]), 0.5)


def test_the_band_inflation_makes_the_band_cover_the_residuals():
    expected, sd = np.full(5, 0.7), np.full(5, 0.02)
    realized = np.array([0.74, 0.66, 0.76, 0.64, 0.70])  # |z| = 2, 2, 3, 3, 0
    # The median |z| is 2; a standard normal's is 0.6745.
    assert cbpe.band_inflation(expected, sd, realized) == pytest.approx(2 / 0.6744897501960817)
    assert cbpe.band_inflation(expected, sd, expected) == 1.0  # never narrower
    p = np.random.default_rng(0).beta(2, 5, 300)
    plain, wide = cbpe.estimate(p, 0.5, seed=3), cbpe.estimate(p, 0.5, seed=3, inflation=2.0)
    for name in ("roc_auc", "f1"):
        assert wide.high[name] - wide.low[name] == pytest.approx(
            2 * (plain.high[name] - plain.low[name])
        )
        assert wide.expected[name] == plain.expected[name]


def test_an_inflated_band_of_a_small_day_stays_within_the_metrics_range():
    p = np.random.default_rng(1).beta(2, 5, 30)  # 30 records: a wide simulated spread
    plain, wide = cbpe.estimate(p, 0.3, seed=0), cbpe.estimate(p, 0.3, seed=0, inflation=3.38)
    assert plain.low["roc_auc"] - 2.38 * (plain.expected["roc_auc"] - plain.low["roc_auc"]) < 0
    for name in ("roc_auc", "precision", "recall", "f1", "accuracy"):
        assert 0.0 <= wide.low[name] <= wide.expected[name] <= wide.high[name] <= 1.0
    assert wide.low["roc_auc"] == 0.0
