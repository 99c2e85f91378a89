"""The regression task of `performance` (`task: regression`).

Per day once its labels are usable: MAE, RMSE and R2 of the champion's predictions, on the day or
on the shortest trailing window with enough labelled records (as for a classifier), and beside
them the drift of what the labels reveal: the target's mean, the prediction's mean and the mean
residual (prediction - target, the bias) against the same figures on the champion's test days.
`error_ratio` (the day's error over the test error) is what the retraining sensor reads as decay.
There is no label-free estimate (CBPE is for probabilities), so no band either.
"""

from mlops_assets.monitoring.performance import Measured, PerformanceConfig, Task
from mlops_assets.partitions import dataset_spec

# Watched when the config names no regression metric (its default watches a classifier's).
DEFAULT_WATCHED = ("mae", "rmse")


def regression_task(config: PerformanceConfig) -> Task:
    """MAE, RMSE, R2 and the label-revealed levels; the gate error over the test's."""
    from mlops_assets.lib.regression import ERROR_METRIC, METRIC_NAMES, regression_metrics

    label, error = dataset_spec.target.name, ERROR_METRIC[dataset_spec.regression.gate_error]
    watched = [m for m in config.watched_metrics if m in METRIC_NAMES] or list(DEFAULT_WATCHED)
    nan = float("nan")

    def measure(window, k, enough, date, version, test) -> Measured:
        metrics = regression_metrics(window[label], window["prediction"]) if len(window) else {}
        ratio = metrics.get(error, nan) / test[error] if enough and test.get(error) else nan
        return Measured(
            metrics=metrics,
            columns={
                "error_ratio": ratio,
                # The test days' levels: a moved target mean, or a mean residual away from the
                # test's, is the drift only the labels reveal.
                **{
                    f"test_{name}": test.get(name, nan)
                    for name in ("target_mean", "prediction_mean", "mean_residual")
                },
            },
            metadata={
                "error_ratio": float(ratio),
                f"reference_{error}": test.get(error, nan),
            },
            ok=f"test metrics held ({error} {ratio:.3f} x the test's, on {k} day(s))",
        )

    return Task(
        METRIC_NAMES,
        watched,
        measure,
        lambda rows, tests: ({"watched_metrics": ", ".join(watched)}, {}),
    )
