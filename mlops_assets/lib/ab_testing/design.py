"""The experiment's design, fixed before its first day and stored with it.

The promotion margin: a challenger is promoted only when it is confidently better than the
champion by at least `min_improvement` (relative) of the champion's log loss before the experiment.
Two fits of the same model on the same rows with different seeds differ by 0.3-0.5% of log loss on
the real Jul-Dec 2013 days (t = 3 over 184 days: a real but worthless difference); with no margin
the daily looks detect it in 20-40% of 8-week windows (bench/ab_validity.py). A refit's seed
noise is not an improvement worth a model change; 1% is the default.

The minimum detectable effect (MDE) comes from the champion's own day-to-day variation before the
experiment: on the pre-experiment days the champion's records are split by the experiment's own
hash, and the daily difference in mean log loss between the would-be treatment and control halves
is an A/A difference, the noise the split comparison faces. The deciding comparison is paired (both
models score every record), whose daily differences vary less, so this MDE is conservative.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from mlops_assets.lib.ab_testing.assignment import DEFAULT_SHARES, SRM_ALPHA, validate_shares
from mlops_assets.lib.ab_testing.inference import Records, daily_figures
from mlops_assets.lib.ab_testing.sequential import boundary_factor

PRIMARY_METRIC = "log_loss"  # per-record log loss, a proper scoring rule; lower is better
SECONDARY_METRIC = "roc_auc"
# Fewer pre-experiment days than this and the day-to-day spread is not estimated: MDE not judged.
MIN_BASELINE_DAYS = 7


@dataclass(frozen=True)
class ExperimentDesign:
    """Everything fixed before the experiment starts. Stored as one row (see `as_row`)."""

    experiment: str
    first_day: dt.date
    alpha: float = 0.05
    power: float = 0.80
    min_runtime_weeks: int = 2
    max_runtime_weeks: int = 8
    control_share: float = DEFAULT_SHARES["control"]
    treatment_share: float = DEFAULT_SHARES["treatment"]
    excluded_share: float = DEFAULT_SHARES["excluded"]
    # Guardrails (see guardrails.py): log of predicted/actual positive rate, calibration error.
    positive_rate_tolerance: float = 0.25
    calibration_tolerance: float = 0.02
    min_improvement: float = 0.01  # relative to baseline_log_loss; the promotion margin
    srm_alpha: float = SRM_ALPHA
    n_resamples: int = 2000
    seed: int = 0
    primary_metric: str = PRIMARY_METRIC
    secondary_metric: str = SECONDARY_METRIC
    # The champion's mean daily primary loss before the start (log loss; for a regression, its
    # squared or absolute error: `primary_metric` names it).
    baseline_log_loss: float = math.nan
    baseline_days: int = 0
    baseline_daily_sd: float = math.nan  # sd of the champion's A/A daily log-loss difference
    mde: float = math.nan  # true log-loss reduction promoted with probability `power` by max days

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or not 0 < self.power < 1:
            raise ValueError(f"alpha and power must be in (0, 1): {self.alpha}, {self.power}")
        if not 1 <= self.min_runtime_weeks <= self.max_runtime_weeks:
            raise ValueError(
                "need 1 <= min_runtime_weeks <= max_runtime_weeks, got "
                f"{self.min_runtime_weeks}, {self.max_runtime_weeks}"
            )
        validate_shares(self.shares)
        if self.control_share <= 0 or self.treatment_share <= 0:
            raise ValueError("both control and treatment need a positive share")
        if not self.min_improvement >= 0:
            raise ValueError(f"min_improvement must be >= 0, got {self.min_improvement}")
        if self.positive_rate_tolerance <= 0 or self.calibration_tolerance <= 0:
            raise ValueError("guardrail tolerances must be positive")

    @property
    def shares(self) -> dict[str, float]:
        return {
            "control": self.control_share,
            "treatment": self.treatment_share,
            "excluded": self.excluded_share,
        }

    @property
    def min_days(self) -> int:
        """Whole weeks, so every weekday is seen before any decision."""
        return 7 * self.min_runtime_weeks

    @property
    def max_days(self) -> int:
        return 7 * self.max_runtime_weeks

    @property
    def margin(self) -> float:
        """Absolute log-loss reduction a promotion must confidently exceed."""
        if not math.isfinite(self.baseline_log_loss):
            raise ValueError(f"{self.experiment}: the design has no baseline log loss")
        return self.min_improvement * self.baseline_log_loss

    def as_row(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, object]) -> ExperimentDesign:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in row.items() if k in names}
        first = values["first_day"]
        values["first_day"] = first.date() if isinstance(first, dt.datetime) else first
        return cls(**values)  # type: ignore[arg-type]


def minimum_detectable_effect(
    daily_sd: float, days: int, alpha: float, power: float, margin: float, t_star: int
) -> float:
    """The true log-loss reduction promoted by `days` with probability `power`.

    Promotion needs the sequence's upper bound below -margin: mean + sd * factor(days) < -margin.
    The mean's own spread is sd / sqrt(days), so power needs
    MDE = margin + sd * (factor(days) + z_power / sqrt(days)) (normal approximation).
    """
    from scipy.stats import norm

    factor = float(boundary_factor(days, alpha, t_star))
    return margin + daily_sd * (factor + float(norm.ppf(power)) / math.sqrt(days))


def design_experiment(
    experiment: str,
    first_day: dt.date,
    baseline: Records | None,
    reference_log_loss: float,
    **settings,
) -> ExperimentDesign:
    """The design from the champion's labelled records BEFORE the first day.

    `baseline` holds the champion's pre-experiment records (its score in `score_control`, arms by
    this experiment's hash); `reference_log_loss` (e.g. the champion's test log loss) stands in
    for the baseline level when there are fewer than MIN_BASELINE_DAYS such days, and the MDE is
    then not judged (NaN; the report says so; the sequential rule itself does not need it).
    `settings` are other ExperimentDesign fields (alpha, power, runtimes, shares, tolerances).
    """
    base = ExperimentDesign(experiment, first_day, **settings)
    days = 0
    if baseline is not None and baseline.day.size:
        if (baseline.day >= np.datetime64(first_day)).any():
            raise ValueError(f"{experiment}: baseline records must all precede {first_day}")
        champion = baseline
        daily = daily_figures(
            Records(
                champion.day,
                champion.arm,
                champion.label,
                champion.score_control,
                champion.score_control,  # A/A: the champion against itself
                champion.threshold_control,
                champion.threshold_control,
                champion.loss,
            )
        )
        diffs = daily.split_diff[np.isfinite(daily.split_diff)]
        days = int(diffs.size)
    if days < MIN_BASELINE_DAYS:
        if not math.isfinite(reference_log_loss) or reference_log_loss <= 0:
            raise ValueError(
                f"{experiment}: {days} champion days before {first_day} and no reference log "
                "loss: the promotion margin cannot be set"
            )
        return dataclasses.replace(base, baseline_log_loss=reference_log_loss, baseline_days=days)
    sd = float(np.std(diffs, ddof=1))
    level = float(np.mean(daily.log_loss_control))
    design = dataclasses.replace(
        base, baseline_log_loss=level, baseline_days=days, baseline_daily_sd=sd
    )
    mde = minimum_detectable_effect(
        sd, design.max_days, design.alpha, design.power, design.margin, design.min_days
    )
    return dataclasses.replace(design, mde=mde)
