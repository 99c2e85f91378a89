"""Features: model-ready columns per record, lookups joined, and the label."""

import dagster as dg

from mlops_assets.lib.chunks import DayChunks
from mlops_assets.metadata import daily_metadata, describe_once, null_rate_check, range_totals
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
def features(
    context: dg.AssetExecutionContext, source: DatasetSource, validated_records: DayChunks
):
    """One row per validated record: date, key, features from the specification, label.

    Built one window of whole days at a time while it is written (one transaction)."""
    import pandas as pd

    from mlops_assets.lib.features import build_features, feature_columns
    from mlops_assets.lib.quality import daily_null_rates
    from mlops_assets.lib.validation import validate_lookup

    spec = dataset_spec
    lookups, dropped = {}, {}
    for name, lookup in spec.lookups.items():
        lookups[name], dropped[name] = validate_lookup(
            source.lookup(spec, name), lookup.columns, lookup.join_on
        )
        if dropped[name]:
            context.log.warning(f"lookup {name}: {dropped[name]} rows failed their checks, dropped")
    limits = {
        name: f.max_null_rate if f.max_null_rate is not None else spec.quality.max_null_rate
        for name, f in spec.features.items()
    }
    label, rates = spec.target.name, []
    # The share of positives; a regression target's mean.
    target_level = "target_mean" if spec.is_regression else "positive_rate"

    def target_mean(day) -> float:
        return float(day[label].mean()) if day[label].notna().any() else float("nan")

    def build(records, first, last):
        frame = build_features(records, lookups, spec)[feature_columns(spec)]
        rates.append(daily_null_rates(frame, list(limits), spec.date.column))
        if first == validated_records.windows[0][0]:
            describe_once(context, frame)
        daily_metadata(
            context,
            frame,
            spec.date.column,
            first,
            last,
            labelled_records=lambda day: int(day[label].notna().sum()),
            **{target_level: target_mean},
        )
        return frame

    yield dg.Output(
        validated_records.map(build),
        metadata=range_totals(context, {f"lookup_rows_dropped/{n}": d for n, d in dropped.items()}),
    )
    daily = pd.concat(rates) if rates else pd.DataFrame(columns=list(limits))
    yield null_rate_check(FEATURE_NULL_CHECK, daily, limits)
