"""Validated records and the quarantine: nothing failing the contract goes on, nothing is lost.

DataFrame inputs are left unannotated: Dagster resolves annotations at load time, and importing
pandas there would double the time it takes to load the code location.
"""

import dagster as dg

from mlops_assets.lib.chunks import DayChunks
from mlops_assets.lib.spec import PARTITION_COLUMN
from mlops_assets.metadata import daily_metadata, describe_once, null_rate_check, range_totals
from mlops_assets.partitions import daily_backfill, daily_partitions, dataset_spec, partition_window
from mlops_assets.resources import DUCKDB_POOL

QUARANTINE_SHARE_CHECK = "check_quarantine_share"
NULL_RATE_CHECK = "check_null_rates"
SCHEMA_CHECK = "check_schema_and_dtypes"


@dg.multi_asset(
    outs={
        "validated_records": dg.AssetOut(
            description="Typed records that pass every row-level check of the specification.",
            metadata={"partition_expr": dataset_spec.date.column},
            kinds={"duckdb", "pandera"},
        ),
        "quarantined_records": dg.AssetOut(
            description="Records held back, as ingested, with the failed column, check and value. "
            "`partition_date` is the partition that ingested them.",
            metadata={"partition_expr": "partition_date"},
            kinds={"duckdb", "pandera"},
        ),
    },
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill,
    group_name="validation",
    pool=DUCKDB_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            QUARANTINE_SHARE_CHECK,
            asset="validated_records",
            description="The share of quarantined records stays under the specification's "
            "max_quarantine_share. Judged before the write (ingestion refuses such a delivery "
            "first): above it the step fails and no table changes.",
        ),
        dg.AssetCheckSpec(
            NULL_RATE_CHECK,
            asset="validated_records",
            description="Columns with a max_null_rate keep their share of nulls under it.",
        ),
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset="validated_records",
            description="Every declared column is present with its declared type.",
        ),
    ],
)
def validate_records(context: dg.AssetExecutionContext, raw_records: DayChunks):
    """Cast, check and deduplicate the raw records; failing rows go to quarantine with reasons.

    The range is validated one window of whole days at a time while the valid rows are written
    (one transaction); the quarantined rows (few: a delivery above max_quarantine_share is
    refused) are kept and written after them.
    """
    import pandas as pd

    from mlops_assets.lib import quality, validation

    spec = dataset_spec
    start, end = partition_window(context)
    limit = spec.quality.max_quarantine_share
    limits = quality.null_limits(spec)
    expected = {name: column.type for name, column in spec.columns.items()}
    held, rates, problems = [], [], []
    tally = {"valid_records": 0, "quarantined_records": 0, "duplicate_keys": 0}

    def validate(raw, first, last):
        result = validation.validate_records(raw, spec, first, last)
        held.append(result.quarantined)
        rates.append(quality.daily_null_rates(result.valid, list(limits), spec.date.column))
        tally["valid_records"] += len(result.valid)
        tally["quarantined_records"] += len(result.quarantined)
        tally["duplicate_keys"] += result.duplicate_keys
        if first == raw_records.windows[0][0]:
            problems.extend(quality.schema_mismatches(result.valid, expected))
            describe_once(context, result.valid, "validated_records")
        daily_metadata(context, result.valid, spec.date.column, first, last, "validated_records")
        return result.valid

    def share() -> float:
        total = tally["valid_records"] + tally["quarantined_records"]
        return tally["quarantined_records"] / total if total else 0.0

    def judge():
        # Before the commit of the valid rows, so validated and features never hold different
        # versions of a day: raising here rolls the write back.
        if share() > limit:
            raise dg.Failure(
                description=f"{share():.1%} of the records fail their checks "
                f"(limit {limit:.0%}); nothing stored was changed",
                metadata={**tally, "quarantine_share": share()},
            )

    yield dg.Output(raw_records.map(validate, after=judge), output_name="validated_records")
    counts = {**tally, "quarantine_share": share()}
    if tally["quarantined_records"]:
        context.log.warning(f"{tally['quarantined_records']} records quarantined")
    quarantined = pd.concat(held, ignore_index=True) if held else pd.DataFrame()
    reasons = (
        quarantined["failed_check"].value_counts().head(20) if len(quarantined) else pd.Series()
    )
    if held:
        describe_once(context, quarantined, "quarantined_records")
        daily_metadata(context, quarantined, PARTITION_COLUMN, start, end, "quarantined_records")
    yield dg.Output(
        quarantined,
        output_name="quarantined_records",
        metadata=range_totals(
            context,
            {
                **counts,
                "reasons": dg.MetadataValue.md(reasons.to_markdown() if len(reasons) else "none"),
            },
            "quarantined_records",
        ),
    )

    yield dg.AssetCheckResult(
        check_name=QUARANTINE_SHARE_CHECK,
        passed=share() <= limit,
        metadata={**counts, "threshold": limit},
    )

    # The same daily limits the delivery was judged by (it may have been accepted anyway).
    daily = pd.concat(rates) if rates else pd.DataFrame(columns=list(limits))
    yield null_rate_check(NULL_RATE_CHECK, daily, limits)

    yield dg.AssetCheckResult(
        check_name=SCHEMA_CHECK,
        passed=not problems,
        metadata={"problems": "; ".join(problems) or "none", "columns": len(expected)},
    )
