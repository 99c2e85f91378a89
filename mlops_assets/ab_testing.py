"""A/B test of the challenger (treatment) against the champion (control) on unseen days.

Every record is routed to control, treatment or excluded by a hash of its key, salted by the
experiment (the pair of versions). Both models score every record (see `predictions`), so beside
the split comparison there is a paired one on the same records, which needs far fewer days.
"""

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.partitions import daily_partitions, dataset_spec, single_run
from mlops_assets.resources import DUCKDB_POOL, OBJECT_IO_MANAGER, MlflowTracking, ReportStore

GROUP = "ab_testing"
OUTCOMES_TABLE = f"{dataset_spec.name}.ab_outcomes"


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
    mde: float = Field(default=0.02, description="Absolute accuracy gain worth detecting.")
    alpha: float = Field(default=0.05, description="Significance level of the tests.")
    power: float = Field(default=0.80, description="Power at the minimum detectable effect.")
    discordant_rate: float = Field(
        default=0.10, description="Assumed share of records where exactly one model is right."
    )
    brier_tolerance: float = Field(default=0.01, description="Guardrail: Brier score increase.")
    ece_tolerance: float = Field(default=0.03, description="Guardrail: calibration error increase.")
    positive_rate_tolerance: float = Field(
        default=0.05, description="Guardrail: change of the predicted positive rate."
    )
    n_resamples: int = Field(default=1000, description="Bootstrap resamples for AUC / log loss.")


def experiment_name(model_name: str, champion: str, challenger: str) -> str:
    return f"{model_name}-v{champion}-vs-v{challenger}"


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
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

    from mlops_assets.lib.ab_testing import assign_arms
    from mlops_assets.lib.clock import labels_usable, today

    spec = dataset_spec
    date, ids = spec.date.column, [spec.date.column, *spec.key]
    wide = predictions.pivot_table(
        index=ids, columns="model_alias", values=["probability", "model_version"], aggfunc="first"
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
                "score_control": wide[("probability", "champion")].astype(float),
                "score_treatment": wide[("probability", "challenger")].astype(float),
            }
        )
        .dropna(subset=["challenger_version"])
        .reset_index()
    )
    frame = frame.merge(features[[*ids, spec.target.name]], on=ids, how="left")
    now = today()
    usable = frame[date].dt.date.map(lambda d: labels_usable(d, now, config.label_delay_days))
    frame["label"] = frame.pop(spec.target.name).where(usable).astype("Int64")
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
    return dg.Output(
        frame,
        metadata={
            "records": len(frame),
            "labelled": int(frame["label"].notna().sum()),
            **{f"records/{arm}": int(counts.get(arm, 0)) for arm in shares},
            "experiments": ", ".join(sorted(frame["experiment"].unique())),
        },
    )


def _design(config: ABTestConfig, baseline_accuracy: float):
    from mlops_assets.lib.ab_testing import ExperimentDesign

    return ExperimentDesign(
        baseline_accuracy=baseline_accuracy,
        mde=config.mde,
        alpha=config.alpha,
        power=config.power,
        discordant_rate=config.discordant_rate,
        brier_tolerance=config.brier_tolerance,
        ece_tolerance=config.ece_tolerance,
        positive_rate_tolerance=config.positive_rate_tolerance,
        n_resamples=config.n_resamples,
    )


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
    """The current experiment over all its labelled days: tests, intervals, guardrails, decision.

    The fixed-horizon stopping rule is enforced: before the sample size the design requires,
    the decision is "inconclusive" whatever the p-value, so peeking cannot promote.
    """
    from mlops_assets.lib import ab_testing
    from mlops_assets.lib.sources import to_pandas

    client = mlflow.client()
    serving = mlflow.serving_models()
    if not serving.experiment_running:
        raise dg.Failure("no experiment: the registry has no challenger distinct from the champion")
    champion, challenger = serving.champion, serving.challenger
    experiment = experiment_name(mlflow.model_name, champion.version, challenger.version)
    spec = dataset_spec
    order = ", ".join([spec.date.column, *spec.key])
    with warehouse.get_connection() as con:
        rows = to_pandas(
            con.sql(
                f"SELECT * FROM {OUTCOMES_TABLE} WHERE experiment = '{experiment}' "
                f"AND label IS NOT NULL ORDER BY {order}"
            )
        )
    if rows.empty:
        raise dg.Failure(f"{experiment}: no labelled outcomes yet; materialize ab_outcomes first")
    baseline = client.get_run(champion.run_id).data.metrics.get("test_accuracy")
    if baseline is None:
        raise dg.Failure(f"champion v{champion.version} has no test_accuracy: evaluate it first")
    try:
        design = _design(config, baseline)
    except ValueError as error:
        raise dg.Failure(f"{experiment}: invalid A/B design ({error})") from None
    y = rows["label"].to_numpy(dtype=int)
    arm = rows["arm"].to_numpy()
    control, treatment = arm == "control", arm == "treatment"
    decision = ab_testing.decide(
        design,
        control=ab_testing.ArmScores(y[control], rows["score_control"].to_numpy()[control]),
        treatment=ab_testing.ArmScores(y[treatment], rows["score_treatment"].to_numpy()[treatment]),
        paired=ab_testing.PairedScores(
            y, rows["score_control"].to_numpy(), rows["score_treatment"].to_numpy()
        ),
    )
    days = rows[spec.date.column].dt.date
    report = reports.path("ab", f"{experiment}.md")
    report.write_text(
        f"# A/B test {experiment}\n\nChampion (control) v{champion.version}, challenger "
        f"(treatment) v{challenger.version}; {days.nunique()} labelled days, "
        f"{days.min()}..{days.max()}.\n\n{decision.to_markdown()}\n"
    )
    context.log.info(f"{experiment}: {decision.decision} ({'; '.join(decision.reasons)})")
    metadata = decision.to_metadata()
    return dg.Output(
        {
            "experiment": experiment,
            "champion_version": champion.version,
            "challenger_version": challenger.version,
            "decision": decision.decision,
            "evidence": metadata,
        },
        metadata={
            **metadata,
            "experiment": experiment,
            "days": int(days.nunique()),
            "first_day": str(days.min()),
            "last_day": str(days.max()),
            "report": dg.MetadataValue.md(decision.to_markdown()),
            "report_path": dg.MetadataValue.path(str(report)),
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

    decision = ab_results["decision"]
    promoted = False
    if decision == "promote":
        with warehouse.get_connection() as con:
            previous = registry.promote(
                mlflow.client(),
                con,
                mlflow.model_name,
                ab_results["challenger_version"],
                reason=f"A/B test {ab_results['experiment']}",
                evidence=ab_results["evidence"],
                run_id=context.run_id,
                schema=dataset_spec.name,
            )
        promoted = previous != ab_results["challenger_version"]  # re-runs change nothing
    champion = mlflow.serving_models().champion
    return dg.Output(
        champion,
        metadata={
            "decision": decision,
            "promoted": promoted,
            "champion_version": int(champion.version),
            "experiment": ab_results["experiment"],
        },
    )
