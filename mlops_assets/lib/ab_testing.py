"""A/B testing of a challenger (treatment) classifier against the champion (control).

Pure functions, no Dagster imports. Four layers, each usable on its own:

- assignment: `assign_arms` routes every record to an arm by a keyed hash of its key values;
- statistics: the split (two-arm) test on accuracy (`two_proportion_ztest`), the paired test on the
  same records (`mcnemar_test`), bootstrap tests for ROC AUC / log loss (`bootstrap_difference`,
  `paired_bootstrap_difference`), sample size and minimum detectable effect;
- guardrails: calibration (Brier, ECE) and predicted-positive-rate limits (`check_guardrails`);
- decision: `decide` applies the fixed-horizon stopping rule and returns an `ABDecision`.

Stopping rule (guard against peeking): a fixed-horizon design. The number of records the deciding
test needs is computed up front from the design (baseline accuracy, MDE, alpha, power); until it
is reached the decision is "inconclusive" whatever the p-value, because stopping the first time
p < alpha inflates the false-positive rate far above alpha. Once it is reached only the first N
records (in the order given) are analysed, so evaluating again on later data gives the same
decision.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np
import pandas as pd

ARMS = ("control", "treatment", "excluded")
DEFAULT_SHARES: Mapping[str, float] = MappingProxyType(
    {"control": 0.45, "treatment": 0.45, "excluded": 0.10}
)
METRICS = ("roc_auc", "log_loss")
# Below this many discordant pairs McNemar's chi-square approximation is poor and the exact binomial
# test is used (the usual rule of thumb, e.g. Rosner, Fundamentals of Biostatistics, b + c < 25).
MCNEMAR_EXACT_BELOW = 25
# Bootstrap work is chunked so a (resamples x records) block of indices stays around 32 MB.
_BOOTSTRAP_CELLS = 4_000_000

Decision = Literal["promote", "keep", "inconclusive"]


# ---------------------------------------------------------------------------------------------
# Assignment


def _canonical_column(col: pd.Series) -> list[str]:
    """One column's values as dtype-independent strings (int32 and int64, ns and us agree)."""
    if col.isna().any():
        raise ValueError(f"key column {col.name!r} has missing values; a record needs a full key")
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(col.cat.categories.dtype)
    if col.dtype == object and pd.api.types.infer_dtype(col, skipna=False) == "datetime":
        col = pd.to_datetime(col)
    if pd.api.types.is_datetime64_any_dtype(col):
        if col.dt.tz is not None:
            col = col.dt.tz_convert("UTC").dt.tz_localize(None)
        values = col.astype("datetime64[ns]").astype("int64").tolist()
    elif pd.api.types.is_bool_dtype(col):
        values = col.astype(bool).tolist()
    elif pd.api.types.is_float_dtype(col) and bool((col % 1 == 0).all()):
        # A flight number read as float (1545.0) is the same record as the integer 1545.
        values = col.astype("int64").tolist()
    elif pd.api.types.is_numeric_dtype(col):
        values = col.tolist()
    else:
        values = col.astype(str).tolist()
    return [str(v) for v in values]


def _validate_shares(shares: Mapping[str, float]) -> dict[str, float]:
    unknown = set(shares) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arm(s) {sorted(unknown)}; arms are {list(ARMS)}")
    out = {arm: float(shares.get(arm, 0.0)) for arm in ARMS}
    negative = {arm: s for arm, s in out.items() if not s >= 0}
    if negative:
        raise ValueError(f"shares must be non-negative, got {negative}")
    total = sum(out.values())
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"shares must sum to 1, got {total:.6g} from {dict(shares)}")
    return {arm: s / total for arm, s in out.items()}


def assign_arms(
    keys: pd.DataFrame, experiment: str, shares: Mapping[str, float] = DEFAULT_SHARES
) -> pd.Series[str]:
    """Route each record (row of key columns) to "control", "treatment" or "excluded".

    The arm depends only on the experiment name and the row's key values, in the column order
    given (pass the dataset spec's key columns in the spec's order): each value is serialized
    dtype-independently (timestamps as UTC nanoseconds, integral floats as integers),
    length-prefixed and joined, then hashed with BLAKE2b keyed by a digest of the experiment
    name. The hash is stable across processes and Python versions (unlike the salted built-in
    `hash`), and a new experiment name gives an independent split. The first 53 bits map to a
    uniform u in [0, 1), cut into consecutive intervals of width share in the order control,
    treatment, excluded.
    """
    if not isinstance(experiment, str) or not experiment:
        raise ValueError("experiment must be a non-empty string (it salts the hash)")
    if keys.shape[1] == 0:
        raise ValueError("keys must have at least one key column")
    fractions = _validate_shares(shares)
    if keys.empty:
        return pd.Series([], index=keys.index, dtype=object, name="arm")

    columns = [_canonical_column(keys[c]) for c in keys.columns]
    salt = hashlib.blake2b(experiment.encode("utf-8"), digest_size=32).digest()
    digests = b"".join(
        hashlib.blake2b(
            "\x1f".join(f"{len(v)}:{v}" for v in row).encode("utf-8"), digest_size=8, key=salt
        ).digest()
        for row in zip(*columns, strict=True)
    )
    u = (np.frombuffer(digests, dtype=">u8") >> np.uint64(11)) * 2.0**-53
    edges = np.cumsum([fractions[arm] for arm in ARMS])[:-1]
    # side="right" never lands a record in a zero-width arm.
    arm_index = np.searchsorted(edges, u, side="right")
    return pd.Series(np.asarray(ARMS, dtype=object)[arm_index], index=keys.index, name="arm")


# ---------------------------------------------------------------------------------------------
# Split (two independent arms) test on accuracy


def _z(alpha: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha / 2))


def _check_rate_inputs(successes: int, n: int) -> None:
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got successes={successes}, n={n}")


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a proportion (good coverage near 0 and 1, unlike Wald)."""
    _check_rate_inputs(successes, n)
    z = _z(alpha)
    p = successes / n
    denom = 1 + z**2 / n
    center = (p + z**2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return center - half, center + half


def cohens_h(rate_treatment: float, rate_control: float) -> float:
    """Cohen's h = 2 asin(sqrt(p_t)) - 2 asin(sqrt(p_c)), the variance-stabilized difference."""
    return 2 * math.asin(math.sqrt(rate_treatment)) - 2 * math.asin(math.sqrt(rate_control))


def required_sample_size(
    baseline_rate: float, mde: float, alpha: float = 0.05, power: float = 0.80, ratio: float = 1.0
) -> int:
    """Control-arm size for a two-sided two-proportion test to detect baseline -> baseline + mde.

    Closed form on Cohen's h (the normal approximation behind statsmodels' NormalIndPower with
    proportion_effectsize, minus its negligible opposite-tail term):
    n_control = (z_{1-alpha/2} + z_power)^2 (1 + 1/ratio) / h^2, n_treatment = ratio * n_control.
    """
    from scipy.stats import norm

    if not 0 < baseline_rate < 1 or not 0 < baseline_rate + mde <= 1 or mde == 0:
        raise ValueError(
            f"need 0 < baseline < 1, 0 < baseline + mde <= 1, mde != 0: "
            f"baseline={baseline_rate}, mde={mde}"
        )
    h = cohens_h(baseline_rate + mde, baseline_rate)
    z_sum = _z(alpha) + float(norm.ppf(power))
    return math.ceil(z_sum**2 * (1 + 1 / ratio) / h**2)


def minimum_detectable_effect(
    n_control: int, n_treatment: int, baseline_rate: float, alpha: float = 0.05, power: float = 0.80
) -> float:
    """Smallest absolute increase over baseline_rate detectable at these arm sizes (two-sided).

    Inverts the sample-size formula: h = (z_{1-alpha/2} + z_power) sqrt(1/n_c + 1/n_t), then
    p_t = sin^2(asin(sqrt(p_c)) + h/2), capped at 1.
    """
    from scipy.stats import norm

    h = (_z(alpha) + float(norm.ppf(power))) * math.sqrt(1 / n_control + 1 / n_treatment)
    angle = min(math.asin(math.sqrt(baseline_rate)) + h / 2, math.pi / 2)
    return math.sin(angle) ** 2 - baseline_rate


@dataclass(frozen=True)
class ProportionTest:
    """Two-proportion z-test of treatment vs control accuracy on independent arms."""

    n_control: int
    n_treatment: int
    successes_control: int
    successes_treatment: int
    rate_control: float
    rate_treatment: float
    ci_control: tuple[float, float]
    ci_treatment: tuple[float, float]
    difference: float  # treatment - control
    ci_difference: tuple[float, float]
    z: float
    p_value: float
    cohens_h: float
    mde: float  # absolute, at the reached arm sizes, over the observed control rate
    alpha: float
    power: float

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    @property
    def treatment_better(self) -> bool:
        return self.difference > 0


def two_proportion_ztest(
    successes_control: int,
    n_control: int,
    successes_treatment: int,
    n_treatment: int,
    alpha: float = 0.05,
    power: float = 0.80,
) -> ProportionTest:
    """Two-sided two-proportion z-test, Wilson CIs per arm and a Wald CI for the difference.

    The test uses the pooled SE (under H0 both arms share one rate); the CI of the difference uses
    the unpooled SE (no such assumption away from H0). If both arms are all-correct or all-wrong
    the SE is 0 and there is no evidence of a difference: z = 0, p = 1.
    """
    from scipy.stats import norm

    _check_rate_inputs(successes_control, n_control)
    _check_rate_inputs(successes_treatment, n_treatment)
    p_c, p_t = successes_control / n_control, successes_treatment / n_treatment
    pooled = (successes_control + successes_treatment) / (n_control + n_treatment)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment))
    diff = p_t - p_c
    z = diff / se_pooled if se_pooled > 0 else 0.0
    se_unpooled = math.sqrt(p_c * (1 - p_c) / n_control + p_t * (1 - p_t) / n_treatment)
    half = _z(alpha) * se_unpooled
    baseline = min(max(p_c, 1e-9), 1 - 1e-9)
    return ProportionTest(
        n_control=n_control,
        n_treatment=n_treatment,
        successes_control=successes_control,
        successes_treatment=successes_treatment,
        rate_control=p_c,
        rate_treatment=p_t,
        ci_control=wilson_interval(successes_control, n_control, alpha),
        ci_treatment=wilson_interval(successes_treatment, n_treatment, alpha),
        difference=diff,
        ci_difference=(diff - half, diff + half),
        z=z,
        p_value=float(2 * norm.sf(abs(z))),
        cohens_h=cohens_h(p_t, p_c),
        mde=minimum_detectable_effect(n_control, n_treatment, baseline, alpha, power),
        alpha=alpha,
        power=power,
    )


# ---------------------------------------------------------------------------------------------
# Paired test on the same records


def required_paired_sample_size(
    mde: float, discordant_rate: float, alpha: float = 0.05, power: float = 0.80
) -> int:
    """Records McNemar's test needs to detect an accuracy difference mde (Connor 1987).

    n = (z_{1-alpha/2} sqrt(psi) + z_power sqrt(psi - mde^2))^2 / mde^2, with psi the expected
    share of records on which exactly one model is correct (an assumption fixed up front).
    """
    from scipy.stats import norm

    if not 0 < abs(mde) < discordant_rate <= 1:
        raise ValueError(
            "need 0 < |mde| < discordant_rate <= 1, "
            f"got mde={mde}, discordant_rate={discordant_rate}"
        )
    psi = discordant_rate
    root = _z(alpha) * math.sqrt(psi) + float(norm.ppf(power)) * math.sqrt(psi - mde**2)
    return math.ceil(root**2 / mde**2)


@dataclass(frozen=True)
class McNemarTest:
    """McNemar's test of treatment vs control accuracy on the same records."""

    n: int
    both_correct: int
    control_only: int  # b: control correct, treatment wrong
    treatment_only: int  # c: treatment correct, control wrong
    both_wrong: int
    accuracy_control: float
    accuracy_treatment: float
    difference: float  # treatment - control = (c - b) / n
    ci_difference: tuple[float, float]
    statistic: float  # min(b, c) for "exact", the chi-square value for "chi2"
    p_value: float
    method: Literal["exact", "chi2"]
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    @property
    def treatment_better(self) -> bool:
        return self.difference > 0

    @property
    def discordant_rate(self) -> float:
        return (self.control_only + self.treatment_only) / self.n


def mcnemar_test(
    correct_control: np.ndarray, correct_treatment: np.ndarray, alpha: float = 0.05
) -> McNemarTest:
    """McNemar's test on per-record correctness of both models (two-sided).

    Only discordant pairs carry information. With b + c < MCNEMAR_EXACT_BELOW (25) the exact
    binomial test (p = 2 P[Binom(b + c, 1/2) <= min(b, c)], capped at 1) is used; otherwise the
    chi-square test with Edwards' continuity correction, (|b - c| - 1)^2 / (b + c), 1 df. The
    difference CI is the Wald interval for paired proportions: var = ((b + c)/n - d^2) / n.
    """
    from scipy.stats import binom, chi2

    cc = np.asarray(correct_control, dtype=bool)
    ct = np.asarray(correct_treatment, dtype=bool)
    if cc.shape != ct.shape or cc.ndim != 1 or cc.size == 0:
        raise ValueError(
            "correct_control and correct_treatment must be equal-length, non-empty 1-D"
        )
    n = int(cc.size)
    b = int(np.sum(cc & ~ct))
    c = int(np.sum(~cc & ct))
    if b + c < MCNEMAR_EXACT_BELOW:
        method: Literal["exact", "chi2"] = "exact"
        statistic = float(min(b, c))
        p_value = min(1.0, 2 * float(binom.cdf(min(b, c), b + c, 0.5)))
    else:
        method = "chi2"
        statistic = (abs(b - c) - 1) ** 2 / (b + c)
        p_value = float(chi2.sf(statistic, 1))
    diff = (c - b) / n
    half = _z(alpha) * math.sqrt(max((b + c) / n - diff**2, 0.0) / n)
    return McNemarTest(
        n=n,
        both_correct=int(np.sum(cc & ct)),
        control_only=b,
        treatment_only=c,
        both_wrong=int(np.sum(~cc & ~ct)),
        accuracy_control=float(cc.mean()),
        accuracy_treatment=float(ct.mean()),
        difference=diff,
        ci_difference=(diff - half, diff + half),
        statistic=float(statistic),
        p_value=p_value,
        method=method,
        alpha=alpha,
    )


# ---------------------------------------------------------------------------------------------
# Bootstrap tests for ROC AUC and log loss


def _resampled_auc(y: np.ndarray, score: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """ROC AUC of each resample (row of record indices), ties counted 1/2 (Mann-Whitney U).

    Records are grouped by distinct score once; each resample then only counts positives and
    negatives per group (one bincount), so nothing is re-sorted per resample.
    """
    _, group = np.unique(score, return_inverse=True)
    n_groups = int(group.max()) + 1
    rows = draws.shape[0]
    cell = (group[draws] + (np.arange(rows) * n_groups)[:, None]).ravel()
    total = np.bincount(cell, minlength=rows * n_groups).reshape(rows, n_groups)
    pos = np.bincount(cell, weights=y[draws].ravel(), minlength=rows * n_groups)
    pos = pos.reshape(rows, n_groups)
    neg = total - pos
    neg_below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def _per_record_log_loss(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    # Clip to machine epsilon as scikit-learn's log_loss does, so a hard 0/1 score is finite.
    eps = np.finfo(np.float64).eps
    p = np.clip(score, eps, 1 - eps)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def _metric(name: str, y: np.ndarray, score: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The metric on each resample; draws is (resamples, n) record indices."""
    if name == "roc_auc":
        return _resampled_auc(y, score, draws)
    return _per_record_log_loss(y, score)[draws].mean(axis=1)


def _all_records(n: int) -> np.ndarray:
    return np.arange(n)[None, :]


@dataclass(frozen=True)
class BootstrapTest:
    """Percentile-bootstrap comparison of a metric, treatment minus control."""

    metric: str
    paired: bool
    n_control: int
    n_treatment: int
    control: float
    treatment: float
    difference: float  # treatment - control
    ci_difference: tuple[float, float]
    p_value: float
    n_resamples: int
    n_valid: int  # resamples where the metric is defined (AUC needs both classes)
    seed: int
    alpha: float

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "roc_auc"

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    @property
    def treatment_better(self) -> bool:
        return self.difference > 0 if self.higher_is_better else self.difference < 0


def _check_scores(y: np.ndarray, score: np.ndarray, metric: str | None = None) -> None:
    if y.ndim != 1 or y.shape != score.shape or y.size == 0:
        raise ValueError("y_true and scores must be equal-length, non-empty 1-D arrays")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must be 0/1")
    if not (np.isfinite(score).all() and (score >= 0).all() and (score <= 1).all()):
        raise ValueError("scores must be probabilities in [0, 1] without NaN")
    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if metric == "roc_auc" and np.unique(y).size < 2:
        raise ValueError("ROC AUC needs both classes in y_true")


def _summarize(
    metric: str,
    paired: bool,
    sizes: tuple[int, int],
    point: tuple[float, float],
    diffs: np.ndarray,
    n_resamples: int,
    alpha: float,
    seed: int,
) -> BootstrapTest:
    valid = diffs[np.isfinite(diffs)]
    if valid.size == 0:
        raise ValueError(f"no bootstrap resample had a defined {metric}")
    low, high = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
    # Two-sided p-value by inverting the percentile interval (the alpha at which it touches 0),
    # with the +1 correction so a finite bootstrap never reports p = 0 (Davison & Hinkley 1997).
    below = (np.sum(valid <= 0) + 1) / (valid.size + 1)
    above = (np.sum(valid >= 0) + 1) / (valid.size + 1)
    return BootstrapTest(
        metric=metric,
        paired=paired,
        n_control=sizes[0],
        n_treatment=sizes[1],
        control=float(point[0]),
        treatment=float(point[1]),
        difference=float(point[1] - point[0]),
        ci_difference=(float(low), float(high)),
        p_value=float(min(1.0, 2 * min(below, above))),
        n_resamples=n_resamples,
        n_valid=int(valid.size),
        seed=seed,
        alpha=alpha,
    )


def bootstrap_difference(
    y_control: np.ndarray,
    score_control: np.ndarray,
    y_treatment: np.ndarray,
    score_treatment: np.ndarray,
    metric: str = "roc_auc",
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapTest:
    """Bootstrap test of metric(treatment) - metric(control) on two independent arms.

    Each arm is resampled separately (the arms share no records); percentile CI, seeded.
    """
    y_c, s_c = np.asarray(y_control, dtype=np.int8), np.asarray(score_control, dtype=np.float64)
    y_t, s_t = np.asarray(y_treatment, dtype=np.int8), np.asarray(score_treatment, dtype=np.float64)
    _check_scores(y_c, s_c, metric)
    _check_scores(y_t, s_t, metric)
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CELLS // max(y_c.size, y_t.size))
    diffs = []
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        d_c = rng.integers(0, y_c.size, size=(rows, y_c.size))
        d_t = rng.integers(0, y_t.size, size=(rows, y_t.size))
        diffs.append(_metric(metric, y_t, s_t, d_t) - _metric(metric, y_c, s_c, d_c))
    point = (
        _metric(metric, y_c, s_c, _all_records(y_c.size))[0],
        _metric(metric, y_t, s_t, _all_records(y_t.size))[0],
    )
    return _summarize(
        metric, False, (y_c.size, y_t.size), point, np.concatenate(diffs), n_resamples, alpha, seed
    )


def paired_bootstrap_difference(
    y_true: np.ndarray,
    score_control: np.ndarray,
    score_treatment: np.ndarray,
    metric: str = "roc_auc",
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapTest:
    """Bootstrap test of metric(treatment) - metric(control) when both models scored each record.

    Records are resampled with both models' scores together, so the correlation between the
    models cancels out of the difference (much narrower CI than the independent bootstrap).
    """
    y = np.asarray(y_true, dtype=np.int8)
    s_c = np.asarray(score_control, dtype=np.float64)
    s_t = np.asarray(score_treatment, dtype=np.float64)
    _check_scores(y, s_c, metric)
    _check_scores(y, s_t, metric)
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CELLS // y.size)
    diffs = []
    for start in range(0, n_resamples, chunk):
        # One set of record indices for both models: the pairs stay together.
        draws = rng.integers(0, y.size, size=(min(chunk, n_resamples - start), y.size))
        diffs.append(_metric(metric, y, s_t, draws) - _metric(metric, y, s_c, draws))
    every = _all_records(y.size)
    point = (_metric(metric, y, s_c, every)[0], _metric(metric, y, s_t, every)[0])
    return _summarize(
        metric, True, (y.size, y.size), point, np.concatenate(diffs), n_resamples, alpha, seed
    )


# ---------------------------------------------------------------------------------------------
# Guardrails


def brier_score(y_true: np.ndarray, score: np.ndarray) -> float:
    """Mean squared error of the predicted probability (Brier 1950); lower is better."""
    return float(np.mean((np.asarray(score, float) - np.asarray(y_true, float)) ** 2))


def expected_calibration_error(y_true: np.ndarray, score: np.ndarray, n_bins: int = 10) -> float:
    """ECE over equal-width probability bins: sum_b (n_b / n) |mean(y_b) - mean(score_b)|.

    (Naeini et al. 2015; Guo et al. 2017.) A score of exactly 1 falls in the last bin.
    """
    y, s = np.asarray(y_true, float), np.asarray(score, float)
    bins = np.minimum((s * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, y, n_bins) - np.bincount(bins, s, n_bins))
    # |sum(y_b) - sum(s_b)| / n == (n_b / n) |mean(y_b) - mean(s_b)|
    return float(gap[counts > 0].sum() / y.size)


def predicted_positive_rate(score: np.ndarray, threshold: float) -> float:
    """Share of records predicted positive (score >= threshold)."""
    return float(np.mean(np.asarray(score, float) >= threshold))


@dataclass(frozen=True)
class GuardrailResult:
    """One guardrail: treatment vs control on a metric that must not move too far."""

    name: str
    control: float
    treatment: float
    delta: float  # treatment - control
    tolerance: float
    passed: bool
    rule: str


def check_guardrails(
    y_control: np.ndarray,
    score_control: np.ndarray,
    y_treatment: np.ndarray,
    score_treatment: np.ndarray,
    threshold: float | tuple[float, float],
    brier_tolerance: float | None = 0.01,
    ece_tolerance: float | None = 0.03,
    positive_rate_tolerance: float | None = 0.05,
) -> list[GuardrailResult]:
    """Point-estimate guardrails; a tolerance of None switches that guardrail off.

    Calibration must not degrade: Brier and ECE may rise by at most their tolerance. The predicted
    positive rate (score >= threshold) may move by at most its tolerance in either direction,
    since downstream consumers size their work on it. For paired data pass the same y twice.
    `threshold` is each model's own operating point: (control, treatment), or one for both.
    """
    cuts = threshold if isinstance(threshold, tuple) else (threshold, threshold)
    results = []
    for name, fn, tol, two_sided in (
        ("brier", brier_score, brier_tolerance, False),
        ("ece", expected_calibration_error, ece_tolerance, False),
        (
            "positive_rate",
            lambda _, s, cut: predicted_positive_rate(s, cut),
            positive_rate_tolerance,
            True,
        ),
    ):
        if tol is None:
            continue
        if name == "positive_rate":
            control = fn(y_control, score_control, cuts[0])
            treatment = fn(y_treatment, score_treatment, cuts[1])
        else:
            control, treatment = fn(y_control, score_control), fn(y_treatment, score_treatment)
        delta = treatment - control
        passed = abs(delta) <= tol if two_sided else delta <= tol
        rule = f"abs(delta) <= {tol:g}" if two_sided else f"delta <= {tol:g}"
        results.append(GuardrailResult(name, control, treatment, delta, tol, passed, rule))
    return results


# ---------------------------------------------------------------------------------------------
# Design, stopping rule and decision


@dataclass(frozen=True)
class ArmScores:
    """One arm of the split: labels (0/1) and the predicted P(delay) served to those records."""

    y_true: np.ndarray
    score: np.ndarray


@dataclass(frozen=True)
class PairedScores:
    """Shadow scoring: both models' predicted P(delay) on the same records."""

    y_true: np.ndarray
    score_control: np.ndarray
    score_treatment: np.ndarray


@dataclass(frozen=True)
class ExperimentDesign:
    """Everything fixed before the experiment starts; the horizons follow from it.

    baseline_accuracy is the champion's accuracy (e.g. on its evaluation set); mde is the absolute
    accuracy gain worth detecting; discordant_rate is the assumed share of records on which exactly
    one model is correct (sizes the paired test). Tolerances of None switch a guardrail off.
    """

    baseline_accuracy: float
    # Each model's decision threshold (the model version's operating point); the treatment's
    # defaults to the control's.
    threshold: float
    mde: float = 0.02
    alpha: float = 0.05
    power: float = 0.80
    discordant_rate: float = 0.10
    treatment_threshold: float | None = None
    brier_tolerance: float | None = 0.01
    ece_tolerance: float | None = 0.03
    positive_rate_tolerance: float | None = 0.05
    secondary_metrics: tuple[str, ...] = METRICS
    n_resamples: int = 2000
    seed: int = 0
    freeze_at_horizon: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or not 0 < self.power < 1:
            raise ValueError(f"alpha and power must be in (0, 1): {self.alpha}, {self.power}")
        if self.mde <= 0:
            raise ValueError(f"mde is the accuracy gain to detect and must be > 0, got {self.mde}")
        if not 0 < self.threshold < 1 or not 0 < self.cuts[1] < 1 or self.n_resamples < 1:
            raise ValueError("threshold must be in (0, 1) and n_resamples >= 1")
        unknown = set(self.secondary_metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown secondary metric(s) {sorted(unknown)}; use {METRICS}")
        # Fail at construction, not at the horizon, if the horizons cannot be computed.
        _ = self.required_n_per_arm, self.required_n_paired

    @property
    def cuts(self) -> tuple[float, float]:
        """(control, treatment) decision thresholds."""
        treatment = self.threshold if self.treatment_threshold is None else self.treatment_threshold
        return self.threshold, treatment

    @property
    def required_n_per_arm(self) -> int:
        return required_sample_size(self.baseline_accuracy, self.mde, self.alpha, self.power)

    @property
    def required_n_paired(self) -> int:
        return required_paired_sample_size(self.mde, self.discordant_rate, self.alpha, self.power)


@dataclass(frozen=True)
class Horizon:
    """Fixed-horizon stopping rule: records available vs records the design requires."""

    available: int
    required: int
    analysed: int
    unit: str

    @property
    def reached(self) -> bool:
        return self.available >= self.required


@dataclass(frozen=True)
class SplitAnalysis:
    horizon: Horizon
    accuracy: ProportionTest
    secondary: tuple[BootstrapTest, ...]


@dataclass(frozen=True)
class PairedAnalysis:
    horizon: Horizon
    accuracy: McNemarTest
    secondary: tuple[BootstrapTest, ...]


def _horizon(available: int, required: int, freeze: bool, unit: str) -> Horizon:
    analysed = required if freeze and available >= required else available
    return Horizon(available=available, required=required, analysed=analysed, unit=unit)


def _arrays(*values: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(v, dtype=np.float64) for v in values]


def _computable(metrics: tuple[str, ...], *labels: np.ndarray) -> tuple[str, ...]:
    """The secondary metrics defined on these labels: ROC AUC needs both classes in each."""
    both = all(np.unique(y).size == 2 for y in labels)
    return tuple(m for m in metrics if m != "roc_auc" or both)


def _analyse_split(
    control: ArmScores, treatment: ArmScores, design: ExperimentDesign
) -> tuple[SplitAnalysis, list[np.ndarray]]:
    y_c, s_c, y_t, s_t = _arrays(control.y_true, control.score, treatment.y_true, treatment.score)
    _check_scores(y_c, s_c)
    _check_scores(y_t, s_t)
    horizon = _horizon(
        min(y_c.size, y_t.size),
        design.required_n_per_arm,
        design.freeze_at_horizon,
        "records per arm (smaller arm)",
    )
    if horizon.reached and design.freeze_at_horizon:
        y_c, s_c, y_t, s_t = (a[: horizon.required] for a in (y_c, s_c, y_t, s_t))
    correct_c = int(np.sum((s_c >= design.cuts[0]) == y_c))
    correct_t = int(np.sum((s_t >= design.cuts[1]) == y_t))
    accuracy = two_proportion_ztest(
        correct_c, y_c.size, correct_t, y_t.size, design.alpha, design.power
    )
    secondary = tuple(
        bootstrap_difference(y_c, s_c, y_t, s_t, m, design.n_resamples, design.alpha, design.seed)
        for m in _computable(design.secondary_metrics, y_c, y_t)
    )
    return SplitAnalysis(horizon, accuracy, secondary), [y_c, s_c, y_t, s_t]


def _analyse_paired(
    paired: PairedScores, design: ExperimentDesign
) -> tuple[PairedAnalysis, list[np.ndarray]]:
    y, s_c, s_t = _arrays(paired.y_true, paired.score_control, paired.score_treatment)
    _check_scores(y, s_c)
    _check_scores(y, s_t)
    horizon = _horizon(y.size, design.required_n_paired, design.freeze_at_horizon, "paired records")
    if horizon.reached and design.freeze_at_horizon:
        y, s_c, s_t = (a[: horizon.required] for a in (y, s_c, s_t))
    accuracy = mcnemar_test(
        (s_c >= design.cuts[0]) == y, (s_t >= design.cuts[1]) == y, design.alpha
    )
    secondary = tuple(
        paired_bootstrap_difference(y, s_c, s_t, m, design.n_resamples, design.alpha, design.seed)
        for m in _computable(design.secondary_metrics, y)
    )
    return PairedAnalysis(horizon, accuracy, secondary), [y, s_c, y, s_t]


def _pct(x: float) -> str:
    return f"{x:.4f}"


def _describe_accuracy(test: ProportionTest | McNemarTest, role: str) -> str:
    if isinstance(test, McNemarTest):
        name = f"paired McNemar test, {test.method}"
        rates = (test.accuracy_control, test.accuracy_treatment)
    else:
        name = "split two-proportion z-test"
        rates = (test.rate_control, test.rate_treatment)
    low, high = test.ci_difference
    verdict = (
        ("significantly better" if test.treatment_better else "significantly worse")
        if test.significant
        else "not significant"
    )
    return (
        f"{name} ({role}): accuracy treatment {_pct(rates[1])} vs control {_pct(rates[0])}, "
        f"difference {test.difference:+.4f} ({1 - test.alpha:.0%} CI [{low:+.4f}, {high:+.4f}]), "
        f"p = {test.p_value:.3g} -> {verdict}"
    )


@dataclass(frozen=True)
class ABDecision:
    """The outcome of an A/B comparison with every number that led to it."""

    decision: Decision
    reasons: tuple[str, ...]
    deciding_test: Literal["paired", "split"]
    design: ExperimentDesign
    split: SplitAnalysis | None
    paired: PairedAnalysis | None
    guardrails: tuple[GuardrailResult, ...] = field(default_factory=tuple)

    @property
    def horizon(self) -> Horizon:
        analysis = self.paired if self.deciding_test == "paired" else self.split
        assert analysis is not None
        return analysis.horizon

    def to_metadata(self) -> dict[str, float | int | str]:
        """Flat dict of floats, ints and strings (for Dagster metadata / MLflow params)."""
        d = self.design
        out: dict[str, float | int | str] = {
            "decision": self.decision,
            "deciding_test": self.deciding_test,
            "reasons": "\n".join(self.reasons),
            "horizon_available": self.horizon.available,
            "horizon_required": self.horizon.required,
            "horizon_analysed": self.horizon.analysed,
            "horizon_reached": int(self.horizon.reached),
            "design_baseline_accuracy": d.baseline_accuracy,
            "design_mde": d.mde,
            "design_alpha": d.alpha,
            "design_power": d.power,
            "design_discordant_rate": d.discordant_rate,
            "design_required_n_per_arm": d.required_n_per_arm,
            "design_required_n_paired": d.required_n_paired,
        }
        if self.split is not None:
            t = self.split.accuracy
            out |= {
                "split_n_control": t.n_control,
                "split_n_treatment": t.n_treatment,
                "split_accuracy_control": t.rate_control,
                "split_accuracy_treatment": t.rate_treatment,
                "split_accuracy_diff": t.difference,
                "split_accuracy_diff_ci_low": t.ci_difference[0],
                "split_accuracy_diff_ci_high": t.ci_difference[1],
                "split_z": t.z,
                "split_p_value": t.p_value,
                "split_cohens_h": t.cohens_h,
                "split_mde": t.mde,
                "split_horizon_reached": int(self.split.horizon.reached),
            }
            out |= _secondary_metadata("split", self.split.secondary)
        if self.paired is not None:
            m = self.paired.accuracy
            out |= {
                "paired_n": m.n,
                "paired_control_only_correct": m.control_only,
                "paired_treatment_only_correct": m.treatment_only,
                "paired_discordant_rate": m.discordant_rate,
                "paired_accuracy_control": m.accuracy_control,
                "paired_accuracy_treatment": m.accuracy_treatment,
                "paired_accuracy_diff": m.difference,
                "paired_accuracy_diff_ci_low": m.ci_difference[0],
                "paired_accuracy_diff_ci_high": m.ci_difference[1],
                "paired_statistic": m.statistic,
                "paired_p_value": m.p_value,
                "paired_method": m.method,
                "paired_horizon_reached": int(self.paired.horizon.reached),
            }
            out |= _secondary_metadata("paired", self.paired.secondary)
        for g in self.guardrails:
            out |= {
                f"guardrail_{g.name}_control": g.control,
                f"guardrail_{g.name}_treatment": g.treatment,
                f"guardrail_{g.name}_delta": g.delta,
                f"guardrail_{g.name}_tolerance": g.tolerance,
                f"guardrail_{g.name}_passed": int(g.passed),
            }
        return out

    def to_markdown(self) -> str:
        """A report showing both tests side by side and which one decides."""
        other = "split" if self.deciding_test == "paired" else "paired"
        lines = [
            f"## A/B decision: **{self.decision}**",
            "",
            f"Deciding test: **{self.deciding_test}**"
            + (
                " (both models scored the same records, so it needs far fewer records); "
                f"the {other} test is reported beside it."
                if self.deciding_test == "paired"
                else "."
            ),
            "",
            *[f"- {r}" for r in self.reasons],
            "",
            "### Primary metric: accuracy",
            "",
            "| test | role | horizon (n of N) | n control / treatment | control | treatment "
            "| difference [CI] | statistic | p-value |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        secondary: list[tuple[str, BootstrapTest]] = []
        for kind, analysis in (("paired", self.paired), ("split", self.split)):
            if analysis is None:
                continue
            role = "deciding" if kind == self.deciding_test else "reported"
            h = analysis.horizon
            t = analysis.accuracy
            if isinstance(t, McNemarTest):
                name, ns = f"McNemar ({t.method})", f"{t.n} / {t.n}"
                rates, stat = (t.accuracy_control, t.accuracy_treatment), f"{t.statistic:.3f}"
            else:
                name, ns = "two-proportion z", f"{t.n_control} / {t.n_treatment}"
                rates, stat = (t.rate_control, t.rate_treatment), f"z = {t.z:.3f}"
            lines.append(
                f"| {name} | {role} | {h.available} of {h.required} | {ns} | {_pct(rates[0])} "
                f"| {_pct(rates[1])} | {t.difference:+.4f} [{t.ci_difference[0]:+.4f}, "
                f"{t.ci_difference[1]:+.4f}] | {stat} | {t.p_value:.3g} |"
            )
            secondary += [(kind, b) for b in analysis.secondary]
        if secondary:
            lines += [
                "",
                "### Secondary metrics (percentile bootstrap, not deciding)",
                "",
                "| data | metric | control | treatment | difference [CI] | p-value | resamples |",
                "|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {kind} | {b.metric} | {b.control:.4f} | {b.treatment:.4f} | "
                f"{b.difference:+.4f} [{b.ci_difference[0]:+.4f}, {b.ci_difference[1]:+.4f}] | "
                f"{b.p_value:.3g} | {b.n_valid} (seed {b.seed}) |"
                for kind, b in secondary
            ]
        if self.guardrails:
            lines += [
                "",
                f"### Guardrails (on the {self.deciding_test} data)",
                "",
                "| guardrail | control | treatment | delta | rule | passed |",
                "|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {g.name} | {g.control:.4f} | {g.treatment:.4f} | {g.delta:+.4f} | {g.rule} "
                f"| {'yes' if g.passed else '**no**'} |"
                for g in self.guardrails
            ]
        d = self.design
        lines += [
            "",
            "### Design (fixed horizon)",
            "",
            f"baseline accuracy {d.baseline_accuracy:.4f}, MDE {d.mde:+.4f}, alpha {d.alpha:g}, "
            f"power {d.power:g}, assumed discordant rate {d.discordant_rate:g} -> "
            f"N = {d.required_n_per_arm} per arm (split), {d.required_n_paired} paired records. "
            "Before N the decision is inconclusive whatever the p-value; at N only the first N "
            "records are analysed.",
        ]
        return "\n".join(lines)


def _secondary_metadata(prefix: str, tests: tuple[BootstrapTest, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for b in tests:
        key = f"{prefix}_{b.metric}"
        out |= {
            f"{key}_control": b.control,
            f"{key}_treatment": b.treatment,
            f"{key}_diff": b.difference,
            f"{key}_diff_ci_low": b.ci_difference[0],
            f"{key}_diff_ci_high": b.ci_difference[1],
            f"{key}_p_value": b.p_value,
        }
    return out


def decide(
    design: ExperimentDesign,
    *,
    control: ArmScores | None = None,
    treatment: ArmScores | None = None,
    paired: PairedScores | None = None,
) -> ABDecision:
    """Promote, keep or stay inconclusive, under the fixed-horizon stopping rule.

    Pass the split arms (control and treatment), the shadow-scored paired records, or both, each
    in arrival order. The paired test decides when given (it needs far fewer records); otherwise
    the split test does. Guardrails are computed on the deciding data.
    - before the deciding test's horizon: "inconclusive", whatever the p-value;
    - at the horizon: "keep" if a guardrail fails or the treatment is significantly worse,
      "promote" if it is significantly better, otherwise "inconclusive".
    """
    if (control is None) != (treatment is None):
        raise ValueError("pass both control and treatment arms, or neither")
    if control is None and paired is None:
        raise ValueError("nothing to compare: pass the split arms, the paired scores, or both")
    split_analysis, split_data = (
        _analyse_split(control, treatment, design) if control is not None else (None, None)
    )
    paired_analysis, paired_data = (
        _analyse_paired(paired, design) if paired is not None else (None, None)
    )
    deciding: SplitAnalysis | PairedAnalysis
    if paired_analysis is not None:
        deciding, data, deciding_name = paired_analysis, paired_data, "paired"
    else:
        assert split_analysis is not None
        deciding, data, deciding_name = split_analysis, split_data, "split"
    guardrails = tuple(
        check_guardrails(
            *data,
            threshold=design.cuts,
            brier_tolerance=design.brier_tolerance,
            ece_tolerance=design.ece_tolerance,
            positive_rate_tolerance=design.positive_rate_tolerance,
        )
    )
    h, primary = deciding.horizon, deciding.accuracy
    failed = [g for g in guardrails if not g.passed]
    reasons: list[str] = []
    if h.reached:
        reasons.append(
            f"horizon reached: {h.available} of {h.required} {h.unit}; analysed the first "
            f"{h.analysed}"
        )
    else:
        reasons.append(
            f"horizon not reached: {h.available} of {h.required} {h.unit}; a fixed-horizon "
            "design decides only at the horizon, whatever the p-value"
        )
    reasons.append(_describe_accuracy(primary, "deciding"))
    reasons += [
        f"guardrail {g.name} {'failing so far' if not h.reached else 'failed'}: treatment "
        f"{g.treatment:.4f} vs control {g.control:.4f}, delta {g.delta:+.4f} breaks {g.rule}"
        for g in failed
    ]
    if guardrails and not failed:
        reasons.append(f"guardrails passed: {', '.join(g.name for g in guardrails)}")

    decision: Decision
    if not h.reached:
        decision = "inconclusive"
    elif failed or (primary.significant and not primary.treatment_better):
        decision = "keep"
        if failed:
            reasons.append("keep the champion: a guardrail failed")
        if primary.significant and not primary.treatment_better:
            reasons.append("keep the champion: the challenger is significantly worse")
    elif primary.significant:
        decision = "promote"
        reasons.append("promote the challenger: significantly better accuracy at the horizon")
    else:
        decision = "inconclusive"
        reasons.append(
            f"no significant accuracy difference at the horizon (p >= {design.alpha:g}); "
            "the champion stays unless the design changes"
        )

    reported = split_analysis if deciding_name == "paired" else None
    if reported is not None:
        reasons.append(_describe_accuracy(reported.accuracy, "reported beside, not deciding"))
        if (
            reported.accuracy.significant
            and primary.significant
            and reported.accuracy.treatment_better != primary.treatment_better
        ):
            reasons.append("warning: the split and paired tests disagree in direction")
    reasons += [
        f"note: {b.metric} is significantly worse for the treatment on the {deciding_name} data "
        f"(difference {b.difference:+.4f}, p = {b.p_value:.3g})"
        for b in deciding.secondary
        if b.significant and not b.treatment_better
    ]
    if isinstance(primary, McNemarTest) and primary.discordant_rate > design.discordant_rate:
        reasons.append(
            f"note: observed discordant rate {primary.discordant_rate:.3f} exceeds the assumed "
            f"{design.discordant_rate:g}, so the paired test has less power than planned"
        )
    return ABDecision(
        decision=decision,
        reasons=tuple(reasons),
        deciding_test=deciding_name,
        design=design,
        split=split_analysis,
        paired=paired_analysis,
        guardrails=guardrails,
    )
