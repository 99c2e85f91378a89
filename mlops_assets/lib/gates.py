"""Monitoring gates: each day's check results, and the days a blocking check keeps out.

A monitoring asset records per day and check whether the day passed, whether it could be
judged at all, why, and whether the check was configured as blocking when it ran
(`<schema>.monitoring_gates`). The consumers of monitored days (the training set, the A/B
analysis) leave out every day that a blocking check judged and failed, and store which days they
left out and why (`<schema>.gate_exclusions`). A day that was not judged (too little data) is
never left out: the check could not say that it is bad, only that it could not tell.

Pure functions over a DuckDB connection; names are quoted with `lib.sql.ident`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mlops_assets.lib.sql import ident, table_exists
from mlops_assets.lib.sql import table as _table

GATES_TABLE = "monitoring_gates"
EXCLUSIONS_TABLE = "gate_exclusions"


@dataclass(frozen=True)
class DayGate:
    """One check's verdict on one day."""

    day: dt.date
    check_name: str
    passed: bool
    judged: bool
    blocking: bool
    reason: str

    @property
    def excludes(self) -> bool:
        """Whether the day is kept out of what follows: a blocking check judged it and failed."""
        return self.blocking and self.judged and not self.passed


def record_gates(
    con,
    schema: str,
    *,
    asset: str,
    check_name: str,
    days: Sequence[dt.date],
    gates: Iterable[DayGate],
    run_id: str,
) -> None:
    """Replace the check's verdicts on `days` by `gates` (idempotent: a re-run of a day replaces
    its rows; a day of `days` without a gate, e.g. one with no records, keeps none)."""
    table = _table(schema, GATES_TABLE)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {table} (day DATE, asset VARCHAR, check_name VARCHAR, "
        "passed BOOLEAN, judged BOOLEAN, blocking BOOLEAN, excludes BOOLEAN, reason VARCHAR, "
        "run_id VARCHAR, recorded_at TIMESTAMP)"
    )
    con.execute(
        f"DELETE FROM {table} WHERE check_name = ? AND day = ANY(?)", [check_name, list(days)]
    )
    rows = [
        (g.day, asset, g.check_name, g.passed, g.judged, g.blocking, g.excludes, g.reason, run_id)
        for g in gates
    ]
    if rows:
        con.executemany(
            f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp)", rows
        )


def excluded_days(con, schema: str, first: dt.date, last: dt.date) -> dict[dt.date, str]:
    """Days of [first, last] kept out by a failed blocking check, with the checks' reasons."""
    table = _table(schema, GATES_TABLE)
    if not table_exists(con, f"{schema}.{GATES_TABLE}"):
        return {}
    rows = con.execute(
        f"SELECT day, string_agg(check_name || ': ' || reason, '; ' ORDER BY check_name) "
        f"FROM {table} WHERE excludes AND day >= ? AND day <= ? GROUP BY day ORDER BY day",
        [first, last],
    ).fetchall()
    return {day: reason for day, reason in rows}


def record_exclusions(
    con, schema: str, *, consumer: str, run_id: str, excluded: dict[dt.date, str]
) -> None:
    """Store which days `consumer` left out in this run, and why (one row per day)."""
    table = _table(schema, EXCLUSIONS_TABLE)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {table} (consumer VARCHAR, run_id VARCHAR, day DATE, "
        "reason VARCHAR, recorded_at TIMESTAMP)"
    )
    if excluded:
        con.executemany(
            f"INSERT INTO {table} VALUES (?, ?, ?, ?, current_timestamp)",
            [(consumer, run_id, day, reason) for day, reason in sorted(excluded.items())],
        )


def exclusions_markdown(excluded: dict[dt.date, str]) -> str:
    """The excluded days as a markdown table for asset metadata ("none" when there are none)."""
    if not excluded:
        return "none"
    lines = ["| day | reason |", "| --- | --- |"]
    lines += [f"| {day} | {reason.replace('|', '/')} |" for day, reason in sorted(excluded.items())]
    return "\n".join(lines)
