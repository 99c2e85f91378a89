"""A/B test of the challenger (treatment) against the champion (control) on unseen days.

Every record is routed to control, treatment or excluded by a hash of its key, salted by the
experiment (the pair of versions). Both models score every record (see `predictions`), so each
day gives a paired difference; the day is the unit of inference (lib.ab_testing). The design is
fixed from data before the first day and stored in DuckDB (`ab_designs`) the first time the
experiment is analysed; later analyses read it back, so a config change cannot move a running
experiment's goalposts.
"""

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.lib.sql import ident, table_exists
from mlops_assets.metadata import daily_metadata, range_totals
from mlops_assets.partitions import (
    daily_backfill,
    daily_partitions,
    dataset_spec,
    partition_window,
)
from mlops_assets.resources import (
    DUCKDB_POOL,
    OBJECT_IO_MANAGER,
    MlflowTracking,
    ReportStore,
)

GROUP = "ab_testing"
OUTCOMES_TABLE = f"{dataset_spec.name}.ab_outcomes"
DESIGNS_TABLE = f"{dataset_spec.name}.ab_designs"


class AssignmentConfig(dg.Config):
    control_share: float = Field(
        default=0.45, description="Share of records served by the champion."
    )
    treatment_share: float = Field(
        default=0.45, description="Share of records served by the challenger."
    )
    excluded_share: float = Field(default=0.10, description="Share held out of the experiment.")
    label_delay_days: int = Field(
        default=dataset_spec.target.label_delay_days,
        description="Labels of day D are known from D + this many days.",
    )


class ABTestConfig(dg.Config):
    """The design of a NEW experiment (an experiment already analysed keeps its stored design)."""

    alpha: float = Field(default=0.05, description="False-positive rate over all daily looks.")
    power: float = Field(default=0.80, description="Power at the minimum detectable effect.")
    min_runtime_weeks: int = Field(
        default=2, description="No decision before this many whole weeks (every weekday seen)."
    )
    max_runtime_weeks: int = Field(
        default=8, description="Stop undecided after this many weeks; the champion stays."
    )
    min_improvement: float = Field(
        default=0.01,
        description="Promote only if the challenger's log loss is confidently lower by this "
        "share of the champion's (seed-to-seed refits differ by 0.3-0.5%).",
    )
    positive_rate_tolerance: float = Field(
        default=0.25,
        description="Guardrail: the challenger's predicted/actual positive rate may be at most "
        "this much (relative) further from 1 than the champion's. For a regression target: the "
        "challenger's |mean residual| may exceed the champion's by at most this share of the "
        "champion's MAE.",
    )
    calibration_tolerance: float = Field(
        default=0.02, description="Guardrail: calibration error may rise by at most this."
    )
    baseline_window_days: int = Field(
        default=28, description="Champion days before the start that set the MDE and margin."
    )
    n_resamples: int = Field(default=2000, description="Day-level bootstrap resamples.")


def experiment_name(model_name: str, champion: str, challenger: str) -> str:
    return f"{model_name}-v{champion}-vs-v{challenger}"


# A regression target's primary loss (the spec's `regression.ab_loss`), else the log loss.
PRIMARY_LOSS = (
    f"{dataset_spec.regression.ab_loss}_error" if dataset_spec.is_regression else "log_loss"
)
# The column of `predictions` that is scored: the probability, or the regression's prediction.
SCORE = "prediction" if dataset_spec.is_regression else "probability"


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill,
    metadata={"partition_expr": dataset_spec.date.column},
    group_name=GROUP,
    kinds={"duckdb", "pandas"},
    pool=DUCKDB_POOL,
    # Lineage: the models under test and the day's monitoring come before the experiment.
    deps=["champion_model", "drift_report"],
)
def ab_outcomes(context: dg.AssetExecutionContext, config: AssignmentConfig, predictions, features):
    """Per record of each day: experiment, arm, label and both models' scores (the metric inputs).

    Days scored by the champion alone are skipped. Labels not yet known (label delay) are NULL.
    """
    import pandas as pd

    from mlops_assets.lib.ab_testing.assignment import assign_arms
    from mlops_assets.lib.clock import labels_usable, today

    spec = dataset_spec
    date, ids = spec.date.column, [spec.date.column, *spec.key]
    if spec.is_regression:  # no threshold: NaN keeps the table's columns the same
        predictions = predictions.assign(threshold=-1.0)
    wide = predictions.pivot_table(
        index=ids,
        columns="model_alias",
        values=[SCORE, "model_version", "threshold"],
        aggfunc="first",
    )
    if "challenger" not in wide.columns.get_level_values(1):
        context.log.info("no challenger scored these days: nothing to compare")
        return dg.Output(
            pd.DataFrame(columns=[*ids]).astype({date: "datetime64[ns]"}), metadata={"records": 0}
        )
    frame = (
        pd.DataFrame(
            {
                "champion_version": wide[("model_version", "champion")],
                "challenger_version": wide[("model_version", "challenger")],
                "score_control": wide[(SCORE, "champion")].astype(float),
                "score_treatment": wide[(SCORE, "challenger")].astype(float),
                # Each model's own operating point, for the guardrails.
                "threshold_control": wide[("threshold", "champion")].astype(float),
                "threshold_treatment": wide[("threshold", "challenger")].astype(float),
            }
        )
        .dropna(subset=["challenger_version"])
        .reset_index()
    )
    if spec.is_regression:
        frame[["threshold_control", "threshold_treatment"]] = float("nan")
    frame = frame.merge(features[[*ids, spec.target.name]], on=ids, how="left")
    now = today()
    usable = frame[date].dt.date.map(lambda d: labels_usable(d, now, config.label_delay_days))
    label = frame.pop(spec.target.name).where(usable)
    frame["label"] = label.astype(float) if spec.is_regression else label.astype("Int64")
    frame["experiment"] = [
        experiment_name(str(predictions["model_name"].iloc[0]), a, b)
        for a, b in zip(frame["champion_version"], frame["challenger_version"], strict=True)
    ]
    shares = {
        "control": config.control_share,
        "treatment": config.treatment_share,
        "excluded": config.excluded_share,
    }
    frame["arm"] = pd.concat(
        [assign_arms(group[ids], name, shares) for name, group in frame.groupby("experiment")]
    ).reindex(frame.index)
    counts = frame.groupby("arm").size()
    daily_metadata(context, frame, date, *partition_window(context))
    totals = {
        "records": len(frame),
        "labelled": int(frame["label"].notna().sum()),
        **{f"records/{arm}": int(counts.get(arm, 0)) for arm in shares},
    }
    return dg.Output(
        frame,
        metadata={
            "experiments": ", ".join(sorted(frame["experiment"].unique())),
            **range_totals(context, totals),
        },
    )


def reference_loss(test_metrics: dict) -> float:
    """The champion's primary loss on its test days: the level the margin is a share of until
    enough champion days precede the experiment (the mean squared error is the RMSE squared)."""
    import math

    if PRIMARY_LOSS == "squared_error":
        return test_metrics.get("test_rmse", math.nan) ** 2
    if PRIMARY_LOSS == "absolute_error":
        return test_metrics.get("test_mae", math.nan)
    return test_metrics.get("test_log_loss", math.nan)


def _stored_design(warehouse: DuckDBResource, experiment: str):
    from mlops_assets.lib.ab_testing.design import ExperimentDesign
    from mlops_assets.lib.sources import to_pandas

    with warehouse.get_connection() as con:
        if not table_exists(con, DESIGNS_TABLE):
            return None
        rows = to_pandas(
            con.sql(f"SELECT * FROM {DESIGNS_TABLE} WHERE experiment = ?", params=[experiment])
        )
    return ExperimentDesign.from_row(rows.iloc[0].to_dict()) if len(rows) else None


def _new_design(config: ABTestConfig, warehouse, experiment, first_day, champion, reference):
    """The design from the champion's labelled records of the days before `first_day`, but the
    days a blocking monitoring check kept out (as the analysis leaves them out)."""
    import datetime as dt

    from mlops_assets.lib import gates
    from mlops_assets.lib.ab_testing.assignment import assign_arms
    from mlops_assets.lib.ab_testing.design import ExperimentDesign, design_experiment
    from mlops_assets.lib.ab_testing.inference import Records
    from mlops_assets.lib.registry import CHAMPION
    from mlops_assets.lib.sources import to_pandas

    spec = dataset_spec
    date, ids = spec.date.column, [spec.date.column, *spec.key]
    label = ident(spec.target.name)
    since = first_day - dt.timedelta(days=config.baseline_window_days)
    with warehouse.get_connection() as con:
        rows = to_pandas(
            con.sql(
                f"SELECT {', '.join(f'p.{ident(c)}' for c in ids)}, p.{SCORE} AS score, "
                f"{'NULL' if spec.is_regression else 'p.threshold'} AS threshold, "
                f"f.{label} AS label FROM {spec.name}.predictions p "
                f"JOIN {spec.name}.features f USING ({', '.join(ident(c) for c in ids)}) "
                f"WHERE p.model_alias = ? AND p.model_version = ? "
                f"AND p.{ident(date)} >= ? AND p.{ident(date)} < ? AND f.{label} IS NOT NULL",
                params=[CHAMPION, champion, since, first_day],
            )
        )
        kept_out = gates.excluded_days(con, spec.name, since, first_day - dt.timedelta(days=1))
    rows = rows[~rows[date].dt.date.isin(kept_out)]
    settings = {
        k: getattr(config, k)
        for k in ExperimentDesign.__dataclass_fields__
        if k in ABTestConfig.model_fields
    }
    if spec.is_regression:
        settings |= {"primary_metric": PRIMARY_LOSS, "secondary_metric": "none"}
    baseline = None
    if len(rows):
        arms = assign_arms(rows[ids], experiment).to_numpy()
        score = rows["score"].to_numpy(dtype=float)
        threshold = float(rows["threshold"].iloc[0]) if not spec.is_regression else float("nan")
        baseline = Records(
            rows[date].to_numpy().astype("datetime64[D]"),
            arms,
            rows["label"].to_numpy(dtype=float if spec.is_regression else "int64"),
            score,
            score,
            threshold,
            threshold,
            PRIMARY_LOSS,
        )
    return design_experiment(experiment, first_day, baseline, reference, **settings)


def _store_design(warehouse: DuckDBResource, design) -> None:
    import pandas as pd

    frame = pd.DataFrame([design.as_row()])
    with warehouse.get_connection() as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {dataset_spec.name}")
        con.register("design_row", frame)
        con.execute(f"CREATE TABLE IF NOT EXISTS {DESIGNS_TABLE} AS FROM design_row LIMIT 0")
        con.execute(f"INSERT INTO {DESIGNS_TABLE} BY NAME FROM design_row")


def _log_to_mlflow(mlflow: MlflowTracking, context, decision, excluded) -> str:
    """The experiment's MLflow run: the design as params, the sequence as metrics by day, the
    days left out by blocking checks as a param."""
    import time

    import mlflow as mlflow_api
    from mlflow.entities import Metric

    from mlops_assets.lib.ab_testing.report import design_row

    with mlflow.run(context, tags={"ab_experiment": decision.design.experiment}) as run:
        mlflow_api.log_params({f"ab_design_{k}": v for k, v in design_row(decision).items()})
        # MLflow params hold up to 6000 characters: the days, their reasons in the report.
        mlflow_api.log_param(
            "ab_excluded_days", ", ".join(str(d) for d in sorted(excluded))[:6000] or "none"
        )
        now = int(time.time() * 1000)
        metrics = [
            Metric(name, value, now, look.days)
            for look in decision.looks
            for name, value in (
                (f"ab_{decision.design.primary_metric}_diff", look.mean),
                ("ab_sequence_low", look.low),
                ("ab_sequence_high", look.high),
            )
            if value == value and abs(value) != float("inf")
        ]
        mlflow.client().log_batch(run.info.run_id, metrics=metrics)
        mlflow_api.set_tags({"ab_decision": decision.decision, "ab_status": decision.status})
        return run.info.run_id


@dg.asset(
    deps=[ab_outcomes],
    group_name=GROUP,
    kinds={"duckdb", "mlflow"},
    io_manager_key=OBJECT_IO_MANAGER,
)
def ab_results(
    context: dg.AssetExecutionContext,
    config: ABTestConfig,
    mlflow: MlflowTracking,
    warehouse: DuckDBResource,
    reports: ReportStore,
):
    """The current experiment over its labelled days: the daily looks, guardrails, decision.

    Looks are always valid (a confidence sequence over days), decisions start after the minimum
    runtime, and stop at the deciding day or the maximum runtime (lib.ab_testing.decision).
    Days a blocking monitoring check failed are left out, and listed with the reason.
    """

    from mlops_assets.lib import gates
    from mlops_assets.lib.ab_testing import report
    from mlops_assets.lib.ab_testing.decision import decide
    from mlops_assets.lib.ab_testing.inference import Records
    from mlops_assets.lib.sources import to_pandas

    client = mlflow.client()
    serving = mlflow.serving_models()
    if not serving.experiment_running:
        raise dg.Failure("no experiment: the registry has no challenger distinct from the champion")
    champion, challenger = serving.champion, serving.challenger
    experiment = experiment_name(mlflow.model_name, champion.version, challenger.version)
    spec = dataset_spec
    order = ", ".join(ident(c) for c in [spec.date.column, *spec.key])
    with warehouse.get_connection() as con:
        rows = to_pandas(
            con.sql(
                f"SELECT * FROM {OUTCOMES_TABLE} WHERE experiment = ? "
                f"AND label IS NOT NULL ORDER BY {order}",
                params=[experiment],
            )
        )
    if rows.empty:
        raise dg.Failure(f"{experiment}: no labelled outcomes yet; materialize ab_outcomes first")
    day = rows[spec.date.column].dt.date
    with warehouse.get_connection() as con:
        excluded = gates.excluded_days(con, spec.name, day.min(), day.max())
        gates.record_exclusions(
            con, spec.name, consumer="ab_results", run_id=context.run_id, excluded=excluded
        )
    rows = rows[~day.isin(excluded)]
    if rows.empty:
        raise dg.Failure(f"{experiment}: every labelled day was kept out by a blocking check")
    design = _stored_design(warehouse, experiment)
    if design is None:
        reference = reference_loss(client.get_run(champion.run_id).data.metrics)
        first_day = rows[spec.date.column].min().date()
        try:
            design = _new_design(
                config, warehouse, experiment, first_day, champion.version, reference
            )
        except ValueError as error:
            raise dg.Failure(f"{experiment}: invalid A/B design ({error})") from None
        _store_design(warehouse, design)
        context.log.info(f"{experiment}: design fixed and stored in {DESIGNS_TABLE}")
    try:
        decision = decide(design, Records.from_frame(rows, spec.date.column, PRIMARY_LOSS))
    except ValueError as error:
        raise dg.Failure(f"{experiment}: {error}") from None
    markdown = report.to_markdown(decision)
    left_out = gates.exclusions_markdown(excluded)
    markdown += f"\n\n### Days left out by blocking monitoring checks\n\n{left_out}\n"
    path = reports.path("ab", f"{experiment}.md")
    path.write_text(
        f"# A/B test {experiment}\n\nChampion (control) v{champion.version}, challenger "
        f"(treatment) v{challenger.version}.\n\n{markdown}\n"
    )
    context.log.info(f"{experiment}: {decision.decision} ({decision.status})")
    metadata = report.to_metadata(decision)
    run_id = _log_to_mlflow(mlflow, context, decision, excluded)
    result = report.ABResult(
        experiment=experiment,
        champion_version=champion.version,
        challenger_version=challenger.version,
        decision=decision.decision,
        status=decision.status,
        decided_on=decision.decided_on,
        evidence=metadata,
    )
    return dg.Output(
        result,
        metadata={
            **metadata,
            "experiment": experiment,
            "excluded_days": len(excluded),
            "excluded": dg.MetadataValue.md(left_out),
            "report": dg.MetadataValue.md(markdown),
            "report_path": dg.MetadataValue.path(str(path)),
            "mlflow_run": dg.MetadataValue.url(mlflow.run_url(run_id)),
        },
    )


@dg.asset(group_name=GROUP, kinds={"mlflow"}, io_manager_key=OBJECT_IO_MANAGER, pool=DUCKDB_POOL)
def ab_promotion(
    context: dg.AssetExecutionContext,
    ab_results,
    mlflow: MlflowTracking,
    warehouse: DuckDBResource,
):
    """On a "promote" decision the challenger becomes champion (alias move, audited)."""
    from mlops_assets.lib import registry

    decision = ab_results.decision
    promoted = False
    if decision == "promote":
        with warehouse.get_connection() as con:
            previous = registry.promote(
                mlflow.client(),
                con,
                mlflow.model_name,
                ab_results.challenger_version,
                reason=f"A/B test {ab_results.experiment}: {ab_results.status}",
                evidence=dict(ab_results.evidence),
                run_id=context.run_id,
                schema=dataset_spec.name,
            )
        promoted = previous != ab_results.challenger_version  # re-runs change nothing
    champion = mlflow.serving_models().champion
    return dg.Output(
        champion,
        metadata={
            "decision": decision,
            "promoted": promoted,
            "champion_version": int(champion.version),
            "experiment": ab_results.experiment,
        },
    )
