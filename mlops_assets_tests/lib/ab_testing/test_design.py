"""The design: margin, MDE from the champion's pre-experiment A/A spread, storage round trip."""

import datetime as dt
import math

import numpy as np
import pytest

from mlops_assets.lib.ab_testing.design import (
    ExperimentDesign,
    design_experiment,
    minimum_detectable_effect,
)
from mlops_assets.lib.ab_testing.inference import Records, daily_figures
from mlops_assets.lib.ab_testing.sequential import boundary_factor

START = dt.date(2013, 9, 1)


def baseline(days: int, seed: int = 0) -> Records:
    rng = np.random.default_rng(seed)
    n = days * 200
    day = np.datetime64("2013-09-01") - days + np.repeat(np.arange(days), 200)
    p = rng.uniform(0.05, 0.5, n)
    y = (rng.uniform(size=n) < p).astype(int)
    arm = rng.choice(["control", "treatment", "excluded"], n, p=[0.45, 0.45, 0.1])
    return Records(day, arm, y, p, p, 0.3, 0.3)


def test_the_mde_comes_from_the_champion_aa_spread_before_the_start():
    base = baseline(28)
    design = design_experiment("e", START, base, reference_log_loss=9.9)
    aa = daily_figures(base).split_diff
    assert design.baseline_days == 28
    assert design.baseline_daily_sd == pytest.approx(np.std(aa, ddof=1))
    assert design.baseline_log_loss == pytest.approx(daily_figures(base).log_loss_control.mean())
    from scipy.stats import norm

    by_hand = design.margin + design.baseline_daily_sd * (
        float(boundary_factor(56, 0.05, 14)) + norm.ppf(0.8) / math.sqrt(56)
    )
    assert design.mde == pytest.approx(by_hand)
    assert minimum_detectable_effect(0.0, 56, 0.05, 0.8, 0.004, 14) == 0.004


def test_too_few_days_before_the_start_leave_the_mde_not_judged():
    design = design_experiment("e", START, baseline(3), reference_log_loss=0.45)
    assert design.baseline_days == 3 and math.isnan(design.mde)
    assert design.margin == pytest.approx(0.01 * 0.45)
    with pytest.raises(ValueError, match="margin cannot be set"):
        design_experiment("e", START, None, reference_log_loss=math.nan)
    with pytest.raises(ValueError, match="must all precede"):
        design_experiment("e", dt.date(2013, 8, 20), baseline(28), reference_log_loss=0.4)


def test_whole_weeks_and_a_row_round_trip():
    design = ExperimentDesign("e", START, min_runtime_weeks=3, max_runtime_weeks=5)
    assert (design.min_days, design.max_days) == (21, 35)
    assert ExperimentDesign.from_row(design.as_row()) == design
    with pytest.raises(ValueError, match="min_runtime_weeks"):
        ExperimentDesign("e", START, min_runtime_weeks=3, max_runtime_weeks=2)
