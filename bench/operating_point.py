"""The operating point, calibration and gates on the real data: are the decisions worth signing?

NYC flights 2013, the default training window (Jan-Jun) split in time order as the training set
asset does (validation 15%, test 15% of rows, whole days). The model asset's steps, with the
project's functions: HistGradientBoosting with defaults (`modeling.fit_final`), calibration on the
validation days (`decision.calibrate`), the threshold chosen there by the spec's policy
(`decision.choose_threshold`), then on the test days: the chosen threshold's objective against the
best threshold picked in hindsight and against 0.5, Brier/ECE before and after calibration, and the
three gates with the spec's defaults. Finally the refused side on real data: a DummyClassifier and
a model trained on shuffled labels.

Features are computed here with pandas from the package's CSV files, as the spec's SQL does
(weather at the origin and scheduled hour), so no warehouse is needed.

Run: .venv/bin/python bench/operating_point.py   (~1-2 minutes on 2 cores)
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from flights_data import flights_with_weather

from mlops_assets.lib import decision, modeling
from mlops_assets.lib.evaluation import classification_metrics
from mlops_assets.lib.spec import load_spec


def load_window(spec) -> pd.DataFrame:
    df = flights_with_weather()
    window = spec.default_training_window
    keep = (
        (df["flight_date"] >= pd.Timestamp(window.start))
        & (df["flight_date"] <= pd.Timestamp(window.end))
        & df["is_delayed"].notna()
    )
    df = df[keep].copy()
    df["is_delayed"] = df["is_delayed"].astype(int)
    return df[["flight_date", *spec.categorical_features, *spec.numeric_features, "is_delayed"]]


def main() -> None:
    spec = load_spec()
    cat, num, label = spec.categorical_features, spec.numeric_features, spec.target.name
    policy, gates = spec.operating_point, spec.gates
    started = time.perf_counter()
    frame = load_window(spec)
    train, validation, test = modeling.time_split(frame, "flight_date", 0.15, 0.15)
    print(
        f"window {spec.default_training_window.start}..{spec.default_training_window.end}: "
        f"train {len(train)} rows, validation {len(validation)} rows "
        f"({validation.flight_date.dt.date.nunique()} days), test {len(test)} rows "
        f"({test.flight_date.dt.date.nunique()} days), test positive rate {test[label].mean():.3f}"
    )
    fit = dict(categorical=cat, numeric=num, label=label, seed=0)
    pipeline = modeling.fit_final(train, estimator="hist_gradient_boosting", params={}, **fit)
    X_val, y_val = modeling.features_and_label(validation, cat, num, label)
    X, y = modeling.features_and_label(test, cat, num, label)
    calibration = decision.calibrate(pipeline, X_val, y_val, validation["flight_date"])
    print(f"calibration: {calibration.method} ({calibration.reason}); cross-fitted validation")
    print(
        "  log loss per candidate: "
        + ", ".join(f"{k} {v:.4f}" for k, v in calibration.log_loss.items())
    )
    raw, proba = pipeline.predict_proba(X)[:, 1], calibration.model.predict_proba(X)[:, 1]
    for name, scores in (("before", raw), ("after", proba)):
        figures = decision.calibration_summary(y, scores)
        print(f"  test {name:6s}: " + ", ".join(f"{k} {v:.4f}" for k, v in figures.items()))

    threshold = decision.choose_threshold(
        y_val, calibration.model.predict_proba(X_val)[:, 1], policy
    )
    report = decision.judge_operating_point(y, proba, threshold, policy)
    print(f"\noperating point, policy {policy.policy} (beta {policy.beta:g}), test days:")
    r = report
    for name, t, value in (
        ("chosen on validation", r.threshold, r.objective),
        ("best in hindsight", r.best_threshold, r.best_objective),
        ("naive", r.naive_threshold, r.naive_objective),
    ):
        print(f"  {name:22s} threshold {t:.4f}  objective {value:.4f}")
    print(f"  chosen / hindsight = {report.share_of_best:.4f} (done when >= 0.95)")
    metrics = classification_metrics(y, proba, threshold)
    print(
        "  at the chosen threshold: predicted positive rate "
        f"{metrics['predicted_positive_rate']:.3f}"
        f" vs actual {metrics['positive_rate']:.3f}; precision {metrics['precision']:.3f}, "
        f"recall {metrics['recall']:.3f}"
    )
    for other in (
        policy.model_copy(
            update={"policy": "cost", "false_positive_cost": 1.0, "false_negative_cost": 3.0}
        ),
        policy.model_copy(update={"policy": "target_share", "target_share": 0.2}),
    ):
        t = decision.choose_threshold(y_val, calibration.model.predict_proba(X_val)[:, 1], other)
        r = decision.judge_operating_point(y, proba, t, other)
        print(
            f"  policy {other.policy}: threshold {t:.4f}, test objective {r.objective:.4f}, "
            f"hindsight {r.best_objective:.4f}, naive {r.naive_objective:.4f}"
        )

    days = test["flight_date"]
    logistic = modeling.fit_final(train, estimator="logistic_regression", params={}, **fit)
    column, val_auc = decision.most_informative_category(train, validation, cat, label)
    rates, prior = decision.category_means(train[column], train[label])
    references = {
        "logistic_regression": logistic.predict_proba(X)[:, 1],
        f"rate_by_{column}": decision.category_mean_predictions(rates, prior, test[column]),
    }
    print(
        f"\ngates (spec defaults; most informative column {column}, validation AUC {val_auc:.4f}):"
    )
    print(
        "  "
        + decision.comparison_gate(
            "check_beats_baseline",
            y,
            proba,
            references,
            days,
            margin=gates.baseline_margin,
            gates=gates,
        ).message
    )
    print(
        "  "
        + decision.degenerate_gate(
            y, proba, threshold, days, gates=gates, name="check_not_degenerate"
        ).message
    )

    print("\nrefused models on the same days:")
    from sklearn.dummy import DummyClassifier

    dummy = DummyClassifier(strategy="prior").fit(X_val, y_val)
    shuffled_train = train.assign(
        **{label: np.random.default_rng(0).permutation(train[label].to_numpy())}
    )
    shuffled = modeling.fit_final(
        shuffled_train, estimator="hist_gradient_boosting", params={}, **fit
    )
    for name, candidate in (("dummy", dummy), ("shuffled labels", shuffled)):
        p_val = candidate.predict_proba(X_val)[:, 1]
        t = decision.choose_threshold(y_val, p_val, policy)
        p = candidate.predict_proba(X)[:, 1]
        base = decision.comparison_gate(
            "check_beats_baseline",
            y,
            p,
            references,
            days,
            margin=gates.baseline_margin,
            gates=gates,
        )
        degenerate = decision.degenerate_gate(
            y, p, t, days, gates=gates, name="check_not_degenerate"
        )
        for gate in (base, degenerate):
            print(f"  {name}: {'passed' if gate.passed else 'REFUSED'}: {gate.message}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
