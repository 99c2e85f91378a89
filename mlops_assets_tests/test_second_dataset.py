"""A second dataset end to end in its own process, beside a flights run: each in its own data dir.

The air readings (`air_dataset.py`: integer codes with allowed sets, mixed-case source names, an
expression key, days of 24 rows, a numeric target under `task: regression`) go through ingest ->
validate -> features -> train -> evaluation -> monitoring (predictions, drift, performance) ->
A/B, in their own process on the instance in their data directory. Meanwhile a flights backfill
runs through the CLI in another data directory. Afterwards each instance holds only its own runs
and each warehouse only its own tables.
"""

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef

from mlops_assets.lib.spec import DEFAULT_SPEC, load_spec
from mlops_assets_tests import air_dataset as air
from mlops_assets_tests.conftest import write_csv
from mlops_assets_tests.test_e2e import (
    BIN,
    REPO,
    SELECT_DATA,
    environment,
    make_home,
    run_cli,
    tracking_uri,
)
from mlops_assets_tests.test_instance import prepare

MONITORED = (air.TRAINING_END + dt.timedelta(days=1), air.END)
FLIGHT_DAYS = ("2013-01-01", "2013-01-02")
MODEL = f"{air.NAME}_model"


def run_air(paths: dict[str, Path], env: dict[str, str]) -> str:
    """Every stage on the air readings, in one process on their data directory's instance."""
    assert prepare(paths, env) == ""
    driver = [str(BIN / "python"), "-m", "mlops_assets_tests.air_dataset"]
    return run_cli(driver, cwd=paths["home"], env={**env, "PYTHONPATH": str(REPO)}).stdout


def run_flights(paths: dict[str, Path], env: dict[str, str]) -> str:
    """A flights backfill through the CLI, as in the README, on its data directory's instance."""
    assert prepare(paths, env) == ""
    days = "...".join(FLIGHT_DAYS)
    materialize = [str(BIN / "dagster"), "asset", "materialize", "-m", "mlops_assets"]
    selection = ["--select", SELECT_DATA, "--partition-range", days]
    return run_cli([*materialize, *selection], cwd=paths["home"], env=env).stderr


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory, flights_rows) -> dict:
    root = tmp_path_factory.mktemp("side_by_side")
    air_paths, flights_paths = make_home(root / "air"), make_home(root / "flights")
    air_env = environment(air_paths["home"], air_paths["data"])
    air_env["MLOPS_DATASET_SPEC"] = str(air.write(root / "air_spec"))
    spec = yaml.safe_load(DEFAULT_SPEC.read_text())
    spec["source"]["path"] = str(write_csv(root / "flights.csv", flights_rows))
    (root / "flights.yaml").write_text(yaml.safe_dump(spec))
    flights_env = environment(flights_paths["home"], flights_paths["data"])
    flights_env["MLOPS_DATASET_SPEC"] = str(root / "flights.yaml")
    with ThreadPoolExecutor(max_workers=1) as pool:
        flights = pool.submit(run_flights, flights_paths, flights_env)
        air_log = run_air(air_paths, air_env)
        flights_log = flights.result(timeout=600)
    return {
        "air": {**air_paths, "log": air_log, "spec": load_spec(air_env["MLOPS_DATASET_SPEC"])},
        "flights": {**flights_paths, "log": flights_log},
    }


def frame(data: Path, sql: str, params=None) -> pd.DataFrame:
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql, params or []).df()


@contextmanager
def instance_of(paths: dict[str, Path]):
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(paths["home"]))) as instance:
        yield instance


def partitions_materialized(instance, asset: str) -> set[str]:
    return instance.get_materialized_partitions(dg.AssetKey(asset))


# ---------------------------------------------------------------------------------------------
# The air readings through every stage


def test_every_reading_is_stored_once_and_the_broken_ones_quarantined_with_their_reason(
    side_by_side,
):
    data = side_by_side["air"]["data"]
    raw = frame(
        data,
        "SELECT CAST(reading_date AS DATE)::VARCHAR AS day, count(*) AS n "
        "FROM air.raw_records GROUP BY 1",
    )
    generated = pd.Series([r["Obs_Date"] for r in air.readings()]).value_counts()
    assert dict(zip(raw["day"], raw["n"], strict=True)) == generated.to_dict()
    assert (generated < 30).sum() == 14  # the weekends: 24 readings each

    quarantined = frame(
        data,
        "SELECT StationId, failed_column, failed_check FROM air.quarantined_records "
        "ORDER BY reading_date",
    )
    assert quarantined.to_dict("records") == [
        {
            "StationId": "999",
            "failed_column": "StationId",
            "failed_check": "isin([101, 102, 103, 104, 105, 106])",
        },
        {
            "StationId": "101",
            "failed_column": "reading_date; StationId; reading_at",
            "failed_check": "multiple_fields_uniqueness",
        },
        {
            "StationId": "101",
            "failed_column": "Obs_Hour; reading_at",
            "failed_check": "type(int); not_nullable",
        },
    ]
    features = frame(data, "SELECT * FROM air.features")
    assert len(features) == len(air.readings()) - 3
    assert list(features.columns) == side_by_side["air"]["spec"].feature_table_columns
    # The derived key is a timestamp, unique per station, and the `hour` feature is made of it.
    assert features["reading_at"].dtype.kind == "M"
    assert not features.duplicated(["StationId", "reading_at"]).any()
    assert (features["hour"] == features["reading_at"].dt.hour).all()
    # The duplicate's first reading was kept, its copy (PM10 999) quarantined.
    assert features["pm10"].max() < 999


def test_the_regression_model_passes_its_gates_on_merit_and_a_challenger_is_registered(
    side_by_side,
):
    import mlflow

    from mlops_assets.lib import registry

    data = side_by_side["air"]["data"]
    uri = tracking_uri(data)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    assert (str(champion.version), str(challenger.version)) == ("1", "2")
    # The spec's gates (baseline margin 0 on the skill): the interaction beats the simple means.
    assert champion.tags["evaluation_gates"] == "passed"
    assert champion.tags["data_window"] == f"{air.START}..{air.TRAINING_END}"
    # A regression version has no operating point.
    assert "threshold" not in champion.tags and champion.tags["task"] == "regression"
    with instance_of(side_by_side["air"]) as instance:
        records = instance.fetch_materializations(dg.AssetKey("evaluation"), limit=2).records
        checks = {
            name: instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [dg.AssetCheckKey(dg.AssetKey("evaluation"), name)]
            )
            for name in ("check_beats_baseline", "check_not_degenerate")
        }
    first = min(records, key=lambda r: r.storage_id).asset_materialization.metadata
    assert first["model_version"].value == 1

    # The test MAE is the registered model's on the stored test days, recomputed here.
    test = frame(data, "SELECT * FROM air.training_set WHERE split = 'test'")
    spec = side_by_side["air"]["spec"]
    served = registry.load_pipeline(registry.ModelRef(MODEL, "1", run_id=""), uri)
    answer = served.predict(test[[*spec.categorical_features, *spec.numeric_features]])
    assert list(answer.columns) == ["prediction", "unknown_categories"]
    mae = (answer["prediction"] - test["pm25"].to_numpy()).abs().mean()
    assert first["mae"].value == pytest.approx(mae)
    assert first["mae_low"].value < first["mae"].value < first["mae_high"].value
    # The per-category mean on the same days errs far more: the gate passed on merit.
    baseline = next(k for k in first if k.startswith("mean_by_") and k.endswith("_mae"))
    assert first[baseline].value > 1.3 * first["mae"].value
    for check in checks.values():
        (execution,) = check.values()
        assert execution.status.value == "SUCCEEDED"


def test_monitoring_scores_every_reading_and_judges_only_days_with_enough_rows(side_by_side):
    data = side_by_side["air"]["data"]
    features = frame(
        data,
        "SELECT * FROM air.features WHERE reading_date >= ? AND reading_date <= ?",
        [MONITORED[0], MONITORED[1]],
    )
    predictions = frame(data, "SELECT * FROM air.predictions")
    # A regression prediction is a number: no probability, no threshold stored.
    assert "probability" not in predictions and "threshold" not in predictions
    for alias in ("champion", "challenger"):
        scored = predictions[predictions["model_alias"] == alias]
        keys = ["reading_date", "StationId", "reading_at"]
        assert len(scored) == len(features) and not scored.duplicated(keys).any()

    drift = frame(data, "SELECT * FROM air.drift_report")
    drift = drift.set_index(drift["reading_date"].dt.date).sort_index()
    shifted = [air.END - dt.timedelta(days=d) for d in range(air.SHIFTED_DAYS)]
    weekend = [d for d in drift.index if d.weekday() >= 5]
    assert not drift.loc[weekend, "judged"].any() and not drift.loc[weekend, "alarm"].any()
    assert "n=24 < 100" in drift.loc[weekend[0], "not_judged_reason"]
    weekdays = [d for d in drift.index if d not in weekend]
    alarms = drift.loc[weekdays, "alarm"]
    assert alarms.to_dict() == {d: d in shifted for d in weekdays}
    assert set(drift.loc[[d for d in weekdays if d in shifted], "drifted_columns"]) == {"pm10"}

    # The realized performance of a weekday is the champion's MAE, RMSE and bias on that day's
    # labelled readings, matched to their targets by the expression key.
    performance = frame(data, "SELECT * FROM air.performance")
    performance["day"] = performance["reading_date"].dt.date
    assert sorted(performance["day"]) == [MONITORED[0] + dt.timedelta(d) for d in range(7)]
    champion = predictions[predictions["model_alias"] == "champion"]
    labelled = champion.merge(features, on=["reading_date", "StationId", "reading_at"])
    labelled = labelled[labelled["pm25"].notna()]
    for row in performance.itertuples():
        if row.day.weekday() >= 5:
            # 24 labelled readings: judged on a trailing window holding enough of them.
            assert row.window_days > 1 and row.judged
            continue
        day = labelled[labelled["reading_date"].dt.date == row.day]
        residual = day["prediction"] - day["pm25"]
        assert (row.window_days, row.n_labelled) == (1, len(day))
        assert row.mae == pytest.approx(residual.abs().mean())
        assert row.rmse == pytest.approx((residual**2).mean() ** 0.5)
        assert row.mean_residual == pytest.approx(residual.mean())
        assert row.target_mean == pytest.approx(day["pm25"].mean())

    # CBPE estimates classification metrics: each day says why it was not estimated.
    with instance_of(side_by_side["air"]) as instance:
        estimates = instance.fetch_materializations(
            dg.AssetKey("performance_estimate"), limit=20
        ).records
    reasons = {r.asset_materialization.metadata["skipped"].value for r in estimates}
    assert len(estimates) == 7
    (reason,) = reasons
    assert reason.startswith("not applicable to regression: CBPE estimates classification")


def test_the_ab_split_hashes_the_expression_key_and_judges_squared_error(side_by_side):
    from mlops_assets.lib.ab_testing.assignment import assign_arms

    data = side_by_side["air"]["data"]
    outcomes = frame(data, "SELECT * FROM air.ab_outcomes")
    keys = ["reading_date", "StationId", "reading_at"]
    assert set(outcomes["experiment"]) == {f"{MODEL}-v1-vs-v2"}
    expected = assign_arms(outcomes[keys], f"{MODEL}-v1-vs-v2")
    assert (outcomes["arm"] == expected).all()
    # The 24 readings of a station on a weekday go to several arms: the timestamp is part of
    # the key (a split by station alone would send them all to one).
    weekdays = outcomes[outcomes["reading_date"].dt.weekday < 5]
    assert (weekdays.groupby(["reading_date", "StationId"])["arm"].nunique() > 1).all()

    # The primary metric: per day, the mean squared error of the challenger minus the
    # champion's over the day's experiment records (paired), then the mean over days.
    used = outcomes[outcomes["arm"].isin(["control", "treatment"]) & outcomes["label"].notna()]
    used = used.assign(
        diff_t=(used["score_treatment"] - used["label"]) ** 2,
        diff_c=(used["score_control"] - used["label"]) ** 2,
    )
    by_day = used.groupby("reading_date")[["diff_t", "diff_c"]].mean()
    daily = by_day["diff_t"] - by_day["diff_c"]
    with instance_of(side_by_side["air"]) as instance:
        (results,) = instance.fetch_materializations(dg.AssetKey("ab_results"), limit=5).records
        (record,) = instance.fetch_materializations(dg.AssetKey("ab_promotion"), limit=5).records
    analysis = {k: v.value for k, v in results.asset_materialization.metadata.items()}
    assert analysis["design_primary_metric"] == "squared_error"
    assert analysis["squared_error_diff"] == pytest.approx(daily.mean())
    assert analysis["guardrail_bias_status"] in {"passed", "failed"}
    metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    # One week is under the minimum runtime of two: nothing is decided yet.
    assert (metadata["decision"], metadata["promoted"], metadata["champion_version"]) == (
        "inconclusive",
        False,
        1,
    )


# ---------------------------------------------------------------------------------------------
# Two data directories, two instances: neither sees the other


def test_neither_dataset_sees_the_other_s_runs_or_tables(side_by_side):
    from mlops_assets.automation import collect_day_results

    air_paths, flights_paths = side_by_side["air"], side_by_side["flights"]
    with instance_of(air_paths) as air_instance, instance_of(flights_paths) as flights_instance:
        air_runs = air_instance.get_runs()
        flights_runs = flights_instance.get_runs()
        air_features = partitions_materialized(air_instance, "features")
        flights_features = partitions_materialized(flights_instance, "features")
        # What the retraining sensor reads: each instance's own monitoring, and only that.
        air_days = collect_day_results(air_instance, {}, keep_days=None)["days"]
        flights_days = collect_day_results(flights_instance, {}, keep_days=None)["days"]

    assert sorted(r.job_name for r in air_runs) == sorted(
        ["data_job", "training_job", "training_job", "monitoring_job", "ab_job"]
    )
    assert [r.job_name for r in flights_runs] == ["__ASSET_JOB"]
    assert air_features == {str(air.START + dt.timedelta(days=d)) for d in range(air.DAYS)}
    assert flights_features == set(FLIGHT_DAYS)
    assert sorted(air_days) == [str(MONITORED[0] + dt.timedelta(days=d)) for d in range(7)]
    assert flights_days == {}

    def schemas(data: Path) -> set[str]:
        tables = frame(data, "SELECT DISTINCT table_schema FROM information_schema.tables")
        return set(tables["table_schema"])

    assert schemas(air_paths["data"]) == {air.NAME}
    assert schemas(flights_paths["data"]) == {"flights"}
    # Each instance's storage lives in its data directory.
    assert (air_paths["data"] / "dagster" / "history" / "runs.db").exists()
    assert not (flights_paths["data"] / "mlflow").exists()


def test_a_feature_differing_from_a_key_column_only_by_case_is_refused(tmp_path):
    features = {**air.SPEC["features"], "stationid": {"kind": "numeric", "expression": "1"}}
    path = air.write(tmp_path, {"features": features})
    with pytest.raises(ValueError, match="differ only by case") as error:
        load_spec(path)
    assert "'StationId' and 'stationid'" in str(error.value)
