"""Per-day figures, computed by hand on a small frame."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlops_assets.lib.ab_testing.inference import (
    Records,
    daily_figures,
    day_bootstrap,
    per_record_log_loss,
    roc_auc,
)


def records() -> Records:
    frame = pd.DataFrame(
        {
            "flight_date": pd.to_datetime(["2013-07-02"] * 3 + ["2013-07-01"] * 3 + ["2013-07-01"]),
            "arm": [
                "control",
                "treatment",
                "treatment",
                "control",
                "treatment",
                "control",
                "excluded",
            ],
            "label": pd.array([1, 0, 1, 0, 1, 0, 1], dtype="Int64"),
            "score_control": [0.8, 0.3, 0.6, 0.2, 0.5, 0.4, 0.9],
            "score_treatment": [0.7, 0.1, 0.6, 0.3, 0.9, 0.4, 0.1],
            "threshold_control": 0.4,
            "threshold_treatment": 0.3,
        }
    )
    return Records.from_frame(frame, "flight_date")


def loss(y, p):
    return -math.log(p) if y else -math.log(1 - p)


def test_daily_paired_and_split_differences_by_hand():
    daily = daily_figures(records())
    assert [str(d) for d in daily.day] == ["2013-07-01", "2013-07-02"]  # sorted, excluded dropped
    assert daily.n.tolist() == [3, 3] and daily.n_control.tolist() == [2, 1]
    day1_c = [loss(0, 0.2), loss(1, 0.5), loss(0, 0.4)]
    day1_t = [loss(0, 0.3), loss(1, 0.9), loss(0, 0.4)]
    assert daily.paired_diff[0] == pytest.approx(np.mean(day1_t) - np.mean(day1_c))
    # Split: the treatment arm scored by the treatment minus the control arm by the control.
    split1 = loss(1, 0.9) - np.mean([loss(0, 0.2), loss(0, 0.4)])
    assert daily.split_diff[0] == pytest.approx(split1)
    auc2 = roc_auc_score([1, 0, 1], [0.7, 0.1, 0.6]) - roc_auc_score([1, 0, 1], [0.8, 0.3, 0.6])
    assert daily.roc_auc_diff[1] == pytest.approx(auc2)
    assert per_record_log_loss(np.array([1]), np.array([1.0]))[0] < 1e-12  # clipped, finite


def test_auc_agrees_with_sklearn_and_one_class_is_nan():
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 300), rng.integers(0, 10, 300) / 10  # ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert math.isnan(roc_auc(np.ones(3), np.array([0.1, 0.2, 0.3])))


def test_records_need_one_threshold_per_model_and_valid_scores():
    frame = pd.DataFrame(
        {
            "d": pd.to_datetime(["2013-07-01"] * 2),
            "arm": ["control", "treatment"],
            "label": [0, 1],
            "score_control": [0.2, 0.7],
            "score_treatment": [0.3, 0.6],
            "threshold_control": [0.4, 0.5],
            "threshold_treatment": [0.3, 0.3],
        }
    )
    with pytest.raises(ValueError, match="threshold_control: expected one threshold"):
        Records.from_frame(frame, "d")
    with pytest.raises(ValueError, match="score_treatment must be probabilities"):
        Records.from_frame(frame.assign(threshold_control=0.4, score_treatment=1.5), "d")


def test_the_day_bootstrap_resamples_days_and_does_not_judge_one_day():
    x = np.array([0.01, 0.03, -0.02, 0.02, 0.0, 0.04])
    interval = day_bootstrap("m", x, 0.05, 4000, 0)
    assert interval.mean == pytest.approx(x.mean()) and interval.days == 6
    # The bootstrap interval of a mean is close to the normal one: sd / sqrt(n) * 1.96.
    half = 1.96 * x.std(ddof=0) / math.sqrt(6)
    assert interval.high - interval.low == pytest.approx(2 * half, rel=0.15)
    one = day_bootstrap("m", np.array([0.5, np.nan]), 0.05, 100, 0)
    assert one.days == 1 and math.isinf(one.high)
