"""Each day's records scored by the serving models."""

import dagster as dg

from mlops_assets.lib.chunks import DayChunks
from mlops_assets.monitoring.common import (
    CHAMPION_ASSET,
    DAILY,
    DATE,
    SCORE,
    champion_rows,
    day_of,
    days,
    days_in,
    pipeline,
    serving_models,
    skip_day,
)
from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import MlflowTracking


@dg.asset(**DAILY, deps=[CHAMPION_ASSET], kinds={"duckdb", "scikitlearn", "mlflow"})
def predictions(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracking,
    features: DayChunks,
):
    """Each day's records scored by the champion (and the challenger, when one is registered):
    one row per record per model with model name, version and alias, the probability, and the
    decision at that version's own threshold (stored beside it). Scored one window of days at a
    time while written."""
    from mlops_assets.lib.monitoring import predict_long

    spec = dataset_spec
    models = serving_models(mlflow)
    scorers = [
        (
            alias,
            (
                ref.version,
                None if dataset_spec.is_regression else ref.decision_threshold,
                pipeline(mlflow.tracking_uri, mlflow.model_name, ref.version),
            ),
        )
        for alias, ref in models
    ]
    run_days = days(context)

    def score(records, first, last):
        frame = predict_long(
            records,
            scorers,
            id_columns=[DATE, *spec.key],
            feature_columns=[*spec.categorical_features, *spec.numeric_features],
            model_name=mlflow.model_name,
        )
        champion = champion_rows(frame)
        by_day = champion.groupby(day_of(champion))
        for day in days_in(run_days, first, last):
            if day not in by_day.groups:
                skip_day(context, day, "no records on this day")
                continue
            rows = by_day.get_group(day)
            context.add_asset_metadata(
                {
                    "records": len(rows),
                    # A regression target's mean prediction; else the decisions' and the
                    # probabilities'.
                    **(
                        {"mean_prediction": float(rows[SCORE].mean())}
                        if dataset_spec.is_regression
                        else {
                            "predicted_positive_rate": float(rows["prediction"].mean()),
                            "mean_probability": float(rows[SCORE].mean()),
                        }
                    ),
                    "dagster/partition_row_count": len(rows) * len(models),
                },
                partition_key=day,
            )
        return frame

    return dg.Output(
        features.map(score),
        metadata={
            "model_name": mlflow.model_name,
            **{f"{alias}_version": ref.version for alias, ref in models},
            **{
                f"{alias}_threshold": ref.decision_threshold
                for alias, ref in models
                if not dataset_spec.is_regression
            },
        },
    )
