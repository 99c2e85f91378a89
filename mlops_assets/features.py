"""Features: model-ready columns per record, lookups joined, and the label."""

import dagster as dg

from mlops_assets.metadata import null_rate_check, table_metadata
from mlops_assets.partitions import daily_backfill, daily_partitions, dataset_spec
from mlops_assets.resources import DUCKDB_POOL, DatasetSource

FEATURE_NULL_CHECK = "check_feature_null_rates"


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill,
    metadata={"partition_expr": dataset_spec.date.column},
    group_name="features",
    kinds={"duckdb", "pandas"},
    pool=DUCKDB_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            FEATURE_NULL_CHECK,
            asset="features",
            description="Each feature's share of nulls (e.g. a lookup that found no match) stays "
            "under its max_null_rate, or the specification's default.",
        )
    ],
)
def features(context: dg.AssetExecutionContext, source: DatasetSource, validated_records):
    """One row per validated record: date, key, features from the specification, label."""
    from mlops_assets.lib.features import build_features, feature_columns
    from mlops_assets.lib.validation import validate_lookup

    spec = dataset_spec
    lookups, dropped = {}, {}
    for name, lookup in spec.lookups.items():
        lookups[name], dropped[name] = validate_lookup(
            source.lookup(spec, name), lookup.columns, lookup.join_on
        )
        if dropped[name]:
            context.log.warning(f"lookup {name}: {dropped[name]} rows failed their checks, dropped")
    frame = build_features(validated_records, lookups, spec)[feature_columns(spec)]
    labelled = frame[spec.target.name].notna()
    yield dg.Output(
        frame,
        metadata={
            **table_metadata(frame),
            "labelled_records": int(labelled.sum()),
            # The share of positives; a regression target's mean.
            ("target_mean" if spec.is_regression else "positive_rate"): float(
                frame.loc[labelled, spec.target.name].mean()
            )
            if labelled.any()
            else float("nan"),
            **{f"lookup_rows_dropped/{n}": d for n, d in dropped.items()},
        },
    )

    limits = {
        name: f.max_null_rate if f.max_null_rate is not None else spec.quality.max_null_rate
        for name, f in spec.features.items()
    }
    yield null_rate_check(FEATURE_NULL_CHECK, frame, limits, spec.date.column)
