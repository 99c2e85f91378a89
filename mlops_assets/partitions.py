"""The dataset and its daily partitions, defined once from the dataset specification."""

import datetime as dt

import dagster as dg

from mlops_assets.lib.spec import load_spec

# Read at load time: partitions, table schemas and checks are all shaped by the specification.
dataset_spec = load_spec()

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=dataset_spec.date.start.isoformat(),
    end_date=(dataset_spec.date.end + dt.timedelta(days=1)).isoformat(),
)

single_run = dg.BackfillPolicy.single_run()


def partition_window(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """The [start, end) dates of the partitions in this run (one day, or a backfilled range)."""
    window = context.partition_time_window
    return window.start.date(), window.end.date()
