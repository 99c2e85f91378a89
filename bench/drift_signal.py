"""Calibrated drift and label-free performance estimates, proven on the real 2013 flights.

Default (`uv run python bench/drift_signal.py [all|drift|cbpe]`): the calibrated study, see
`calibrated()`; `drift` or `cbpe` runs one half of it.
`uv run python bench/drift_signal.py legacy`: the earlier fixed-threshold study below.

Legacy study. NYC flights 2013: a HistGradientBoosting model trained on Jan-Jun; every
SAMPLE_EVERY-th day of Jul-Dec is compared with Jan-Jun by mlops_assets.lib.drift.compute_drift,
once with Evidently's own test choice on every feature (what DataDriftPreset() does) and once
with DriftSettings() defaults and the weekday excluded. Prints per-month means of drift share,
prediction drift, delay rate and ROC AUC, then per-day timings.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
from flights_data import flights_with_weather

from mlops_assets.lib.drift import DriftSettings, compute_drift

NUMERIC = ["distance", "hour", "day_of_week", "temp", "dewp", "humid", "wind_speed", "precip"]
NUMERIC += ["pressure", "visib"]
CATEGORICAL = ["carrier", "origin", "dest"]
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
    df = flights_with_weather()
    return df[["flight_date", "month", *NUMERIC, *CATEGORICAL, "is_delayed"]]


def add_predictions(df: pd.DataFrame, train: pd.Series | None = None) -> pd.DataFrame:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = df[NUMERIC + CATEGORICAL].astype({c: "category" for c in CATEGORICAL})
    train = (df["month"] <= 6) if train is None else train
    train = train & df["is_delayed"].notna()
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)
    model.fit(x[train], df.loc[train, "is_delayed"])
    proba = model.predict_proba(x)[:, 1]
    return df.assign(probability=proba, prediction=(proba >= 0.5).astype(int))


def legacy() -> None:
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


HOLDOUT_EVERY = 4  # every 4th day of Jan-Jun is held out of training and of the reference
DOMAIN_EVERY = 2  # the domain classifier runs on every 2nd judged day (about 0.5 s a day)
QUANTILE = 0.99


def inject_shift(day: pd.DataFrame, column: str, sd: float) -> pd.DataFrame:
    """The day with `column` moved up by one reference standard deviation."""
    return day.assign(**{column: day[column] + sd})


def double_share(day: pd.DataFrame, column: str, category: str, seed: int) -> pd.DataFrame:
    """The day with `category`'s share doubled: other rows relabelled at random."""
    share = (day[column] == category).mean()
    others = day.index[day[column] != category]
    n = min(len(others), round(share * len(day)))
    chosen = pd.Series(others).sample(n, random_state=seed)
    out = day.copy()
    out.loc[chosen, column] = category
    return out


def calibrated(part: str = "all") -> None:
    """False alarms, power and estimate quality of the calibrated drift and of CBPE.

    Jan-Jun with every HOLDOUT_EVERY-th day held out: the model trains on the other days, which
    are also the drift reference (the champion's training data). The null distribution comes
    from the reference alone (leave-one-day-out); the held-out days are unchanged days the
    calibration never saw (false alarms), then the same days with an injected shift (power).
    CBPE: on the held-out days (same period as training), is the realized ROC AUC inside the
    estimate's 95% band? Then, per month of Jul-Dec, estimated vs realized.
    """

    start = time.perf_counter()
    df = load_features()
    days = sorted(df.loc[df["month"] <= 6, "flight_date"].unique())
    held_out = set(days[HOLDOUT_EVERY - 1 :: HOLDOUT_EVERY])
    first_half = df["month"] <= 6
    is_held = df["flight_date"].isin(held_out)
    df = add_predictions(df, train=first_half & ~is_held)
    numeric = [c for c in NUMERIC if c != "day_of_week"]  # role: calendar
    reference = df[first_half & ~is_held].reset_index(drop=True)
    print(
        f"data + model: {time.perf_counter() - start:.1f} s; reference {len(reference)} rows "
        f"over {reference['flight_date'].nunique()} days; {len(held_out)} held-out days"
    )
    if part in ("all", "drift"):
        drift_study(df, reference, sorted(held_out), numeric)
    if part in ("all", "cbpe"):
        cbpe_study(df, held_out)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


def drift_study(df: pd.DataFrame, reference: pd.DataFrame, held_out: list, numeric: list) -> None:
    """Calibrated drift: the null from the reference, then held-out days as they are and shifted."""
    from mlops_assets.lib import drift_calibration as dc

    t = time.perf_counter()
    kwargs = {"numeric": numeric, "categorical": CATEGORICAL}
    null = dc.null_scores(reference, date_column="flight_date", **kwargs)
    t_null = time.perf_counter() - t
    t = time.perf_counter()
    record_level = dc.record_level_columns(reference, date_column="flight_date", numeric=numeric)
    domain_kwargs = {"numeric": record_level, "categorical": CATEGORICAL}
    dnull = dc.domain_null(reference, date_column="flight_date", days=40, **domain_kwargs)
    t_domain = time.perf_counter() - t
    calibration = dc.calibrate(null, QUANTILE, domain_null=list(dnull.values()))
    print(
        f"null: {len(null)} days x {null.shape[1]} columns in {t_null:.1f} s; domain null "
        f"{len(dnull)} days in {t_domain:.1f} s; max-z threshold {calibration.threshold:.2f}, "
        f"domain AUC threshold {calibration.domain_threshold:.3f} (quantile {QUANTILE}) on "
        f"record-level columns {record_level + CATEGORICAL}"
    )
    sample = reference.sample(20_000, random_state=0)
    hour_sd = float(reference["hour"].std())
    top = reference["carrier"].value_counts().index[0]
    cases = {
        "unchanged": lambda d, i: d,
        "hour +1 SD": lambda d, i: inject_shift(d, "hour", hour_sd),
        f"carrier {top} share x2": lambda d, i: double_share(d, "carrier", top, i),
    }
    rows, t = [], time.perf_counter()
    for i, day in enumerate(sorted(held_out)):
        current = df[df["flight_date"] == day]
        for case, change in cases.items():
            changed = change(current, i)
            scores = dc.column_scores(sample, changed, numeric, CATEGORICAL)
            domain = (
                dc.domain_auc(reference, changed, seed=i, **domain_kwargs)
                if i % DOMAIN_EVERY == 0
                else float("nan")
            )
            decision = dc.judge(scores, calibration, n_rows=len(changed), domain=domain)
            rows.append(
                {
                    "case": case,
                    "columns": decision.column_alarm,
                    "domain": decision.domain_alarm if domain == domain else None,
                    "either": decision.alarm,
                    "top column": decision.drifted[0] if decision.drifted else "",
                }
            )
    judged = pd.DataFrame(rows)
    print(f"\njudging {len(judged)} day-cases: {time.perf_counter() - t:.1f} s")
    print(f"alarm rate on held-out days of the reference window (quantile {QUANTILE}):")

    def rate(flags: pd.Series) -> str:
        flags = flags.dropna().astype(bool)
        return f"{flags.mean():.3f} ({int(flags.sum())}/{len(flags)})"

    summary = judged.groupby("case", sort=False)[["columns", "domain", "either"]].agg(rate)
    print(summary.to_string())
    shifted = judged[judged["case"] != "unchanged"]
    print("named top column on shifted days:")
    print(shifted.groupby("case")["top column"].agg(lambda s: s.value_counts().head(2).to_dict()))


def cbpe_study(df: pd.DataFrame, held_out: set) -> None:
    """CBPE: band inflation measured on half of the held-out days, coverage on the other half;
    then estimated vs realized per month of Jul-Dec."""
    from sklearn.metrics import roc_auc_score

    from mlops_assets.lib import cbpe

    print("\nCBPE, 95% band; held-out days (same period as training) split in two halves:")
    threshold = 0.5  # the bench model's decision threshold (a plain classifier's default)
    est_rows = []
    for day, current in df[df["flight_date"].isin(held_out) | (df["month"] >= 7)].groupby(
        "flight_date"
    ):
        labelled = current.dropna(subset=["is_delayed"])
        estimate = cbpe.estimate(labelled["probability"].to_numpy(), threshold, seed=0)
        realized = roc_auc_score(labelled["is_delayed"], labelled["probability"])
        est_rows.append(
            {
                "day": day,
                "month": pd.Timestamp(day).month,
                "held_out": day in held_out,
                "estimated": estimate.expected["roc_auc"],
                "q_low": estimate.low["roc_auc"],
                "q_high": estimate.high["roc_auc"],
                "sd": estimate.sd["roc_auc"],
                "realized": realized,
            }
        )
    est = pd.DataFrame(est_rows)
    held = est[est["held_out"]].reset_index(drop=True)
    fit, test = held.iloc[::2], held.iloc[1::2]
    inflation = cbpe.band_inflation(fit["estimated"], fit["sd"], fit["realized"])

    def inside(frame: pd.DataFrame, factor: float) -> pd.Series:
        low = frame["estimated"] - factor * (frame["estimated"] - frame["q_low"])
        high = frame["estimated"] + factor * (frame["q_high"] - frame["estimated"])
        return (frame["realized"] >= low) & (frame["realized"] <= high)

    est["inside"] = inside(est, inflation)
    print(
        f"  band inflation measured on {len(fit)} held-out days: {inflation:.2f} "
        "(records of a day are not independent)"
    )
    for name, factor in (
        ("Bernoulli band (x1)", 1.0),
        (f"inflated band (x{inflation:.2f})", inflation),
    ):
        print(
            f"  {name}: realized ROC AUC inside on {inside(test, factor).mean():.3f} of the "
            f"other {len(test)} held-out days; mean width "
            f"{(factor * (test['q_high'] - test['q_low'])).mean():.3f}"
        )
    print(
        f"  mean estimated {test['estimated'].mean():.3f}, realized {test['realized'].mean():.3f}"
    )
    monthly = (
        est[~est["held_out"]]
        .groupby("month")
        .agg(
            estimated=("estimated", "mean"),
            realized=("realized", "mean"),
            inside=("inside", "mean"),
            days=("day", "count"),
        )
        .assign(outside_share=lambda m: 1 - m["inside"])
        .drop(columns="inside")
    )
    print("monitoring months (Jul-Dec), per month: mean estimated vs realized ROC AUC, share of")
    print("days whose realized value fell outside the inflated band (the signal fires on them):")
    print(monthly.round(3).to_string())


if __name__ == "__main__":
    import sys

    arg = sys.argv[1] if len(sys.argv) > 1 else "all"
    if arg not in ("all", "drift", "cbpe", "legacy"):
        raise SystemExit(f"unknown part {arg!r}: all, drift, cbpe or legacy")
    legacy() if arg == "legacy" else calibrated(arg)
