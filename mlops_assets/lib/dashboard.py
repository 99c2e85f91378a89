"""The Evidently project's dashboard: the monitored days' figures by date, in panels made by code.

Evidently's dashboard plots values that snapshots hold, by snapshot timestamp. The figures that
decide here (the calibrated drift statistic, CBPE estimates, realized ROC AUC) are computed
outside Evidently, so each day gets a small "figures" snapshot: a one-row dataset of the day's
figures, each read back by Evidently's `MeanValue` (the mean of one value is the value), stamped
with the day's date and tagged `FIGURES_TAG`. The panels select those series by tag and column.
A day's figures snapshot is replaced only when its figures changed (a fingerprint in the
snapshot's metadata), so redrawing the summary does not rewrite every day.

No Dagster imports; Evidently is imported inside the functions (it takes seconds to import).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

FIGURES_TAG = "daily_figures"
TAB = "Monitoring by date"
FINGERPRINT = "figures_fingerprint"


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    kind: str  # "line" or "bar"
    series: tuple[tuple[str, str], ...]  # (figure column, legend)


PANELS = (
    Panel(
        "Drift share",
        "Share of the tested columns whose calibrated score passed the day's threshold.",
        "line",
        (("drift_share", "drift share"),),
    ),
    Panel(
        "Drifted columns",
        "How many columns drifted on the day (their names are in the drift_report table).",
        "bar",
        (("n_drifted_columns", "drifted columns"),),
    ),
    Panel(
        "Drift statistic against its calibrated threshold",
        "The day's largest standardised column score; the day alarms above the threshold.",
        "line",
        (("max_z", "largest column z"), ("threshold", "calibrated threshold")),
    ),
    Panel(
        "ROC AUC: estimated before labels, realized after",
        "CBPE estimate with its band, from the probabilities alone; realized once labels land.",
        "line",
        (
            ("estimated_roc_auc", "estimated"),
            ("roc_auc_low", "band low"),
            ("roc_auc_high", "band high"),
            ("realized_roc_auc", "realized"),
        ),
    ),
)
FIGURES = tuple(column for panel in PANELS for column, _ in panel.series)


def day_figures(row: Mapping[str, object]) -> dict[str, float]:
    """The day's plotted figures that are known (NaN and missing ones are left out)."""
    figures = {}
    for column in FIGURES:
        value = row.get(column)
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, int | float) and not math.isnan(float(value)):
            figures[column] = float(value)
    return figures


def figures_by_day(daily, date_column: str) -> list[tuple[dt.date, dict[str, float]]]:
    """Each row of `lib.monitoring.daily_series` as the day's figures: drift figures of judged
    days only, the realized ROC AUC only where performance was judged."""
    days = []
    for row in daily.to_dict("records"):
        row = dict(row)
        if row.get("drift_judged") is not True:
            for column in ("drift_share", "n_drifted_columns", "max_z", "threshold"):
                row.pop(column, None)
        if row.get("performance_judged") is True:
            row["realized_roc_auc"] = row.get("roc_auc")
        days.append((dt.date.fromisoformat(str(row[date_column])[:10]), day_figures(row)))
    return days


def _fingerprint(figures: Mapping[str, float]) -> str:
    return hashlib.sha256(json.dumps(figures, sort_keys=True).encode()).hexdigest()[:16]


def figures_snapshot(day: dt.date, figures: Mapping[str, float]):
    """An Evidently snapshot holding the day's figures, stamped with the day."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue

    columns = list(figures)
    frame = pd.DataFrame([figures], columns=columns)
    dataset = Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=columns))
    report = Report([MeanValue(column=c) for c in columns])
    with _no_distribution_plots():
        return report.run(
            dataset,
            None,
            timestamp=dt.datetime.combine(day, dt.time()),
            tags=[FIGURES_TAG, day.isoformat()],
            metadata={FINGERPRINT: _fingerprint(figures)},
        )


@contextmanager
def _no_distribution_plots():
    """Evidently draws a plotly histogram for every `MeanValue`, unconditionally: for a one-row
    dataset it is a single bar, yet it made 90% of the time of a day's figures (80-90 ms of
    plotting, and 50 ms more to store the plots, against 9 ms without). The panels read only the
    values, so the plots are left out while the figures are computed. If Evidently moves the
    function, the plots are simply drawn."""
    from evidently.metrics import column_statistics

    drawn = getattr(column_statistics, "distribution", None)
    if drawn is None:
        yield
        return
    column_statistics.distribution = lambda *args, **kwargs: []
    try:
        yield
    finally:
        column_statistics.distribution = drawn


def save_daily_figures(
    workspace_dir: str | Path, project_name: str, days: Sequence[tuple[dt.date, dict]]
) -> int:
    """Store each day's figures snapshot in the project (created on first use), replacing a
    day's earlier one only if its figures changed; the panels are ensured. Days written."""
    from evidently.ui.workspace import Workspace

    from mlops_assets.lib.drift import _evidently_quiet

    with _evidently_quiet():
        workspace = Workspace(str(workspace_dir))
        projects = workspace.search_project(project_name)
        project = projects[0] if projects else workspace.create_project(project_name)
        stored: dict[dt.datetime, list[tuple[str, str]]] = {}
        for run_id in workspace.list_runs(project.id):
            run = workspace.get_run(project.id, run_id)
            if run is not None and FIGURES_TAG in run.tags:
                fingerprint = str(run.metadata.get(FINGERPRINT, ""))
                stored.setdefault(run.timestamp, []).append((run_id, fingerprint))
        written = 0
        for day, figures in days:
            if not figures:
                continue
            timestamp = dt.datetime.combine(day, dt.time())
            previous = stored.get(timestamp, [])
            if [f for _, f in previous] == [_fingerprint(figures)]:
                continue
            for run_id, _ in previous:
                workspace.delete_run(project.id, run_id)
            workspace.add_run(project.id, figures_snapshot(day, figures))
            written += 1
        ensure_panels(workspace, project.id)
    return written


def ensure_panels(workspace, project_id) -> list[str]:
    """Add the panels the project's dashboard lacks (matched by title): re-running adds none,
    and panels a person added stay. The titles added."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel

    project = workspace.get_project(project_id)
    present = {panel.title for panel in project.dashboard.model().panels}
    added = []
    for spec in PANELS:
        if spec.title in present:
            continue
        values = [
            PanelMetric(
                legend=legend,
                metric="MeanValue",
                metric_labels={"column": column},
                tags=[FIGURES_TAG],
            )
            for column, legend in spec.series
        ]
        make = line_plot_panel if spec.kind == "line" else bar_plot_panel
        project.dashboard.add_panel(make(spec.title, values, spec.description), tab=TAB)
        added.append(spec.title)
    return added
