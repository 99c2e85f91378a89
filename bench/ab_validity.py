"""Is the A/B rule valid? A/A false promotions and power, replayed on the real 2013 flights.

    uv run python bench/ab_validity.py                  # 200 replays per scenario (~2-4 min)
    uv run python bench/ab_validity.py --replays 50     # quicker, wider Monte Carlo error

Every model scores every labelled Jul-Dec 2013 flight ONCE; a replay then only draws a start day
and a hash salt (the experiment name), routes the window's records by the keyed hash and runs the
same `lib.ab_testing.decide` as the `ab_results` asset with the default design (alpha 0.05, looks
every day from day 14, stop at day 56). Scenarios:
- A/A: two HistGradientBoosting models fitted on the same Jan-Jun rows with different seeds
  (a random ordered pair of four seeds per replay); a promotion is a false positive.
- worse challenger: the seed-0 model scoring records whose two most important features
  (largest ROC AUC drop when permuted) are permuted; it must never be promoted and should be
  kept in >= 80% of replays.
- better challenger: the same pair with the roles swapped; promoted in >= 80%.
Each model's threshold (its operating point) is the score quantile on its training rows that
makes its predicted positive rate equal the training delay rate.
Prints rates with 95% Wilson intervals, the days at which decisions fell, and the time taken.
"""

import argparse
import datetime as dt
import importlib.util
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
BEGAN = time.perf_counter()
# Import the pure library without the package __init__ (which loads Dagster and the Definitions).
_package = importlib.util.find_spec("mlops_assets")
_stub = types.ModuleType("mlops_assets")
_stub.__path__ = list(_package.submodule_search_locations)
sys.modules["mlops_assets"] = _stub

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from flights_data import staged_source, validated_lookups  # noqa: E402

from mlops_assets.lib import features, modeling, sources, validation  # noqa: E402
from mlops_assets.lib.ab_testing.assignment import arms_of_encoded, encode_keys  # noqa: E402
from mlops_assets.lib.ab_testing.decision import decide  # noqa: E402
from mlops_assets.lib.ab_testing.design import ExperimentDesign, design_experiment  # noqa: E402
from mlops_assets.lib.ab_testing.inference import Records, roc_auc  # noqa: E402
from mlops_assets.lib.spec import load_spec  # noqa: E402

SPEC = load_spec()
DATE, LABEL = SPEC.date.column, SPEC.target.name
CATEGORICAL, NUMERIC = list(SPEC.categorical_features), list(SPEC.numeric_features)
IDS = [DATE, *SPEC.key]
SEEDS = (0, 1, 2, 3)
ESTIMATOR = "hist_gradient_boosting"


def load_features(cache: Path) -> pd.DataFrame:
    """Validated features of all 2013 (the same library calls as the data assets)."""
    start, after = SPEC.date.start, SPEC.date.end + dt.timedelta(days=1)
    staged = staged_source(SPEC, cache)
    valid = validation.validate_records(
        sources.read_dates(staged, DATE, start, after), SPEC, start, after
    ).valid
    lookups = validated_lookups(SPEC, cache)
    return features.build_features(valid, lookups, SPEC)[features.feature_columns(SPEC)]


def wilson(k: int, n: int) -> str:
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    return f"{k}/{n} = {k / n:.3f} (95% CI {low:.3f}-{high:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replays", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2013)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache:
        frame = load_features(Path(cache))
    frame = frame[frame[LABEL].notna()].reset_index(drop=True)
    window = SPEC.default_training_window
    day = frame[DATE].dt.date
    train = frame[(day >= window.start) & (day <= window.end)]
    scored = frame[day > window.end].reset_index(drop=True)
    print(
        f"data: {len(train)} training rows (Jan-Jun), {len(scored)} labelled rows scored "
        f"({scored[DATE].min().date()}..{scored[DATE].max().date()})"
    )

    from sklearn.metrics import log_loss

    t0 = time.perf_counter()
    X_train, y_train = modeling.features_and_label(train, CATEGORICAL, NUMERIC, LABEL)
    X, y = modeling.features_and_label(scored, CATEGORICAL, NUMERIC, LABEL)
    models, scores, thresholds = {}, {}, {}
    for seed in SEEDS:
        pipe = modeling.fit_final(
            train,
            estimator=ESTIMATOR,
            params={},
            categorical=CATEGORICAL,
            numeric=NUMERIC,
            label=LABEL,
            seed=seed,
        )
        models[seed] = pipe
        scores[seed] = pipe.predict_proba(X)[:, 1]
        thresholds[seed] = float(np.quantile(pipe.predict_proba(X_train)[:, 1], 1 - y_train.mean()))
    rng = np.random.default_rng(args.seed)
    probe = rng.choice(len(scored), size=min(20_000, len(scored)), replace=False)
    base_auc = roc_auc(y[probe], scores[0][probe])
    drops = {}
    for column in [*CATEGORICAL, *NUMERIC]:
        shuffled = X.iloc[probe].copy()
        shuffled[column] = rng.permutation(shuffled[column].to_numpy())
        drops[column] = base_auc - roc_auc(y[probe], models[0].predict_proba(shuffled)[:, 1])
    top = sorted(drops, key=drops.get, reverse=True)[:2]
    permuted = X.copy()
    for column in top:
        permuted[column] = rng.permutation(permuted[column].to_numpy())
    worse = models[0].predict_proba(permuted)[:, 1]
    # Stand-in for the champion's test log loss when a start has too few days before it.
    reference = {
        id(scores[s]): log_loss(y_train, models[s].predict_proba(X_train)[:, 1]) for s in SEEDS
    }
    reference[id(worse)] = log_loss(
        y_train,
        models[0].predict_proba(
            X_train.assign(**{c: rng.permutation(X_train[c].to_numpy()) for c in top})
        )[:, 1],
    )
    aucs = {s: roc_auc(y, scores[s]) for s in SEEDS}
    print(
        f"models: {len(SEEDS)} x {ESTIMATOR} (seeds {SEEDS}), ROC AUC on the scored rows "
        + ", ".join(f"{a:.4f}" for a in aucs.values())
        + "; thresholds "
        + ", ".join(f"{t:.3f}" for t in thresholds.values())
    )
    print(
        f"worse challenger: seed-0 model with {top} permuted (AUC drops "
        + ", ".join(f"{drops[c]:.3f}" for c in top)
        + f"), ROC AUC {roc_auc(y, worse):.4f}"
    )
    print(f"scoring once: {time.perf_counter() - t0:.0f} s")

    t1 = time.perf_counter()
    encoded = encode_keys(scored[IDS])
    days = scored[DATE].to_numpy().astype("datetime64[D]")
    unique_days = np.unique(days)
    design0 = ExperimentDesign("x", dt.date(2013, 7, 1))
    starts = unique_days[: unique_days.size - design0.max_days + 1]

    def replay(i: int, control: np.ndarray, treatment: np.ndarray, thr_c: float, thr_t: float):
        start = starts[rng.integers(starts.size)]
        salt = f"ab-validity-{args.seed}-{i}"
        end = start + np.timedelta64(design0.max_days, "D")
        rows = np.flatnonzero((days >= start) & (days < end))
        arm = arms_of_encoded([encoded[j] for j in rows], salt, design0.shares)
        first = dt.date.fromisoformat(str(start))
        before = np.flatnonzero((days >= start - np.timedelta64(28, "D")) & (days < start))
        baseline = (
            Records(
                days[before],
                arms_of_encoded([encoded[j] for j in before], salt, design0.shares),
                y[before],
                control[before],
                control[before],
                thr_c,
                thr_c,
            )
            if before.size
            else None
        )
        design = design_experiment(salt, first, baseline, reference[id(control)])
        records = Records(days[rows], arm, y[rows], control[rows], treatment[rows], thr_c, thr_t)
        return decide(design, records)

    results = {}
    for name in ("A/A", "worse challenger", "better challenger"):
        outcomes = []
        for i in range(args.replays):
            if name == "A/A":
                a, b = rng.choice(SEEDS, size=2, replace=False)
                pair = (scores[a], scores[b], thresholds[a], thresholds[b])
            elif name == "worse challenger":
                pair = (scores[0], worse, thresholds[0], thresholds[0])
            else:
                pair = (worse, scores[0], thresholds[0], thresholds[0])
            outcomes.append(replay(i, *pair))
        results[name] = outcomes
    elapsed = time.perf_counter() - t1

    n = args.replays
    for name, outcomes in results.items():
        counts = {
            k: sum(o.decision == k for o in outcomes) for k in ("promote", "keep", "inconclusive")
        }
        decided = [o.days_analysed for o in outcomes if o.decided_on is not None]
        when = (
            f"; decided after {np.median(decided):.0f} days (median), {min(decided)}-{max(decided)}"
            if decided
            else ""
        )
        vetoed = sum("vetoed" in o.status for o in outcomes)
        mdes = [o.design.mde for o in outcomes if np.isfinite(o.design.mde)]
        print(
            f"{name}: promote {wilson(counts['promote'], n)}, keep {wilson(counts['keep'], n)}, "
            f"inconclusive {counts['inconclusive']}{when}; vetoed by a guardrail {vetoed}; "
            f"margin {np.median([o.design.margin for o in outcomes]):.5f}, design MDE "
            f"{np.median(mdes) if mdes else float('nan'):.5f} (medians)"
        )
    aa = results["A/A"]
    crossed = sum(o.primary.high < 0 or o.primary.low > 0 for o in aa)
    print(
        f"A/A: the last look's sequence excluded 0 in {wilson(crossed, n)} (seed pairs differ); "
        f"alpha {design0.alpha}, Monte Carlo 95% upper limit at alpha "
        f"{design0.alpha + 1.96 * np.sqrt(design0.alpha * (1 - design0.alpha) / n):.3f}"
    )
    print(f"replays: {3 * n} in {elapsed:.0f} s; total {time.perf_counter() - BEGAN:.0f} s")


if __name__ == "__main__":
    main()
