"""The clock of monitoring and automation: the real date, or a replayed one."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping

REPLAY_DATE_ENV = "MLOPS_REPLAY_DATE"


def today(environ: Mapping[str, str] | None = None) -> dt.date:
    """The monitoring clock: $MLOPS_REPLAY_DATE (YYYY-MM-DD) when set, else the real date.

    The embedded data are historical: replaying a 2013 date as "today" lets the schedule and the
    label delay behave as they would have on that day.
    """
    value = (os.environ if environ is None else environ).get(REPLAY_DATE_ENV, "").strip()
    if not value:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError as error:
        raise ValueError(f"{REPLAY_DATE_ENV}={value!r} is not a date (YYYY-MM-DD)") from error


def labels_usable(day: dt.date, now: dt.date, label_delay_days: int) -> bool:
    """Labels of `day` arrive `label_delay_days` later: usable from day + k on."""
    if label_delay_days < 0:
        raise ValueError(f"label_delay_days must be >= 0, got {label_delay_days}")
    return day + dt.timedelta(days=label_delay_days) <= now
