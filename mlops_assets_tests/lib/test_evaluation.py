"""Evaluation metrics, baseline, plots and permutation importance, checked against scikit-learn."""

import math
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from threadpoolctl import threadpool_limits

from mlops_assets.lib.evaluation import (
    METRIC_NAMES,
    PLOT_NAMES,
    classification_metrics,
    markdown_table,
    permutation_importance_table,
    save_calibration_curve,
    save_confusion_matrix,
    save_evaluation_plots,
    save_importance_chart,
    save_pr_curve,
    save_roc_curve,
)
from mlops_assets.lib.modeling import build_pipeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread():
    # HistGradientBoosting's OpenMP threads busy-wait on a busy shared machine.
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def scored() -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative but imperfect probabilities."""
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.3).astype(np.int64)
    proba = np.clip(0.3 + 0.25 * (y - 0.3) + rng.normal(0, 0.2, y.size), 0, 1)
    return y, proba


def assert_png(path, min_bytes: int = 5_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes


# ---------------------------------------------------------------------------------------------
# Metrics


def test_metrics_equal_scikit_learn(scored):
    y, proba = scored
    metrics = classification_metrics(y, proba, threshold=0.4)
    predicted = (proba >= 0.4).astype(int)
    expected = {
        "n": y.size,
        "positive_rate": y.mean(),
        "predicted_positive_rate": predicted.mean(),
        "accuracy": accuracy_score(y, predicted),
        "precision": precision_score(y, predicted),
        "recall": recall_score(y, predicted),
        "f1": f1_score(y, predicted),
        "roc_auc": roc_auc_score(y, proba),
        "pr_auc": average_precision_score(y, proba),
        "log_loss": log_loss(y, proba),
        "brier": brier_score_loss(y, proba),
    }
    assert tuple(metrics) == METRIC_NAMES
    assert metrics == pytest.approx(expected, rel=1e-12)
    assert all(type(v) is float for k, v in metrics.items() if k != "n")
    assert type(metrics["n"]) is int


def test_metrics_on_a_hand_checked_example():
    y = [0, 0, 1, 1]
    proba = [0.1, 0.6, 0.4, 0.8]
    metrics = classification_metrics(y, proba, threshold=0.5)
    # Predicted [0, 1, 0, 1]: one true positive, one false positive, one false negative.
    assert metrics["accuracy"] == 0.5
    assert metrics["precision"] == 0.5
    assert metrics["recall"] == 0.5
    assert metrics["roc_auc"] == 0.75  # 3 of the 4 (positive, negative) pairs ranked right
    assert metrics["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.04) / 4)
    assert metrics["predicted_positive_rate"] == 0.5


def test_threshold_is_inclusive():
    assert classification_metrics([0, 1], [0.5, 0.5], 0.5)["predicted_positive_rate"] == 1.0
    assert classification_metrics([0, 1], [0.5, 0.5], threshold=0.51)["recall"] == 0.0


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_gives_nan_ranking_metrics_without_warnings(label):
    y = np.full(50, label)
    proba = np.linspace(0.05, 0.95, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = classification_metrics(y, proba, threshold=0.3)
    assert math.isnan(metrics["roc_auc"])
    assert math.isnan(metrics["pr_auc"])
    assert metrics["positive_rate"] == label
    assert metrics["log_loss"] == pytest.approx(log_loss(y, proba, labels=[0, 1]))
    assert metrics["brier"] == pytest.approx(brier_score_loss(y, proba))
    assert metrics["accuracy"] == pytest.approx(np.mean((proba >= 0.3) == label))


def test_no_predicted_positives_gives_zero_precision_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = classification_metrics([0, 1, 1], [0.1, 0.2, 0.3], threshold=0.5)
    assert metrics["precision"] == metrics["recall"] == metrics["f1"] == 0.0


@pytest.mark.parametrize(
    ("y", "proba", "message"),
    [
        ([0, 1], [0.5], "2 values but proba has 1"),
        ([0, np.nan], [0.5, 0.5], "only 0 and 1"),
        ([0, 2], [0.5, 0.5], "only 0 and 1"),
        ([0, 1], [0.5, 1.2], r"in \[0, 1\]"),
        ([0, 1], [[0.5, 0.5], [0.2, 0.8]], "1-D"),
        ([], [], "non-empty"),
    ],
)
def test_metrics_reject_bad_inputs(y, proba, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(y, proba, threshold=0.5)


def test_markdown_table_lists_model_and_baseline(scored):
    y, proba = scored
    metrics = classification_metrics(y, proba, threshold=0.5)
    # The training prior as the baseline: one constant score, at the same threshold.
    baseline = classification_metrics(y, np.full(y.size, y.mean()), threshold=0.5)
    table = markdown_table(metrics, baseline)
    lines = table.splitlines()
    assert lines[0] == "| metric | model | baseline | model - baseline |"
    assert len(lines) == 2 + len(METRIC_NAMES)
    roc_row = next(line for line in lines if line.startswith("| roc_auc |"))
    assert roc_row == (
        f"| roc_auc | {metrics['roc_auc']:.4f} | 0.5000 | {metrics['roc_auc'] - 0.5:+.4f} |"
    )
    assert "| n | 2,000 | 2,000 | +0 |" in lines
    assert any(line.startswith("| brier (lower is better) |") for line in lines)


def test_markdown_table_shows_nan_as_not_available():
    table = markdown_table({"roc_auc": math.nan, "extra": 1.0}, {"roc_auc": 0.5, "only": 2.0})
    assert "| roc_auc | n/a | 0.5000 | n/a |" in table
    assert "| extra | 1.0000 |  |  |" in table
    assert "| only |  | 2.0000 |  |" in table


# ---------------------------------------------------------------------------------------------
# Plots


def test_each_plot_is_a_png(scored, tmp_path):
    y, proba = scored
    baseline = np.full(y.size, y.mean())
    paths = [
        save_confusion_matrix(y, (proba >= 0.5).astype(int), tmp_path / "cm.png"),
        save_roc_curve(y, proba, tmp_path / "roc.png", baseline=baseline),
        save_pr_curve(y, proba, tmp_path / "pr.png", baseline=baseline),
        save_calibration_curve(y, proba, tmp_path / "nested" / "cal.png", n_bins=8),
    ]
    for path in paths:
        assert path.exists()
        assert_png(path)


def test_evaluation_plots_in_one_call(scored, tmp_path):
    import matplotlib.pyplot as plt

    y, proba = scored
    open_before = plt.get_fignums()
    plots = save_evaluation_plots(y, proba, tmp_path / "plots", threshold=0.4)
    assert tuple(plots) == PLOT_NAMES
    for name, path in plots.items():
        assert path == tmp_path / "plots" / f"{name}.png"
        assert_png(path)
    # Nothing registered with pyplot, so nothing left open.
    assert plt.get_fignums() == open_before


def test_single_class_plots_skip_the_undefined_curves(tmp_path):
    y = np.zeros(30, dtype=int)
    proba = np.linspace(0, 0.9, 30)
    plots = save_evaluation_plots(y, proba, tmp_path, threshold=0.5)
    assert set(plots) == {"confusion_matrix", "calibration_curve"}
    for path in plots.values():
        assert_png(path, min_bytes=1_000)
    with pytest.raises(ValueError, match="needs both classes"):
        save_roc_curve(y, proba, tmp_path / "roc.png")


def test_importing_the_module_is_cheap():
    # The package's __init__ defines the Definitions lazily: importing a lib module loads neither.
    code = (
        "import sys\n"
        "import mlops_assets.lib.evaluation\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'matplotlib'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Permutation importance


@pytest.fixture(scope="module")
def informative() -> tuple[object, pd.DataFrame, np.ndarray]:
    """A fitted pipeline where `strong` decides most, `weak` a little and `noise` nothing."""
    rng = np.random.default_rng(0)
    n = 3000
    X = pd.DataFrame(
        {
            "group": rng.choice(["a", "b", "c"], n).astype(object),
            "strong": rng.normal(size=n),
            "weak": rng.normal(size=n),
            "noise": rng.normal(size=n),
        }
    )
    logit = 2.5 * X["strong"] + 0.7 * (X["group"] == "a") - 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).to_numpy().astype(np.int64)
    pipeline = build_pipeline(
        "hist_gradient_boosting", {"max_iter": 50}, ["group"], ["strong", "weak", "noise"], seed=0
    ).fit(X, y)
    return pipeline, X, y


def test_permutation_importance_ranks_the_informative_feature_first(informative):
    pipeline, X, y = informative
    table = permutation_importance_table(pipeline, X, y, n_repeats=3)
    assert list(table.columns) == ["feature", "importance_mean", "importance_std"]
    assert table["feature"].iloc[0] == "strong"
    assert set(table["feature"]) == set(X.columns)
    assert table["importance_mean"].is_monotonic_decreasing
    noise = table.set_index("feature").loc["noise", "importance_mean"]
    assert table["importance_mean"].iloc[0] > 0.2 > abs(noise)


def test_permutation_importance_subsamples_deterministically(informative):
    pipeline, X, y = informative
    first = permutation_importance_table(pipeline, X, y, n_repeats=2, max_rows=500, seed=4)
    second = permutation_importance_table(pipeline, X, y, n_repeats=2, max_rows=500, seed=4)
    pd.testing.assert_frame_equal(first, second)
    full = permutation_importance_table(pipeline, X, y, n_repeats=2, seed=4)
    assert not np.allclose(first["importance_mean"], full["importance_mean"])


def test_importance_chart_is_a_png(informative, tmp_path):
    pipeline, X, y = informative
    table = permutation_importance_table(pipeline, X, y, n_repeats=2, max_rows=1000)
    path = save_importance_chart(table, tmp_path / "importance.png")
    assert_png(path)
    with pytest.raises(ValueError, match="lacks columns"):
        save_importance_chart(table.drop(columns="importance_std"), tmp_path / "x.png")
