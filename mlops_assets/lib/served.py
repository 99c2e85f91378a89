"""The registered model: a fitted estimator with its decision threshold.

MLflow's scikit-learn flavor serves `predict`; here `predict` returns, per record, the probability
and the decision at the model's own threshold, so `mlflow models serve` answers both. Everything in
the platform itself calls `predict_proba` (the calibrated probabilities when calibrated).

scikit-learn is imported at module level: only function bodies (and MLflow when loading a model)
import this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

PROBABILITY = "probability"
PREDICTION = "prediction"
THRESHOLD = "threshold"
UNKNOWN_CATEGORIES = "unknown_categories"

# What skops must trust beyond a pipeline's own types to load a ThresholdedModel (measured with
# skops.io.get_untrusted_types on sigmoid- and isotonic-calibrated pipelines): this class itself,
# and the calibrator wrappers scikit-learn keeps in private modules (FrozenEstimator and
# IsotonicRegression are on skops' default list).
TRUSTED_TYPES = (
    "mlops_assets.lib.served.ThresholdedModel",
    "mlops_assets.lib.served.RegressionModel",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)


def _refuse_empty_rows(X: pd.DataFrame) -> None:
    """A record with every feature missing has nothing to be scored on: the request is refused
    with the records named (MLflow answers 400), rather than answered with the base rate."""
    empty = np.flatnonzero(X.isna().all(axis=1).to_numpy())
    if len(empty):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        raise MlflowException(
            f"{len(empty)} record(s) have every feature missing, nothing to score: "
            f"rows {empty[:20].tolist()}",
            error_code=INVALID_PARAMETER_VALUE,
        )


class ThresholdedModel(ClassifierMixin, BaseEstimator):
    """`estimator` (a fitted Pipeline, or CalibratedClassifierCV around it), `threshold`, and
    `categories`: each categorical feature's values seen in training (served records with other
    values are scored, as the encoder's "unknown", and counted in the response)."""

    def __init__(
        self,
        estimator: Any = None,
        threshold: float = 0.0,
        categories: dict[str, list] | None = None,
    ):
        self.estimator = estimator
        self.threshold = threshold
        self.categories = categories

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator.classes_

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, X: Any, y: Any = None) -> ThresholdedModel:
        """Not refitted here: training fits the estimator and chooses the threshold. (Defined
        because scikit-learn's inspection tools accept only objects with a fit method.)"""
        raise TypeError("a ThresholdedModel is built fitted by the training asset")

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.estimator.predict_proba(X)

    @property
    def calibrated(self) -> bool:
        return hasattr(self.estimator, "calibrated_classifiers_")

    def uncalibrated_proba(self, X: pd.DataFrame) -> np.ndarray:
        """The probabilities before calibration (the same as predict_proba when uncalibrated)."""
        # CalibratedClassifierCV keeps the frozen pipeline it calibrated as `estimator`.
        inner = self.estimator.estimator if self.calibrated else self.estimator
        return inner.predict_proba(X)

    def decide(self, X: pd.DataFrame) -> np.ndarray:
        """0/1 per record: positive when the probability is >= the model's threshold."""
        return (self.predict_proba(X)[:, 1] >= self.threshold).astype(np.int64)

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per record, the positive-class probability, the decision at the threshold, the threshold
        itself, and how many of its categorical values training never saw (what `mlflow models
        serve` returns).

        A record with every feature missing has nothing to be scored on: the request is refused
        with the records named (MLflow answers 400), rather than answered with the base rate.
        """
        _refuse_empty_rows(X)
        proba = self.predict_proba(X)[:, 1]
        return pd.DataFrame(
            {
                PROBABILITY: proba,
                PREDICTION: (proba >= self.threshold).astype(np.int64),
                THRESHOLD: np.full(len(proba), float(self.threshold)),
                UNKNOWN_CATEGORIES: self.unknown_categories(X),
            }
        )

    def unknown_categories(self, X: pd.DataFrame) -> np.ndarray:
        """Per record, the categorical values (not missing) outside those seen in training."""
        counts = np.zeros(len(X), dtype=np.int64)
        for column, known in (self.categories or {}).items():
            values = X[column]
            counts += (values.notna() & ~values.isin(known)).to_numpy(dtype=np.int64)
        return counts

    def score(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> float:
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(y, self.decide(X), sample_weight=sample_weight))


class RegressionModel(RegressorMixin, BaseEstimator):
    """The registered model of `task: regression`: a fitted regressor Pipeline and the categories
    seen in training. It serves a numeric `prediction` per record (no probability, no threshold)
    and the count of categorical values training never saw."""

    threshold = None  # no operating point: the prediction is the number itself

    def __init__(self, estimator: Any = None, categories: dict[str, list] | None = None):
        self.estimator = estimator
        self.categories = categories

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, X: Any, y: Any = None) -> RegressionModel:
        raise TypeError("a RegressionModel is built fitted by the training asset")

    def predict_value(self, X: pd.DataFrame) -> np.ndarray:
        """The numeric prediction of each record (what the platform itself uses)."""
        return np.asarray(self.estimator.predict(X), dtype=float)

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per record the prediction and the unknown-category count (what `mlflow models serve`
        returns); records with every feature missing are refused."""
        _refuse_empty_rows(X)
        return pd.DataFrame(
            {
                PREDICTION: self.predict_value(X),
                UNKNOWN_CATEGORIES: ThresholdedModel.unknown_categories(self, X),
            }
        )

    def score(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> float:
        from sklearn.metrics import r2_score

        return float(r2_score(y, self.predict_value(X), sample_weight=sample_weight))
