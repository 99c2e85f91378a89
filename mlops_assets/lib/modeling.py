"""Model building, time-ordered splitting and hyperparameter search. No Dagster or MLflow imports.

Every model is a scikit-learn `Pipeline` of a `ColumnTransformer` (the preprocessing) and a
classifier, so the stored artifact carries its own preprocessing. Column names always come from the
caller (a dataset specification); nothing here knows the flights data.

scikit-learn is imported inside the functions: the Dagster code location imports this module and
must load fast.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# Filled in for missing categories before encoding, so None, NaN and pd.NA are one category.
MISSING_CATEGORY = "~missing"
SearchMethod = Literal["random", "grid", "none"]


@dataclass(frozen=True)
class EstimatorFamily:
    """A supported classifier: where it lives, how to encode for it, defaults and search space."""

    class_path: str
    encoding: Literal["ordinal", "one_hot"]
    defaults: Mapping[str, Any]
    search_space: Mapping[str, tuple[Any, ...]]
    # Types skops must be told to trust to load a fitted pipeline of this family (measured with
    # skops.io.get_untrusted_types). numpy.dtype comes from the encoders' `dtype` parameter;
    # NAType from the categorical imputer's missing_values=pd.NA.
    trusted_types: tuple[str, ...]


_COMMON_TRUSTED = ("numpy.dtype", "pandas._libs.missing.NAType")

ESTIMATORS: Mapping[str, EstimatorFamily] = MappingProxyType(
    {
        "hist_gradient_boosting": EstimatorFamily(
            class_path="sklearn.ensemble.HistGradientBoostingClassifier",
            encoding="ordinal",
            # Early stopping on a 10% holdout stops well before max_iter on the flights data, so a
            # generous max_iter costs little and the learning rate decides the length.
            defaults=MappingProxyType(
                {
                    "learning_rate": 0.1,
                    "max_iter": 300,
                    "max_leaf_nodes": 31,
                    "min_samples_leaf": 20,
                    "l2_regularization": 0.0,
                    "early_stopping": True,
                    "n_iter_no_change": 10,
                    "validation_fraction": 0.1,
                }
            ),
            search_space=MappingProxyType(
                {
                    "learning_rate": (0.05, 0.1, 0.2),
                    "max_leaf_nodes": (15, 31, 63),
                    "min_samples_leaf": (20, 100, 400),
                    "l2_regularization": (0.0, 1.0, 10.0),
                }
            ),
            # With categorical_features set, the fitted model keeps its own ColumnTransformer
            # whose numeric step is FunctionTransformer(functools.partial(check_array, ...)).
            trusted_types=(
                *_COMMON_TRUSTED,
                "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
                "functools.partial",
                "sklearn.utils.validation.check_array",
            ),
        ),
        "random_forest": EstimatorFamily(
            class_path="sklearn.ensemble.RandomForestClassifier",
            encoding="ordinal",
            # Depth and leaf size bound the fit time and the artifact size (fully grown trees on
            # 100k+ rows take hundreds of MB); n_jobs=-1 because a forest fits trees in threads.
            defaults=MappingProxyType(
                {
                    "n_estimators": 100,
                    "max_depth": 12,
                    "min_samples_leaf": 5,
                    "max_features": "sqrt",
                    "n_jobs": -1,
                }
            ),
            search_space=MappingProxyType(
                {
                    "max_depth": (8, 12, 16),
                    "min_samples_leaf": (1, 5, 20),
                    "max_features": ("sqrt", 0.5),
                }
            ),
            trusted_types=(*_COMMON_TRUSTED, "sklearn.tree._tree.Tree"),
        ),
        "logistic_regression": EstimatorFamily(
            class_path="sklearn.linear_model.LogisticRegression",
            encoding="one_hot",
            defaults=MappingProxyType({"C": 1.0, "max_iter": 1000}),
            search_space=MappingProxyType({"C": (0.01, 0.1, 1.0, 10.0)}),
            trusted_types=_COMMON_TRUSTED,
        ),
    }
)

# The same families for a numeric target (`task: regression`): the regressor of each (same
# parameters and search space, same trusted types). The linear family stays a classifier: the
# regression gates compare against simple predictors instead (lib/regression.py).
REGRESSORS: Mapping[str, str] = MappingProxyType(
    {
        "hist_gradient_boosting": "sklearn.ensemble.HistGradientBoostingRegressor",
        "random_forest": "sklearn.ensemble.RandomForestRegressor",
    }
)
Task = Literal["classification", "regression"]

# Set by build_pipeline itself, never by configuration.
_RESERVED_PARAMS = frozenset({"random_state", "categorical_features"})


def _family(estimator: str) -> EstimatorFamily:
    try:
        return ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(
            f"unknown estimator {estimator!r}; choose one of {sorted(ESTIMATORS)}"
        ) from None


def _estimator_class(estimator: str, task: Task = "classification") -> type:
    path = _family(estimator).class_path
    if task == "regression":
        if estimator not in REGRESSORS:
            raise ValueError(f"{estimator!r} has no regressor; choose one of {sorted(REGRESSORS)}")
        path = REGRESSORS[estimator]
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def validate_params(
    estimator: str, params: Mapping[str, Any], task: Task = "classification"
) -> dict[str, Any]:
    """Defaults overlaid with `params`, checked by scikit-learn's own parameter constraints.

    Raises ValueError for an unknown estimator, an unknown or reserved parameter name, or a value
    outside the estimator's constraints, before any data is touched.
    """
    family = _family(estimator)
    cls = _estimator_class(estimator, task)
    valid = set(cls().get_params()) - _RESERVED_PARAMS
    unknown = sorted(set(params) - valid)
    if unknown:
        reserved = sorted(set(unknown) & _RESERVED_PARAMS)
        hint = f" ({reserved} are set from the seed and columns)" if reserved else ""
        raise ValueError(
            f"unknown parameter(s) {unknown} for {estimator!r}{hint}; valid: {sorted(valid)}"
        )
    merged = {**family.defaults, **params}
    try:
        # _validate_params checks types and ranges without fitting (the same check fit runs
        # first); scikit-learn is pinned, so this private method is stable for us.
        cls(**merged)._validate_params()
    except (TypeError, ValueError) as error:
        raise ValueError(f"invalid parameters for {estimator!r}: {error}") from error
    return merged


def skops_trusted_types(estimator: str) -> list[str]:
    """Types to pass as `skops_trusted_types` when MLflow saves a pipeline of this family."""
    return list(_family(estimator).trusted_types)


def _check_columns(categorical: Sequence[str], numeric: Sequence[str]) -> None:
    columns = [*categorical, *numeric]
    if not columns:
        raise ValueError("no feature columns: categorical and numeric are both empty")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise ValueError(f"feature columns listed more than once: {duplicated}")


def build_pipeline(
    estimator: str,
    params: Mapping[str, Any],
    categorical: Sequence[str],
    numeric: Sequence[str],
    seed: int,
    task: Task = "classification",
) -> Pipeline:
    """An unfitted Pipeline: ColumnTransformer ("preprocess") then the estimator ("model"), a
    classifier or, for `task="regression"`, the family's regressor."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    family = _family(estimator)
    merged = validate_params(estimator, params, task)
    _check_columns(categorical, numeric)
    # pd.NA as the marker matches None, NaN and pd.NA alike (object, string and category dtypes).
    fill_missing = SimpleImputer(
        missing_values=pd.NA, strategy="constant", fill_value=MISSING_CATEGORY
    )
    if family.encoding == "ordinal":
        # Trees split on the integer codes; HistGradientBoosting treats them as categories and
        # accepts at most max_bins of them, so rarer ones are pooled into one code.
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=-1,
            encoded_missing_value=-1,
            max_categories=merged.get("max_bins", 255)
            if estimator == "hist_gradient_boosting"
            else None,
        )
        # Both tree families take NaN natively, so numeric columns pass through un-imputed.
        numeric_step: Any = "passthrough"
    else:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        numeric_step = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                ("scale", StandardScaler()),
            ]
        )
    preprocess = ColumnTransformer(
        [
            ("categorical", Pipeline([("fill", fill_missing), ("encode", encoder)]), categorical),
            ("numeric", numeric_step, numeric),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    # Pandas output keeps nullable Int64 columns (pd.NA) legal for the trees, which read them as
    # NaN, and lets HistGradientBoosting name its categorical columns.
    preprocess.set_output(transform="pandas")
    model_params = {**merged, "random_state": seed}
    if estimator == "hist_gradient_boosting":
        model_params["categorical_features"] = list(categorical) or None
    model = _estimator_class(estimator, task)(**model_params)
    return Pipeline([("preprocess", preprocess), ("model", model)])


def features_and_label(
    frame: pd.DataFrame,
    categorical: Sequence[str],
    numeric: Sequence[str],
    label: str,
    task: Task = "classification",
) -> tuple[pd.DataFrame, np.ndarray]:
    """The feature columns (in specification order) and the 0/1 label as an int array (a
    regression target: a float array)."""
    missing = sorted(set([*categorical, *numeric, label]) - set(frame.columns))
    if missing:
        raise ValueError(f"columns missing from the frame: {missing}")
    y = frame[label]
    if task == "regression":
        values = y.to_numpy(dtype=float, na_value=np.nan)
        if not np.isfinite(values).all():
            raise ValueError(f"target {label!r} must be a finite number without missing values")
        return frame[[*categorical, *numeric]], values
    if y.isna().any() or not y.isin([0, 1]).all():
        raise ValueError(f"label {label!r} must be 0/1 without missing values")
    return frame[[*categorical, *numeric]], y.to_numpy(dtype=np.int64)


def _day_codes(frame: pd.DataFrame, date_column: str) -> np.ndarray:
    dates = pd.to_datetime(frame[date_column])
    if dates.isna().any():
        raise ValueError(f"date column {date_column!r} has missing values")
    return dates.dt.floor("D").to_numpy()


SPLIT_COLUMN = "split"
"""Column of the training set that names each row's part: train, validation or test."""


def split_parts(training_set: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The training set's parts by name ("train", "validation", "test"), as stored together."""
    return {str(name): part for name, part in training_set.groupby(SPLIT_COLUMN, sort=False)}


def time_split(
    frame: pd.DataFrame,
    date_column: str,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, validation, test) in time order by whole days; test holds the latest days.

    Fractions are of rows; a day goes to the part its row midpoint falls in, so no day is split.
    `validation_fraction=0` asks for no validation part (an empty frame); any other empty part
    raises ValueError. Each part comes back sorted by time (stable), keeping the original index.
    """
    if not 0 < test_fraction < 1 or not 0 <= validation_fraction < 1:
        raise ValueError("need 0 < test_fraction < 1 and 0 <= validation_fraction < 1")
    if validation_fraction + test_fraction >= 1:
        raise ValueError("validation_fraction + test_fraction must leave rows for training")
    days = _day_codes(frame, date_column)
    # Order by the full timestamp (not only the day) so rows within a day are in time order too.
    order = np.argsort(pd.to_datetime(frame[date_column]).to_numpy(), kind="stable")
    ordered, days = frame.iloc[order], days[order]
    unique_days, counts = np.unique(days, return_counts=True)
    midpoints = (np.cumsum(counts) - counts / 2) / len(ordered)
    test_start = 1 - test_fraction
    validation_start = test_start - validation_fraction
    part_of_day = np.where(
        midpoints >= test_start, 2, np.where(midpoints >= validation_start, 1, 0)
    )
    part = part_of_day[np.searchsorted(unique_days, days)]
    parts = tuple(ordered[part == i] for i in range(3))
    names = ("train", "validation", "test")
    empty = [n for n, p in zip(names, parts, strict=True) if p.empty]
    if validation_fraction == 0:
        empty.remove("validation")
    if empty:
        raise ValueError(
            f"time_split would leave {empty} empty: {len(unique_days)} day(s), "
            f"{len(ordered)} row(s); use more days or change the fractions"
        )
    return parts


def day_folds(dates: pd.Series, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """TimeSeriesSplit over whole days: each fold validates on days after all its training days.

    `dates` must already be in time order. Returns (train_rows, validation_rows) position arrays.
    """
    from sklearn.model_selection import TimeSeriesSplit

    days = pd.to_datetime(dates).dt.floor("D").to_numpy()
    if len(days) > 1 and (days[1:] < days[:-1]).any():
        raise ValueError("rows must be sorted by date for time-ordered cross-validation")
    unique_days, day_of_row = np.unique(days, return_inverse=True)
    if len(unique_days) <= n_splits:
        raise ValueError(
            f"{len(unique_days)} day(s) cannot make {n_splits} time-ordered folds; "
            "use fewer splits or more data"
        )
    return [
        (
            np.flatnonzero(np.isin(day_of_row, fit_days)),
            np.flatnonzero(np.isin(day_of_row, val_days)),
        )
        for fit_days, val_days in TimeSeriesSplit(n_splits).split(unique_days)
    ]


@dataclass(frozen=True)
class Trial:
    """One candidate of a search: its parameters and cross-validated score."""

    params: dict[str, Any]
    mean_score: float
    std_score: float
    mean_fit_seconds: float
    fold_scores: tuple[float, ...]


@dataclass(frozen=True)
class SearchResult:
    """Outcome of `search_hyperparameters`; `best_score` is None when no search ran."""

    estimator: str
    metric: str
    best_params: dict[str, Any]
    best_score: float | None
    trials: list[Trial] = field(default_factory=list)


def _candidates(
    estimator: str,
    method: SearchMethod,
    n_trials: int,
    search_space: Mapping[str, Sequence[Any]],
    seed: int,
    task: Task = "classification",
) -> list[dict[str, Any]]:
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    for name, values in search_space.items():
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"search space entry {name!r} must be a non-empty list of values")
        for value in values:
            validate_params(estimator, {name: value}, task)
    space = {name: list(values) for name, values in search_space.items()}
    grid = ParameterGrid(space)
    if method == "grid":
        if len(grid) > n_trials:
            raise ValueError(
                f"the grid has {len(grid)} combinations but n_trials={n_trials}; "
                "narrow the search space or raise n_trials"
            )
        return list(grid)
    if n_trials > len(grid):
        raise ValueError(
            f"n_trials={n_trials} exceeds the {len(grid)} distinct combinations of the space"
        )
    return list(ParameterSampler(space, n_iter=n_trials, random_state=seed))


def search_hyperparameters(
    train: pd.DataFrame,
    *,
    estimator: str,
    categorical: Sequence[str],
    numeric: Sequence[str],
    label: str,
    date_column: str,
    params: Mapping[str, Any] | None = None,
    method: SearchMethod = "random",
    n_trials: int = 4,
    search_space: Mapping[str, Sequence[Any]] | None = None,
    n_splits: int = 3,
    metric: str = "roc_auc",
    seed: int = 0,
    n_jobs: int = 1,
    task: Task = "classification",
) -> SearchResult:
    """Grid or random search scored by time-ordered cross-validation (`day_folds`) on `train`.

    `params` are fixed for every trial (over the family defaults); the search space (family
    default unless given) varies on top. `metric` is a scikit-learn scorer name; higher is better
    (use `neg_log_loss`, not `log_loss`). `method="none"` or `n_trials=0` runs nothing and
    returns the fixed params. Configuration errors raise ValueError before any fitting.

    `n_jobs=1` is the default because HistGradientBoosting already uses every core through
    OpenMP; parallel folds on 2 cores only duplicate the data.
    """
    from sklearn.metrics import get_scorer_names
    from sklearn.model_selection import GridSearchCV

    base = validate_params(estimator, params or {}, task)
    if method not in ("random", "grid", "none"):
        raise ValueError(f"unknown search method {method!r}; choose random, grid or none")
    if n_trials < 0:
        raise ValueError(f"n_trials must be >= 0, got {n_trials}")
    if method == "none" or n_trials == 0:
        return SearchResult(estimator, metric, base, None, [])
    if metric not in get_scorer_names():
        raise ValueError(f"unknown metric {metric!r}; use a scikit-learn scorer name")
    fixed = set(params or {})
    if search_space is None:
        # A parameter the caller fixed stays fixed: the default space varies only the others.
        space = {k: v for k, v in _family(estimator).search_space.items() if k not in fixed}
    elif fixed & set(search_space):
        raise ValueError(f"parameters {sorted(fixed & set(search_space))} are fixed and searched")
    else:
        space = search_space
    if not space:
        raise ValueError("the search space is empty; nothing to search")
    candidates = _candidates(estimator, method, n_trials, space, seed, task)

    ordered = train.iloc[np.argsort(_day_codes(train, date_column), kind="stable")]
    X, y = features_and_label(ordered, categorical, numeric, label, task)
    folds = day_folds(ordered[date_column], n_splits)
    pipeline = build_pipeline(estimator, base, categorical, numeric, seed, task)
    # One single-point grid per candidate: grid and random search share one code path, and the
    # candidates are known (and validated) before any fitting starts.
    grid = [{f"model__{k}": [v] for k, v in candidate.items()} for candidate in candidates]
    search = GridSearchCV(
        pipeline, grid, scoring=metric, cv=folds, n_jobs=n_jobs, refit=False, error_score="raise"
    )
    search.fit(X, y)
    results = search.cv_results_
    trials = [
        Trial(
            params={**base, **candidate},
            mean_score=float(results["mean_test_score"][i]),
            std_score=float(results["std_test_score"][i]),
            mean_fit_seconds=float(results["mean_fit_time"][i]),
            fold_scores=tuple(float(results[f"split{k}_test_score"][i]) for k in range(n_splits)),
        )
        for i, candidate in enumerate(candidates)
    ]
    # A fold with one class scores NaN (the pinned scikit-learn warns there instead of raising);
    # max() would keep a NaN first trial as "best", so only finite scores compete.
    scored = [t for t in trials if np.isfinite(t.mean_score)]
    if not scored:
        raise ValueError(
            f"every trial scored NaN on {metric!r}: a validation fold probably holds one class; "
            "use fewer splits or more days"
        )
    best = max(scored, key=lambda t: t.mean_score)
    return SearchResult(estimator, metric, best.params, best.mean_score, trials)


def fit_final(
    train: pd.DataFrame,
    *,
    estimator: str,
    params: Mapping[str, Any],
    categorical: Sequence[str],
    numeric: Sequence[str],
    label: str,
    seed: int,
    validation: pd.DataFrame | None = None,
    task: Task = "classification",
) -> Pipeline:
    """Fit the pipeline on `train` (plus `validation` when given) and return it."""
    pipeline = build_pipeline(estimator, params, categorical, numeric, seed, task)
    data = train if validation is None else pd.concat([train, validation])
    X, y = features_and_label(data, categorical, numeric, label, task)
    return pipeline.fit(X, y)


def hash_frame(frame: pd.DataFrame) -> str:
    """A stable sha256 of a frame's columns, dtypes and values (row order counts, index not)."""
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
