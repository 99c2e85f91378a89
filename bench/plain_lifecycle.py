"""Plain-script baseline of `python -m mlops_assets.lifecycle`: the same computations, no Dagster.

    .venv/bin/python bench/plain_lifecycle.py --data-dir /tmp/somewhere   # the whole lifecycle
    .venv/bin/python bench/plain_lifecycle.py --data-dir /tmp/x --train-end 2013-01-31 \
        --monitor-end 2013-02-28                                           # a small window

`bench/lifecycle.py` runs it in a subprocess beside the lifecycle command. It calls the same
library functions (`mlops_assets.lib.*`) with the same settings as the assets' defaults, on the
same data sizes, in the same order of stages:

1. data: stage the flights and weather CSVs as Parquet (fresh directory, so staging is included),
   read every day, the row-count and duplicate checks, validate all rows
   (`lib.validation.validate_records` over the whole range at once; the assets do it in windows
   of whole days, `lib.chunks`), null-rate and schema checks, validate the weather lookup and
   build the features; write raw_records, validated_records, quarantined_records and features.
2. training on the default window (Jan-Jun): time_split 0.15/0.15, the training_set table, the
   random search (HistGradientBoosting, 4 trials, 3 day folds, roc_auc, seed 0) with one nested
   MLflow run per trial, fit, calibration and threshold on the validation days
   (`lib.decision.calibrate`, `choose_threshold` by the spec's operating point), the
   `lib.served.ThresholdedModel` logged (skops trusted types, pinned pip_requirements) and
   registered with the challenger alias and lineage tags; evaluation as the evaluation asset
   (test metrics, operating point against hindsight, calibration before/after, logistic and
   category-rate baselines, `comparison_gate` / `degenerate_gate` with the spec's gates, plots,
   metrics.json), permutation importance (5 repeats, 20,000 rows, roc_auc) with its chart and
   table; the first model becomes champion (alias, tags, audit row in DuckDB).
3. monitoring of Jul-Dec: long-format predictions (`lib.monitoring.predict_long`); drift per day
   against the champion's training window with thresholds calibrated on its own days
   (`lib.drift_calibration`: null scores, domain classifier null over 40 days, quantile 0.99),
   an Evidently snapshot per day (HTML for the last day only) saved to a workspace; CBPE per day
   (`lib.cbpe.estimate`, band inflation 3.38); realized performance on the day or its trailing
   window (`lib.monitoring.trailing_window`, 100 labelled records, up to 7 days) beside the
   estimate for the same records; the summary plot and tables (`lib.monitoring.plot_summary`,
   `daily_series`), the daily figures and panels of the Evidently project
   (`lib.dashboard.save_daily_figures`); tables written.
4. the retraining rule (`lib.automation.replay_rule`: drift alarms, decay, outside the band)
   replayed over the monitored days (the last 180, as the sensor cursor keeps), then the same
   retraining as the lifecycle: the rule's 90-day window if it fired (A/B from the next day),
   else a random-forest challenger on the default window (A/B over all monitored days).
   Evaluation against the champion by the same gates.
5. A/B: both models score the A/B days (predictions rewritten), arms by `assign_arms` (0.45 /
   0.45 / 0.10), outcomes table, the design from the champion's 28 days before the start
   (`lib.ab_testing.design.design_experiment` with the ab_results defaults), `decide`, the
   report; promotion if it says so. (The lifecycle runs the A/B test only when the challenger
   passed its gates; this script runs it either way.)

What it leaves out, because it is the orchestration and tracking overhead being measured: the
Dagster import and instance, run/event storage and per-partition metadata, the IO manager's
read-back of every input from DuckDB (here frames stay in memory between stages), reloading
models from the MLflow registry (evaluation, importance and monitoring use the fitted pipelines
in memory; `log_model` still saves and reloads once to validate, as in the lifecycle), reading
test metrics back from MLflow, the git call for the code version, hashing the training set twice,
table previews for the UI, and reshaping the long predictions with `pivot_table` for the A/B
outcomes (the two score columns are taken directly). The mlops_assets package's `__init__`
(which imports Dagster and builds the Definitions) is bypassed so that the library imports
without Dagster.

Prints "-> stage" / "   done in N s" lines like the lifecycle, a summary, and one
`STAGE <key> <seconds>` line per stage for bench/lifecycle.py.
"""

import argparse
import datetime as dt
import importlib.util
import json
import os
import sys
import time
import types
import warnings
from pathlib import Path

BEGAN = time.perf_counter()
warnings.filterwarnings("ignore")

# Import the pure library without the package __init__ (which loads Dagster and the Definitions).
_package = importlib.util.find_spec("mlops_assets")
_stub = types.ModuleType("mlops_assets")
_stub.__path__ = list(_package.submodule_search_locations)
sys.modules["mlops_assets"] = _stub

import duckdb  # noqa: E402
import evidently  # noqa: E402, F401  (imported up front, as a plain script would)
import mlflow  # noqa: E402
import mlflow.sklearn  # noqa: E402
import pandas as pd  # noqa: E402
import sklearn.ensemble  # noqa: E402, F401
from flights_data import staged_source, validated_lookups  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402

from mlops_assets.lib import (  # noqa: E402
    cbpe,
    dashboard,
    decision,
    drift,
    drift_calibration,
    evaluation,
    features,
    modeling,
    monitoring,
    quality,
    registry,
    served,
    sources,
    validation,
)
from mlops_assets.lib.ab_testing import report as ab_report  # noqa: E402
from mlops_assets.lib.ab_testing.assignment import assign_arms  # noqa: E402
from mlops_assets.lib.ab_testing.decision import decide  # noqa: E402
from mlops_assets.lib.ab_testing.design import design_experiment  # noqa: E402
from mlops_assets.lib.ab_testing.inference import Records  # noqa: E402
from mlops_assets.lib.automation import DayResult, RetrainingRule, replay_rule  # noqa: E402
from mlops_assets.lib.decision import calibrate, choose_threshold  # noqa: E402
from mlops_assets.lib.spec import load_spec  # noqa: E402

assert "dagster" not in sys.modules, "the baseline must not import Dagster"

SPEC = load_spec()
DATE, KEY, LABEL = SPEC.date.column, list(SPEC.key), SPEC.target.name
CATEGORICAL, NUMERIC = SPEC.categorical_features, SPEC.numeric_features
FEATURES = [*CATEGORICAL, *NUMERIC]
IDS = [DATE, *KEY]
MODEL_NAME = f"{SPEC.name}_model"
EXPERIMENT = "mlops_assets"
PROBABILITY = "probability"
CURSOR_DAYS_KEPT = 180  # mlops_assets.automation: the sensor cursor keeps the latest 180 days
STAGES: list[tuple[str, float]] = []
# The assets' defaults (their homes: monitoring/drift.py DriftConfig, monitoring/performance.py
# BAND_INFLATION and the configs' min_rows / min_labelled_records), which import Dagster.
DRIFT_SAMPLE_ROWS = 20_000
MIN_ROWS = 100
BAND_INFLATION = 3.38


def say(message: str) -> None:
    print(message, flush=True)


class Stage:
    def __init__(self, key: str, title: str) -> None:
        self.key, self.title = key, title

    def __enter__(self):
        say(f"-> {self.title}")
        self.began = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            elapsed = time.perf_counter() - self.began
            STAGES.append((self.key, elapsed))
            say(f"   done in {elapsed:.0f} s")


def ts(day: dt.date) -> pd.Timestamp:
    return pd.Timestamp(day)


def between(frame: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Rows dated in [start, end] (inclusive)."""
    dates = frame[DATE]
    return frame[(dates >= ts(start)) & (dates < ts(end + dt.timedelta(days=1)))]


class Warehouse:
    """One DuckDB connection; each table is replaced whole (the lifecycle replaces partitions)."""

    def __init__(self, path: Path) -> None:
        self.con = duckdb.connect(str(path))
        self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {SPEC.name}")

    def write(self, table: str, frame: pd.DataFrame) -> None:
        self.con.register("frame_to_write", frame)
        self.con.execute(
            f"CREATE OR REPLACE TABLE {SPEC.name}.{table} AS SELECT * FROM frame_to_write"
        )
        self.con.unregister("frame_to_write")


# ------------------------------------------------------------------------------------------
# 1. Data


def build_data(data_dir: Path, wh: Warehouse, start: dt.date, end: dt.date) -> pd.DataFrame:
    cache = data_dir / "sources"
    after = end + dt.timedelta(days=1)
    staged = staged_source(SPEC, cache)
    raw = sources.read_dates(staged, DATE, start, after)
    q = SPEC.quality
    counts = quality.daily_row_counts(raw, DATE, start, after)
    anomalies = quality.row_count_anomalies(
        counts,
        pd.Series(dtype="int64"),
        trailing_days=q.trailing_days,
        min_ratio=q.min_row_ratio,
    )
    duplicates = int(raw.duplicated(IDS).sum())
    wh.write("raw_records", raw)

    result = validation.validate_records(raw, SPEC, start, after)
    limits = {n: c.max_null_rate for n, c in SPEC.columns.items() if c.max_null_rate is not None}
    null_over = {
        n: r
        for n, r in quality.null_rates(result.valid, list(limits), DATE).items()
        if r > limits[n]
    }
    schema_problems = quality.schema_mismatches(
        result.valid, {n: c.type for n, c in SPEC.columns.items()}
    )
    wh.write("validated_records", result.valid)
    wh.write("quarantined_records", result.quarantined)

    lookups = validated_lookups(SPEC, cache)
    frame = features.build_features(result.valid, lookups, SPEC)[features.feature_columns(SPEC)]
    feature_nulls = quality.null_rates(frame, list(SPEC.features), DATE)
    wh.write("features", frame)
    say(
        f"   {len(raw)} records, {len(result.quarantined)} quarantined, {duplicates} duplicates, "
        f"{int(anomalies['failed'].sum())} anomalous days, null rates over limit "
        f"{sorted(null_over) or 'none'}, schema {schema_problems or 'ok'}, "
        f"max feature null rate {max(feature_nulls.values()):.3f}"
    )
    return frame


# ------------------------------------------------------------------------------------------
# 2. Training, evaluation, registration


class Tracking:
    def __init__(self, data_dir: Path) -> None:
        (data_dir / "mlflow").mkdir(parents=True, exist_ok=True)
        self.uri = f"sqlite:///{(data_dir / 'mlflow' / 'mlflow.db').resolve()}"
        self.client = registry.client(self.uri)
        # A script of its own: its process may use MLflow's fluent API on one store throughout.
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        experiment_id = registry.ensure_experiment(
            self.client, EXPERIMENT, str((data_dir / "mlflow" / "artifacts").resolve())
        )
        mlflow.set_experiment(experiment_id=experiment_id)


def promote(tracking: Tracking, wh: Warehouse, version: str, reason: str, evidence) -> None:
    registry.promote(
        tracking.client,
        wh.con,
        MODEL_NAME,
        version,
        reason=reason,
        evidence=evidence,
        run_id="plain",
        schema=SPEC.name,
    )


def train(
    feats: pd.DataFrame,
    start: dt.date,
    end: dt.date,
    *,
    estimator: str,
    tracking: Tracking,
    wh: Warehouse,
    reports: Path,
    champion: dict | None,
) -> dict:
    """training_set, model, evaluation, feature_importance and champion_model of one run."""
    frame = between(feats, start, end)
    frame = frame[frame[LABEL].notna()]
    train_part, validation_part, test_part = modeling.time_split(frame, DATE, 0.15, 0.15)
    parts = {"train": train_part, "validation": validation_part, "test": test_part}
    training_set = pd.concat([p.assign(split=name) for name, p in parts.items()], ignore_index=True)
    lineage = {
        "code_version": "plain-baseline",
        "data_window": f"{start}..{end}",
        "data_hash": modeling.hash_frame(training_set),
        "data_rows": str(len(training_set)),
        "data_rows_train": str(len(train_part)),
        "features_table": f"{SPEC.name}.features",
    }
    wh.write("training_set", training_set)

    columns = {"categorical": CATEGORICAL, "numeric": NUMERIC, "label": LABEL}
    with mlflow.start_run(tags=lineage) as run:
        search = modeling.search_hyperparameters(
            train_part,
            estimator=estimator,
            date_column=DATE,
            params={},
            method="random",
            n_trials=4,
            n_splits=3,
            metric="roc_auc",
            seed=0,
            **columns,
        )
        for number, trial in enumerate(search.trials):
            with mlflow.start_run(run_name=f"trial-{number}", nested=True):
                mlflow.log_params(trial.params)
                mlflow.log_metrics(
                    {"cv_roc_auc": trial.mean_score, "cv_roc_auc_std": trial.std_score}
                )
        pipeline = modeling.fit_final(
            train_part, estimator=estimator, params=search.best_params, seed=0, **columns
        )
        mlflow.log_params({"estimator": estimator, "search": "random", **search.best_params})
        mlflow.log_metric("cv_roc_auc", search.best_score)
        # The operating point as the model asset chooses it: calibrated on the validation days,
        # threshold by the spec's policy.
        X_val, y_val = modeling.features_and_label(validation_part, CATEGORICAL, NUMERIC, LABEL)
        calibration = calibrate(pipeline, X_val, y_val, validation_part[DATE])
        proba_val = calibration.model.predict_proba(X_val)[:, 1]
        threshold = choose_threshold(y_val, proba_val, SPEC.operating_point)
        # What the model asset registers: the calibrated pipeline with its threshold.
        pipeline = served.ThresholdedModel(
            calibration.model,
            threshold,
            categories={c: train_part[c].dropna().unique().tolist() for c in CATEGORICAL},
        )
        validation_metrics = evaluation.classification_metrics(y_val, proba_val, threshold)
        mlflow.log_params({"threshold": threshold, "calibration": calibration.method})
        mlflow.log_metrics({f"validation_{k}": float(v) for k, v in validation_metrics.items()})
        X_train, _ = modeling.features_and_label(train_part, CATEGORICAL, NUMERIC, LABEL)
        example = X_train.head(5)
        example = example.astype({c: "float64" for c in example.select_dtypes("integer")})
        logged = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            registered_model_name=MODEL_NAME,
            signature=infer_signature(example, pipeline.predict(example)),
            input_example=example,
            skops_trusted_types=[
                *modeling.skops_trusted_types(estimator),
                *served.TRUSTED_TYPES,
            ],
            pip_requirements=registry.serving_requirements(),
        )
        version = str(logged.registered_model_version)
        client = tracking.client
        tags = {**lineage, "estimator": estimator, registry.THRESHOLD_TAG: str(threshold)}
        for key, value in tags.items():
            client.set_model_version_tag(MODEL_NAME, version, key, value)
        client.set_registered_model_alias(MODEL_NAME, registry.CHALLENGER, version)

        # evaluation, as the evaluation asset: test metrics at the version's threshold, the
        # operating point against hindsight, calibration before/after, the simple baselines
        # (logistic regression, rate by the most informative category) and the gates.
        X_test, y_test = modeling.features_and_label(test_part, CATEGORICAL, NUMERIC, LABEL)
        days = test_part[DATE]
        proba = pipeline.predict_proba(X_test)[:, 1]
        metrics = evaluation.classification_metrics(y_test, proba, threshold)
        operating_point = decision.judge_operating_point(
            y_test, proba, threshold, SPEC.operating_point
        )
        uncalibrated = pipeline.uncalibrated_proba(X_test)[:, 1] if pipeline.calibrated else None
        calibration_report = {"after": decision.calibration_summary(y_test, proba)}
        if uncalibrated is not None:
            calibration_report["before"] = decision.calibration_summary(y_test, uncalibrated)
        logistic = modeling.fit_final(
            train_part, estimator="logistic_regression", params={}, seed=0, **columns
        )
        logistic_threshold = choose_threshold(
            y_val, logistic.predict_proba(X_val)[:, 1], SPEC.operating_point
        )
        logistic_proba = logistic.predict_proba(X_test)[:, 1]
        baseline = evaluation.classification_metrics(y_test, logistic_proba, logistic_threshold)
        column, _ = decision.most_informative_category(
            train_part, validation_part, CATEGORICAL, LABEL
        )
        rates, prior = decision.category_means(train_part[column], train_part[LABEL])
        category_scores = decision.category_mean_predictions(rates, prior, test_part[column])
        gates_spec = SPEC.gates
        verdicts = [
            decision.comparison_gate(
                "check_beats_baseline", y_test, proba,
                {"logistic_regression": logistic_proba, f"rate_by_{column}": category_scores},
                days, margin=gates_spec.baseline_margin, gates=gates_spec,
            ),
            decision.degenerate_gate(
                y_test, proba, threshold, days, gates=gates_spec, name="check_not_degenerate"
            ),
        ]  # fmt: skip
        champion_proba = champion_metrics = None
        if champion is not None:
            champion_proba = champion["pipeline"].predict_proba(X_test)[:, 1]
            champion_metrics = evaluation.classification_metrics(
                y_test, champion_proba, champion["threshold"]
            )
            verdicts.append(
                decision.comparison_gate(
                    "check_not_worse_than_champion", y_test, proba, {"champion": champion_proba},
                    days, margin=gates_spec.champion_margin, gates=gates_spec,
                )
            )  # fmt: skip
        directory = reports / "evaluation" / f"{MODEL_NAME}-v{version}"
        evaluation.save_evaluation_plots(
            y_test, proba, directory, threshold, baseline=champion_proba, uncalibrated=uncalibrated
        )
        summary = {
            "threshold": threshold,
            "metrics": metrics,
            "operating_point": operating_point.metadata(),
            "calibration": calibration_report,
            "baseline": baseline,
            "gates": {g.name: {"passed": g.passed, "message": g.message} for g in verdicts},
            "champion": champion_metrics,
        }
        (directory / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in metrics.items()})
        mlflow.log_artifacts(str(directory), artifact_path="evaluation")
        gates = "passed" if all(g.passed for g in verdicts) else "failed"
        client.set_model_version_tag(MODEL_NAME, version, "evaluation_gates", gates)

        # feature_importance
        table = evaluation.permutation_importance_table(
            pipeline, X_test, y_test, scoring="roc_auc", n_repeats=5, max_rows=20_000
        )
        chart = evaluation.save_importance_chart(table, directory / "importance.png")
        mlflow.log_artifact(str(chart), artifact_path="evaluation")
        wh.write("feature_importance", table.assign(model_version=int(version)))
        run_id = run.info.run_id

    model = {
        "version": version,
        "run_id": run_id,
        "pipeline": pipeline,
        "metrics": metrics,
        "threshold": threshold,
        "gates": gates,
        "window": (start, end),
    }
    if champion is None:
        if gates != "passed":
            raise SystemExit(f"v{version} failed its evaluation gates: no champion")
        promote(
            tracking,
            wh,
            version,
            "first model to pass the evaluation gates",
            {"evaluation": metrics},
        )
    say(
        f"   v{version} ({estimator}, {start}..{end}, {len(train_part)} train rows): test ROC AUC "
        f"{metrics['roc_auc']:.4f}, accuracy {metrics['accuracy']:.4f}, gates {gates}"
    )
    return model


# ------------------------------------------------------------------------------------------
# 3. Monitoring


def drift_days(current, champion, feats, *, days, data_dir, reports) -> pd.DataFrame:
    """drift_report: each day against the champion's training window, thresholds calibrated on
    that window's own days (column max-statistic and domain classifier), Evidently snapshots."""
    numeric, categorical = SPEC.drift_features
    reference = between(feats, *champion["window"])[[DATE, *FEATURES]]
    null = drift_calibration.null_scores(
        reference,
        date_column=DATE,
        numeric=numeric,
        categorical=categorical,
        sample_rows=DRIFT_SAMPLE_ROWS,
        min_rows=MIN_ROWS,
        seed=0,
    )
    domain_columns = {
        "numeric": drift_calibration.record_level_columns(
            reference, date_column=DATE, numeric=numeric
        ),
        "categorical": categorical,
    }
    domain = drift_calibration.domain_null(
        reference, date_column=DATE, days=40, min_rows=MIN_ROWS, **domain_columns
    )
    calibration = drift_calibration.calibrate(null, 0.99, domain_null=list(domain.values()))
    sample = reference
    if len(reference) > DRIFT_SAMPLE_ROWS:
        sample = reference.sample(DRIFT_SAMPLE_ROWS, random_state=0)
    evidently_reference = sample.assign(
        **{PROBABILITY: champion["pipeline"].predict_proba(sample[FEATURES])[:, 1]}
    )
    calendar = tuple(f for f in SPEC.features if f not in (*numeric, *categorical))
    by_day = current.groupby(current[DATE].dt.strftime("%Y-%m-%d"))
    rows, snapshots = [], []
    for day in days:
        if day not in by_day.groups:
            continue
        today = by_day.get_group(day)
        scores = drift_calibration.column_scores(sample, today, numeric, categorical)
        auc = float("nan")
        if len(today) >= MIN_ROWS:
            auc = drift_calibration.domain_auc(reference, today, **domain_columns)
        decision = drift_calibration.judge(
            scores, calibration, n_rows=len(today), min_rows=MIN_ROWS, domain=auc
        )
        html_path = reports / "drift" / f"{day}.html" if day == days[-1] else None
        result = drift.compute_drift(
            evidently_reference, today, numeric=NUMERIC, categorical=CATEGORICAL,
            prediction=PROBABILITY, settings=drift.DriftSettings(exclude=calendar),
            html_path=html_path, timestamp=dt.datetime.fromisoformat(day), tags=[day],
        )  # fmt: skip
        snapshots.append(result.snapshot)
        rows.append(
            {
                DATE: pd.Timestamp(day),
                "model_version": champion["version"],
                "n_rows": len(today),
                "judged": decision.judged,
                "alarm": decision.alarm,
                "drift_share": decision.drift_share if decision.judged else float("nan"),
                "drifted_columns": ", ".join(decision.drifted),
                "max_z": decision.max_z,
                "threshold": decision.threshold,
                "domain_auc": decision.domain_auc,
                "domain_threshold": decision.domain_threshold,
                "prediction_drift_score": float(result.prediction_score or float("nan")),
                **{f"drift_z__{c}": decision.z.get(c, float("nan")) for c in scores},
            }
        )
    drift.save_snapshots_to_workspace(snapshots, data_dir / "evidently", f"{SPEC.name} drift")
    return pd.DataFrame(rows)


def band(estimate) -> dict[str, float]:
    nan = float("nan")
    return {
        column: (getattr(estimate, part)[name] if estimate else nan)
        for name in ("roc_auc", "accuracy", "f1")
        for column, part in (
            (f"estimated_{name}", "expected"),
            (f"{name}_low", "low"),
            (f"{name}_high", "high"),
        )
    }


def monitor(
    feats: pd.DataFrame,
    start: dt.date,
    end: dt.date,
    champion: dict,
    *,
    wh: Warehouse,
    data_dir: Path,
    reports: Path,
) -> dict[str, dict]:
    """predictions, drift_report, performance_estimate, performance and monitoring_summary, with
    the assets' defaults; per-day numbers for the retraining rule."""
    current_features = between(feats, start, end)
    predictions = monitoring.predict_long(
        current_features,
        [(registry.CHAMPION, (champion["version"], champion["threshold"], champion["pipeline"]))],
        id_columns=IDS,
        feature_columns=FEATURES,
        model_name=MODEL_NAME,
    )
    wh.write("predictions", predictions)
    current = current_features.merge(predictions[[*IDS, PROBABILITY]], on=IDS, how="inner")
    days = [str(d.date()) for d in pd.date_range(start, end)]
    drift_table = drift_days(
        current, champion, feats, days=days, data_dir=data_dir, reports=reports
    )
    wh.write("drift_report", drift_table)

    # performance_estimate (CBPE, before labels) and performance (once labels land)
    threshold, test = champion["threshold"], champion["metrics"]
    by_day = current.groupby(current[DATE].dt.strftime("%Y-%m-%d"))
    labelled = current[current[LABEL].notna()]
    estimate_rows, perf_rows, per_day = [], [], {}
    for day in days:
        if day not in by_day.groups:
            continue
        rows = by_day.get_group(day)
        seed = dt.date.fromisoformat(day).toordinal()
        estimate = cbpe.estimate(
            rows[PROBABILITY].to_numpy(), threshold, inflation=BAND_INFLATION, seed=seed
        )
        estimate_rows.append({DATE: pd.Timestamp(day), "n": estimate.n, **band(estimate)})
        window, k, enough = monitoring.trailing_window(
            labelled, date_column=DATE, day=pd.Timestamp(day), min_records=MIN_ROWS, max_days=7
        )
        metrics = monitoring.daily_performance(window, label=LABEL, threshold=threshold)
        row = {
            DATE: pd.Timestamp(day),
            "model_version": champion["version"],
            "n": len(window),
            "window_days": k,
            "judged": enough,
            **{name: (metrics or {}).get(name, float("nan")) for name in evaluation.METRIC_NAMES},
            **band(None),
        }
        outside, drops = False, {}
        if enough and metrics is not None:
            realized = cbpe.estimate(
                window[PROBABILITY].to_numpy(), threshold, inflation=BAND_INFLATION, seed=seed
            )
            row |= band(realized)
            outside = not realized.inside("roc_auc", metrics["roc_auc"])
            drops = monitoring.relative_drops(
                metrics, test, ["roc_auc", "accuracy", "f1", "brier"], 0.1
            )
        row |= {"outside_band": outside, "below_reference": ", ".join(drops)}
        perf_rows.append(row)
        drifted = drift_table[drift_table[DATE] == pd.Timestamp(day)]
        per_day[day] = {
            "alarm": bool(drifted["alarm"].iloc[0]) if len(drifted) else None,
            "drift_share": float(drifted["drift_share"].iloc[0]) if len(drifted) else None,
            "roc_auc": row["roc_auc"] if enough else None,
            "reference_roc_auc": test["roc_auc"],
            "outside_band": outside,
        }
    estimates, perf_table = pd.DataFrame(estimate_rows), pd.DataFrame(perf_rows)
    wh.write("performance_estimate", estimates)
    wh.write("performance", perf_table)

    # monitoring_summary
    monitoring.plot_summary(
        drift_table, estimates, perf_table, date_column=DATE,
        path=reports / "monitoring" / "summary.png",
    )  # fmt: skip
    daily = monitoring.daily_series(drift_table, estimates, perf_table, date_column=DATE)
    daily.drop(columns=["drifted_columns"]).groupby(daily[DATE].str[:7]).mean(
        numeric_only=True
    ).round(3).to_markdown()
    dashboard.save_daily_figures(
        data_dir / "evidently", f"{SPEC.name} drift", dashboard.figures_by_day(daily, DATE)
    )
    say(
        f"   {len(drift_table)} days: {int(drift_table['alarm'].sum())} drift alarms, "
        f"mean ROC AUC {perf_table['roc_auc'].mean():.4f}, "
        f"{int(perf_table['outside_band'].sum())} days outside the estimate's band"
    )
    return per_day


def replay_retraining(per_day: dict[str, dict], rule: RetrainingRule):
    kept = sorted(per_day)[-CURSOR_DAYS_KEPT:]
    results = [
        DayResult(
            dt.date.fromisoformat(day),
            drift_alarm=per_day[day]["alarm"],
            drift_share=per_day[day]["drift_share"],
            roc_auc=per_day[day]["roc_auc"],
            reference_auc=per_day[day]["reference_roc_auc"],
            outside_band=per_day[day]["outside_band"] or None,
        )
        for day in kept
    ]
    return replay_rule(results, rule)


# ------------------------------------------------------------------------------------------
# 5. A/B


def ab_test(
    feats: pd.DataFrame,
    start: dt.date,
    end: dt.date,
    champion: dict,
    challenger: dict,
    *,
    wh: Warehouse,
    tracking: Tracking,
    reports: Path,
):
    current = between(feats, start, end)
    models = [
        (alias, (model["version"], model["threshold"], model["pipeline"]))
        for alias, model in ((registry.CHAMPION, champion), (registry.CHALLENGER, challenger))
    ]
    predictions = monitoring.predict_long(
        current, models, id_columns=IDS, feature_columns=FEATURES, model_name=MODEL_NAME
    )
    wh.write("predictions", predictions)
    n = len(current)
    experiment = f"{MODEL_NAME}-v{champion['version']}-vs-v{challenger['version']}"
    outcomes = (
        current[IDS]
        .reset_index(drop=True)
        .assign(
            champion_version=champion["version"],
            challenger_version=challenger["version"],
            score_control=predictions[PROBABILITY].to_numpy()[:n],
            score_treatment=predictions[PROBABILITY].to_numpy()[n:],
            threshold_control=champion["threshold"],
            threshold_treatment=challenger["threshold"],
            label=current[LABEL].to_numpy(),
            experiment=experiment,
        )
    )
    shares = {"control": 0.45, "treatment": 0.45, "excluded": 0.10}
    outcomes["arm"] = assign_arms(outcomes[IDS], experiment, shares)
    wh.write("ab_outcomes", outcomes)
    return outcomes, experiment


def ab_decide(outcomes, experiment, champion, challenger, feats, start, *, wh, tracking, reports):
    # The design from the champion's labelled days before the start, as ab_results builds it.
    before = between(feats, start - dt.timedelta(days=28), start - dt.timedelta(days=1))
    before = before[before[LABEL].notna()]
    score = champion["pipeline"].predict_proba(before[FEATURES])[:, 1]
    baseline = Records(
        before[DATE].to_numpy().astype("datetime64[D]"),
        assign_arms(before[IDS], experiment).to_numpy(),
        before[LABEL].to_numpy(dtype="int64"),
        score,
        score,
        champion["threshold"],
        champion["threshold"],
    )
    design = design_experiment(experiment, start, baseline, champion["metrics"]["log_loss"])
    wh.write("ab_designs", pd.DataFrame([design.as_row()]))
    decision = decide(design, Records.from_frame(outcomes, DATE))
    report = reports / "ab" / f"{experiment}.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(f"# A/B test {experiment}\n\n{ab_report.to_markdown(decision)}\n")
    evidence = ab_report.to_metadata(decision)
    champion_version = champion["version"]
    if decision.decision == "promote":
        promote(
            tracking,
            wh,
            challenger["version"],
            f"A/B test {experiment}: {decision.status}",
            evidence,
        )
        champion_version = challenger["version"]
    return decision, champion_version


# ------------------------------------------------------------------------------------------


def main() -> None:
    window = SPEC.default_training_window
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=os.environ.get("MLOPS_DATA_DIR", "data"))
    parser.add_argument("--train-start", default=str(window.start))
    parser.add_argument("--train-end", default=str(window.end))
    parser.add_argument("--monitor-end", default=str(SPEC.date.end))
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    reports = data_dir / "reports"
    train_start = dt.date.fromisoformat(args.train_start)
    train_end = dt.date.fromisoformat(args.train_end)
    monitor_start = train_end + dt.timedelta(days=1)
    monitor_end = dt.date.fromisoformat(args.monitor_end)
    STAGES.append(("imports", time.perf_counter() - BEGAN))
    say(f"plain baseline on {SPEC.name} ({SPEC.date.start}..{monitor_end}), no Dagster")

    wh = Warehouse(data_dir / "warehouse.duckdb")
    with Stage("data", f"ingest, validate, build features: {SPEC.date.start}..{monitor_end}"):
        feats = build_data(data_dir, wh, SPEC.date.start, monitor_end)
    with Stage("train", f"train, evaluate, register a model on {train_start}..{train_end}"):
        tracking = Tracking(data_dir)
        champion = train(
            feats,
            train_start,
            train_end,
            estimator="hist_gradient_boosting",
            tracking=tracking,
            wh=wh,
            reports=reports,
            champion=None,
        )
    with Stage("monitor", f"score, check drift and performance: {monitor_start}..{monitor_end}"):
        per_day = monitor(
            feats,
            monitor_start,
            monitor_end,
            champion,
            wh=wh,
            data_dir=data_dir,
            reports=reports,
        )
    with Stage("replay", "replay the retraining rule over the monitored days"):
        rule = RetrainingRule()
        decisions = replay_retraining(per_day, rule)
        for request in decisions:
            say(f"   would retrain on {request.last_day}: {request.reason}")
    if decisions:
        start, end = decisions[0].training_window(rule)
        start = max(start, SPEC.date.start)
        estimator, ab_start = "hist_gradient_boosting", decisions[0].last_day + dt.timedelta(1)
        title = f"retrain as the rule asks: {start}..{end}"
    else:
        start, end, estimator, ab_start = train_start, train_end, "random_forest", monitor_start
        title = "the rule never held: train a random-forest challenger"
    with Stage("retrain", title):
        challenger = train(
            feats,
            start,
            end,
            estimator=estimator,
            tracking=tracking,
            wh=wh,
            reports=reports,
            champion=champion,
        )
    # As the lifecycle: the A/B test only for a challenger that passed its gates.
    experiment, ab_decision, champion_version = "none", "not run: challenger failed", None
    if challenger["gates"] == "passed":
        with Stage("ab_scoring", f"score champion and challenger, A/B outcomes: {ab_start}.."):
            outcomes, experiment = ab_test(
                feats,
                ab_start,
                monitor_end,
                champion,
                challenger,
                wh=wh,
                tracking=tracking,
                reports=reports,
            )
        with Stage("ab_test", "A/B test and promotion decision"):
            verdict, champion_version = ab_decide(
                outcomes,
                experiment,
                champion,
                challenger,
                feats,
                ab_start,
                wh=wh,
                tracking=tracking,
                reports=reports,
            )
        ab_decision = f"{verdict.decision}: {verdict.status}"
    wh.con.close()

    say("\nSummary")
    summary = {
        "champion version": champion_version or champion["version"],
        "first model, test ROC AUC": round(champion["metrics"]["roc_auc"], 4),
        "first model, test accuracy": round(champion["metrics"]["accuracy"], 4),
        "retraining rule (replayed)": ", ".join(str(d.last_day) for d in decisions) or "never",
        "A/B experiment": experiment,
        "A/B decision": ab_decision,
        "elapsed": f"{time.perf_counter() - BEGAN:.0f} s",
    }
    for key, value in summary.items():
        say(f"  {key:30} {value}")
    for key, seconds in STAGES:
        say(f"STAGE {key} {seconds:.2f}")


if __name__ == "__main__":
    main()
