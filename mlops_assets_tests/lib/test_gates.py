"""lib.gates on a real (in-memory) DuckDB: which days a blocking check keeps out, and why."""

import datetime as dt

import duckdb

from mlops_assets.lib.gates import (
    DayGate,
    excluded_days,
    exclusions_markdown,
    record_exclusions,
    record_gates,
)

D1, D2, D3 = dt.date(2013, 7, 1), dt.date(2013, 7, 2), dt.date(2013, 7, 3)


def gate(day, passed, judged=True, blocking=True, check="check_drift", reason="why"):
    return DayGate(day, check, passed, judged, blocking, reason)


def record(con, check, gates, days=(D1, D2, D3)):
    record_gates(con, "s", asset="a", check_name=check, days=days, gates=gates, run_id="r")


def test_only_a_judged_failure_of_a_blocking_check_keeps_a_day_out():
    con = duckdb.connect()
    assert excluded_days(con, "s", D1, D3) == {}  # before any gate is recorded
    record(
        con,
        "check_drift",
        [
            gate(D1, passed=False, reason="alarm: hour"),
            gate(D2, passed=False, judged=False, reason="not judged: n=24 < 100"),
            gate(D3, passed=True),
        ],
    )
    record(
        con,
        "check_performance",
        [
            gate(D1, passed=False, check="check_performance", reason="roc_auc -20%"),
            gate(D3, passed=False, blocking=False, check="check_performance", reason="f1 -30%"),
        ],
    )
    assert excluded_days(con, "s", D1, D3) == {
        D1: "check_drift: alarm: hour; check_performance: roc_auc -20%"
    }
    assert excluded_days(con, "s", D2, D3) == {}  # the window bounds the days


def test_a_rerun_of_a_day_replaces_its_verdict_and_leaves_other_checks():
    con = duckdb.connect()
    record(con, "check_drift", [gate(D1, passed=False)])
    record(con, "check_estimate", [gate(D1, passed=False, check="check_estimate", reason="low")])
    record(con, "check_drift", [gate(D1, passed=True)], days=[D1])
    assert excluded_days(con, "s", D1, D1) == {D1: "check_estimate: low"}
    # A day re-run without a verdict (no records any more) keeps none.
    record(con, "check_estimate", [], days=[D1])
    assert excluded_days(con, "s", D1, D1) == {}
    assert con.sql("SELECT count(*) FROM s.monitoring_gates").fetchall() == [(1,)]


def test_exclusions_are_stored_per_consumer_and_listed():
    con = duckdb.connect()
    record_exclusions(con, "s", consumer="training_set", run_id="r1", excluded={D2: "x | y"})
    record_exclusions(con, "s", consumer="ab_results", run_id="r2", excluded={})
    rows = con.sql("SELECT consumer, run_id, day, reason FROM s.gate_exclusions").fetchall()
    assert rows == [("training_set", "r1", D2, "x | y")]
    assert exclusions_markdown({}) == "none"
    assert exclusions_markdown({D2: "x | y"}).splitlines()[-1] == "| 2013-07-02 | x / y |"
