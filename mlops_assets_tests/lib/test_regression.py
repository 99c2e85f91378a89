"""`task: regression`: metrics, the day-clustered intervals, the simple predictors and the gates,
the spec's rules, the regressor pipeline and the A/B loss, against hand-computed values."""

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from mlops_assets.lib import decision
from mlops_assets.lib import regression as lib
from mlops_assets.lib.decision import day_resamples
from mlops_assets.lib.spec import DatasetSpec, GateSpec

GATES = GateSpec(n_resamples=400)


def days_of(n_days: int, per_day: int) -> np.ndarray:
    return np.repeat(pd.date_range("2021-03-01", periods=n_days).to_numpy(), per_day)


def test_metrics_match_hand_computed_values():
    y, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 6.0])
    # residuals 0, 1, -1, 2: MAE 4/4, RMSE sqrt(6/4), bias 2/4; R2 = 1 - 6 / 5.
    assert lib.regression_metrics(y, p) == pytest.approx(
        {
            "n": 4,
            "target_mean": 2.5,
            "prediction_mean": 3.0,
            "mean_residual": 0.5,
            "mae": 1.0,
            "rmse": math.sqrt(1.5),
            "r2": -0.2,
        }
    )
    assert list(lib.per_record_loss(y, p, "squared")) == [0, 1, 1, 4]
    with pytest.raises(ValueError, match="finite"):
        lib.regression_metrics([1.0, np.nan], [1.0, 2.0])


def test_a_day_resample_weighs_each_record_by_the_draws_of_its_day():
    rng = np.random.default_rng(1)
    days = days_of(6, 5)
    y, p = rng.normal(10, 2, 30), rng.normal(10, 2, 30)
    full, draws = lib.day_bootstrap_errors(
        y, {"m": p}, days, error="squared", n_resamples=3, seed=4
    )
    counts, day_of_row = day_resamples(days, n_resamples=3, seed=4)
    assert full["m"] == pytest.approx(math.sqrt(np.mean((p - y) ** 2)))
    for r in range(3):
        # The resample as data: each day's records repeated as often as the day was drawn.
        rows = np.repeat(np.arange(30), counts[r][day_of_row])
        assert draws["m"][r] == pytest.approx(math.sqrt(np.mean((p[rows] - y[rows]) ** 2)))
        r2, r2_draws = lib.day_bootstrap_r2(y, p, days, n_resamples=3, seed=4)
        expected = 1 - np.sum((p[rows] - y[rows]) ** 2) / np.sum((y[rows] - y[rows].mean()) ** 2)
        assert r2_draws[r] == pytest.approx(expected)
    assert r2 == pytest.approx(lib.regression_metrics(y, p)["r2"])


def category_data(seed: int = 0, n_days: int = 12, per_day: int = 40):
    """A target made of a category level, a numeric effect and noise."""
    rng = np.random.default_rng(seed)
    n = n_days * per_day
    category = rng.choice(["a", "b", "c"], n)
    x = rng.uniform(0, 1, n)
    level = pd.Series(category).map({"a": 0.0, "b": 10.0, "c": 20.0}).to_numpy()
    y = level + 8 * x + rng.normal(0, 1, n)
    return pd.DataFrame({"day": days_of(n_days, per_day), "c": category, "x": x, "y": y})


def test_a_model_worse_than_the_per_category_mean_is_refused_and_a_better_one_passes():
    train, test = category_data(0), category_data(1)
    column, _ = lib.most_informative_category(train, train, ["c"], "y")
    means, overall = decision.category_means(train[column], train["y"])
    by_category = decision.category_mean_predictions(means, overall, test[column])
    level = test["c"].map({"a": 0.0, "b": 10.0, "c": 20.0}).to_numpy()
    # Worse: the category level but a wrong numeric slope pointing the other way.
    worse = level + 8 * (1 - test["x"].to_numpy())
    better = level + 8 * test["x"].to_numpy()
    refs = {"mean_by_c": by_category}
    kwargs = {"margin": 0.0, "gates": GATES, "error": "absolute"}
    refused = lib.skill_gate("beats", test["y"], worse, refs, test["day"], **kwargs)
    passed = lib.skill_gate("beats", test["y"], better, refs, test["day"], **kwargs)
    assert (refused.judged, refused.passed, passed.passed) == (True, False, True)
    assert refused.figures["mean_by_c_skill_high"] < 0 < passed.figures["mean_by_c_skill_low"]
    # The skill is 1 - MAE(model) / MAE(reference), computed by hand.
    mae = lambda p: np.mean(np.abs(p - test["y"].to_numpy()))  # noqa: E731
    assert passed.figures["mean_by_c_skill"] == pytest.approx(1 - mae(better) / mae(by_category))
    assert "skill" in refused.message and "failed" in refused.message


def test_a_constant_predictor_is_refused_even_when_it_beats_the_training_mean():
    test = category_data(2)
    y = test["y"].to_numpy()
    # The training level was far off: a constant at the test days' own mean beats it, and a
    # gate that only compared errors would pass it.
    constant = np.full(y.size, y.mean())
    gate = lib.degenerate_gate(
        y, constant, y.mean() - 15, test["day"], gates=GATES, error="absolute"
    )
    assert gate.figures["training_mean_skill_low"] > 0
    assert (gate.judged, gate.passed) == (True, False)
    assert "one constant" in gate.message
    varying = constant + 8 * (test["x"].to_numpy() - 0.5)
    ok = lib.degenerate_gate(y, varying, y.mean() - 15, test["day"], gates=GATES, error="absolute")
    assert ok.passed


def test_too_few_test_days_are_not_judged_and_never_pass():
    test = category_data(3, n_days=3)
    y = test["y"].to_numpy()
    gate = lib.skill_gate(
        "beats", y, y, {"m": np.zeros(y.size)}, test["day"], margin=0, gates=GATES, error="squared"
    )
    assert (gate.judged, gate.passed) == (False, False)
    assert "not judged: 3 test day(s)" in gate.message


def test_last_period_mean_and_the_informative_column():
    history = pd.DataFrame(
        {"d": pd.date_range("2021-03-01", periods=10).repeat(2), "y": np.arange(20.0)}
    )
    # The last 7 days are days 4..10: rows 6..19.
    assert lib.last_period_mean(history, date_column="d", label="y") == pytest.approx(12.5)
    data = category_data(4).assign(
        noise=lambda f: np.random.default_rng(0).choice(["u", "v"], len(f))
    )
    column, error = lib.most_informative_category(data, data, ["noise", "c"], "y")
    assert column == "c" and error < data["y"].std()


def test_bias_guardrail_fails_a_biased_challenger():
    y = np.random.default_rng(0).normal(10, 2, 300)
    control, treatment = y + 1.0 * np.sign(np.sin(np.arange(300))), y + 1.5
    result = lib.bias_guardrail(y, control, treatment, 0.25, 200)
    # |bias| control ~0 (the signs cancel), treatment 1.5 > 0 + 0.25 * MAE 1.0.
    assert (result.status, result.treatment) == ("failed", pytest.approx(1.5))
    assert lib.bias_guardrail(y[:100], control[:100], y[:100], 0.25, 200).status == "not judged"


# ---------------------------------------------------------------------------------------------
# The spec, the pipeline, the served model, the A/B loss


def spec_dict(**changes) -> dict:
    base = {
        "name": "t",
        "source": {"path": "x.csv"},
        "date": {"column": "d", "expression": "d", "start": "2021-01-01", "end": "2021-01-31"},
        "key": ["k"],
        "columns": {"k": {"type": "int"}, "v": {"type": "float"}},
        "features": {"v2": {"kind": "numeric", "expression": "v"}},
        "target": {"name": "y", "expression": "v"},
    }
    return {**base, **changes}


def test_the_spec_refuses_classification_settings_under_regression():
    assert DatasetSpec.model_validate(spec_dict()).task == "classification"
    spec = DatasetSpec.model_validate(spec_dict(task="regression"))
    assert (spec.regression.gate_error, spec.regression.ab_loss) == ("squared", "squared")
    with pytest.raises(ValueError, match=r"\['operating_point'\] only apply to task: class"):
        DatasetSpec.model_validate(spec_dict(task="regression", operating_point={"beta": 2}))
    with pytest.raises(ValueError, match=r"gates\.rate_factor"):
        DatasetSpec.model_validate(spec_dict(task="regression", gates={"rate_factor": 3}))
    # Gate margins and intervals are shared: allowed.
    DatasetSpec.model_validate(spec_dict(task="regression", gates={"baseline_margin": 0.05}))
    with pytest.raises(ValueError, match="only applies to task: regression"):
        DatasetSpec.model_validate(spec_dict(regression={"ab_loss": "absolute"}))


def test_the_regressor_pipeline_and_the_served_model():
    from mlops_assets.lib.modeling import build_pipeline, features_and_label, fit_final
    from mlops_assets.lib.served import RegressionModel

    train = category_data(5)
    pipeline = build_pipeline("hist_gradient_boosting", {}, ["c"], ["x"], 0, task="regression")
    assert type(pipeline[-1]).__name__ == "HistGradientBoostingRegressor"
    X, y = features_and_label(train, ["c"], ["x"], "y", "regression")
    assert y.dtype == float
    fitted = fit_final(
        train,
        estimator="random_forest",
        params={"n_estimators": 10},
        categorical=["c"],
        numeric=["x"],
        label="y",
        seed=0,
        task="regression",
    )
    served = RegressionModel(fitted, categories={"c": ["a", "b"]})
    answer = served.predict(X.head(3).assign(c=["a", "c", None]))
    assert list(answer.columns) == ["prediction", "unknown_categories"]
    assert list(answer["unknown_categories"]) == [0, 1, 0]
    assert answer["prediction"].to_numpy() == pytest.approx(
        fitted.predict(X.head(3).assign(c=["a", "c", None]))
    )
    assert lib.regression_metrics(y, served.predict_value(X))["mae"] < 2


def test_the_search_scores_regressors_by_their_error():
    from mlops_assets.lib.modeling import search_hyperparameters

    train = category_data(6)
    result = search_hyperparameters(
        train,
        estimator="hist_gradient_boosting",
        categorical=["c"],
        numeric=["x"],
        label="y",
        date_column="day",
        n_trials=2,
        n_splits=2,
        metric=lib.SEARCH_SCORER["absolute"],
        task="regression",
    )
    # A negative MAE, near the noise's (sd 1: MAE ~0.8), far below the target's spread.
    assert -2 < result.best_score < 0
    with pytest.raises(ValueError, match="has no regressor"):
        search_hyperparameters(
            train,
            estimator="logistic_regression",
            categorical=["c"],
            numeric=["x"],
            label="y",
            date_column="day",
            task="regression",
        )


def test_the_ab_primary_metric_is_the_paired_daily_squared_error_difference():
    from mlops_assets.lib.ab_testing.decision import decide
    from mlops_assets.lib.ab_testing.design import ExperimentDesign
    from mlops_assets.lib.ab_testing.inference import Records, daily_figures

    day = np.array(["2021-03-01"] * 2 + ["2021-03-02"] * 2, dtype="datetime64[D]")
    records = Records(
        day,
        np.array(["control", "treatment", "control", "excluded"], dtype=object),
        np.array([1.0, 2.0, 3.0, 4.0]),
        np.array([1.0, 2.0, 4.0, 0.0]),  # control: errors 0, 0, 1
        np.array([2.0, 4.0, 3.0, 0.0]),  # treatment: errors 1, 2, 0
        math.nan,
        math.nan,
        "squared_error",
    )
    daily = daily_figures(records)
    # Day 1: (1 + 4) / 2 - 0 = 2.5; day 2 (the excluded record left out): 0 - 1 = -1.
    assert list(daily.paired_diff) == [2.5, -1.0]
    assert np.isnan(daily.roc_auc_diff).all()
    design = ExperimentDesign(
        "e", dt.date(2021, 3, 1), primary_metric="squared_error", baseline_log_loss=1.0
    )
    decision = decide(design, records)
    assert [g.name for g in decision.guardrails] == ["bias"]
    assert decision.primary.mean == pytest.approx(0.75)
    with pytest.raises(ValueError, match="finite"):
        Records(
            day,
            records.arm,
            records.label * np.nan,
            records.score_control,
            records.score_treatment,
            math.nan,
            math.nan,
            "squared_error",
        )


def test_the_retraining_rule_reads_a_regression_champion_s_error_ratio_as_decay():
    from mlops_assets.lib.automation import DayResult, RetrainingRule, evaluate_rule

    rule = RetrainingRule()
    start = dt.date(2021, 4, 1)

    def days(ratio: float) -> list:
        return [DayResult(start + dt.timedelta(d), error_ratio=ratio) for d in range(7)]

    decayed = evaluate_rule(days(rule.max_error_ratio + 0.01), rule, last_retrain=None)
    assert decayed.retrain and decayed.reason.startswith("decay on 7 consecutive days")
    # As good as on the test days (and a NaN of a day not judged) is no decay.
    assert not evaluate_rule(days(1.0), rule, last_retrain=None).retrain
    assert not evaluate_rule(days(float("nan")), rule, last_retrain=None).retrain
