"""Model building, time-ordered splits and search, on small synthetic frames."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from mlops_assets.lib import modeling
from mlops_assets.lib.modeling import (
    ESTIMATORS,
    build_pipeline,
    day_folds,
    features_and_label,
    fit_final,
    hash_frame,
    search_hyperparameters,
    skops_trusted_types,
    time_split,
    validate_params,
)

# Generic names on purpose: the library must not know the flights columns.
DATE = "event_date"
CATEGORICAL = ["segment", "region"]
NUMERIC = ["signal", "noise"]
LABEL = "label"
FEATURES = [*CATEGORICAL, *NUMERIC]
# Small and single-threaded: the forest defaults (100 trees, n_jobs=-1) are slow for tests.
FAST_PARAMS = {
    "hist_gradient_boosting": {"max_iter": 50},
    "random_forest": {"n_estimators": 30, "n_jobs": 1},
}


def make_frame(n: int = 3000, days: int = 40, seed: int = 0) -> pd.DataFrame:
    """Rows in random date order; the label depends on `signal` and on segment "b"."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            DATE: pd.Timestamp("2013-01-01")
            + pd.to_timedelta(rng.integers(0, days, n), unit="D")
            + pd.to_timedelta(rng.integers(0, 24, n), unit="h"),
            "segment": rng.choice(["a", "b", "c", "d"], n).astype(object),
            "region": rng.choice(["north", "south"], n).astype(object),
            "signal": rng.normal(size=n),
            "noise": rng.normal(size=n),
        }
    )
    # Missing values as the real data has them: absent weather, an unknown category.
    frame.loc[rng.random(n) < 0.1, "noise"] = np.nan
    frame.loc[rng.random(n) < 0.05, "segment"] = None
    logit = 1.5 * frame["signal"] + 2.0 * (frame["segment"] == "b") - 1.0
    frame[LABEL] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return frame


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread():
    # HistGradientBoosting's OpenMP threads busy-wait; on a shared 2-core machine that turned a
    # 0.2 s fit into a minute. One thread keeps the tests fast whatever else is running.
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame()


@pytest.fixture(scope="module")
def fitted(frame) -> dict:
    """One fitted pipeline per tree family, trained on the earliest days."""
    train, _, test = time_split(frame, DATE)
    return {
        estimator: fit_final(
            train,
            estimator=estimator,
            params=params,
            categorical=CATEGORICAL,
            numeric=NUMERIC,
            label=LABEL,
            seed=0,
        )
        for estimator, params in FAST_PARAMS.items()
    } | {"test": test}


# ---------------------------------------------------------------------------------------------
# Learning


@pytest.mark.parametrize("estimator", list(FAST_PARAMS))
def test_model_learns_the_signal_on_later_days(fitted, estimator):
    test = fitted["test"]
    proba = fitted[estimator].predict_proba(test[FEATURES])[:, 1]
    assert roc_auc_score(test[LABEL], proba) > 0.7


def test_learned_effect_has_the_right_direction(fitted):
    pipeline = fitted["hist_gradient_boosting"]
    probe = pd.DataFrame(
        {"segment": ["a", "b", "a"], "region": "north", "signal": [0.0, 0.0, 2.0], "noise": 0.0}
    )
    low, segment_b, high_signal = pipeline.predict_proba(probe)[:, 1]
    assert segment_b > low + 0.2
    assert high_signal > low + 0.2


def test_fit_final_uses_validation_rows_too(frame):
    train, validation, _ = time_split(frame, DATE)
    pipeline = fit_final(
        train,
        validation=validation,
        estimator="random_forest",
        params=FAST_PARAMS["random_forest"],
        categorical=CATEGORICAL,
        numeric=NUMERIC,
        label=LABEL,
        seed=0,
    )
    assert pipeline.named_steps["preprocess"].n_features_in_ == len(FEATURES)
    assert pipeline.named_steps["model"].estimators_[0].tree_.n_node_samples[0] > 0
    # Bootstrap samples are drawn from all fitted rows: the forest saw train + validation.
    assert pipeline.named_steps["model"]._n_samples == len(train) + len(validation)


# ---------------------------------------------------------------------------------------------
# Pipeline


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_pipeline_handles_missing_numbers_and_unseen_categories(frame, estimator):
    X, y = features_and_label(frame, CATEGORICAL, NUMERIC, LABEL)
    params = FAST_PARAMS.get(estimator, {})
    pipeline = build_pipeline(estimator, params, CATEGORICAL, NUMERIC, seed=0).fit(X, y)
    odd = pd.DataFrame(
        {
            "segment": ["never-seen", None, np.nan, "a"],
            "region": ["north", "nowhere", pd.NA, None],
            "signal": [np.nan, 0.5, np.nan, -1.0],
            "noise": [np.nan, np.nan, np.nan, np.nan],
        }
    )
    proba = pipeline.predict_proba(odd)[:, 1]
    assert proba.shape == (4,)
    assert np.isfinite(proba).all()
    assert ((proba >= 0) & (proba <= 1)).all()


def test_pipeline_shape_and_seed():
    pipeline = build_pipeline("hist_gradient_boosting", {}, CATEGORICAL, NUMERIC, seed=7)
    assert list(pipeline.named_steps) == ["preprocess", "model"]
    model = pipeline.named_steps["model"]
    assert model.random_state == 7
    assert model.categorical_features == CATEGORICAL
    assert model.learning_rate == ESTIMATORS["hist_gradient_boosting"].defaults["learning_rate"]


@pytest.mark.parametrize(
    ("categorical", "numeric", "message"),
    [([], [], "no feature columns"), (["a"], ["b", "a"], "more than once")],
)
def test_pipeline_rejects_bad_columns(categorical, numeric, message):
    with pytest.raises(ValueError, match=message):
        build_pipeline("random_forest", {}, categorical, numeric, seed=0)


# ---------------------------------------------------------------------------------------------
# Parameters


def test_validate_params_overlays_defaults():
    params = validate_params("random_forest", {"max_depth": 4})
    assert params["max_depth"] == 4
    assert params["n_estimators"] == ESTIMATORS["random_forest"].defaults["n_estimators"]


def test_validate_params_rejects_unknown_name_and_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['max_dept'\]") as error:
        validate_params("random_forest", {"max_dept": 4})
    assert "'max_depth'" in str(error.value)


def test_validate_params_explains_reserved_names():
    with pytest.raises(ValueError, match="set from the seed and columns"):
        validate_params("hist_gradient_boosting", {"random_state": 1})


def test_validate_params_rejects_out_of_range_value():
    with pytest.raises(ValueError, match="invalid parameters for 'hist_gradient_boosting'"):
        validate_params("hist_gradient_boosting", {"learning_rate": -1.0})


def test_validate_params_rejects_unknown_estimator():
    with pytest.raises(ValueError, match="unknown estimator 'xgboost'"):
        validate_params("xgboost", {})


# ---------------------------------------------------------------------------------------------
# Persistence


@pytest.mark.parametrize("estimator", list(FAST_PARAMS))
def test_skops_round_trip(fitted, estimator):
    pipeline, X = fitted[estimator], fitted["test"][FEATURES]
    blob = sio.dumps(pipeline)
    untrusted = set(sio.get_untrusted_types(data=blob))
    # Each trusted type is one the model needs: none more (a superfluous one fails here).
    assert untrusted == set(skops_trusted_types(estimator))
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException):
        sio.loads(blob)
    loaded = sio.loads(blob, trusted=skops_trusted_types(estimator))
    np.testing.assert_array_equal(loaded.predict_proba(X), pipeline.predict_proba(X))


# ---------------------------------------------------------------------------------------------
# Splits


def test_time_split_orders_by_time_with_test_latest(frame):
    train, validation, test = time_split(frame, DATE, validation_fraction=0.15, test_fraction=0.2)
    for part in (train, validation, test):
        assert part[DATE].is_monotonic_increasing
    days = [part[DATE].dt.floor("D") for part in (train, validation, test)]
    assert days[0].max() < days[1].min()
    assert days[1].max() < days[2].min()
    # Every row lands in exactly one part, index kept.
    combined = pd.concat([train, validation, test])
    assert sorted(combined.index) == sorted(frame.index)
    # Whole days move, so the shares are close to but not exactly the fractions.
    assert len(test) / len(frame) == pytest.approx(0.2, abs=0.03)
    assert len(validation) / len(frame) == pytest.approx(0.15, abs=0.03)


def test_time_split_without_validation(frame):
    train, validation, test = time_split(frame, DATE, validation_fraction=0, test_fraction=0.25)
    assert validation.empty
    assert len(train) + len(test) == len(frame)
    assert train[DATE].max().floor("D") < test[DATE].min().floor("D")


def test_time_split_refuses_to_split_a_single_day():
    one_day = make_frame(n=100, days=1)
    with pytest.raises(ValueError, match="empty"):
        time_split(one_day, DATE)


def test_time_split_rejects_missing_dates(frame):
    broken = frame.copy()
    broken.loc[broken.index[3], DATE] = pd.NaT
    with pytest.raises(ValueError, match="missing values"):
        time_split(broken, DATE)


def test_day_folds_never_train_on_the_future(frame):
    dates = frame[DATE].sort_values(ignore_index=True)
    folds = day_folds(dates, n_splits=4)
    assert len(folds) == 4
    days = dates.dt.floor("D").to_numpy()
    previous_validation_end = None
    for fit_rows, validation_rows in folds:
        assert len(fit_rows) and len(validation_rows)
        assert days[fit_rows].max() < days[validation_rows].min()
        assert not set(days[fit_rows]) & set(days[validation_rows])
        # Expanding window: each fold trains on everything before its validation days.
        np.testing.assert_array_equal(fit_rows, np.arange(validation_rows.min()))
        if previous_validation_end is not None:
            assert days[validation_rows].min() > previous_validation_end
        previous_validation_end = days[validation_rows].max()


def test_day_folds_reject_unsorted_dates_and_too_few_days(frame):
    with pytest.raises(ValueError, match="sorted"):
        day_folds(frame[DATE], n_splits=3)
    few = pd.Series(pd.to_datetime(["2013-01-01", "2013-01-01", "2013-01-02", "2013-01-03"]))
    with pytest.raises(ValueError, match="3 day"):
        day_folds(few, n_splits=3)


def test_features_and_label_rejects_missing_labels(frame):
    cancelled = frame.astype({LABEL: float})
    cancelled.loc[cancelled.index[0], LABEL] = np.nan
    with pytest.raises(ValueError, match="0/1 without missing"):
        features_and_label(cancelled, CATEGORICAL, NUMERIC, LABEL)
    with pytest.raises(ValueError, match="missing from the frame"):
        features_and_label(frame, [*CATEGORICAL, "absent"], NUMERIC, LABEL)
    X, y = features_and_label(frame, CATEGORICAL, NUMERIC, LABEL)
    assert list(X.columns) == FEATURES
    assert y.dtype == np.int64


# ---------------------------------------------------------------------------------------------
# Search


def _search(frame, **kwargs):
    return search_hyperparameters(
        frame,
        estimator="random_forest",
        categorical=CATEGORICAL,
        numeric=NUMERIC,
        label=LABEL,
        date_column=DATE,
        **kwargs,
    )


def test_search_returns_trials_and_picks_the_best(frame):
    result = _search(
        frame,
        params=FAST_PARAMS["random_forest"],
        method="random",
        n_trials=3,
        search_space={"max_depth": [2, 4, 8], "min_samples_leaf": [1, 50]},
        n_splits=3,
        seed=1,
    )
    assert len(result.trials) == 3
    assert len({tuple(sorted(t.params.items())) for t in result.trials}) == 3
    best = max(result.trials, key=lambda t: t.mean_score)
    assert result.best_score == best.mean_score
    assert result.best_params == best.params
    for trial in result.trials:
        assert trial.params["n_estimators"] == 30  # fixed params reach every trial
        assert len(trial.fold_scores) == 3
        assert trial.mean_score == pytest.approx(np.mean(trial.fold_scores))
        assert 0.5 < trial.mean_score <= 1


def test_grid_search_tries_every_combination(frame):
    result = _search(
        frame,
        params=FAST_PARAMS["random_forest"],
        method="grid",
        n_trials=4,
        search_space={"max_depth": [2, 6], "min_samples_leaf": [1, 50]},
        n_splits=2,
    )
    tried = {(t.params["max_depth"], t.params["min_samples_leaf"]) for t in result.trials}
    assert tried == {(2, 1), (2, 50), (6, 1), (6, 50)}


def test_search_none_returns_the_fixed_params(frame):
    result = _search(frame, params={"max_depth": 3}, method="none")
    assert result.best_score is None
    assert result.trials == []
    assert result.best_params == validate_params("random_forest", {"max_depth": 3})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"search_space": {"max_depth": [-1]}}, "invalid parameters"),
        ({"search_space": {"max_dept": [2]}}, "unknown parameter"),
        ({"method": "grid", "n_trials": 2, "search_space": {"max_depth": [2, 4, 8]}}, "grid has"),
        ({"n_trials": 9, "search_space": {"max_depth": [2, 4]}}, "distinct combinations"),
        ({"params": {"max_depth": 2}, "search_space": {"max_depth": [2, 4]}}, "fixed and searched"),
        ({"metric": "auc"}, "unknown metric"),
    ],
)
def test_search_configuration_errors_raise_before_fitting(frame, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _search(frame, **kwargs)


@pytest.mark.filterwarnings("ignore:Only one class:UserWarning")
@pytest.mark.filterwarnings("ignore:One or more of the test scores are non-finite:UserWarning")
def test_search_refuses_a_best_trial_when_every_score_is_nan(frame):
    # With 3 splits over 40 days the first validation fold is days 10-19: one class there makes
    # ROC AUC undefined (NaN) for every candidate.
    one_class = frame.copy()
    day = (one_class[DATE] - one_class[DATE].min()).dt.days
    one_class.loc[day.between(10, 19), LABEL] = 0
    with pytest.raises(ValueError, match="scored NaN"):
        _search(
            one_class,
            params=FAST_PARAMS["random_forest"],
            n_trials=2,
            search_space={"max_depth": [2, 4]},
        )


# ---------------------------------------------------------------------------------------------
# Hashing


def test_hash_frame_is_stable_and_sensitive(frame):
    digest = hash_frame(frame)
    assert len(digest) == 64
    assert hash_frame(frame.copy()) == digest
    assert hash_frame(frame.reset_index(drop=True).set_axis(frame.index + 5)) == digest
    changed = frame.copy()
    changed.loc[changed.index[17], "signal"] += 1e-9
    assert hash_frame(changed) != digest
    assert hash_frame(frame.astype({"signal": "float32"})) != digest
    assert hash_frame(frame.rename(columns={"noise": "other"})) != digest
    assert hash_frame(frame.iloc[::-1]) != digest


def test_hash_frame_is_the_same_in_another_process():
    # String hashing in Python is salted per process; the digest must not depend on it.
    small = pd.DataFrame({"k": ["a", "b", None], "v": [1.5, np.nan, 3.0]})
    # The module is loaded from its file so the child does not import the whole package
    # (mlops_assets/__init__.py loads the Dagster definitions).
    code = (
        "import importlib.util, sys, numpy as np, pandas as pd\n"
        "spec = importlib.util.spec_from_file_location('modeling', sys.argv[1])\n"
        "module = sys.modules['modeling'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "frame = pd.DataFrame({'k': ['a', 'b', None], 'v': [1.5, np.nan, 3.0]})\n"
        "print(module.hash_frame(frame))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    output = subprocess.run(
        [sys.executable, "-c", code, modeling.__file__],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert output.stdout.strip() == hash_frame(small)
