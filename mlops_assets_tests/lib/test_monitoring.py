"""Pure monitoring helpers on small frames."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlops_assets.lib.clock import REPLAY_DATE_ENV, labels_usable, today
from mlops_assets.lib.monitoring import (
    constant_within_batches,
    daily_performance,
    predict_long,
    relative_drops,
)


class FixedScores:
    """A stand-in pipeline: predict_proba returns the given positive-class scores."""

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=float)

    def predict_proba(self, frame):
        return np.column_stack([1 - self.scores[: len(frame)], self.scores[: len(frame)]])


def test_today_is_the_replay_date_when_set():
    assert today({REPLAY_DATE_ENV: "2013-09-15"}) == dt.date(2013, 9, 15)
    assert today({}) == dt.date.today()
    with pytest.raises(ValueError, match=REPLAY_DATE_ENV):
        today({REPLAY_DATE_ENV: "15/09/2013"})


def test_labels_are_usable_from_day_plus_delay():
    day = dt.date(2013, 9, 10)
    assert not labels_usable(day, dt.date(2013, 9, 12), 3)
    assert labels_usable(day, dt.date(2013, 9, 13), 3)
    assert labels_usable(day, day, 0)
    with pytest.raises(ValueError):
        labels_usable(day, day, -1)


def test_predict_long_has_one_row_per_record_per_model():
    frame = pd.DataFrame({"id": [1, 2, 3], "x": [0.0, 1.0, 2.0]})
    models = [
        ("champion", ("3", 0.5, FixedScores([0.2, 0.5, 0.9]))),
        ("challenger", ("4", 0.7, FixedScores([0.6] * 3))),
    ]
    out = predict_long(frame, models, id_columns=["id"], feature_columns=["x"], model_name="m")
    assert len(out) == 6
    champion = out[out["model_alias"] == "champion"]
    assert champion["prediction"].tolist() == [0, 1, 1]  # >= its threshold 0.5 is positive
    challenger = out[out["model_alias"] == "challenger"]
    assert challenger["prediction"].tolist() == [0, 0, 0]  # 0.6 is below its own 0.7
    assert champion["threshold"].tolist() == [0.5] * 3 and set(challenger["threshold"]) == {0.7}
    assert set(out["model_version"]) == {"3", "4"} and set(out["model_name"]) == {"m"}
    empty = predict_long(
        frame.iloc[:0], models, id_columns=["id"], feature_columns=["x"], model_name="m"
    )
    assert empty.empty and list(empty.columns) == list(out.columns)


def test_constant_within_batches_finds_calendar_like_columns():
    frame = pd.DataFrame(
        {"day": [1, 1, 2, 2], "weekday": [3, 3, 4, 4], "temp": [1.0, 2.0, 1.0, 1.0]}
    )
    assert constant_within_batches(frame, "day", ["weekday", "temp"]) == ["weekday"]


def test_daily_performance_leaves_out_unlabelled_records():
    scored = pd.DataFrame({"y": [1, 0, np.nan, 1], "probability": [0.9, 0.2, 0.7, 0.4]})
    metrics = daily_performance(scored, label="y", threshold=0.5)
    assert metrics["n"] == 3 and metrics["n_scored"] == 4
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    # At the model's threshold 0.3 the third labelled record (0.4) becomes a hit.
    assert daily_performance(scored, label="y", threshold=0.3)["accuracy"] == 1.0
    assert daily_performance(scored.assign(y=np.nan), label="y", threshold=0.5) is None


def test_relative_drops_know_which_way_is_better():
    reference = {"roc_auc": 0.8, "brier": 0.10, "f1": 0.5}
    day = {"roc_auc": 0.70, "brier": 0.12, "f1": float("nan")}
    flagged = relative_drops(day, reference, ["roc_auc", "brier", "f1"], 0.1)
    assert set(flagged) == {"roc_auc", "brier"}
    assert flagged["roc_auc"] == pytest.approx(-0.125) and flagged["brier"] == pytest.approx(-0.2)
    assert relative_drops(day, reference, ["roc_auc"], 0.2) == {}


def test_a_thin_day_is_judged_on_the_shortest_trailing_window_that_is_enough():
    from mlops_assets.lib.monitoring import trailing_window

    days = pd.date_range("2024-01-01", periods=10)
    labelled = pd.DataFrame({"d": np.repeat(days, 24)})  # 24 labelled records a day
    rows, k, enough = trailing_window(
        labelled, date_column="d", day=days[9], min_records=100, max_days=7
    )
    assert (k, enough, len(rows)) == (5, True, 120)
    assert rows["d"].min() == days[5] and rows["d"].max() == days[9]  # never a later day
    rows, k, enough = trailing_window(
        labelled, date_column="d", day=days[2], min_records=100, max_days=7
    )
    assert (k, enough, len(rows)) == (7, False, 72)  # only 3 days exist before: not judged
    rows, k, enough = trailing_window(
        labelled, date_column="d", day=days[2], min_records=24, max_days=7
    )
    assert (k, enough, len(rows)) == (1, True, 24)
