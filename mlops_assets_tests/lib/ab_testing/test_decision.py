"""The decision rule, proven on simulated day-clustered data (fast variant of bench/ab_validity.py).

Records of one day share a model-specific day error (the weather hits both models differently),
so records are not independent: the rule must hold its error rate anyway, where a record-level
test does not.
"""

import dataclasses
import datetime as dt

import numpy as np
import pytest

from mlops_assets.lib.ab_testing.decision import decide
from mlops_assets.lib.ab_testing.design import ExperimentDesign
from mlops_assets.lib.ab_testing.inference import Records

START = dt.date(2013, 9, 2)
DESIGN = ExperimentDesign("sim", START, baseline_log_loss=0.5, n_resamples=100)


def expit(x):
    return 1 / (1 + np.exp(-x))


def simulate(
    rng, days=56, per_day=60, noise_control=0.1, noise_treatment=0.1, day_error=0.3
) -> Records:
    """Both models share most of their record-level error; each has its own error per day and
    a little of its own per record (`noise_*`: more = a worse model)."""
    n = days * per_day
    day = np.datetime64(START) + np.repeat(np.arange(days), per_day)
    truth = rng.normal(-1.2, 1.0, n) + np.repeat(rng.normal(0, 0.5, days), per_day)
    y = (rng.uniform(size=n) < expit(truth)).astype(int)
    shared = truth + rng.normal(0, 0.5, n)
    scores = []
    for noise in (noise_control, noise_treatment):
        on_day = np.repeat(rng.normal(0, day_error, days), per_day)
        scores.append(expit(shared + on_day + rng.normal(0, noise, n)))
    arm = rng.choice(["control", "treatment", "excluded"], n, p=[0.45, 0.45, 0.10])
    # Each model's operating point: its predicted positive rate equals the actual rate.
    thresholds = [float(np.quantile(s, 1 - y.mean())) for s in scores]
    return Records(day, arm, y, scores[0], scores[1], *thresholds)


def test_aa_false_promotions_stay_at_alpha_where_a_record_level_test_does_not():
    from scipy.stats import ttest_1samp

    from mlops_assets.lib.ab_testing.inference import per_record_log_loss

    rng = np.random.default_rng(11)
    design = dataclasses.replace(DESIGN, min_improvement=0.0)  # no margin: the bare sequence
    runs, promoted, record_level = 120, 0, 0
    for _ in range(runs):
        r = simulate(rng, per_day=150, day_error=1.0)  # strongly clustered within days
        promoted += decide(design, r).decision == "promote"
        diff = per_record_log_loss(r.label, r.score_treatment) - per_record_log_loss(
            r.label, r.score_control
        )
        record_level += ttest_1samp(diff, 0).pvalue < 0.05 and diff.mean() < 0
    # 120 exchangeable A/A runs: Monte Carlo sd of a 5% rate is 0.02.
    assert promoted / runs <= 0.05 + 2 * 0.02
    assert record_level / runs > 0.15  # records treated as independent: far above alpha/2


def test_a_worse_challenger_is_kept_and_a_better_one_promoted():
    rng = np.random.default_rng(3)
    kept = promoted = 0
    for _ in range(20):
        worse = decide(DESIGN, simulate(rng, noise_treatment=0.8))
        kept += worse.decision == "keep"
        assert worse.decision != "promote"
        better = decide(DESIGN, simulate(rng, noise_control=0.8))
        promoted += better.decision == "promote"
    assert kept >= 16 and promoted >= 16  # >= 80%


def test_no_decision_before_the_minimum_runtime_and_later_days_change_nothing():
    rng = np.random.default_rng(5)
    records = simulate(rng, days=70, noise_treatment=0.8)
    early = decide(DESIGN, records.take(records.day < np.datetime64(START) + 13))
    assert early.decision == "inconclusive" and early.status.startswith("running: 13 of")
    full = decide(DESIGN, records)
    assert full.decision == "keep" and full.decided_on is not None
    assert full.days_analysed >= 14 and full.days_available == 70
    cut = decide(DESIGN, records.take(records.day <= np.datetime64(full.decided_on)))
    assert (cut.decided_on, cut.primary) == (full.decided_on, full.primary)


def test_a_failed_guardrail_vetoes_a_better_challenger():
    rng = np.random.default_rng(8)
    records = simulate(rng, noise_control=0.8)
    # The better challenger at an operating point where it flags almost nothing.
    degenerate = dataclasses.replace(records, threshold_treatment=0.99)
    assert decide(DESIGN, records).decision == "promote"
    vetoed = decide(DESIGN, degenerate)
    assert vetoed.decision == "keep" and "vetoed: guardrail positive_rate failed" in vetoed.status


def test_undecided_at_the_maximum_runtime_stops_and_keeps_the_champion():
    rng = np.random.default_rng(2)
    design = dataclasses.replace(DESIGN, min_improvement=0.0, max_runtime_weeks=2)
    records = simulate(rng, days=21, per_day=30)
    result = decide(design, records)
    assert result.decision == "inconclusive" and result.days_analysed == 14
    assert result.status.startswith("stopped at the maximum runtime (14 days)")
    with pytest.raises(ValueError, match="no labelled experiment records"):
        decide(design, records.take(records.arm == "excluded"))
