"""When to retrain: a rule over daily monitoring results, with a cooldown. No Dagster imports."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetrainingRule:
    """Retrain after `consecutive_days` days in a row of drift or decay, then not for a while.

    A day drifts when its drift check alarms (thresholds calibrated on the champion's own training
    days, lib.drift_calibration: about 1-2% of unchanged days alarm); it decays when its ROC AUC is
    below `min_auc_ratio` x the serving model's test ROC AUC (its reference); its relation between
    features and label moved when, with `outside_band` on, its realized ROC AUC fell outside the
    band of its label-free estimate (lib.cbpe). A regression champion has no ROC AUC: its day
    decays when its error (MAE or RMSE, the spec's gate error) is above `max_error_ratio` x its
    test error. After a retraining,
    no other for `cooldown_days`. Days are data days (partition dates), so
    the rule behaves the same in replay as live.
    """

    min_auc_ratio: float = 0.92
    max_error_ratio: float = 1.1
    consecutive_days: int = 7
    cooldown_days: int = 30
    window_days: int = 90
    outside_band: bool = True

    def __post_init__(self) -> None:
        if self.consecutive_days < 1 or self.cooldown_days < 0 or self.window_days < 1:
            raise ValueError("consecutive_days and window_days must be >= 1, cooldown_days >= 0")


@dataclass(frozen=True)
class DayResult:
    day: dt.date
    drift_alarm: bool | None = None
    # The share of drifted columns, shown in the evidence (the alarm decides).
    drift_share: float | None = None
    roc_auc: float | None = None
    reference_auc: float | None = None
    outside_band: bool | None = None
    # A regression champion's error on the day over its test error (None for a classifier).
    error_ratio: float | None = None


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    streak: tuple[DayResult, ...] = field(default_factory=tuple)

    @property
    def last_day(self) -> dt.date | None:
        return self.streak[-1].day if self.streak else None

    def training_window(self, rule: RetrainingRule) -> tuple[dt.date, dt.date]:
        """The latest `window_days` days with labels, ending on the streak's last day."""
        assert self.last_day is not None
        return self.last_day - dt.timedelta(days=rule.window_days - 1), self.last_day

    def evidence(self) -> str:
        return "; ".join(
            f"{d.day}: drift {'alarm' if d.drift_alarm else 'none'} (share {_fmt(d.drift_share)}), "
            f"auc {_fmt(d.roc_auc)}" + (", outside band" if d.outside_band else "")
            for d in self.streak
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _breaches(result: DayResult, rule: RetrainingRule) -> str | None:
    if result.drift_alarm:
        return "drift"
    if (
        result.roc_auc is not None
        and result.reference_auc is not None
        and result.roc_auc < rule.min_auc_ratio * result.reference_auc
    ):
        return "decay"
    if result.error_ratio is not None and result.error_ratio > rule.max_error_ratio:
        return "decay"
    if rule.outside_band and result.outside_band:
        return "realized outside the estimate's band"
    return None


def evaluate_rule(
    results: list[DayResult],
    rule: RetrainingRule,
    *,
    last_retrain: dt.date | None,
) -> RetrainDecision:
    """Whether the newest days hold a streak of `consecutive_days` breaching calendar days.

    Only the streak ending on the newest day counts, and only days after the last retraining
    (plus the cooldown) can start one, so one drift episode triggers one retraining.
    """
    by_day = {r.day: r for r in sorted(results, key=lambda r: r.day)}
    if not by_day:
        return RetrainDecision(False, "no monitoring results yet")
    newest = max(by_day)
    if last_retrain is not None and newest < last_retrain + dt.timedelta(days=rule.cooldown_days):
        return RetrainDecision(False, f"cooldown: last retraining at {last_retrain}")
    streak, kinds, day = [], set(), newest
    while day in by_day and (kind := _breaches(by_day[day], rule)):
        if last_retrain is not None and day <= last_retrain:
            break
        streak.insert(0, by_day[day])
        kinds.add(kind)
        day -= dt.timedelta(days=1)
    if len(streak) < rule.consecutive_days:
        return RetrainDecision(
            False,
            f"{len(streak)} consecutive day(s) breach the rule, {rule.consecutive_days} needed",
        )
    reason = " and ".join(sorted(kinds))
    return RetrainDecision(
        True, f"{reason} on {len(streak)} consecutive days to {newest}", tuple(streak)
    )


def replay_rule(results: list[DayResult], rule: RetrainingRule) -> list[RetrainDecision]:
    """The retrainings a sensor ticking once per day would request, oldest first."""
    results = sorted(results, key=lambda r: r.day)
    decisions, last = [], None
    for newest in range(1, len(results) + 1):
        decision = evaluate_rule(results[:newest], rule, last_retrain=last)
        if decision.retrain:
            decisions.append(decision)
            last = decision.last_day
    return decisions
