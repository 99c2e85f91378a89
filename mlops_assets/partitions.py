"""The dataset and its daily partitions, defined once from the dataset specification."""

import datetime as dt
import os

import dagster as dg

from mlops_assets.lib.spec import load_spec

# Read at load time: partitions, table schemas and checks are all shaped by the specification.
dataset_spec = load_spec()

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=dataset_spec.date.start.isoformat(),
    end_date=(dataset_spec.date.end + dt.timedelta(days=1)).isoformat(),
)

BACKFILL_PARTITIONS_PER_RUN_ENV = "MLOPS_BACKFILL_PARTITIONS_PER_RUN"


def _backfill_policy() -> dg.BackfillPolicy:
    """A range as one run (fewest imports and events on one machine); with
    MLOPS_BACKFILL_PARTITIONS_PER_RUN=n (the distributed mode), runs of n days that workers
    execute side by side."""
    per_run = os.environ.get(BACKFILL_PARTITIONS_PER_RUN_ENV)
    if per_run:
        return dg.BackfillPolicy.multi_run(int(per_run))
    return dg.BackfillPolicy.single_run()


# The backfill policy of the daily assets.
daily_backfill = _backfill_policy()


def partition_window(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """The [start, end) dates of the partitions in this run (one day, or a backfilled range)."""
    window = context.partition_time_window
    return window.start.date(), window.end.date()
