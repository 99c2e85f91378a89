"""The decision: promote / keep the champion / inconclusive, from the design and the daily looks.

Rule (fixed by the design before the first day):
- no decision before `min_days` (whole weeks, so every weekday is in);
- from then on, look every day at the confidence sequence of the mean daily paired log-loss
  difference (challenger - champion; m = the design's margin, the smallest improvement worth a
  change). The first day it lies entirely below -m decides "promote" (the challenger is better by
  more than m), unless a guardrail fails or is not judged, or the split fails its sample-ratio
  check -> "keep"; the first day it lies entirely above -m decides "keep" (the challenger cannot
  be better by m: worse, or not enough better to be worth it);
- no crossing by `max_days`: "inconclusive", stopped (the champion stays); before that,
  "inconclusive", extend.
Looks stop at the deciding day (or the maximum runtime), so re-running on later days gives the
same decision from the same days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mlops_assets.lib.ab_testing.assignment import SampleRatioCheck, sample_ratio_mismatch
from mlops_assets.lib.ab_testing.design import ExperimentDesign
from mlops_assets.lib.ab_testing.guardrails import GuardrailResult, check_guardrails
from mlops_assets.lib.ab_testing.inference import (
    DailyFigures,
    DayInterval,
    Records,
    daily_figures,
    day_bootstrap,
)
from mlops_assets.lib.ab_testing.sequential import Look, confidence_sequence

Decision = Literal["promote", "keep", "inconclusive"]


@dataclass(frozen=True)
class ABDecision:
    """The outcome with every figure that led to it (`report` renders it)."""

    design: ExperimentDesign
    decision: Decision
    status: str  # one line: why this decision, in plain words
    decided_on: dt.date | None  # the day whose look decided (None: no crossing)
    days_available: int
    daily: DailyFigures  # the analysed days
    looks: tuple[Look, ...]  # one per analysed day
    split: DayInterval
    secondary: DayInterval
    guardrails: tuple[GuardrailResult, ...]
    srm: SampleRatioCheck
    reasons: tuple[str, ...]

    @property
    def days_analysed(self) -> int:
        return len(self.looks)

    @property
    def primary(self) -> Look:
        return self.looks[-1]

    @property
    def first_day(self) -> dt.date:
        return _date(self.daily.day[0])

    @property
    def last_day(self) -> dt.date:
        return _date(self.daily.day[-1])


def _date(day: np.datetime64) -> dt.date:
    return dt.date.fromisoformat(str(day.astype("datetime64[D]")))


def first_crossing(looks: tuple[Look, ...], min_days: int, margin: float) -> int | None:
    """Index of the first look at or after min_days whose sequence excludes -margin."""
    return next(
        (
            i
            for i, look in enumerate(looks)
            if look.days >= min_days and (look.high < -margin or look.low > -margin)
        ),
        None,
    )


def decide(design: ExperimentDesign, records: Records) -> ABDecision:
    """Apply the design's rule to an experiment's labelled records (all arms, any order)."""
    daily_all = daily_figures(records)
    available = int(daily_all.day.size)
    if available == 0:
        raise ValueError(f"{design.experiment}: no labelled experiment records to analyse")
    cap = min(available, design.max_days)
    looks = confidence_sequence(daily_all.paired_diff[:cap], design.alpha, design.min_days)
    margin = design.margin
    crossing = first_crossing(looks, design.min_days, margin)
    analysed = cap if crossing is None else crossing + 1
    looks, daily = looks[:analysed], daily_all.head(analysed)
    last = daily.day[-1]
    seen = records.take(records.day <= last)
    exp = seen.in_experiment()
    srm = sample_ratio_mismatch(seen.arm, design.shares, design.srm_alpha)
    if records.loss == "log_loss":
        guardrails = check_guardrails(
            exp.label,
            exp.score_control,
            exp.score_treatment,
            exp.threshold_control,
            exp.threshold_treatment,
            design.positive_rate_tolerance,
            design.calibration_tolerance,
        )
    else:
        # A regression has no threshold, rate or calibration: its guardrail is the bias, with
        # the positive-rate tolerance as the share of the champion's MAE it may grow by (one
        # stored design schema for both tasks).
        from mlops_assets.lib.ab_testing.guardrails import MIN_RECORDS
        from mlops_assets.lib.regression import bias_guardrail

        guardrails = (
            bias_guardrail(
                exp.label,
                exp.score_control,
                exp.score_treatment,
                design.positive_rate_tolerance,
                MIN_RECORDS,
            ),
        )
    boot = (design.alpha, design.n_resamples, design.seed)
    split = day_bootstrap("split_log_loss_diff", daily.split_diff, *boot)
    secondary = day_bootstrap("roc_auc_diff", daily.roc_auc_diff, *boot)

    look = looks[-1]
    loss = design.primary_metric.replace("_", " ")
    figures = (
        f"mean daily {loss} difference (challenger - champion) {look.mean:+.5f}, "
        f"{1 - design.alpha:.0%} confidence sequence [{look.low:+.5f}, {look.high:+.5f}] "
        f"after {look.days} days; promotion margin {-margin:+.5f} "
        f"({design.min_improvement:.1%} of the champion's {loss} {design.baseline_log_loss:.4f})"
    )
    reasons = [figures]
    vetoes = [g for g in guardrails if g.vetoes]
    decision: Decision
    decided_on = _date(last) if crossing is not None else None
    if available < design.min_days:
        decision = "inconclusive"
        status = (
            f"running: {available} of the minimum {design.min_days} days "
            f"({design.min_runtime_weeks} whole weeks); no look decides before that"
        )
    elif crossing is not None and look.high < -margin:
        if vetoes or not srm.passed:
            decision = "keep"
            why = [f"guardrail {g.name} {g.status}" for g in vetoes]
            why += [] if srm.passed else [f"sample-ratio mismatch (p = {srm.p_value:.2g})"]
            status = f"challenger better on {decided_on}, but promotion vetoed: {', '.join(why)}"
        else:
            decision = "promote"
            status = (
                f"challenger better by more than the margin: the sequence fell below "
                f"{-margin:+.5f} on {decided_on}"
            )
    elif crossing is not None:
        decision = "keep"
        worse = "challenger worse" if look.low > 0 else "challenger not better by the margin"
        status = f"{worse}: the sequence lay above {-margin:+.5f} on {decided_on}"
    elif available >= design.max_days:
        decision = "inconclusive"
        status = (
            f"stopped at the maximum runtime ({design.max_days} days) undecided: the champion stays"
        )
    else:
        decision = "inconclusive"
        status = f"undecided after {available} days: extend (up to {design.max_days} days)"
    reasons.insert(0, status)
    reasons += [
        f"guardrail {g.name}: champion {g.control:.4f}, challenger {g.treatment:.4f} "
        f"(limit {g.limit:.4f}) -> {g.status}"
        for g in guardrails
    ]
    reasons.append(
        f"sample ratio: {srm.counts[0]} / {srm.counts[1]} / {srm.counts[2]} records "
        f"(control / treatment / excluded), p = {srm.p_value:.3g} -> "
        f"{'passed' if srm.passed else 'FAILED'}"
    )
    return ABDecision(
        design=design,
        decision=decision,
        status=status,
        decided_on=decided_on,
        days_available=available,
        daily=daily,
        looks=looks,
        split=split,
        secondary=secondary,
        guardrails=guardrails,
        srm=srm,
        reasons=tuple(reasons),
    )
