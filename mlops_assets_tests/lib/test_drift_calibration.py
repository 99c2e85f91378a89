"""Calibrated drift: scores against hand-computed values, thresholds from the null, not judged."""

import numpy as np
import pandas as pd
import pytest

from mlops_assets.lib import drift_calibration as dc


def test_a_shift_by_one_sd_scores_one_and_identical_data_scores_zero():
    ref = np.random.default_rng(0).normal(size=5000)
    assert dc.numeric_score(ref, ref) == 0.0
    assert dc.numeric_score(ref, ref + ref.std()) == pytest.approx(1.0)
    assert np.isnan(dc.numeric_score(ref, np.array([np.nan])))


def test_jensen_shannon_by_hand():
    a = pd.Series(["x", "x", "y", "y"])
    assert dc.categorical_score(a, a) == 0.0
    assert dc.categorical_score(a, pd.Series(["z", "z"])) == pytest.approx(1.0)
    # p = (1/2, 1/2, 0), q = (0, 1/2, 1/2) over (x, y, z): JS divergence = 1/2 bit.
    assert dc.categorical_score(a, pd.Series(["y", "z"])) == pytest.approx(np.sqrt(0.5))
    # Missing values are a category of their own, not dropped.
    assert dc.categorical_score(a, pd.Series(["x", None])) > 0


def _days(n_days: int, rows: int, seed: int, start: str = "2024-01-01") -> pd.DataFrame:
    """Days of a process with day-level variation: a weather-like column whose level moves
    from day to day, a stable column, and a category mix."""
    rng = np.random.default_rng(seed)
    frames = []
    for i, day in enumerate(pd.date_range(start, periods=n_days)):
        frames.append(
            pd.DataFrame(
                {
                    "day": day,
                    "weather": rng.normal(rng.normal(0, 2), 1, rows),
                    "hour": rng.normal(12, 4, rows),
                    "kind": rng.choice(["a", "b", "c"], rows, p=[0.5, 0.3, 0.2]),
                    "weekday": i % 7,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


COLUMNS = {"numeric": ["weather", "hour"], "categorical": ["kind"]}


@pytest.fixture(scope="module")
def calibrated():
    reference = _days(60, 200, seed=1)
    null = dc.null_scores(reference, date_column="day", sample_rows=None, **COLUMNS)
    return reference, null, dc.calibrate(null, 0.95)


def test_the_threshold_is_the_quantile_of_the_max_z_over_null_days(calibrated):
    _, null, calibration = calibrated
    assert list(null.columns) == ["weather", "hour", "kind"] and len(null) == 60
    logs = np.log(null + 1e-6)
    z = (logs - logs.mean()) / logs.std(ddof=1)
    assert calibration.threshold == pytest.approx(np.quantile(z.max(axis=1), 0.95))
    # A max-statistic: above every column's own 95% quantile of z.
    assert calibration.threshold > z.quantile(0.95).max()


def test_a_weather_swing_is_normal_and_a_small_hour_shift_is_not(calibrated):
    reference, _, calibration = calibrated
    new = _days(20, 200, seed=2, start="2024-06-01")
    alarms, hour_alarms = 0, 0
    for _, day in new.groupby("day"):
        scores = dc.column_scores(reference, day, **COLUMNS)
        alarms += dc.judge(scores, calibration, n_rows=len(day)).alarm
        shifted = dc.column_scores(reference, day.assign(hour=day["hour"] + 2), **COLUMNS)
        decision = dc.judge(shifted, calibration, n_rows=len(day))
        hour_alarms += decision.alarm and decision.drifted[0] == "hour"
    # The weather column moves by 2 sd between days: a fixed threshold of 1 sd would flag
    # nearly every day; calibrated, unchanged days rarely alarm. A half-sd shift of the stable
    # column alarms every day and is named.
    assert alarms <= 3
    assert hour_alarms == 20


def test_a_tiny_day_is_not_judged(calibrated):
    reference, _, calibration = calibrated
    day = reference[reference["day"] == reference["day"].iloc[0]].head(24)
    shifted = day.assign(hour=day["hour"] + 50)
    decision = dc.judge(
        dc.column_scores(reference, shifted, **COLUMNS), calibration, n_rows=24, min_rows=100
    )
    assert not decision.judged and not decision.alarm and decision.drifted == []
    assert decision.reason == "not judged: n=24 < 100"


def test_calibration_needs_enough_null_days():
    null = pd.DataFrame({"x": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match="at least 5"):
        dc.calibrate(null)


def test_the_domain_classifier_sees_a_mix_change_that_each_column_alone_barely_sees():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=3000), "k": rng.choice(["a", "b"], 3000)})
    same = pd.DataFrame({"x": rng.normal(size=500), "k": rng.choice(["a", "b"], 500)})
    moved = same.assign(x=same["x"] + 1.0)
    kwargs = {"numeric": ["x"], "categorical": ["k"]}
    assert abs(dc.domain_auc(ref, same, **kwargs) - 0.5) < 0.05
    assert dc.domain_auc(ref, moved, **kwargs) > 0.7


def test_the_domain_null_skips_small_days_and_is_a_day_to_auc_map(calibrated):
    reference, _, _ = calibrated
    null = dc.domain_null(reference, date_column="day", days=3, min_rows=1, **COLUMNS)
    assert len(null) == 3 and all(0 <= v <= 1 for v in null.values())
    assert dc.domain_null(reference, date_column="day", days=5, min_rows=500, **COLUMNS) == {}
