"""Drift of each day against the champion's own training data, judged by calibrated thresholds.

The decision (`alarm`) comes from `lib.drift_calibration`: column scores and a domain classifier
against null distributions made from the reference's own days, computed once per champion
version and kept in `<schema>.drift_null`. Evidently still renders the day's report and stores
its snapshot in the workspace (what a person reads); it no longer decides.
"""

import datetime as dt
from typing import Literal

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.lib.chunks import DayChunks
from mlops_assets.lib.sql import fetch_frame, ident, table_exists
from mlops_assets.metadata import range_totals
from mlops_assets.monitoring.common import (
    CHAMPION_ASSET,
    DAILY,
    DATE,
    SCORE,
    blocking_field,
    champion_rows,
    check_spec,
    day_checks,
    day_of,
    days,
    days_in,
    pipeline,
    skip_day,
)
from mlops_assets.partitions import dataset_spec
from mlops_assets.resources import (
    EvidentlyWorkspace,
    MlflowTracking,
    ReportStore,
)

DRIFT_CHECK = "check_drift"
NULL_TABLE = "drift_null"
DOMAIN = "__domain__"  # the domain classifier's row in the null table


class DriftConfig(dg.Config):
    quantile: float = Field(
        default=0.99,
        description="A day alarms when its largest standardised column score (or its domain "
        "classifier AUC) exceeds this quantile of the same statistic over the reference's own "
        "days: about 1 - quantile of unchanged days alarm, whatever the number of columns.",
    )
    min_rows: int = Field(
        default=100,
        description="Days with fewer rows are not judged (reported as such, never as passing); "
        "reference days with fewer rows are left out of the null distribution.",
    )
    domain_classifier: bool = Field(
        default=True, description="Also judge a domain classifier's cross-validated ROC AUC."
    )
    domain_null_days: int = Field(
        default=40, description="Reference days the domain classifier's threshold is taken from."
    )
    reference_sample_rows: int = Field(
        default=20_000, description="Rows sampled (seeded) from the reference, for speed."
    )
    reference_seed: int = Field(default=0, description="Seed of the reference sample.")
    html: Literal["none", "last", "all"] = Field(
        default="last",
        description="Which days get an Evidently HTML report (~4 MB, +0.7 s each): none, the "
        "last day of the run, or all.",
    )
    save_to_workspace: bool = Field(
        default=True, description="Save each day's Evidently snapshot to the workspace."
    )
    blocking: bool = blocking_field()

    def null_key(self) -> str:
        """What the null distribution depends on besides the model version."""
        return f"rows={self.reference_sample_rows};seed={self.reference_seed};min={self.min_rows}"


def read_reference(warehouse: DuckDBResource, mlflow: MlflowTracking, version: str):
    """The champion's own training data: the features of its registered data window."""
    from mlops_assets.lib import registry

    spec = dataset_spec
    try:
        first, last = registry.data_window(mlflow.client(), mlflow.model_name, version)
    except ValueError as error:
        raise dg.Failure(f"no drift reference: {error}") from error
    columns = ", ".join(
        ident(c) for c in [DATE, *spec.categorical_features, *spec.numeric_features]
    )
    date = ident(DATE)
    where = f"{spec.name}.features {first}..{last} (the data of {mlflow.model_name} v{version})"
    with warehouse.get_connection() as con:
        if not table_exists(con, f"{spec.name}.features"):
            raise dg.Failure(f"cannot read the drift reference {where}: no features table")
        reference = fetch_frame(
            con,
            f"SELECT {columns} FROM {spec.name}.features WHERE {date} >= ? AND {date} <= ?",
            [first, last],
        )
    if reference.empty:
        raise dg.Failure(f"the drift reference {where} has no rows")
    return reference, where


def domain_columns(reference) -> dict[str, list[str]]:
    """The columns the domain classifier sees: categorical and record-level numeric ones."""
    from mlops_assets.lib.drift_calibration import record_level_columns

    numeric, categorical = dataset_spec.drift_features
    kept = record_level_columns(reference, date_column=DATE, numeric=numeric)
    return {"numeric": kept, "categorical": categorical}


def load_calibration(
    context, warehouse: DuckDBResource, config: DriftConfig, version: str, reference
):
    """The calibration from this version's null distributions (computed on first use, then read
    from DuckDB), or None and the reason when the reference has too few days to make one."""
    import pandas as pd

    from mlops_assets.lib import drift_calibration as dc

    numeric, categorical = dataset_spec.drift_features
    table = f"{dataset_spec.name}.{NULL_TABLE}"
    key = config.null_key()
    with warehouse.get_connection() as con:
        stored = pd.DataFrame()
        if table_exists(con, table):
            stored = con.execute(
                f"SELECT day, column_name, score FROM {table} WHERE model_version = ? "
                "AND settings = ?",
                [version, key],
            ).df()
    if stored.empty:
        kwargs = {"numeric": numeric, "categorical": categorical, "min_rows": config.min_rows}
        null = dc.null_scores(
            reference,
            date_column=DATE,
            sample_rows=config.reference_sample_rows,
            seed=config.reference_seed,
            **kwargs,
        )
        domain = {}
        if config.domain_classifier:
            domain = dc.domain_null(
                reference,
                date_column=DATE,
                days=config.domain_null_days,
                min_rows=config.min_rows,
                **domain_columns(reference),
            )
        long = null.rename_axis("day").reset_index().melt("day", var_name="column_name")
        long = pd.concat(
            [
                long.rename(columns={"value": "score"}),
                pd.DataFrame(
                    {"day": list(domain), "column_name": DOMAIN, "score": list(domain.values())}
                ),
            ],
            ignore_index=True,
        ).assign(model_version=version, settings=key)
        with warehouse.get_connection() as con:
            con.register("null_rows", long)
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (model_version VARCHAR, settings VARCHAR, "
                "day DATE, column_name VARCHAR, score DOUBLE)"
            )
            con.execute(
                f"DELETE FROM {table} WHERE model_version = ? AND settings = ?", [version, key]
            )
            con.execute(
                f"INSERT INTO {table} SELECT model_version, settings, day, column_name, score "
                "FROM null_rows"
            )
        context.log.info(f"null distribution of v{version}: {len(null)} days, {len(domain)} domain")
        stored = long
    wide = stored[stored["column_name"] != DOMAIN].pivot(
        index="day", columns="column_name", values="score"
    )
    domain_scores = stored.loc[stored["column_name"] == DOMAIN, "score"].tolist()
    try:
        return dc.calibrate(wide, config.quantile, domain_null=domain_scores), ""
    except ValueError as error:
        # Too few reference days of min_rows rows: no day can be judged, and each says why.
        return None, f"not judged: the reference cannot calibrate ({error})"


@dg.asset(
    **DAILY,
    deps=[CHAMPION_ASSET],
    kinds={"duckdb", "evidently"},
    check_specs=[
        check_spec(
            DRIFT_CHECK,
            "drift_report",
            "Per day: the day does not alarm against the calibrated thresholds (a day too small "
            "to judge warns, never passes). With `blocking`, a day that alarms is kept out of "
            "the A/B analysis and the next training set.",
        )
    ],
)
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    warehouse: DuckDBResource,
    mlflow: MlflowTracking,
    reports: ReportStore,
    evidently: EvidentlyWorkspace,
    features: DayChunks,
    predictions: DayChunks,
):
    """Each day against the champion's training data: per column a standardised score
    (`drift_z__<column>`) and whether it drifted, the domain classifier's AUC, and the day's
    alarm against thresholds calibrated on the reference's own days; an Evidently snapshot."""
    import pandas as pd

    from mlops_assets.lib import drift_calibration as dc
    from mlops_assets.lib.drift import DriftSettings, compute_drift, save_snapshots_to_workspace

    spec = dataset_spec
    numeric, categorical = spec.drift_features
    # One pass for the champion versions (the range is then judged against the latest).
    versions = sorted(
        {v for chunk in predictions for v in champion_rows(chunk)["model_version"].unique()}
    )
    if not versions:
        for day in days(context):
            skip_day(context, day, "no scored records on this day: nothing to compare")
        yield dg.Output(pd.DataFrame(), metadata={"days": 0})
        yield from drift_checks(context, warehouse, pd.DataFrame(), config)
        return
    version = versions[-1]
    reference, where = read_reference(warehouse, mlflow, version)
    calibration, uncalibrated = load_calibration(context, warehouse, config, version, reference)
    sample = reference
    if len(reference) > config.reference_sample_rows:
        sample = reference.sample(config.reference_sample_rows, random_state=config.reference_seed)
    model = pipeline(mlflow.tracking_uri, mlflow.model_name, version)
    inputs = sample[[*spec.categorical_features, *spec.numeric_features]]
    # The prediction's own drift: the probability, or a regression target's predicted value.
    evidently_reference = sample.assign(
        **{
            SCORE: model.predict_value(inputs)
            if spec.is_regression
            else model.predict_proba(inputs)[:, 1]
        }
    )
    calendar = [f for f in spec.features if f not in (*numeric, *categorical)]
    domain_kwargs = domain_columns(reference)
    settings = DriftSettings(exclude=tuple(calendar))
    run_days = days(context)
    rows, snapshots = [], []
    for day, today in _days_scored(features, predictions, run_days):
        if today is None:
            skip_day(context, day, "no records on this day: nothing to compare")
            continue
        scores = dc.column_scores(sample, today, numeric, categorical)
        domain = float("nan")
        judgeable = calibration is not None and len(today) >= config.min_rows
        if config.domain_classifier and judgeable:
            domain = dc.domain_auc(reference, today, **domain_kwargs)
        if calibration is None:
            decision = dc.not_judged(scores, n_rows=len(today), reason=uncalibrated)
        else:
            decision = dc.judge(
                scores, calibration, n_rows=len(today), min_rows=config.min_rows, domain=domain
            )
        html = config.html == "all" or (config.html == "last" and day == run_days[-1])
        html_path = reports.path("drift", f"{day}.html") if html else None
        prediction_score = float("nan")
        if html or config.save_to_workspace:
            result = compute_drift(
                evidently_reference,
                today,
                numeric=spec.numeric_features,
                categorical=spec.categorical_features,
                prediction=SCORE,
                settings=settings,
                html_path=html_path,
                timestamp=dt.datetime.fromisoformat(day),
                tags=[day],
            )
            snapshots.append(result.snapshot)
            if result.prediction_score is not None:
                prediction_score = float(result.prediction_score)
        row = {
            DATE: pd.Timestamp(day),
            "model_version": version,
            "n_rows": len(today),
            "judged": decision.judged,
            "not_judged_reason": decision.reason,
            "alarm": decision.alarm,
            "drift_share": decision.drift_share if decision.judged else float("nan"),
            "n_drifted_columns": len(decision.drifted),
            "drifted_columns": ", ".join(decision.drifted),
            "max_z": decision.max_z,
            "threshold": decision.threshold,
            "domain_auc": decision.domain_auc,
            "domain_threshold": decision.domain_threshold,
            "domain_alarm": decision.domain_alarm,
            "prediction_drift_score": prediction_score,
            "html_report": str(html_path or ""),
            **{f"drift_z__{c}": decision.z.get(c, float("nan")) for c in (*numeric, *categorical)},
        }
        rows.append(row)
        metadata = {
            "drift_share": row["drift_share"],
            "alarm": decision.alarm,
            "judged": decision.judged,
            "max_z": decision.max_z,
            "domain_auc": decision.domain_auc,
            "n_rows": len(today),
            "drifted_columns": row["drifted_columns"] or "none",
            "dagster/partition_row_count": 1,
        }
        if not decision.judged:
            metadata["not_judged"] = decision.reason
        if html_path is not None:
            metadata["html_report"] = dg.MetadataValue.path(str(html_path))
        context.add_asset_metadata(metadata, partition_key=day)
    if config.save_to_workspace and snapshots:
        save_snapshots_to_workspace(snapshots, evidently.directory, evidently.project_name)
    table = pd.DataFrame(rows)
    context.log.info(f"drift of {len(rows)} day(s) against {where}; calendar: {calendar}")
    yield dg.Output(
        table,
        metadata={
            "reference": where,
            "reference_rows": len(reference),
            "calendar_columns": ", ".join(calendar) or "none",
            "threshold_max_z": calibration.threshold if calibration else float("nan"),
            "threshold_domain_auc": calibration.domain_threshold if calibration else float("nan"),
            "null_days": calibration.n_null_days if calibration else 0,
            "quantile": config.quantile,
            "blocking": config.blocking,
            **range_totals(
                context,
                {
                    "days_judged": int(table["judged"].sum()) if len(table) else 0,
                    "days_alarmed": int(table["alarm"].sum()) if len(table) else 0,
                },
            ),
            "evidently_workspace": dg.MetadataValue.path(evidently.directory),
        },
    )
    yield from drift_checks(context, warehouse, table, config)


def _days_scored(features: DayChunks, predictions: DayChunks, run_days: list[str]):
    """(day, its features with the champion's score, or None) for each day of the run,
    reading one window of days at a time."""
    key = [DATE, *dataset_spec.key]
    for first, last in features.windows:
        champion = champion_rows(predictions.read(first, last))
        current = features.read(first, last).merge(champion[[*key, SCORE]], on=key, how="inner")
        by_day = current.groupby(day_of(current))
        for day in days_in(run_days, first, last):
            yield day, by_day.get_group(day) if day in by_day.groups else None


def drift_checks(context, warehouse: DuckDBResource, table, config: DriftConfig) -> list:
    """Each run day's verdict: fails on an alarm; a day not judged (too few rows, or no
    records) warns and never passes."""
    from mlops_assets.lib.gates import DayGate

    rows = {r[DATE].strftime("%Y-%m-%d"): r for r in table.to_dict("records")}
    gates, metadata = [], {}
    for day in days(context):
        row = rows.get(day)
        if row is None:
            judged, alarm, reason = False, False, "not judged: no scored records on this day"
        elif not row["judged"]:
            judged, alarm, reason = False, False, row["not_judged_reason"]
        else:
            judged, alarm = True, bool(row["alarm"])
            drifted = row["drifted_columns"] or "none"
            reason = (
                f"{'alarm' if alarm else 'no alarm'}: max z {row['max_z']:.2f} against "
                f"{row['threshold']:.2f}, domain AUC {row['domain_auc']:.3f} against "
                f"{row['domain_threshold']:.3f}; drifted columns: {drifted}"
            )
            metadata[day] = {"max_z": float(row["max_z"]), "drifted_columns": drifted}
        gates.append(
            DayGate(
                dt.date.fromisoformat(day),
                DRIFT_CHECK,
                passed=judged and not alarm,
                judged=judged,
                blocking=config.blocking,
                reason=reason,
            )
        )
    return day_checks(
        context, warehouse, DRIFT_CHECK, gates, run_days=days(context), metadata=metadata
    )
