"""Validated records and the quarantine: nothing failing the contract goes on, nothing is lost.

DataFrame inputs are left unannotated: Dagster resolves annotations at load time, and importing
pandas there would double the time it takes to load the code location.
"""

import dagster as dg

from mlops_assets.metadata import null_rate_check, table_metadata
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
def validate_records(context: dg.AssetExecutionContext, raw_records):
    """Cast, check and deduplicate the raw records; failing rows go to quarantine with reasons."""
    from mlops_assets.lib import quality, validation

    spec = dataset_spec
    start, end = partition_window(context)
    result = validation.validate_records(raw_records, spec, start, end)
    if len(result.quarantined):
        context.log.warning(f"{len(result.quarantined)} records quarantined")
    counts = {
        "valid_records": len(result.valid),
        "quarantined_records": len(result.quarantined),
        "quarantine_share": result.quarantine_share,
    }
    limit = spec.quality.max_quarantine_share
    if result.quarantine_share > limit:
        # Before any write, so validated and features never hold different versions of a day.
        raise dg.Failure(
            description=f"{result.quarantine_share:.1%} of the records fail their checks "
            f"(limit {limit:.0%}); nothing stored was changed",
            metadata=counts,
        )
    yield dg.Output(
        result.valid,
        output_name="validated_records",
        metadata={**table_metadata(result.valid), **counts},
    )
    reasons = result.quarantined["failed_check"].value_counts().head(20)
    yield dg.Output(
        result.quarantined,
        output_name="quarantined_records",
        metadata={
            **table_metadata(result.quarantined),
            **counts,
            "reasons": dg.MetadataValue.md(reasons.to_markdown() if len(reasons) else "none"),
        },
    )

    yield dg.AssetCheckResult(
        check_name=QUARANTINE_SHARE_CHECK,
        passed=result.quarantine_share <= limit,
        metadata={**counts, "threshold": limit, "duplicate_keys": result.duplicate_keys},
    )

    # The same daily limits the delivery was judged by (it may have been accepted anyway).
    yield null_rate_check(
        NULL_RATE_CHECK, result.valid, quality.null_limits(spec), spec.date.column
    )

    expected = {name: column.type for name, column in spec.columns.items()}
    problems = quality.schema_mismatches(result.valid, expected)
    yield dg.AssetCheckResult(
        check_name=SCHEMA_CHECK,
        passed=not problems,
        metadata={"problems": "; ".join(problems) or "none", "columns": len(expected)},
    )
