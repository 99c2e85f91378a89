"""Raw records: each day's rows from the source, exactly as ingested (text), in DuckDB."""

import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from mlops_assets.metadata import failed_days_markdown, table_metadata
from mlops_assets.partitions import daily_partitions, dataset_spec, partition_window, single_run
from mlops_assets.resources import DUCKDB_POOL, DatasetSource, stored_daily_counts

ROW_COUNT_CHECK = "check_row_count_against_trailing_days"
DUPLICATE_KEY_CHECK = "check_no_duplicate_keys"


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    metadata={"partition_expr": dataset_spec.date.column},
    group_name="ingestion",
    kinds={"duckdb", "pandas"},
    pool=DUCKDB_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            ROW_COUNT_CHECK,
            asset="raw_records",
            description="Every day has rows, and not fewer than min_row_ratio x the median of "
            "the trailing days (an empty or collapsed day fails).",
        ),
        dg.AssetCheckSpec(
            DUPLICATE_KEY_CHECK,
            asset="raw_records",
            description="No two records share a key on the same date (copies are quarantined).",
        ),
    ],
)
def raw_records(
    context: dg.AssetExecutionContext, source: DatasetSource, warehouse: DuckDBResource
):
    """The source rows of each day, every column as text exactly as ingested, plus the date."""
    from mlops_assets.lib.quality import daily_row_counts, row_count_anomalies

    spec = dataset_spec
    start, end = partition_window(context)
    frame = source.records(spec, start, end)
    context.log.info(f"{len(frame)} {spec.name} records dated {start} .. {end - dt.timedelta(1)}")
    yield dg.Output(
        frame,
        metadata={**table_metadata(frame), "source": spec.source.path, "days": (end - start).days},
    )

    quality = spec.quality
    history = stored_daily_counts(
        warehouse,
        f"{spec.name}.raw_records",
        spec.date.column,
        start - dt.timedelta(days=quality.trailing_days),
        start,
    )
    table = row_count_anomalies(
        daily_row_counts(frame, spec.date.column, start, end),
        history,
        trailing_days=quality.trailing_days,
        min_ratio=quality.min_row_ratio,
    )
    failed = table[table["failed"]]
    yield dg.AssetCheckResult(
        check_name=ROW_COUNT_CHECK,
        passed=failed.empty,
        metadata={
            "failed_days": len(failed),
            "min_rows_per_day": int(table["rows"].min()),
            "min_ratio_to_trailing_median": float(table["ratio"].min()),
            "threshold": quality.min_row_ratio,
            "failures": failed_days_markdown(failed),
        },
    )

    duplicated = frame.duplicated([spec.date.column, *spec.key])
    yield dg.AssetCheckResult(
        check_name=DUPLICATE_KEY_CHECK,
        passed=not duplicated.any(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "duplicate_records": int(duplicated.sum()),
            "key": ", ".join([spec.date.column, *spec.key]),
        },
    )
