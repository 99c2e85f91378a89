"""Operating point, calibration and gates (lib/decision.py) against hand-computed references."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import fbeta_score, roc_auc_score

from mlops_assets.lib import decision
from mlops_assets.lib.spec import GateSpec, OperatingPointSpec

F1 = OperatingPointSpec()
GATES = GateSpec(n_resamples=300, min_test_days=5)


def f_beta(y, flagged, beta):
    """F-beta by its definition, from the confusion counts."""
    tp, fp = np.sum(flagged & (y == 1)), np.sum(flagged & (y == 0))
    fn = np.sum(~flagged & (y == 1))
    return (1 + beta**2) * tp / ((1 + beta**2) * tp + beta**2 * fn + fp)


def test_f_beta_threshold_is_the_best_cut():
    rng = np.random.default_rng(1)
    p = rng.random(300)
    y = (rng.random(300) < p).astype(int)
    for beta in (0.5, 1.0, 2.0):
        policy = OperatingPointSpec(beta=beta)
        threshold = decision.choose_threshold(y, p, policy)
        best = max(f_beta(y, p >= t, beta) for t in np.unique(p))
        assert fbeta_score(y, (p >= threshold).astype(int), beta=beta) == pytest.approx(best)
        assert decision.objective_at(y, p, threshold, policy) == pytest.approx(best)


def test_cost_threshold_lands_at_the_bayes_cut_on_calibrated_scores():
    # With calibrated scores the cheapest cut is c_fp / (c_fp + c_fn): 0.1 for costs 1 and 9.
    rng = np.random.default_rng(2)
    p = rng.random(40_000)
    y = (rng.random(p.size) < p).astype(int)
    policy = OperatingPointSpec(policy="cost", false_positive_cost=1, false_negative_cost=9)
    assert decision.choose_threshold(y, p, policy) == pytest.approx(0.1, abs=0.03)
    swapped = policy.model_copy(update={"false_positive_cost": 9, "false_negative_cost": 1})
    assert decision.choose_threshold(y, p, swapped) == pytest.approx(0.9, abs=0.03)


def test_target_share_flags_that_share():
    p = np.linspace(0, 1, 1000, endpoint=False)
    y = (p > 0.5).astype(int)
    policy = OperatingPointSpec(policy="target_share", target_share=0.25)
    threshold = decision.choose_threshold(y, p, policy)
    assert np.mean(p >= threshold) == pytest.approx(0.25, abs=1e-3)


def test_judge_operating_point_by_hand():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.6, 0.3, 0.8, 0.2, 0.9])
    report = decision.judge_operating_point(y, p, threshold=0.7, policy=F1)
    # 0.7 flags {0.8, 0.9}: tp 2, fp 0, fn 1 -> F1 = 4 / 5. Hindsight 0.25 flags
    # {0.3, 0.6, 0.8, 0.9}: tp 3, fp 1 -> F1 = 6 / 7. The naive cut flags {0.6, 0.8, 0.9}: 2 / 3.
    assert report.objective == pytest.approx(0.8)
    assert report.best_objective == pytest.approx(6 / 7)
    assert report.naive_objective == pytest.approx(2 / 3)
    assert report.share_of_best == pytest.approx(0.8 / (6 / 7))


def test_expected_calibration_error_by_hand():
    # Bin [0.1, 0.2): two records, mean p 0.15, observed 0.5 -> gap 0.35 x 2/4;
    # bin [0.9, 1]: two records, mean p 0.95, observed 1 -> gap 0.05 x 2/4.
    y, p = [0, 1, 1, 1], [0.1, 0.2 - 1e-9, 0.9, 1.0]
    assert decision.expected_calibration_error(y, p) == pytest.approx((0.35 + 0.05) / 2, abs=1e-6)


class Cubed(ClassifierMixin, BaseEstimator):
    """A "model" scoring p**3 of a calibrated column p: ranks well, calibrated badly."""

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        p = X["p"].to_numpy() ** 3
        return np.column_stack([1 - p, p])

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def day_frame(n_days=20, per_day=200, seed=0):
    rng = np.random.default_rng(seed)
    days = pd.Timestamp("2013-01-01") + pd.to_timedelta(np.repeat(np.arange(n_days), per_day), "D")
    # A day effect (shared by the day's records) on top of a record-level signal.
    day_effect = np.repeat(rng.normal(0, 0.5, n_days), per_day)
    x = rng.normal(size=days.size)
    p = 1 / (1 + np.exp(-(1.5 * x + day_effect - 1)))
    y = (rng.random(days.size) < p).astype(int)
    return pd.DataFrame({"day": days, "x": x, "p": p, "y": y})


def test_calibration_is_kept_only_when_it_lowers_log_loss():
    frame = day_frame()
    bad = Cubed().fit(frame[["p"]], frame["y"])
    result = decision.calibrate(bad, frame[["p"]], frame["y"], frame["day"])
    assert result.method in decision.CALIBRATION_METHODS
    assert result.log_loss[result.method] < result.log_loss["none"]
    fixed = decision.calibration_summary(frame["y"], result.model.predict_proba(frame[["p"]])[:, 1])
    before = decision.calibration_summary(frame["y"], bad.predict_proba(frame[["p"]])[:, 1])
    assert fixed["ece"] < before["ece"] / 2

    one_day = frame[frame["day"] == frame["day"].iloc[0]]
    kept = decision.calibrate(bad, one_day[["p"]], one_day["y"], one_day["day"])
    assert kept.method == "none" and kept.model is bad and "not judged" in kept.reason


def test_weighted_auc_matches_scikit_learn_on_duplicated_days():
    frame = day_frame(n_days=6, per_day=50)
    frame["p"] = frame["p"].round(2)  # ties
    full, draws = decision.day_bootstrap(frame["y"], {"m": frame["p"]}, frame["day"], n_resamples=3)
    assert full["m"] == pytest.approx(roc_auc_score(frame["y"], frame["p"]))
    # Resample 0 again, by hand: the days drawn, with their multiplicity, as duplicated rows.
    days = np.unique(frame["day"])
    counts = np.random.default_rng(0).multinomial(days.size, np.full(days.size, 1 / days.size), 3)
    repeated = pd.concat(
        [frame[frame["day"] == d] for d, c in zip(days, counts[0], strict=True) for _ in range(c)]
    )
    assert draws["m"][0] == pytest.approx(roc_auc_score(repeated["y"], repeated["p"]))


def models_on(frame: pd.DataFrame, split: int):
    train, test = frame.iloc[:split], frame.iloc[split:]
    # A tree model: fitted to shuffled labels its scores are noise in x, not a monotone function
    # of it (a linear model would rank by x, or by -x, whatever the labels).
    good = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(train[["x"]], train["y"])
    shuffled = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(
        train[["x"]], np.random.default_rng(0).permutation(train["y"].to_numpy())
    )
    dummy = DummyClassifier(strategy="prior").fit(train[["x"]], train["y"])
    return train, test, {"good": good, "shuffled": shuffled, "dummy": dummy}


def test_gates_pass_a_real_model_and_refuse_dummy_and_shuffled_labels():
    frame = day_frame(n_days=30, per_day=150)
    split = 15 * 150
    train, test, models = models_on(frame, split)
    # A weak but honest reference: the signal seen through noise.
    reference = {"noisy": test["x"].to_numpy() + np.random.default_rng(3).normal(0, 2, len(test))}
    verdicts = {}
    for name, model in models.items():
        p_train = model.predict_proba(train[["x"]])[:, 1]
        threshold = decision.choose_threshold(train["y"], p_train, F1)
        p = model.predict_proba(test[["x"]])[:, 1]
        verdicts[name] = (
            decision.comparison_gate(
                "check_beats_baseline",
                test["y"],
                p,
                reference,
                test["day"],
                margin=0.0,
                gates=GATES,
            ),
            decision.degenerate_gate(
                test["y"], p, threshold, test["day"], gates=GATES, name="check_not_degenerate"
            ),
        )
    assert all(g.passed and g.judged for g in verdicts["good"])
    for name in ("dummy", "shuffled"):
        baseline, degenerate = verdicts[name]
        assert not baseline.passed and not degenerate.passed, name
        assert baseline.message.startswith("check_beats_baseline: failed: model ROC AUC")
        assert degenerate.message.startswith("check_not_degenerate: failed: at threshold")
        assert f"{degenerate.figures['roc_auc_low']:.4f}" in degenerate.message
        assert degenerate.figures["roc_auc_low"] <= decision.CHANCE_AUC
    # The dummy scores every record alike: at its chosen threshold it flags all or none.
    assert verdicts["dummy"][1].figures["predicted_positive_rate"] in (0.0, 1.0)


def test_a_model_does_not_beat_itself_and_few_days_are_not_judged():
    frame = day_frame(n_days=10, per_day=100)
    same = decision.comparison_gate(
        "gate",
        frame["y"],
        frame["p"],
        {"itself": frame["p"]},
        frame["day"],
        margin=0.0,
        gates=GATES,
    )
    assert not same.passed and same.figures["itself_difference_low"] == 0.0
    few = frame[frame["day"] < pd.Timestamp("2013-01-04")]
    verdict = decision.degenerate_gate(few["y"], few["p"], 0.3, few["day"], gates=GATES)
    assert (verdict.passed, verdict.judged) == (False, False)
    assert "not judged: 3 test day(s), fewer than min_test_days=5" in verdict.message


def test_most_informative_category_and_its_rates():
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {"noise": rng.choice(list("ab"), 4000), "signal": rng.choice(list("xyz"), 4000)}
    )
    frame["y"] = (rng.random(4000) < frame["signal"].map({"x": 0.1, "y": 0.5, "z": 0.9})).astype(
        int
    )
    column, auc = decision.most_informative_category(
        frame.iloc[:2000], frame.iloc[2000:], ["noise", "signal"], "y"
    )
    assert column == "signal" and auc > 0.7
    rates, prior = decision.category_means(pd.Series(["a", "a", "b"]), [1, 1, 0], pseudo_count=1)
    # a: (2 + 1 x 2/3) / (2 + 1); b: (0 + 2/3) / (1 + 1); an unseen category gets the prior.
    assert rates == pytest.approx({"a": (2 + 2 / 3) / 3, "b": (2 / 3) / 2})
    scores = decision.category_mean_predictions(rates, prior, pd.Series(["b", "new"]))
    assert scores == pytest.approx([1 / 3, 2 / 3])
