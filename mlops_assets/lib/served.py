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
from sklearn.base import BaseEstimator, ClassifierMixin

PROBABILITY = "probability"
PREDICTION = "prediction"

# What skops must trust beyond a pipeline's own types to load a ThresholdedModel (measured with
# skops.io.get_untrusted_types on sigmoid- and isotonic-calibrated pipelines): this class itself,
# and the calibrator wrappers scikit-learn keeps in private modules (FrozenEstimator and
# IsotonicRegression are on skops' default list).
TRUSTED_TYPES = (
    "mlops_assets.lib.served.ThresholdedModel",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)


class ThresholdedModel(ClassifierMixin, BaseEstimator):
    """`estimator` (a fitted Pipeline, or CalibratedClassifierCV around it) and `threshold`."""

    def __init__(self, estimator: Any = None, threshold: float = 0.0):
        self.estimator = estimator
        self.threshold = threshold

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
        """Per record, the positive-class probability and the decision at the threshold (what
        `mlflow models serve` returns)."""
        proba = self.predict_proba(X)[:, 1]
        return pd.DataFrame(
            {PROBABILITY: proba, PREDICTION: (proba >= self.threshold).astype(np.int64)}
        )

    def score(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> float:
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(y, self.decide(X), sample_weight=sample_weight))
