"""The whole lifecycle on the embedded data, in one command: `python -m mlops_assets.lifecycle`.

Each stage is a run of one of the code location's jobs on the Dagster instance of $DAGSTER_HOME,
so afterwards `dagster dev` shows every run, materialization, check and plot. Re-running is safe:
partitions are replaced, and a retrained model is a new challenger.
"""

import argparse
import datetime as dt
import logging
import os
import sys
import time
import warnings

import dagster as dg

from mlops_assets.lib.automation import RetrainingRule
from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import data_dir

VERBOSE_ENV = "MLOPS_VERBOSE"
# The terminal keeps one line per stage: Dagster's events, warnings included, stay in the run
# storage (the UI); a failure is summed up by `failure_reasons`, without Dagster's stack traces.
QUIET_LOGGERS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def say(message: str) -> None:
    print(message, flush=True)


def run_job(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    name: str,
    title: str,
    *,
    quiet: bool,
    start=None,
    end=None,
    config=None,
    tags=None,
    assets=None,
    refusable: bool = False,
):
    """Execute a job in this process on the instance, over a partition range when given.

    The terminal shows one line per stage; every event still goes to the run storage (the UI).
    A failed run ends the lifecycle, unless `refusable` and only blocking checks failed (the
    platform refusing a model, not breaking): then the result is returned.
    """
    tags = dict(tags or {})
    if quiet:
        config = {**(config or {}), **QUIET_LOGGERS}
    if start is not None:
        tags |= {
            "dagster/asset_partition_range_start": str(start),
            "dagster/asset_partition_range_end": str(end),
        }
    print(f"-> {title} ...", end="", flush=True)
    began = time.perf_counter()
    result = defs.resolve_job_def(name).execute_in_process(
        instance=instance,
        run_config=config or {},
        tags=tags,
        raise_on_error=False,
        asset_selection=[dg.AssetKey(a) for a in assets] if assets else None,
    )
    elapsed = time.perf_counter() - began
    if not result.success and refusable and refused_by_checks(result):
        say(f" refused by its checks after {elapsed:.0f} s (run {result.run_id[:8]})")
        return result
    if not result.success:
        say(f" FAILED after {elapsed:.0f} s (run {result.run_id}); see `make dev` or run with -v")
        for reason in failure_reasons(result):
            say(f"   {reason}")
        sys.exit(1)
    say(f" done in {elapsed:.0f} s (run {result.run_id[:8]})")
    return result


def refused_by_checks(result) -> bool:
    """Whether every failed step failed because a blocking asset check did not pass."""
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return bool(failures) and all(
        e.step_failure_data.error is not None
        and e.step_failure_data.error.cls_name == "DagsterAssetCheckFailedError"
        for e in failures
    )


def failure_reasons(result) -> list[str]:
    """Why a run failed, in a user's words: each failed check's verdict, each step's error."""
    reasons = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            check = event.asset_check_evaluation_data
            if not check.passed and check.description:
                reasons.append(check.description)
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            if error is not None and error.cls_name == "DagsterAssetCheckFailedError":
                continue  # the failed checks' verdicts say why
            data = event.step_failure_data.user_failure_data
            if data and data.description:
                message = data.description
            else:
                while error is not None and error.cause is not None:  # Dagster wraps the error
                    error = error.cause
                message = error.message if error else "unknown error"
            reasons.append(f"{event.step_key}: {message.strip()}")
    return reasons


def metadata(result, asset: str) -> dict:
    materialization = result.asset_materializations_for_node(asset)[-1]
    return {k: v.value for k, v in materialization.metadata.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help=f"show Dagster's and MLflow's logs in the terminal (or set {VERBOSE_ENV}=1)",
    )
    args = parser.parse_args()
    quiet = not (args.verbose or os.environ.get(VERBOSE_ENV))
    if quiet:
        # MLflow sets its loggers' level from this variable when it is imported (later, inside
        # the assets), overriding a level set here.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        # Dagster flags parameters this project relies on (`backfill_policy` for single-run
        # backfills, `pool`, dagster-mlflow) as beta or preview on every definition: nothing a
        # user of the lifecycle can act on.
        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    from mlops_assets.automation import replay_retraining, retraining_request
    from mlops_assets.definitions import defs

    spec = dataset_spec
    window = spec.default_training_window
    monitor_start, monitor_end = window.end + dt.timedelta(days=1), spec.date.end
    began = time.perf_counter()

    with dg.DagsterInstance.get() as instance:
        say(f"mlops_assets lifecycle on {spec.name} ({spec.date.start}..{spec.date.end})")
        run_job(
            defs,
            instance,
            "data_job",
            f"ingest, validate, build features: {spec.date.start}..{spec.date.end}",
            quiet=quiet,
            start=spec.date.start,
            end=spec.date.end,
        )
        trained = run_job(
            defs,
            instance,
            "training_job",
            f"train, evaluate, register a model on {window.start}..{window.end}",
            quiet=quiet,
        )
        evaluation = metadata(trained, "evaluation")
        run_job(
            defs,
            instance,
            "monitoring_job",
            f"score, check drift and performance: {monitor_start}..{monitor_end}",
            quiet=quiet,
            start=monitor_start,
            end=monitor_end,
            # No challenger yet: A/B outcomes would only record 184 empty days.
            assets=[
                "predictions",
                "drift_report",
                "performance_estimate",
                "performance",
                "monitoring_summary",
            ],
        )

        say("-> replay the retraining sensor over the monitored days")
        rule = RetrainingRule()
        decisions = replay_retraining(instance, rule)
        for decision in decisions:
            say(f"   would retrain on {decision.last_day}: {decision.reason}")
        if decisions:
            request = retraining_request(decisions[0], rule)
            ab_start = decisions[0].last_day + dt.timedelta(days=1)
            config, tags = request.run_config, request.tags
            title = f"retrain as the sensor asks: {tags['mlops/training_window']}"
        else:
            say("   the rule never held: train a challenger with other hyperparameters instead")
            ab_start = monitor_start
            config = {"ops": {"model": {"config": {"estimator": "random_forest"}}}}
            tags, title = {}, "train a random-forest challenger"
        challenger = run_job(
            defs,
            instance,
            "training_job",
            title,
            quiet=quiet,
            config=config,
            tags=tags,
            refusable=True,
        )
        if challenger.success:
            run_job(
                defs,
                instance,
                "monitoring_job",
                f"shadow-score champion and challenger, A/B outcomes: {ab_start}..{monitor_end}",
                quiet=quiet,
                start=ab_start,
                end=monitor_end,
                assets=["predictions", "ab_outcomes"],
            )
            ab = run_job(defs, instance, "ab_job", "A/B test and promotion decision", quiet=quiet)
            results = metadata(ab, "ab_results")
            champion_version = metadata(ab, "ab_promotion")["champion_version"]
            experiment = results["experiment"]
            ab_decision = f"{results['decision']}: {results['status']}"
        else:
            reasons = failure_reasons(challenger)
            for reason in reasons:
                say(f"   {reason}")
            say("   the champion stays; no A/B test for a challenger its gates refused")
            champion_version = metadata(trained, "champion_model")["champion_version"]
            experiment = "none"
            ab_decision = "not run: the challenger failed its evaluation gates"

    if "roc_auc" in evaluation:
        first_model = {
            "first model, test ROC AUC": round(evaluation["roc_auc"], 4),
            "first model, test accuracy": round(evaluation["accuracy"], 4),
            "first model, threshold": (
                f"{evaluation['operating_point/threshold']:.4f} "
                f"({evaluation['operating_point/policy']} on the test days: "
                f"{evaluation['operating_point/test_objective']:.4f}; best in hindsight "
                f"{evaluation['operating_point/hindsight_objective']:.4f}; at "
                f"{evaluation['operating_point/naive_threshold']:g} "
                f"{evaluation['operating_point/naive_objective']:.4f})"
            ),
        }
    else:  # a regression target (task: regression): its errors, no threshold
        first_model = {
            f"first model, test {name.upper()}": (
                f"{evaluation[name]:.4f} [{evaluation[f'{name}_low']:.4f}, "
                f"{evaluation[f'{name}_high']:.4f}]"
            )
            for name in ("mae", "rmse", "r2")
        }
    summary = {
        "champion version": champion_version,
        **first_model,
        "retraining sensor (replayed)": ", ".join(str(d.last_day) for d in decisions) or "never",
        "A/B experiment": experiment,
        "A/B decision": ab_decision,
        "reports": f"{data_dir() / 'reports'} (evaluation/, drift/, ab/, monitoring/)",
        "elapsed": f"{time.perf_counter() - began:.0f} s",
    }
    say("\nSummary")
    for key, value in summary.items():
        say(f"  {key:30} {value}")
    say("\nBrowse it all with `make dev` (http://127.0.0.1:3000) and `make mlflow`.")


if __name__ == "__main__":
    main()
