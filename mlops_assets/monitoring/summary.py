"""The monitored days as a series by date: a plot and a table in the asset's metadata."""

import base64

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.monitoring.common import DATE, GROUP, history
from mlops_assets.resources import EvidentlyWorkspace, ReportStore


class SummaryConfig(dg.Config):
    table_days: int = Field(
        default=62, description="How many latest days the table in the metadata shows."
    )


@dg.asset(
    deps=["drift_report", "performance_estimate", "performance"],
    group_name=GROUP,
    kinds={"duckdb", "matplotlib", "evidently"},
    # Unpartitioned: one run in every mode (the daily assets fan out when distributed).
    backfill_policy=dg.BackfillPolicy.single_run(),
    # A derived view: redraw it whenever a monitored day changes, without anyone asking.
    automation_condition=dg.AutomationCondition.eager(),
)
def monitoring_summary(
    config: SummaryConfig,
    warehouse: DuckDBResource,
    reports: ReportStore,
    evidently: EvidentlyWorkspace,
) -> dg.MaterializeResult:
    """Every monitored day by date: the drift statistic against its threshold and the alarms,
    the estimated ROC AUC with its band and the realized one (PNG, inline in the metadata), and
    the daily table; a monthly table of the same. The same daily figures go to the Evidently
    project, whose dashboard panels (made here, once) chart them by date."""
    from mlops_assets.lib.dashboard import figures_by_day, save_daily_figures
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
    written = save_daily_figures(
        evidently.directory, evidently.project_name, figures_by_day(daily, DATE)
    )
    inline = base64.b64encode(png.read_bytes()).decode()
    judged = perf[perf["judged"].astype(bool)] if len(perf) else perf
    return dg.MaterializeResult(
        metadata={
            "plot": dg.MetadataValue.md(f"![monitoring by date](data:image/png;base64,{inline})"),
            "plot_file": dg.MetadataValue.path(str(png)),
            "daily": daily_table(daily.tail(config.table_days)),
            "monthly": dg.MetadataValue.md(
                monthly.to_markdown() if len(monthly) else "no days yet"
            ),
            "days_with_drift": len(drift),
            "days_alarmed": int(drift["alarm"].sum()) if len(drift) else 0,
            "days_estimated": len(estimates),
            "days_judged": len(judged),
            "days_outside_band": int(judged["outside_band"].sum()) if len(judged) else 0,
            "evidently_days_written": written,
            "evidently_workspace": dg.MetadataValue.path(evidently.directory),
        }
    )


def daily_table(daily) -> dg.TableMetadataValue:
    """The daily series as a table (the UI shows it as one); missing values empty."""
    import pandas as pd

    records = []
    for row in daily.round(3).to_dict("records"):
        records.append(
            dg.TableRecord(
                {
                    k: None
                    if v is None or (isinstance(v, float) and pd.isna(v))
                    else (bool(v) if isinstance(v, bool) else v)
                    for k, v in row.items()
                }
            )
        )
    columns = [
        dg.TableColumn(str(c), "string" if daily[c].dtype == object else str(daily[c].dtype))
        for c in daily.columns
    ]
    return dg.MetadataValue.table(records, schema=dg.TableSchema(columns=columns))
