"""Per-day figures: the day, not the record, is the unit of inference.

Both models score every record (shadow mode), so each day gives a PAIRED difference: the mean over
that day's experiment records of log loss(treatment) - log loss(control). The day's weather and
schedule move both models' losses together and cancel in the difference; what is left varies from
day to day, and the days (not the records) are the independent draws. The split comparison (each
record served by the model of its hashed arm) gives one more difference per day, treatment-arm
mean minus control-arm mean, whose interval is a cluster bootstrap over days.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

EXPERIMENT_ARMS = ("control", "treatment")  # "excluded" records are held out of the experiment


def per_record_log_loss(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    # Clip to machine epsilon as scikit-learn's log_loss does, so a hard 0/1 score is finite.
    eps = np.finfo(np.float64).eps
    p = np.clip(np.asarray(score, dtype=float), eps, 1 - eps)
    y = np.asarray(y, dtype=float)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties 1/2); NaN when one class is missing."""
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# The per-record loss of the primary metric: log loss of probabilities, or a regression target's
# squared or absolute error (lib/regression.py; the spec's `regression.ab_loss`).
LOSSES = ("log_loss", "squared_error", "absolute_error")


@dataclass(frozen=True)
class Records:
    """One experiment's labelled records, in any order: day, arm, label, both models' scores and
    each model's own threshold (its operating point, from the registry). With a regression
    `loss`, labels and scores are numbers and the thresholds NaN (a regression model has none)."""

    day: np.ndarray  # datetime64[D]
    arm: np.ndarray
    label: np.ndarray
    score_control: np.ndarray
    score_treatment: np.ndarray
    threshold_control: float
    threshold_treatment: float
    loss: str = "log_loss"

    def __post_init__(self) -> None:
        n = self.day.shape[0]
        arrays = (self.arm, self.label, self.score_control, self.score_treatment)
        if any(a.shape != (n,) for a in arrays):
            raise ValueError("records: every column must be 1-D of the same length")
        if self.loss not in LOSSES:
            raise ValueError(f"records: unknown loss {self.loss!r}; one of {LOSSES}")
        if self.loss != "log_loss":
            values = (self.label, self.score_control, self.score_treatment)
            if not all(np.isfinite(np.asarray(v, dtype=float)).all() for v in values):
                raise ValueError("records: labels and predictions must be finite numbers")
            return
        if not np.isin(self.label, (0, 1)).all():
            raise ValueError("records: labels must be 0/1 (drop unlabelled records first)")
        for name in ("score_control", "score_treatment"):
            s = getattr(self, name)
            if not (np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()):
                raise ValueError(f"records: {name} must be probabilities in [0, 1]")
        for name in ("threshold_control", "threshold_treatment"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"records: {name} must be in (0, 1), got {getattr(self, name)}")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, date_column: str, loss: str = "log_loss") -> Records:
        """From `ab_outcomes` rows (unlabelled rows dropped); one threshold per model required
        (none for a regression loss)."""
        labelled = frame[frame["label"].notna()]
        if loss != "log_loss":
            return cls(
                day=labelled[date_column].to_numpy().astype("datetime64[D]"),
                arm=labelled["arm"].to_numpy(dtype=object),
                label=labelled["label"].to_numpy(dtype=float),
                score_control=labelled["score_control"].to_numpy(dtype=float),
                score_treatment=labelled["score_treatment"].to_numpy(dtype=float),
                threshold_control=float("nan"),
                threshold_treatment=float("nan"),
                loss=loss,
            )
        thresholds = {}
        for column in ("threshold_control", "threshold_treatment"):
            values = labelled[column].dropna().unique()
            if len(values) != 1 or labelled[column].isna().any():
                raise ValueError(
                    f"{column}: expected one threshold for the model, found {sorted(values)} "
                    f"({int(labelled[column].isna().sum())} missing)"
                )
            thresholds[column] = float(values[0])
        return cls(
            day=labelled[date_column].to_numpy().astype("datetime64[D]"),
            arm=labelled["arm"].to_numpy(dtype=object),
            label=labelled["label"].to_numpy(dtype=np.int64),
            score_control=labelled["score_control"].to_numpy(dtype=float),
            score_treatment=labelled["score_treatment"].to_numpy(dtype=float),
            **thresholds,
        )

    def take(self, mask: np.ndarray) -> Records:
        return Records(
            self.day[mask],
            self.arm[mask],
            self.label[mask],
            self.score_control[mask],
            self.score_treatment[mask],
            self.threshold_control,
            self.threshold_treatment,
            self.loss,
        )

    def in_experiment(self) -> Records:
        return self.take(np.isin(self.arm, EXPERIMENT_ARMS))


@dataclass(frozen=True)
class DailyFigures:
    """One entry per day with experiment records, in day order (NaN where not computable)."""

    day: np.ndarray  # datetime64[D]
    n: np.ndarray  # experiment records (both arms)
    n_control: np.ndarray
    n_treatment: np.ndarray
    # The primary loss (log loss, or a regression's squared or absolute error), paired: both
    # models on all the day's experiment records.
    log_loss_control: np.ndarray
    log_loss_treatment: np.ndarray
    paired_diff: np.ndarray  # treatment - control; negative = the challenger is better
    split_diff: np.ndarray  # treatment arm scored by treatment - control arm by control
    roc_auc_diff: np.ndarray  # treatment - control; positive = better (NaN for a regression)

    def head(self, days: int) -> DailyFigures:
        return DailyFigures(**{k: v[:days] for k, v in self.__dict__.items()})


def record_loss(records: Records, score: np.ndarray) -> np.ndarray:
    """Each record's primary loss under `score` (the control's or the treatment's)."""
    if records.loss == "log_loss":
        return per_record_log_loss(records.label, score)
    from mlops_assets.lib.regression import per_record_loss

    return per_record_loss(records.label, score, records.loss.removesuffix("_error"))


def daily_figures(records: Records) -> DailyFigures:
    """Per-day paired and split differences of the experiment records (excluded arm dropped)."""
    r = records.in_experiment()
    days, code = np.unique(r.day, return_inverse=True)
    k = days.size
    loss_c, loss_t = record_loss(r, r.score_control), record_loss(r, r.score_treatment)
    in_c, in_t = r.arm == "control", r.arm == "treatment"
    n = np.bincount(code, minlength=k)
    n_c = np.bincount(code[in_c], minlength=k)
    n_t = np.bincount(code[in_t], minlength=k)
    mean_c = np.bincount(code, loss_c, k) / n
    mean_t = np.bincount(code, loss_t, k) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        split = np.bincount(code[in_t], loss_t[in_t], k) / n_t - (
            np.bincount(code[in_c], loss_c[in_c], k) / n_c
        )
    order = np.argsort(code, kind="stable")
    bounds = np.cumsum(n)[:-1]
    auc = np.array(
        np.full(k, np.nan)
        if r.loss != "log_loss"
        else [
            roc_auc(y, t) - roc_auc(y, c)
            for y, c, t in zip(
                np.split(r.label[order], bounds),
                np.split(r.score_control[order], bounds),
                np.split(r.score_treatment[order], bounds),
                strict=True,
            )
        ]
        if k
        else [],
        dtype=float,
    )
    return DailyFigures(days, n, n_c, n_t, mean_c, mean_t, mean_t - mean_c, split, auc)


@dataclass(frozen=True)
class DayInterval:
    """Mean over days of a daily difference with a day-level (cluster) bootstrap interval."""

    metric: str
    days: int
    mean: float
    low: float
    high: float
    n_resamples: int
    seed: int


def day_bootstrap(
    metric: str, daily: np.ndarray, alpha: float, n_resamples: int, seed: int
) -> DayInterval:
    """Percentile bootstrap of the mean daily difference, resampling whole days.

    Days without a value (NaN: an empty arm, a one-class day for ROC AUC) are left out. Fewer than
    two days give an unbounded interval: too little data is not judged.
    """
    x = np.asarray(daily, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        mean = float(x.mean()) if x.size else float("nan")
        return DayInterval(metric, int(x.size), mean, -np.inf, np.inf, n_resamples, seed)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return DayInterval(
        metric, int(x.size), float(x.mean()), float(low), float(high), n_resamples, seed
    )
