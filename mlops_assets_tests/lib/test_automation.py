import datetime as dt

import pytest

from mlops_assets.lib.automation import DayResult, RetrainingRule, evaluate_rule, replay_rule

RULE = RetrainingRule(min_auc_ratio=0.9, consecutive_days=3, cooldown_days=10)
JULY = dt.date(2013, 7, 1)


def days(drifts, aucs=None, start=JULY):
    aucs = aucs or [None] * len(drifts)
    return [
        # A drift share above 0.3 stands for a day whose drift check alarmed.
        DayResult(
            start + dt.timedelta(days=i),
            drift_alarm=drift > 0.3,
            drift_share=drift,
            roc_auc=auc,
            reference_auc=0.70,
        )
        for i, (drift, auc) in enumerate(zip(drifts, aucs, strict=True))
    ]


def test_a_streak_of_drift_triggers_with_its_evidence():
    decision = evaluate_rule(days([0.1, 0.4, 0.5, 0.6]), RULE, last_retrain=None)
    assert decision.retrain and decision.reason.startswith("drift on 3 consecutive days")
    assert decision.last_day == dt.date(2013, 7, 4)
    assert "2013-07-02: drift alarm (share 0.400)" in decision.evidence()
    assert decision.training_window(RetrainingRule(window_days=90))[0] == dt.date(2013, 4, 6)


def test_decay_counts_like_drift():
    decision = evaluate_rule(days([0.1] * 3, [0.62, 0.61, 0.60]), RULE, last_retrain=None)
    assert decision.retrain and decision.reason.startswith("decay")
    healthy = evaluate_rule(days([0.1] * 3, [0.65, 0.64, 0.66]), RULE, last_retrain=None)
    assert not healthy.retrain


@pytest.mark.parametrize(
    "drifts",
    [[0.4, 0.4], [0.4, 0.1, 0.4, 0.4], [0.4, 0.4, 0.4, 0.1]],
    ids=["short", "gap", "ended"],
)
def test_only_an_unbroken_streak_ending_on_the_newest_day_counts(drifts):
    assert not evaluate_rule(days(drifts), RULE, last_retrain=None).retrain


def test_a_missing_day_breaks_the_streak():
    results = days([0.5, 0.5, 0.5, 0.5])
    del results[2]
    assert not evaluate_rule(results, RULE, last_retrain=None).retrain


def test_cooldown_then_only_days_after_the_last_retraining():
    results = days([0.5] * 14)
    cooling = evaluate_rule(results, RULE, last_retrain=dt.date(2013, 7, 5))
    assert not cooling.retrain and "cooldown" in cooling.reason
    after = evaluate_rule(results, RULE, last_retrain=dt.date(2013, 7, 3))
    assert after.retrain and after.streak[0].day == dt.date(2013, 7, 4)


def test_no_results_and_bad_rules():
    assert evaluate_rule([], RULE, last_retrain=None).reason == "no monitoring results yet"
    with pytest.raises(ValueError):
        RetrainingRule(consecutive_days=0)


def test_replaying_the_rule_day_by_day_honours_the_cooldown():
    results = days([0.5] * 30)
    decisions = replay_rule(list(reversed(results)), RULE)
    assert [d.last_day for d in decisions] == [
        dt.date(2013, 7, 3),
        dt.date(2013, 7, 13),
        dt.date(2013, 7, 23),
    ]
