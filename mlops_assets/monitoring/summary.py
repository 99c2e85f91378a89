"""The monitored days as a series by date: a plot and a table in the asset's metadata."""

import base64

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.monitoring.common import DATE, GROUP, history
from mlops_assets.resources import ReportStore


class SummaryConfig(dg.Config):
    table_days: int = Field(
        default=62, description="How many latest days the table in the metadata shows."
    )


@dg.asset(
    deps=["drift_report", "performance_estimate", "performance"],
    group_name=GROUP,
    kinds={"duckdb", "matplotlib"},
    # Unpartitioned: one run in every mode (the daily assets fan out when distributed).
    backfill_policy=dg.BackfillPolicy.single_run(),
    # A derived view: redraw it whenever a monitored day changes, without anyone asking.
    automation_condition=dg.AutomationCondition.eager(),
)
def monitoring_summary(
    config: SummaryConfig, warehouse: DuckDBResource, reports: ReportStore
) -> dg.MaterializeResult:
    """Every monitored day by date: the drift statistic against its threshold and the alarms,
    the estimated ROC AUC with its band and the realized one (PNG, inline in the metadata), and
    the daily table; a monthly table of the same."""
    from mlops_assets.lib.monitoring import daily_series, plot_summary

    drift = history(warehouse, "drift_report")
    estimates = history(warehouse, "performance_estimate")
    perf = history(warehouse, "performance")
    png = plot_summary(
        drift, estimates, perf, date_column=DATE, path=reports.path("monitoring", "summary.png")
    )
    daily = daily_series(drift, estimates, perf, date_column=DATE)
    monthly = (
        daily.drop(columns=["drifted_columns"], errors="ignore")
        .groupby(daily[DATE].str[:7])
        .mean(numeric_only=True)
        .round(3)
        if len(daily)
        else daily
    )
    inline = base64.b64encode(png.read_bytes()).decode()
    judged = perf[perf["judged"].astype(bool)] if len(perf) else perf
    return dg.MaterializeResult(
        metadata={
            "plot": dg.MetadataValue.md(f"![monitoring by date](data:image/png;base64,{inline})"),
            "plot_file": dg.MetadataValue.path(str(png)),
            "daily": dg.MetadataValue.md(
                daily.tail(config.table_days).round(3).to_markdown(index=False)
                if len(daily)
                else "no days yet"
            ),
            "monthly": dg.MetadataValue.md(
                monthly.to_markdown() if len(monthly) else "no days yet"
            ),
            "days_with_drift": len(drift),
            "days_alarmed": int(drift["alarm"].sum()) if len(drift) else 0,
            "days_estimated": len(estimates),
            "days_judged": len(judged),
            "days_outside_band": int(judged["outside_band"].sum()) if len(judged) else 0,
        }
    )
