"""Monitoring backfill: 184 days (Jul-Dec 2013) of predictions + drift + performance as ONE run,
against one run per partition (measured on a few days, extrapolated), and Evidently per day
inside compute_drift against Evidently called directly on the same frames.

Needs the features of 2013 in data/warehouse.duckdb (`make data`); everything else is built in a
temporary directory: the features are copied there, a HistGradientBoosting model is trained on
Jan-Jun and registered as champion in a temporary MLflow store, and its data window (Jan-Jun) is
the drift reference. Nothing under data/ is written.

Run: .venv/bin/python bench/monitoring_backfill.py [--per-partition-days 4] [--evidently-days 5]
"""

import argparse
import datetime as dt
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import dagster as dg
import duckdb

from mlops_assets import monitoring
from mlops_assets.monitoring.common import pipeline as cached_pipeline
from mlops_assets.monitoring.drift import DriftConfig, read_reference
from mlops_assets.partitions import daily_partitions
from mlops_assets.partitions import dataset_spec as spec
from mlops_assets.resources import (
    DuckDBFrameIOManager,
    EvidentlyWorkspace,
    MlflowTracking,
    ReportStore,
    Warehouse,
)

SOURCE = Path("data/warehouse.duckdb")
FIRST, LAST = "2013-07-01", "2013-12-31"
MODEL = "flights_model"
DAILY = [
    monitoring.predictions,
    monitoring.drift_report,
    monitoring.performance_estimate,
    monitoring.performance,
]
FEATURES = dg.AssetSpec(
    "features",
    partitions_def=daily_partitions,
    metadata={"partition_expr": "flight_date"},
)


def setup(root: Path) -> dict:
    """Copy the features, build the training set, train and register the champion."""
    import mlflow

    from mlops_assets.lib import registry
    from mlops_assets.lib.evaluation import classification_metrics
    from mlops_assets.lib.modeling import build_pipeline, features_and_label, skops_trusted_types

    database = root / "warehouse.duckdb"
    label = spec.target.name
    with duckdb.connect(str(database)) as con:
        con.execute(f"ATTACH '{SOURCE}' AS source (READ_ONLY)")
        con.execute(f"CREATE SCHEMA {spec.name}")
        con.execute(
            f"CREATE TABLE {spec.name}.features AS SELECT * FROM source.{spec.name}.features"
        )
        con.execute(
            f"CREATE TABLE {spec.name}.training_set AS SELECT *, CASE WHEN flight_date < "
            "'2013-06-01' THEN 'train' ELSE 'test' END AS split "
            f"FROM {spec.name}.features WHERE flight_date < '2013-07-01' AND {label} IS NOT NULL"
        )
        train = con.execute(f"SELECT * FROM {spec.name}.training_set").df()
    cat, num = spec.categorical_features, spec.numeric_features
    fit, test = train[train["split"] == "train"], train[train["split"] == "test"]
    pipeline = build_pipeline("hist_gradient_boosting", {}, cat, num, seed=0)
    pipeline.fit(*features_and_label(fit, cat, num, label))
    x_test, y_test = features_and_label(test, cat, num, label)
    threshold = 0.5  # fixed here: this benchmark measures time, not decisions
    metrics = classification_metrics(y_test, pipeline.predict_proba(x_test)[:, 1], threshold)

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = registry.client(uri)
    experiment = registry.ensure_experiment(client, "bench", str(root / "artifacts"))
    with registry.scoped_tracking(uri), mlflow.start_run(experiment_id=experiment):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.sklearn.log_model(
            pipeline,
            name="model",
            registered_model_name=MODEL,
            skops_trusted_types=skops_trusted_types("hist_gradient_boosting"),
            pip_requirements=["scikit-learn"],
        )
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_model_version_tag(MODEL, "1", registry.THRESHOLD_TAG, str(threshold))
    client.set_model_version_tag(MODEL, "1", registry.DATA_WINDOW_TAG, "2013-01-01..2013-06-30")
    return {
        "io_manager": DuckDBFrameIOManager(database=str(database), schema=spec.name),
        "warehouse": Warehouse(database=str(database)),
        "mlflow": MlflowTracking(
            tracking_uri=uri,
            artifact_location=str(root / "artifacts"),
            experiment_name="bench",
            model_name=MODEL,
        ),
        "reports": ReportStore(directory=str(root / "reports")),
        "evidently": EvidentlyWorkspace(
            directory=str(root / "evidently"), project_name="flights drift"
        ),
    }


def materialize(resources, instance, **partition):
    start = time.perf_counter()
    result = dg.materialize(
        [FEATURES, *DAILY], selection=DAILY, resources=resources, instance=instance, **partition
    )
    assert result.success
    steps = {
        e.step_key: e.event_specific_data.duration_ms / 1000
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_SUCCESS
    }
    return time.perf_counter() - start, steps


def evidently_per_day(resources, days: list[str]) -> dict[str, list[float]]:
    """compute_drift (as the asset calls it) vs Evidently called directly, on the same frames."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift
    from evidently.presets import DataDriftPreset

    from mlops_assets.lib.drift import DriftSettings, compute_drift
    from mlops_assets.lib.monitoring import constant_within_batches

    cat, num = spec.categorical_features, spec.numeric_features
    config = DriftConfig()
    reference, _ = read_reference(resources["warehouse"], resources["mlflow"], "1")
    exclude = constant_within_batches(reference, "flight_date", [*cat, *num])
    reference = reference.sample(config.reference_sample_rows, random_state=config.reference_seed)
    mlflow = resources["mlflow"]
    pipeline = cached_pipeline(mlflow.tracking_uri, MODEL, "1")
    reference["probability"] = pipeline.predict_proba(reference[[*cat, *num]])[:, 1]
    settings = DriftSettings(exclude=tuple(exclude))
    tested = [c for c in [*cat, *num] if c not in exclude]
    used = [*tested, "probability"]
    definition = DataDefinition(
        numerical_columns=[c for c in tested if c in num] + ["probability"],
        categorical_columns=[c for c in tested if c in cat],
    )
    times = {"compute_drift (asset)": [], "direct, same metrics": [], "direct, preset": []}
    with duckdb.connect(resources["warehouse"].database, read_only=True) as con:
        frames = {
            d: con.execute(f"SELECT * FROM {spec.name}.features WHERE flight_date = ?", [d]).df()
            for d in days
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for day, current in frames.items():
            current["probability"] = pipeline.predict_proba(current[[*cat, *num]])[:, 1]
            t = time.perf_counter()
            compute_drift(
                reference,
                current,
                numeric=num,
                categorical=cat,
                settings=settings,
                timestamp=dt.datetime.fromisoformat(day),
            )
            times["compute_drift (asset)"].append(time.perf_counter() - t)
            kinds = {c: ("num" if c in num else "cat") for c in tested}
            metrics = [
                DriftedColumnsCount(
                    columns=tested,
                    per_column_method={c: settings.method_for(c, k) for c, k in kinds.items()},
                    per_column_threshold={
                        c: settings.threshold_for(c, k) for c, k in kinds.items()
                    },
                ),
                *(
                    ValueDrift(
                        column=c,
                        method=settings.method_for(c, k),
                        threshold=settings.threshold_for(c, k),
                    )
                    for c, k in kinds.items()
                ),
                ValueDrift(column="probability", method="wasserstein", threshold=1.0),
            ]
            for name, items in (
                ("direct, same metrics", metrics),
                ("direct, preset", [DataDriftPreset(columns=tested), metrics[-1]]),
            ):
                t = time.perf_counter()
                Report(items, include_tests=True).run(
                    Dataset.from_pandas(current[used], data_definition=definition),
                    Dataset.from_pandas(reference[used], data_definition=definition),
                )
                times[name].append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-partition-days", type=int, default=4)
    parser.add_argument("--evidently-days", type=int, default=5)
    args = parser.parse_args()
    if not SOURCE.exists():
        raise SystemExit(f"{SOURCE} not found: run `make data` first")
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        t = time.perf_counter()
        resources = setup(Path(tmp))
        print(f"setup (copy features, train on Jan-May, register): {time.perf_counter() - t:.1f} s")

        days = [d.isoformat() for d in _range(FIRST, LAST)]
        tags = {
            "dagster/asset_partition_range_start": FIRST,
            "dagster/asset_partition_range_end": LAST,
        }
        one_run, steps = materialize(resources, instance, tags=tags)
        print(f"\nONE run, {len(days)} days: {one_run:.1f} s wall (in-process)")
        for step, seconds in steps.items():
            print(f"  step {step:14s} {seconds:6.1f} s")

        sample = days[:: len(days) // args.per_partition_days][: args.per_partition_days]
        per_run = []
        for day in sample:
            seconds, _ = materialize(resources, instance, partition_key=day)
            per_run.append(seconds)
        mean = statistics.mean(per_run)
        estimate = mean * len(days)
        print(
            f"\none run per partition, measured on {len(sample)} days ({', '.join(sample)}): "
            f"{mean:.2f} s per run (in-process, warm model cache: a lower bound; a launched run "
            f"also pays ~4 s of process start and imports)"
        )
        print(f"  extrapolated to {len(days)} days: {estimate:.0f} s")
        print(f"  speed-up of the single run: {estimate / one_run:.1f}x")

        times = evidently_per_day(
            resources, days[:: len(days) // args.evidently_days][: args.evidently_days]
        )
        print(f"\nEvidently per day, median of {args.evidently_days} days (reference 20,000 rows):")
        for name, values in times.items():
            print(f"  {name:24s} {statistics.median(values):.3f} s")
        ratio = statistics.median(times["compute_drift (asset)"]) / statistics.median(
            times["direct, same metrics"]
        )
        print(f"  compute_drift / direct same metrics: {ratio:.2f}x")
        print(f"  drift step per day in the one run: {steps['drift_report'] / len(days):.3f} s")


def _range(first: str, last: str):
    day, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    while day <= end:
        yield day
        day += dt.timedelta(days=1)


if __name__ == "__main__":
    main()
