"""The served model: probability, decision at the threshold, unknown categories, refusals."""

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from mlops_assets.lib.modeling import build_pipeline
from mlops_assets.lib.served import ThresholdedModel


@pytest.fixture(scope="module")
def model() -> ThresholdedModel:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"carrier": rng.choice(["AA", "UA", "DL"], 400), "distance": rng.uniform(100, 2000, 400)}
    )
    y = ((frame["carrier"] == "UA") | (frame["distance"] > 1500)).astype(int)
    pipeline = build_pipeline("hist_gradient_boosting", {}, ["carrier"], ["distance"], seed=0)
    pipeline.fit(frame, y)
    return ThresholdedModel(pipeline, 0.3, categories={"carrier": ["AA", "UA", "DL"]})


def test_each_record_gets_its_probability_decision_and_unknown_count(model):
    records = pd.DataFrame(
        {"carrier": ["UA", "ZZ", None, "AA"], "distance": [300.0, 300.0, 1800.0, np.nan]}
    )
    served = model.predict(records)
    proba = model.predict_proba(records)[:, 1]
    assert served["probability"].tolist() == pytest.approx(proba.tolist())
    assert served["prediction"].tolist() == (proba >= 0.3).astype(int).tolist()
    assert served["threshold"].tolist() == [0.3] * 4
    # "ZZ" was never seen in training; a missing carrier is missing, not unknown.
    assert served["unknown_categories"].tolist() == [0, 1, 0, 0]


def test_a_record_with_every_feature_missing_refuses_the_request(model):
    records = pd.DataFrame({"carrier": ["UA", None, None], "distance": [300.0, np.nan, np.nan]})
    with pytest.raises(
        MlflowException, match=r"2 record\(s\) have every feature missing.*\[1, 2\]"
    ):
        model.predict(records)
