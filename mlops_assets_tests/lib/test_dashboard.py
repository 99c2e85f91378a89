"""The daily figures snapshots carry the figures, without Evidently's per-value plots."""

import datetime as dt

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.metrics import MeanValue

from mlops_assets.lib.dashboard import figures_snapshot


def test_a_figures_snapshot_holds_each_value_and_draws_no_plot():
    snapshot = figures_snapshot(dt.date(2013, 7, 1), {"drift_share": 0.25, "max_z": 3.5})
    results = {
        r.metric_value_location.metric.params["column"]: r for r in snapshot.metric_results.values()
    }
    assert {c: r.value for c, r in results.items()} == {"drift_share": 0.25, "max_z": 3.5}
    assert all(not r.widget for r in results.values())


def test_other_reports_keep_their_plots():
    figures_snapshot(dt.date(2013, 7, 1), {"drift_share": 0.25})
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    dataset = Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=["x"]))
    (result,) = Report([MeanValue(column="x")]).run(dataset, None).metric_results.values()
    assert result.value == 2.0
    assert result.widget  # the histogram, drawn as Evidently draws it
