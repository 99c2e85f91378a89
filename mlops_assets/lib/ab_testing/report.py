"""The decision in plain words (markdown) and as flat metadata (Dagster, MLflow, the audit)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass

from mlops_assets.lib.ab_testing.decision import ABDecision, Decision, _date
from mlops_assets.lib.ab_testing.guardrails import LATENCY_NOTE


@dataclass(frozen=True)
class ABResult:
    """What `ab_results` hands to `ab_promotion` (and what the lifecycle prints)."""

    experiment: str
    champion_version: str
    challenger_version: str
    decision: Decision
    status: str
    decided_on: dt.date | None
    evidence: Mapping[str, float | int | str]  # to_metadata(): for the promotion audit


def _num(x: float, fmt: str = "+.5f") -> str:
    return "n/a" if not math.isfinite(x) else format(x, fmt)


def to_metadata(d: ABDecision) -> dict[str, float | int | str]:
    """Flat floats, ints and strings: the decision, its figures and the design."""
    look = d.primary
    loss = d.design.primary_metric  # log_loss, or a regression's squared_error / absolute_error
    out: dict[str, float | int | str] = {
        "decision": d.decision,
        "status": d.status,
        "decided_on": str(d.decided_on) if d.decided_on else "",
        "days_available": d.days_available,
        "days_analysed": d.days_analysed,
        "first_day": str(d.first_day),
        "last_day": str(d.last_day),
        f"{loss}_diff": look.mean,
        f"{loss}_diff_cs_low": look.low,
        f"{loss}_diff_cs_high": look.high,
        f"split_{loss}_diff": d.split.mean,
        f"split_{loss}_diff_ci_low": d.split.low,
        f"split_{loss}_diff_ci_high": d.split.high,
        "roc_auc_diff": d.secondary.mean,
        "roc_auc_diff_ci_low": d.secondary.low,
        "roc_auc_diff_ci_high": d.secondary.high,
        "srm_p_value": d.srm.p_value,
        "srm_passed": int(d.srm.passed),
        "reasons": "\n".join(d.reasons),
    }
    for g in d.guardrails:
        out |= {
            f"guardrail_{g.name}_control": g.control,
            f"guardrail_{g.name}_treatment": g.treatment,
            f"guardrail_{g.name}_limit": g.limit,
            f"guardrail_{g.name}_status": g.status,
        }
    out |= {f"design_{k}": v for k, v in design_row(d).items()}
    return out


def design_row(d: ABDecision) -> dict[str, float | int | str]:
    return {k: (str(v) if isinstance(v, dt.date) else v) for k, v in d.design.as_row().items()}


def to_markdown(d: ABDecision) -> str:
    s = d.design
    lines = [
        f"## Decision: **{d.decision}**",
        "",
        f"{d.status}.",
        "",
        f"Analysed {d.days_analysed} days, {d.first_day}..{d.last_day} "
        f"({d.days_available} labelled days available; the looks stop at the deciding day or "
        "the maximum runtime, so later data do not change this decision).",
        "",
        *[f"- {r}" for r in d.reasons[1:]],
        f"- {LATENCY_NOTE}",
        "",
        f"### Primary: per-record {s.primary_metric.replace('_', ' ')}, challenger - champion, "
        "per day (paired)",
        "",
        f"Each day is one observation: the mean over that day's experiment records. "
        f"Negative = the challenger is better. The {1 - s.alpha:.0%} confidence sequence holds "
        "at every day at once, so looking daily does not inflate false positives; a look "
        f"decides only from day {s.min_days} on.",
        "",
        "| day | records | log loss champion | log loss challenger | daily difference "
        "| running mean | sequence low | sequence high | ROC AUC difference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, look in enumerate(d.looks):
        mark = " **decides**" if d.decided_on and _date(d.daily.day[i]) == d.decided_on else ""
        lines.append(
            f"| {_date(d.daily.day[i])}{mark} | {d.daily.n[i]} | "
            f"{d.daily.log_loss_control[i]:.4f} | {d.daily.log_loss_treatment[i]:.4f} | "
            f"{d.daily.paired_diff[i]:+.5f} | {look.mean:+.5f} | {_num(look.low)} | "
            f"{_num(look.high)} | {_num(d.daily.roc_auc_diff[i], '+.4f')} |"
        )
    lines += [
        "",
        "### Beside the decision (day-level bootstrap intervals, not deciding)",
        "",
        "| comparison | days | mean daily difference | interval |",
        "|---|---|---|---|",
        f"| split: log loss, treatment arm - control arm | {d.split.days} | "
        f"{_num(d.split.mean)} | [{_num(d.split.low)}, {_num(d.split.high)}] |",
        f"| paired: ROC AUC, challenger - champion | {d.secondary.days} | "
        f"{_num(d.secondary.mean, '+.4f')} | "
        f"[{_num(d.secondary.low, '+.4f')}, {_num(d.secondary.high, '+.4f')}] |",
        "",
        "### Design (fixed before the first day)",
        "",
        f"Experiment {s.experiment}, first day {s.first_day}. Primary metric {s.primary_metric} "
        f"(paired, per day), secondary {s.secondary_metric}; alpha {s.alpha:g}, power "
        f"{s.power:g}; runtime {s.min_runtime_weeks} to {s.max_runtime_weeks} weeks "
        f"({s.min_days}-{s.max_days} days); split {s.control_share:g} / {s.treatment_share:g} / "
        f"{s.excluded_share:g}; guardrails: positive-rate tolerance {s.positive_rate_tolerance:g},"
        f" calibration tolerance {s.calibration_tolerance:g}; SRM alpha {s.srm_alpha:g}.",
        "",
        (
            f"Minimum detectable effect: {s.mde:.5f} log loss per record by day {s.max_days}, "
            f"from the champion's A/A daily spread {s.baseline_daily_sd:.5f} over "
            f"{s.baseline_days} days before the experiment (conservative for the paired test)."
            if math.isfinite(s.mde)
            else f"Minimum detectable effect: not judged (only {s.baseline_days} champion days "
            "before the experiment)."
        ),
    ]
    return "\n".join(lines)
