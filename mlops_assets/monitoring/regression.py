"""Realized performance of a regression champion (`task: regression`), called by `performance`.

Per day once its labels are usable: MAE, RMSE and R2 of the champion's predictions, on the day or
on the shortest trailing window with enough labelled records (as for a classifier), and beside
them the drift of what the labels reveal: the target's mean, the prediction's mean and the mean
residual (prediction - target, the bias) against the same figures on the champion's test days.
`error_ratio` (the day's error over the test error) is what the retraining sensor reads as decay.
There is no label-free estimate (CBPE is for probabilities), so no band either.
"""

import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from mlops_assets.lib.sql import ident
from mlops_assets.monitoring.common import DATE, day_checks, day_of, days, skip_day
from mlops_assets.monitoring.performance import PERFORMANCE_CHECK, _gate
from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import MlflowTracking

# Watched when the config names no regression metric (its default watches a classifier's).
DEFAULT_WATCHED = ("mae", "rmse")


def scored_rows(warehouse: DuckDBResource, first: dt.date, last: dt.date):
    """The champion's predictions of [first, last] with their targets (NULL until known)."""
    spec = dataset_spec
    keys = " AND ".join(f"p.{ident(k)} = f.{ident(k)}" for k in [DATE, *spec.key])
    date = ident(DATE)
    query = (
        f"SELECT p.{date}, p.model_version, p.prediction, f.{ident(spec.target.name)} "
        f"FROM {spec.name}.predictions p JOIN {spec.name}.features f ON {keys} "
        f"WHERE p.model_alias = 'champion' AND p.{date} >= ? AND p.{date} <= ?"
    )
    with warehouse.get_connection() as con:
        return con.execute(query, [first, last]).df()


def regression_performance(context, config, mlflow: MlflowTracking, warehouse: DuckDBResource):
    """The `performance` asset's output and check for a regression target."""
    import pandas as pd

    from mlops_assets.lib.clock import labels_usable, today
    from mlops_assets.lib.monitoring import relative_drops, trailing_window
    from mlops_assets.lib.registry import test_metrics
    from mlops_assets.lib.regression import ERROR_METRIC, METRIC_NAMES, regression_metrics

    spec = dataset_spec
    label, error = spec.target.name, ERROR_METRIC[spec.regression.gate_error]
    watched = [m for m in config.watched_metrics if m in METRIC_NAMES] or list(DEFAULT_WATCHED)
    now, run_days = today(), days(context)
    first = dt.date.fromisoformat(run_days[0]) - dt.timedelta(days=config.max_window_days - 1)
    scored = scored_rows(warehouse, first, dt.date.fromisoformat(run_days[-1]))
    labelled = scored[scored[label].notna()]
    by_day = scored.groupby(day_of(scored))
    reference: dict[str, dict[str, float]] = {}
    rows, gates = [], []
    nan = float("nan")

    def gate(day, passed, judged, reason):
        gates.append(_gate(day, PERFORMANCE_CHECK, passed, judged, config.blocking, reason))

    for day in run_days:
        date = dt.date.fromisoformat(day)
        if not labels_usable(date, now, config.label_delay_days):
            usable = date + dt.timedelta(days=config.label_delay_days)
            skip_day(context, day, f"labels pending: usable from {usable} (today is {now})")
            gate(day, False, False, f"not judged: labels pending until {usable}")
            continue
        if day not in by_day.groups:
            skip_day(context, day, "no scored records on this day")
            gate(day, False, False, "not judged: no scored records on this day")
            continue
        of_day = by_day.get_group(day)
        version = str(of_day["model_version"].iloc[0])
        if version not in reference:
            reference[version] = test_metrics(mlflow.client(), mlflow.model_name, version)
        test = reference[version]
        window, k, enough = trailing_window(
            labelled[labelled["model_version"] == version],
            date_column=DATE,
            day=pd.Timestamp(day),
            min_records=config.min_labelled_records,
            max_days=config.max_window_days,
        )
        reason = "" if enough else f"not judged: n={len(window)} < {config.min_labelled_records}"
        metrics = regression_metrics(window[label], window["prediction"]) if len(window) else {}
        drops = relative_drops(metrics, test, watched, config.max_relative_drop) if enough else {}
        ratio = metrics.get(error, nan) / test.get(error, nan) if test.get(error) else nan
        row = {
            DATE: pd.Timestamp(day),
            "model_name": mlflow.model_name,
            "model_version": version,
            "label_delay_days": config.label_delay_days,
            "n_scored": len(of_day),
            "n_labelled": int(of_day[label].notna().sum()),
            "window_days": k,
            "judged": enough,
            "not_judged_reason": reason,
            **{name: metrics.get(name, nan) for name in METRIC_NAMES},
            "n": len(window),
            "error_ratio": ratio if enough else nan,
            # The test days' levels: a moved target mean, or a mean residual away from the
            # test's, is the drift only the labels reveal.
            **{
                f"test_{name}": test.get(name, nan)
                for name in ("target_mean", "prediction_mean", "mean_residual")
            },
            "outside_band": False,  # no label-free estimate, so no band (see module docstring)
            "below_reference": ", ".join(drops),
        }
        rows.append(row)
        if not enough:
            gate(day, False, False, reason)
        else:
            problems = [
                f"{name} {change:+.1%} against the test value" for name, change in drops.items()
            ]
            ok = f"test metrics held ({error} {ratio:.3f} x the test's, on {k} day(s))"
            gate(day, not problems, True, "; ".join(problems) or ok)
        context.add_asset_metadata(
            {
                **{name: float(row[name]) for name in METRIC_NAMES},
                "judged": enough,
                "window_days": k,
                "error_ratio": float(row["error_ratio"]),
                f"reference_{error}": test.get(error, nan),
                "dagster/partition_row_count": 1,
                **({"not_judged": reason} if reason else {}),
            },
            partition_key=day,
        )
    table = pd.DataFrame(rows)
    judged = int(table["judged"].sum()) if len(table) else 0
    yield dg.Output(
        table,
        metadata={
            "today": str(now),
            "label_delay_days": config.label_delay_days,
            "days_measured": len(table),
            "days_judged": judged,
            "days_below": sum(bool(r["below_reference"]) for r in rows),
            "max_relative_drop": config.max_relative_drop,
            "watched_metrics": ", ".join(watched),
            "blocking": config.blocking,
        },
    )
    yield from day_checks(context, warehouse, PERFORMANCE_CHECK, gates, run_days=run_days)
