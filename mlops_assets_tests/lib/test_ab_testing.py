"""A/B testing statistics, cross-checked against statsmodels, scipy and scikit-learn."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2, norm
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    proportions_ztest,
)

from mlops_assets.lib.ab_testing import (
    ArmScores,
    ExperimentDesign,
    PairedScores,
    _metric,
    assign_arms,
    bootstrap_difference,
    check_guardrails,
    cohens_h,
    decide,
    expected_calibration_error,
    mcnemar_test,
    minimum_detectable_effect,
    paired_bootstrap_difference,
    required_paired_sample_size,
    required_sample_size,
    two_proportion_ztest,
    wilson_interval,
)

KEY_COLUMNS = ["carrier", "flight", "sched_dep"]


def _flight_keys(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "carrier": rng.choice(["UA", "AA", "B6", "DL", "EV", "MQ", "US", "WN"], n),
            "flight": rng.integers(1, 8000, n),
            "sched_dep": pd.Timestamp("2013-07-01")
            + pd.to_timedelta(rng.integers(0, 184 * 24 * 60, n), unit="min"),
        }
    )


# ---------------------------------------------------------------------------------------------
# Assignment


def test_assignment_is_deterministic_and_pinned():
    keys = pd.DataFrame(
        {
            "carrier": ["UA", "AA", "B6", "DL", "EV", "MQ", "US", "WN"],
            "flight": [1545, 1141, 725, 461, 1696, 4401, 1895, 301],
            "sched_dep": pd.to_datetime(["2013-07-01 05:15"] * 4 + ["2013-12-31 23:59"] * 4),
        }
    )
    arms = assign_arms(keys, "challenger-v2")
    assert arms.equals(assign_arms(keys, "challenger-v2"))
    # Pinned: the split must not change across processes, Python or library versions, or an
    # experiment already running would silently reshuffle its records.
    assert arms.tolist() == PINNED_ARMS


PINNED_ARMS = [
    "treatment",
    "control",
    "excluded",
    "treatment",
    "treatment",
    "treatment",
    "control",
    "control",
]


def test_assignment_follows_the_documented_recipe():
    # Rebuilt by hand so the split can be reproduced outside Python (e.g. in SQL).
    ns = pd.Timestamp("2013-07-01 05:15").value
    payload = "\x1f".join(f"{len(v)}:{v}" for v in ["UA", "1545", str(ns)]).encode()
    salt = hashlib.blake2b(b"challenger-v2", digest_size=32).digest()
    digest = hashlib.blake2b(payload, digest_size=8, key=salt).digest()
    u = (int.from_bytes(digest, "big") >> 11) * 2.0**-53
    expected = "control" if u < 0.45 else "treatment" if u < 0.90 else "excluded"
    keys = pd.DataFrame({"c": ["UA"], "f": [1545], "t": [pd.Timestamp("2013-07-01 05:15")]})
    assert assign_arms(keys, "challenger-v2").tolist() == [expected] == PINNED_ARMS[:1]


@pytest.mark.parametrize(
    "shares",
    [
        {"control": 0.45, "treatment": 0.45, "excluded": 0.10},
        {"control": 0.30, "treatment": 0.30, "excluded": 0.40},
        {"control": 0.50, "treatment": 0.50},
    ],
)
def test_assignment_shares_are_honoured_on_100k_keys(shares):
    keys = _flight_keys(100_000)
    observed = assign_arms(keys, "exp-balance", shares).value_counts(normalize=True)
    for arm in ("control", "treatment", "excluded"):
        assert abs(observed.get(arm, 0.0) - shares.get(arm, 0.0)) < 0.01, (arm, observed)


def test_different_experiments_split_independently():
    keys = _flight_keys(100_000, seed=2)
    a, b = assign_arms(keys, "exp-a"), assign_arms(keys, "exp-b")
    chance = 0.45**2 + 0.45**2 + 0.10**2
    assert abs((a == b).mean() - chance) < 0.01


def test_assignment_is_stable_under_row_reordering_and_subsetting():
    keys = _flight_keys(5_000, seed=3)
    arms = assign_arms(keys, "exp-order")
    shuffled = keys.sample(frac=1.0, random_state=7)
    assert assign_arms(shuffled, "exp-order").sort_index().equals(arms)
    assert assign_arms(keys.iloc[100:200], "exp-order").equals(arms.iloc[100:200])


def test_assignment_does_not_depend_on_dtypes():
    keys = _flight_keys(2_000, seed=4)
    arms = assign_arms(keys, "exp-dtypes")
    variants = keys.assign(
        carrier=keys["carrier"].astype("category"),
        flight=keys["flight"].astype("int32"),
        sched_dep=keys["sched_dep"].astype("datetime64[us]"),
    )
    assert assign_arms(variants, "exp-dtypes").equals(arms)
    as_float = keys.assign(flight=keys["flight"].astype(float))
    assert assign_arms(as_float, "exp-dtypes").equals(arms)
    utc = keys.assign(sched_dep=keys["sched_dep"].dt.tz_localize("UTC"))
    assert assign_arms(utc, "exp-dtypes").equals(arms)


def test_assignment_uses_all_key_columns():
    keys = _flight_keys(10_000, seed=5)
    other_day = keys.assign(sched_dep=keys["sched_dep"] + pd.Timedelta(days=1))
    agreement = (assign_arms(keys, "e") == assign_arms(other_day, "e")).mean()
    assert agreement < 0.5


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ({"control": 0.5, "treatment": 0.4}, "sum to 1"),
        ({"control": 1.2, "treatment": -0.2}, "non-negative"),
        ({"control": 0.5, "treatment": 0.4, "holdout": 0.1}, "unknown arm"),
    ],
)
def test_assignment_rejects_bad_shares(shares, message):
    with pytest.raises(ValueError, match=message):
        assign_arms(_flight_keys(10), "exp", shares)


def test_assignment_rejects_missing_keys_and_empty_experiment():
    keys = _flight_keys(10)
    with pytest.raises(ValueError, match="missing values"):
        assign_arms(keys.assign(flight=keys["flight"].astype(float).where(keys.index != 3)), "e")
    with pytest.raises(ValueError, match="experiment"):
        assign_arms(keys, "")


# ---------------------------------------------------------------------------------------------
# Split test on accuracy


@pytest.mark.parametrize(
    ("s_c", "n_c", "s_t", "n_t"),
    [(720, 1000, 760, 1000), (5400, 6000, 5350, 5900), (45, 50, 40, 60), (3, 10, 9, 12)],
)
def test_ztest_matches_statsmodels(s_c, n_c, s_t, n_t):
    result = two_proportion_ztest(s_c, n_c, s_t, n_t)
    z, p = proportions_ztest([s_t, s_c], [n_t, n_c])
    assert result.z == pytest.approx(z, rel=1e-9)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    low, high = confint_proportions_2indep(s_t, n_t, s_c, n_c, method="wald", compare="diff")
    assert result.ci_difference == pytest.approx((low, high), rel=1e-6)
    assert result.ci_control == pytest.approx(proportion_confint(s_c, n_c, method="wilson"))
    assert result.cohens_h == pytest.approx(proportion_effectsize(s_t / n_t, s_c / n_c))


@pytest.mark.parametrize(("successes", "n"), [(0, 20), (20, 20), (1, 7), (812, 1000)])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_wilson_matches_statsmodels(successes, n, alpha):
    expected = proportion_confint(successes, n, alpha=alpha, method="wilson")
    assert wilson_interval(successes, n, alpha) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_ztest_with_no_variance_reports_no_difference():
    result = two_proportion_ztest(50, 50, 40, 40)
    assert (result.z, result.p_value, result.significant) == (0.0, 1.0, False)


def test_required_sample_size_matches_normal_ind_power():
    h = proportion_effectsize(0.82, 0.80)
    for ratio in (1.0, 1.5):
        expected = NormalIndPower().solve_power(h, alpha=0.05, power=0.8, ratio=ratio)
        # Closed form vs statsmodels' root-finder (which adds the opposite tail): within 1 record.
        assert abs(required_sample_size(0.80, 0.02, 0.05, 0.80, ratio) - np.ceil(expected)) <= 1
    assert required_sample_size(0.80, 0.02) == 6036


def test_mde_matches_normal_ind_power_and_inverts_sample_size():
    mde = minimum_detectable_effect(5000, 5500, 0.80, alpha=0.05, power=0.8)
    h = NormalIndPower().solve_power(nobs1=5000, ratio=1.1, alpha=0.05, power=0.8)
    assert proportion_effectsize(0.80 + mde, 0.80) == pytest.approx(h, rel=1e-3)
    n = required_sample_size(0.70, 0.03)
    assert (
        minimum_detectable_effect(n, n, 0.70)
        <= 0.03
        < minimum_detectable_effect(n - 5, n - 5, 0.70)
    )


def test_split_test_reports_mde_at_reached_sizes():
    result = two_proportion_ztest(700, 1000, 720, 1000)
    assert result.mde == pytest.approx(minimum_detectable_effect(1000, 1000, 0.70))
    assert cohens_h(0.72, 0.70) == pytest.approx(result.cohens_h)


# ---------------------------------------------------------------------------------------------
# Paired test


def _correctness_from_table(both: int, b: int, c: int, neither: int) -> tuple:
    control = np.r_[np.ones(both + b), np.zeros(c + neither)].astype(bool)
    treatment = np.r_[np.ones(both), np.zeros(b), np.ones(c), np.zeros(neither)].astype(bool)
    return control, treatment


@pytest.mark.parametrize(
    ("table", "method"),
    [
        ((300, 3, 12, 85), "exact"),
        ((300, 12, 12, 85), "exact"),
        ((50, 0, 0, 10), "exact"),
        ((300, 10, 14, 76), "exact"),
        ((300, 10, 15, 76), "chi2"),
        ((700, 40, 65, 195), "chi2"),
        ((700, 40, 40, 195), "chi2"),
    ],
)
def test_mcnemar_matches_statsmodels(table, method):
    both, b, c, neither = table
    result = mcnemar_test(*_correctness_from_table(*table))
    expected = mcnemar([[both, b], [c, neither]], exact=method == "exact", correction=True)
    assert result.method == method
    assert (result.control_only, result.treatment_only) == (b, c)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.difference == pytest.approx((c - b) / sum(table))


def test_paired_sample_size_reaches_the_planned_power():
    n = required_paired_sample_size(0.02, 0.10, alpha=0.05, power=0.80)
    assert n == 1960
    # Simulate McNemar's test at that size with 6% vs 4% one-model-correct records.
    rng = np.random.default_rng(0)
    counts = rng.multinomial(n, [0.04, 0.06, 0.90], size=4000)
    b, c = counts[:, 0], counts[:, 1]
    power = np.mean(chi2.sf((np.abs(b - c) - 1) ** 2 / (b + c), 1) < 0.05)
    assert power == pytest.approx(0.80, abs=0.03)


def test_paired_sample_size_rejects_impossible_design():
    with pytest.raises(ValueError, match="discordant_rate"):
        required_paired_sample_size(0.12, 0.10)


# ---------------------------------------------------------------------------------------------
# Bootstrap


def _binormal(n: int, separation: float, rng: np.random.Generator) -> tuple:
    """Labels and probabilities whose true ROC AUC is Phi(separation / sqrt(2))."""
    y = (rng.uniform(size=n) < 0.3).astype(int)
    logit = rng.normal(size=n) + separation * y - 1.0
    return y, 1 / (1 + np.exp(-logit))


def test_resampled_metrics_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    score = np.round(rng.uniform(size=300), 1)  # many ties
    draws = rng.integers(0, 300, size=(3, 300))
    expected_auc = [roc_auc_score(y[d], score[d]) for d in draws]
    assert _metric("roc_auc", y, score, draws) == pytest.approx(expected_auc, rel=1e-12)
    expected_loss = [log_loss(y[d], score[d]) for d in draws]
    assert _metric("log_loss", y, score, draws) == pytest.approx(expected_loss, rel=1e-12)


def test_bootstrap_ci_covers_true_auc_difference_and_is_seeded():
    rng = np.random.default_rng(1)
    y_c, s_c = _binormal(2000, 1.0, rng)
    y_t, s_t = _binormal(2000, 1.5, rng)
    truth = norm.cdf(1.5 / np.sqrt(2)) - norm.cdf(1.0 / np.sqrt(2))
    result = bootstrap_difference(y_c, s_c, y_t, s_t, "roc_auc", n_resamples=1000, seed=3)
    assert result.difference == pytest.approx(roc_auc_score(y_t, s_t) - roc_auc_score(y_c, s_c))
    assert result.ci_difference[0] < truth < result.ci_difference[1]
    assert result.significant and result.treatment_better
    again = bootstrap_difference(y_c, s_c, y_t, s_t, "roc_auc", n_resamples=1000, seed=3)
    assert again == result
    other = bootstrap_difference(y_c, s_c, y_t, s_t, "roc_auc", n_resamples=1000, seed=4)
    assert other.ci_difference != result.ci_difference


def test_paired_bootstrap_keeps_pairs_together():
    rng = np.random.default_rng(2)
    y, s_c = _binormal(2000, 1.2, rng)
    s_t = np.clip(s_c + rng.normal(0, 0.02, s_c.size), 0, 1)
    paired = paired_bootstrap_difference(y, s_c, s_t, "roc_auc", n_resamples=500, seed=0)
    independent = bootstrap_difference(y, s_c, y, s_t, "roc_auc", n_resamples=500, seed=0)
    paired_width = paired.ci_difference[1] - paired.ci_difference[0]
    independent_width = independent.ci_difference[1] - independent.ci_difference[0]
    assert paired_width < independent_width / 5
    same = paired_bootstrap_difference(y, s_c, s_c, "roc_auc", n_resamples=200, seed=0)
    assert (same.difference, same.ci_difference, same.p_value) == (0.0, (0.0, 0.0), 1.0)


def test_paired_bootstrap_log_loss_detects_better_calibration():
    rng = np.random.default_rng(3)
    y, s_t = _binormal(3000, 1.5, rng)
    s_c = np.clip(s_t * 1.4, 0, 0.999)  # overconfident on positives' side
    result = paired_bootstrap_difference(y, s_c, s_t, "log_loss", n_resamples=500, seed=0)
    assert result.difference == pytest.approx(log_loss(y, s_t) - log_loss(y, s_c))
    assert result.ci_difference[1] < 0
    assert result.treatment_better and result.significant
    assert result.p_value == pytest.approx(2 / 501)


# ---------------------------------------------------------------------------------------------
# Guardrails


def test_calibration_metrics():
    y = np.array([0, 0, 1, 1, 1])
    s = np.array([0.05, 0.15, 0.15, 0.95, 1.0])
    # Bins [0, .1): one record, gap .05; [.1, .2): two, |1 - .3| = .7; [.9, 1]: two, |2 - 1.95|.
    assert expected_calibration_error(y, s) == pytest.approx((0.05 + 0.7 + 0.05) / 5)
    results = check_guardrails(y, s, y, s, 0.5, ece_tolerance=None, positive_rate_tolerance=None)
    assert [g.name for g in results] == ["brier"]
    assert results[0].control == pytest.approx(brier_score_loss(y, s))


def test_guardrails_fail_on_degraded_calibration_and_shifted_positive_rate():
    rng = np.random.default_rng(4)
    p = rng.uniform(size=4000)
    y = (rng.uniform(size=4000) < p).astype(int)
    ok = {g.name: g.passed for g in check_guardrails(y, p, y, np.clip(p + 0.01, 0, 1), 0.5)}
    assert ok == {"brier": True, "ece": True, "positive_rate": True}
    overconfident = np.where(p >= 0.5, 0.99, 0.01)
    failed = {g.name: g.passed for g in check_guardrails(y, p, y, overconfident, 0.5)}
    assert failed == {"brier": False, "ece": False, "positive_rate": True}
    lowered = {g.name: g.passed for g in check_guardrails(y, p, y, np.clip(p - 0.1, 0, 1), 0.5)}
    assert lowered["positive_rate"] is False
    # Each model at its own threshold: the shifted scores cut 0.1 lower flag the same records.
    shifted = np.clip(p - 0.1, 0, 1)
    own = {g.name: g.passed for g in check_guardrails(y, p, y, shifted, (0.5, 0.4))}
    assert own["positive_rate"] is True


# ---------------------------------------------------------------------------------------------
# Decision


DESIGN = ExperimentDesign(
    baseline_accuracy=0.70, threshold=0.5, mde=0.05, discordant_rate=0.15, n_resamples=200, seed=0
)


def _shadow(n: int, flip_control: float, flip_treatment: float, seed: int) -> PairedScores:
    """Both models score the same records; each reverses its score on a disjoint random share."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    y = (rng.uniform(size=n) < p).astype(int)
    u = rng.uniform(size=n)
    return PairedScores(
        y_true=y,
        score_control=np.where(u < flip_control, 1 - p, p),
        score_treatment=np.where(u >= 1 - flip_treatment, 1 - p, p),
    )


def test_design_horizons():
    assert DESIGN.required_n_per_arm == required_sample_size(0.70, 0.05)
    assert DESIGN.required_n_paired == required_paired_sample_size(0.05, 0.15) == 469
    with pytest.raises(ValueError, match="mde"):
        ExperimentDesign(baseline_accuracy=0.7, threshold=0.5, mde=-0.01)


def test_promote_when_significantly_better_at_horizon():
    result = decide(DESIGN, paired=_shadow(800, 0.15, 0.0, seed=1))
    assert result.horizon.reached and result.horizon.analysed == 469
    assert result.paired.accuracy.significant and result.paired.accuracy.treatment_better
    assert result.decision == "promote"


def test_keep_when_significantly_worse_at_horizon():
    result = decide(DESIGN, paired=_shadow(800, 0.0, 0.15, seed=1))
    assert result.decision == "keep"
    assert "keep the champion: the challenger is significantly worse" in result.reasons


def test_inconclusive_when_no_difference_at_horizon():
    result = decide(DESIGN, paired=_shadow(800, 0.08, 0.08, seed=2))
    assert result.horizon.reached
    assert not result.paired.accuracy.significant
    assert result.decision == "inconclusive"


def test_significant_before_horizon_is_inconclusive():
    result = decide(DESIGN, paired=_shadow(300, 0.15, 0.0, seed=1))
    assert result.paired.accuracy.p_value < DESIGN.alpha  # would promote if we peeked
    assert result.decision == "inconclusive"
    assert result.reasons[0].startswith("horizon not reached: 300 of 469 paired records")


def test_guardrail_failure_keeps_the_champion_despite_better_accuracy():
    data = _shadow(800, 0.15, 0.0, seed=1)
    overconfident = PairedScores(
        data.y_true, data.score_control, np.where(data.score_treatment >= 0.5, 0.99, 0.01)
    )
    result = decide(DESIGN, paired=overconfident)
    assert result.paired.accuracy.significant and result.paired.accuracy.treatment_better
    assert result.decision == "keep"
    assert any(r.startswith("guardrail brier failed") for r in result.reasons)


def test_split_test_decides_without_paired_data():
    n = DESIGN.required_n_per_arm + 50
    control, treatment = _shadow(n, 0.15, 0.0, seed=5), _shadow(n, 0.15, 0.0, seed=6)
    result = decide(
        DESIGN,
        control=ArmScores(control.y_true, control.score_control),
        treatment=ArmScores(treatment.y_true, treatment.score_treatment),
    )
    assert result.deciding_test == "split"
    assert result.split.accuracy.n_control == DESIGN.required_n_per_arm
    assert result.decision == "promote"
    short = decide(
        DESIGN,
        control=ArmScores(control.y_true[:600], control.score_control[:600]),
        treatment=ArmScores(treatment.y_true[:600], treatment.score_treatment[:600]),
    )
    assert short.split.accuracy.significant and short.decision == "inconclusive"


def test_decision_is_frozen_at_the_horizon():
    data = _shadow(2000, 0.15, 0.0, seed=7)

    def first(n: int) -> PairedScores:
        return PairedScores(data.y_true[:n], data.score_control[:n], data.score_treatment[:n])

    early, late = decide(DESIGN, paired=first(500)), decide(DESIGN, paired=first(2000))
    # Same analysed records, same numbers: looking again after the horizon changes nothing.
    assert early.paired.accuracy == late.paired.accuracy
    assert early.paired.secondary == late.paired.secondary
    assert early.guardrails == late.guardrails
    assert early.decision == late.decision == "promote"
    assert late.horizon.available == 2000


def test_report_shows_both_tests_and_flat_metadata():
    data = _shadow(800, 0.15, 0.0, seed=1)
    half = 400
    result = decide(
        DESIGN,
        paired=data,
        control=ArmScores(data.y_true[:half], data.score_control[:half]),
        treatment=ArmScores(data.y_true[half:], data.score_treatment[half:]),
    )
    assert result.deciding_test == "paired"
    markdown = result.to_markdown()
    assert "| McNemar (chi2) | deciding |" in markdown
    assert "| two-proportion z | reported |" in markdown
    assert any("reported beside, not deciding" in r for r in result.reasons)
    metadata = result.to_metadata()
    assert all(type(v) in (float, int, str) for v in metadata.values()), metadata
    assert metadata["decision"] == "promote"
    assert metadata["paired_p_value"] == result.paired.accuracy.p_value
    assert metadata["split_n_control"] == half
    assert metadata["guardrail_brier_passed"] == 1


def test_decide_needs_both_arms_or_paired_data():
    data = _shadow(50, 0.1, 0.0, seed=0)
    with pytest.raises(ValueError, match="both control and treatment"):
        decide(DESIGN, control=ArmScores(data.y_true, data.score_control))
    with pytest.raises(ValueError, match="nothing to compare"):
        decide(DESIGN)


def test_secondary_auc_is_left_out_when_an_arm_has_one_class():
    rng = np.random.default_rng(0)
    y_one = np.zeros(300, dtype=int)
    y_both = rng.integers(0, 2, 300)
    design = ExperimentDesign(baseline_accuracy=0.7, threshold=0.5, n_resamples=50)
    decision = decide(
        design,
        control=ArmScores(y_one, rng.random(300)),
        treatment=ArmScores(y_both, rng.random(300)),
    )
    assert [t.metric for t in decision.split.secondary] == ["log_loss"]
