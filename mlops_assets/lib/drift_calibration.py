"""Drift judged against the reference's own day-to-day variation (calibrated thresholds).

A fixed distance threshold cannot be right for every column: one day of weather is always far
from six months of weather, while the hour-of-day mix barely moves. So each column's score is
judged against a NULL distribution made from the reference itself: every day of the reference
window is scored against the rest of the window (leave-one-day-out), as if it were a new day.

Columns: the score of a numeric column is the normed Wasserstein distance (mean absolute
difference of the quantile functions on a grid, over the reference's standard deviation); of a
categorical column the Jensen-Shannon distance (base 2) of the category shares, missing values a
category of their own. Each column's log-score is standardised by the mean and standard deviation
of its null log-scores (z). The table statistic is the MAXIMUM z over the columns, and its alarm
threshold the `quantile` of that maximum over the null days: a max-statistic correction, so the
table-level false alarm rate is 1 - quantile whatever the number of columns, and a column is
named as drifted when its own z exceeds the same threshold.

A multivariate signal: a domain classifier (reference rows vs the day's rows) scored by
cross-validated ROC AUC, calibrated the same way on a sample of null days. It sees only the
RECORD-level columns (`record_level_columns`): a column whose values are mostly shared by the
records of a day (the day's weather: most of its variance lies between days) tells any day from
the rest by itself (AUC 0.999 on the reference's own days, measured), leaving no room above the
null. Those columns are still judged one by one. The classifier is linear (logistic regression
on standardised numbers and one-hot categories): it sees shifts of a level or a mix and is fast
enough to calibrate on many days.

Pure numpy / pandas; scikit-learn only inside `domain_auc`. Column names come from the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

QUANTILE_GRID = np.linspace(0.01, 0.99, 50)
MISSING = "__missing__"
_EPS = 1e-6  # scores can be exactly 0 (identical shares); keeps the log finite


def numeric_score(reference: np.ndarray, current: np.ndarray) -> float:
    """Normed Wasserstein-1 distance on a quantile grid; NaN when either side has no value."""
    ref = reference[np.isfinite(reference)]
    cur = current[np.isfinite(current)]
    if ref.size == 0 or cur.size == 0:
        return float("nan")
    scale = ref.std()
    if scale == 0:
        scale = 1.0
    diff = np.quantile(cur, QUANTILE_GRID) - np.quantile(ref, QUANTILE_GRID)
    return float(np.abs(diff).mean() / scale)


def categorical_score(reference: pd.Series, current: pd.Series) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of the category shares; NaN on an empty side."""
    if len(reference) == 0 or len(current) == 0:
        return float("nan")
    p = reference.astype(object).fillna(MISSING).value_counts(normalize=True)
    q = current.astype(object).fillna(MISSING).value_counts(normalize=True)
    p, q = p.align(q, fill_value=0.0)
    p, q = p.to_numpy(), q.to_numpy()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float((a[mask] * np.log2(a[mask] / m[mask])).sum())

    return float(np.sqrt(max(0.5 * kl(p) + 0.5 * kl(q), 0.0)))


def column_scores(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
) -> dict[str, float]:
    """Each column's drift score of `current` against `reference`."""
    scores = {
        c: numeric_score(
            reference[c].to_numpy(dtype=float, na_value=np.nan),
            current[c].to_numpy(dtype=float, na_value=np.nan),
        )
        for c in numeric
    }
    scores |= {c: categorical_score(reference[c], current[c]) for c in categorical}
    return scores


def _sample(frame: pd.DataFrame, rows: int | None, seed: int) -> pd.DataFrame:
    return frame if rows is None or len(frame) <= rows else frame.sample(rows, random_state=seed)


def null_scores(
    reference: pd.DataFrame,
    *,
    date_column: str,
    numeric: Sequence[str],
    categorical: Sequence[str],
    sample_rows: int | None = 20_000,
    min_rows: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """Leave-one-day-out scores: one row per reference day (index: the day), one column per
    feature. Each day (all its rows) is scored against a seeded sample of the OTHER days; days
    with fewer than `min_rows` rows are left out (a tiny day's scores are not comparable)."""
    days = reference[date_column]
    sample = _sample(reference, sample_rows, seed)
    rows = {}
    for day, current in reference.groupby(days):
        if len(current) < min_rows:
            continue
        rest = sample[sample[date_column] != day]
        rows[pd.Timestamp(day)] = column_scores(rest, current, numeric, categorical)
    return pd.DataFrame.from_dict(rows, orient="index").sort_index()


@dataclass(frozen=True)
class Calibration:
    """What judging a day needs: each column's null log-score mean and sd, the threshold on the
    max z, the domain classifier's AUC threshold (NaN: not calibrated), and their provenance."""

    log_mean: dict[str, float]
    log_sd: dict[str, float]
    threshold: float
    quantile: float
    n_null_days: int
    domain_threshold: float = float("nan")
    n_domain_days: int = 0

    @property
    def columns(self) -> list[str]:
        return list(self.log_mean)


def standardise(scores: pd.DataFrame | pd.Series, log_mean, log_sd) -> pd.DataFrame | pd.Series:
    """z of log-scores against the null's mean and sd (columns with sd 0 get sd 1)."""
    mean = pd.Series(log_mean)
    sd = pd.Series(log_sd).replace(0.0, 1.0)
    return (np.log(scores.astype(float) + _EPS) - mean) / sd


def calibrate(
    null: pd.DataFrame, quantile: float = 0.99, domain_null: Sequence[float] = ()
) -> Calibration:
    """Thresholds from the null scores (`null_scores`) and the domain classifier's null AUCs."""
    if not 0.5 <= quantile < 1:
        raise ValueError(f"quantile must be in [0.5, 1), got {quantile}")
    null = null.dropna(axis=1, how="all")
    if len(null) < 5:
        raise ValueError(f"{len(null)} null day(s): at least 5 are needed to calibrate")
    logs = np.log(null.astype(float) + _EPS)
    mean, sd = logs.mean().to_dict(), logs.std(ddof=1).fillna(0.0).to_dict()
    max_z = standardise(null, mean, sd).max(axis=1, skipna=True)
    domain = np.asarray([a for a in domain_null if np.isfinite(a)], dtype=float)
    return Calibration(
        log_mean=mean,
        log_sd=sd,
        threshold=float(np.quantile(max_z, quantile)),
        quantile=quantile,
        n_null_days=len(null),
        domain_threshold=float(np.quantile(domain, quantile)) if domain.size else float("nan"),
        n_domain_days=int(domain.size),
    )


@dataclass(frozen=True)
class DriftDecision:
    """One day judged: the column z-scores, which columns drifted, the table statistic (max z)
    and the domain classifier's AUC against their thresholds; `judged` False on a tiny day."""

    z: dict[str, float]
    drifted: list[str]
    max_z: float
    threshold: float
    column_alarm: bool
    domain_auc: float
    domain_threshold: float
    domain_alarm: bool
    n_rows: int
    judged: bool = True
    reason: str = ""
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def alarm(self) -> bool:
        return self.judged and (self.column_alarm or self.domain_alarm)

    @property
    def drift_share(self) -> float:
        return len(self.drifted) / len(self.z) if self.z else float("nan")


def judge(
    scores: dict[str, float],
    calibration: Calibration,
    *,
    n_rows: int,
    min_rows: int = 1,
    domain: float = float("nan"),
) -> DriftDecision:
    """A day's scores against the calibration. Below `min_rows` rows: not judged, never an
    alarm nor a pass (`reason` says why). Columns the calibration does not know are ignored."""
    known = {c: s for c, s in scores.items() if c in calibration.log_mean and np.isfinite(s)}
    z = standardise(pd.Series(known, dtype=float), calibration.log_mean, calibration.log_sd)
    z = z.dropna().to_dict()
    judged = n_rows >= min_rows and bool(z)
    reason = "" if judged else f"not judged: n={n_rows} < {min_rows}"
    max_z = max(z.values()) if z else float("nan")
    drifted = sorted((c for c, v in z.items() if v > calibration.threshold), key=lambda c: -z[c])
    domain_alarm = bool(np.isfinite(domain) and domain > calibration.domain_threshold)
    return DriftDecision(
        z={c: float(v) for c, v in z.items()},
        drifted=drifted if judged else [],
        max_z=float(max_z),
        threshold=calibration.threshold,
        column_alarm=judged and bool(drifted),
        domain_auc=float(domain),
        domain_threshold=calibration.domain_threshold,
        domain_alarm=judged and domain_alarm,
        n_rows=n_rows,
        judged=judged,
        reason=reason,
        scores=dict(scores),
    )


def record_level_columns(
    reference: pd.DataFrame, *, date_column: str, numeric: Sequence[str], max_between: float = 0.5
) -> list[str]:
    """Numeric columns whose between-day share of variance (variance of the day means over the
    total variance) is at most `max_between`: they vary within a day, not only between days."""
    kept = []
    for column in numeric:
        values = reference[column].astype(float)
        total = values.var()
        if not total or not np.isfinite(total):
            continue
        between = values.groupby(reference[date_column]).transform("mean").var()
        if between / total <= max_between:
            kept.append(column)
    return kept


def not_judged(scores: dict[str, float], *, n_rows: int, reason: str) -> DriftDecision:
    """A day that cannot be judged (e.g. no calibration): neither an alarm nor a pass."""
    nan = float("nan")
    return DriftDecision(
        z={},
        drifted=[],
        max_z=nan,
        threshold=nan,
        column_alarm=False,
        domain_auc=nan,
        domain_threshold=nan,
        domain_alarm=False,
        n_rows=n_rows,
        judged=False,
        reason=reason,
        scores=dict(scores),
    )


def domain_auc(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    reference_rows: int = 2000,
    folds: int = 3,
    seed: int = 0,
) -> float:
    """Cross-validated ROC AUC of a classifier telling `current` rows from `reference` rows
    (0.5: indistinguishable). NaN when either side has fewer rows than `folds`."""
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    reference = _sample(reference, reference_rows, seed)
    if len(reference) < folds or len(current) < folds:
        return float("nan")
    columns = [*numeric, *categorical]
    both = pd.concat([reference[columns], current[columns]], ignore_index=True)
    both[list(numeric)] = both[list(numeric)].astype(float)
    both[list(categorical)] = both[list(categorical)].astype(object).fillna(MISSING)
    y = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    model = make_pipeline(
        make_column_transformer(
            (make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), list(numeric)),
            (OneHotEncoder(handle_unknown="ignore", min_frequency=20), list(categorical)),
        ),
        LogisticRegression(max_iter=300),
    )
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed)
    proba = cross_val_predict(model, both, y, cv=splits, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, proba))


def domain_null(
    reference: pd.DataFrame,
    *,
    date_column: str,
    numeric: Sequence[str],
    categorical: Sequence[str],
    days: int = 30,
    min_rows: int = 1,
    seed: int = 0,
) -> dict[pd.Timestamp, float]:
    """Domain-classifier AUCs of `days` reference days (evenly spaced) against the rest."""
    grouped = {pd.Timestamp(d): g for d, g in reference.groupby(reference[date_column])}
    eligible = [d for d, g in grouped.items() if len(g) >= min_rows]
    picks = np.linspace(0, len(eligible) - 1, min(days, len(eligible))).round().astype(int)
    chosen = sorted({eligible[i] for i in picks})
    out = {}
    for day in chosen:
        rest = reference[reference[date_column] != day]
        out[day] = domain_auc(
            rest, grouped[day], numeric=numeric, categorical=categorical, seed=seed
        )
    return out
