"""training_set -> model -> evaluation -> champion_model with real DuckDB, MLflow and Dagster."""

import dagster as dg
import duckdb
import mlflow
import pytest
from sklearn.metrics import roc_auc_score

from mlops_assets import evaluation, features, ingestion, promotion, training, validation
from mlops_assets.lib import registry
from mlops_assets_tests.conftest import LENIENT_GATES, SAMPLE_DAYS, range_tags

TRAINING_ASSETS = [
    training.training_set,
    training.model,
    evaluation.evaluation,
    evaluation.feature_importance,
    promotion.champion_model,
]
WINDOW = {"start": "2013-01-01", "end": f"2013-01-{SAMPLE_DAYS}"}


def run_config(gates=None, promote=False, **model):
    model = {"search": "random", "n_trials": 2, "cv_splits": 2, **model}
    return {
        "ops": {
            "training_set": {"config": WINDOW},
            "model": {"config": model},
            "evaluation": {"config": {**LENIENT_GATES, **(gates or {})}},
            "feature_importance": {"config": {"n_repeats": 2}},
            "champion_model": {"config": {"promote_challenger": promote}},
        }
    }


@pytest.fixture
def features_stored(lifecycle_resources, instance):
    result = dg.materialize(
        [ingestion.raw_records, validation.validate_records, features.features],
        tags=range_tags("2013-01-01", f"2013-01-{SAMPLE_DAYS}"),
        resources=lifecycle_resources,
        instance=instance,
    )
    assert result.success
    return lifecycle_resources


def train(resources, instance, **kwargs):
    return dg.materialize(
        TRAINING_ASSETS,
        resources=resources,
        instance=instance,
        run_config=run_config(**kwargs),
        raise_on_error=False,
    )


def test_training_registers_a_tracked_champion(features_stored, instance, mlflow_resource):
    result = train(features_stored, instance)
    assert result.success
    client = mlflow_resource.client()
    version = client.get_model_version("test_model", "1")
    assert set(version.aliases) == {"champion", "challenger"}
    assert version.tags["evaluation_gates"] == "passed"
    assert version.tags["data_window"] == f"2013-01-01..2013-01-{SAMPLE_DAYS}"

    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert len(run.data.tags["data_hash"]) == 64 and run.data.tags["code_version"]
    trials = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(trials) == 2 and all("cv_roc_auc" in t.data.metrics for t in trials)
    assert mlflow.active_run() is None

    (materialization,) = result.asset_materializations_for_node("model")
    assert materialization.metadata["mlflow_run_id"].value == run.info.run_id
    assert run.info.run_id in materialization.metadata["mlflow_run"].value
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/roc_curve.png", "evaluation/metrics.json"} <= artifacts

    champion = registry.version_for_alias(client, "test_model", "champion")
    pipeline = mlflow_resource.load_pipeline(champion)
    with duckdb.connect(features_stored["warehouse"].database, read_only=True) as con:
        test = con.sql("SELECT * FROM flights.training_set WHERE split = 'test'").df()
        splits = con.sql(
            "SELECT split, min(flight_date), max(flight_date) FROM flights.training_set GROUP BY 1"
        ).fetchall()
    assert pipeline.predict_proba(test.head(3)).shape == (3, 2)
    # The logged test score is the registered model's own, recomputed here from its predictions.
    labelled = test[test["is_delayed"].notna()]
    expected = roc_auc_score(labelled["is_delayed"], pipeline.predict_proba(labelled)[:, 1])
    assert run.data.metrics["test_roc_auc"] == pytest.approx(expected)
    bounds = {name: (low, high) for name, low, high in splits}
    assert (
        bounds["train"][1] < bounds["validation"][0] <= bounds["validation"][1] < bounds["test"][0]
    )


def test_a_failing_gate_blocks_promotion(features_stored, instance, mlflow_resource):
    # No ROC AUC difference reaches 1.
    result = train(features_stored, instance, gates={"baseline_margin": 1.0})
    (check,) = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "check_beats_baseline"
    ]
    assert not check.passed
    assert check.description.startswith("check_beats_baseline: failed: model ROC AUC")
    assert "lower bound must be above +1.0000" in check.description
    assert check.metadata["margin"].value == 1.0
    assert not result.asset_materializations_for_node("champion_model")
    client = mlflow_resource.client()
    version = client.get_model_version("test_model", "1")
    assert version.aliases == ["challenger"]
    assert version.tags["evaluation_gates"] == "failed"
    manual = dg.materialize(
        TRAINING_ASSETS,
        selection=[promotion.champion_model],
        resources=features_stored,
        instance=instance,
        run_config={"ops": {"champion_model": {"config": {"promote_challenger": True}}}},
        raise_on_error=False,
    )
    (failure,) = [e for e in manual.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "version 1 cannot be promoted: its evaluation gates are failed" in str(
        failure.step_failure_data.error.cause.message
    )
    assert client.get_model_version("test_model", "1").aliases == ["challenger"]


def test_a_challenger_waits_then_is_promoted_by_hand_with_an_audit(
    features_stored, instance, mlflow_resource
):
    assert train(features_stored, instance).success
    assert train(features_stored, instance, estimator="random_forest", search="none").success
    client = mlflow_resource.client()
    assert registry.version_for_alias(client, "test_model", "champion").version == "1"
    assert registry.version_for_alias(client, "test_model", "challenger").version == "2"

    promoted = train(features_stored, instance, search="none", promote=True)
    assert promoted.success
    assert registry.version_for_alias(client, "test_model", "champion").version == "3"
    with duckdb.connect(features_stored["warehouse"].database, read_only=True) as con:
        audit = con.sql(
            "SELECT version, previous_version, reason FROM flights.promotion_audit "
            "ORDER BY promoted_at"
        ).fetchall()
    assert audit == [
        ("1", "none", "first model to pass the evaluation gates"),
        ("3", "1", "promoted by hand"),
    ]
    assert client.get_model_version("test_model", "3").tags["previous_champion"] == "1"


def test_a_failed_training_ends_its_mlflow_run_failed(features_stored, instance, mlflow_resource):
    result = train(features_stored, instance, params={"no_such_param": 1})
    assert not result.success
    client = mlflow_resource.client()
    (run,) = client.search_runs(
        [client.get_experiment_by_name("mlops_assets").experiment_id],
        f"tags.dagster_run_id = '{result.run_id}'",
    )
    assert run.info.status == "FAILED"
    assert mlflow.active_run() is None


def build_training_set(resources, instance, window=WINDOW):
    return dg.materialize(
        [training.training_set],
        resources=resources,
        instance=instance,
        run_config={"ops": {"training_set": {"config": window}}},
        raise_on_error=False,
    )


def test_training_before_any_data_says_what_to_run(lifecycle_resources, instance):
    result = build_training_set(lifecycle_resources, instance)
    assert "no features are stored yet" in failure_message(result)


def test_missing_feature_days_are_named(lifecycle_resources, instance):
    dg.materialize(
        [ingestion.raw_records, validation.validate_records, features.features],
        tags=range_tags("2013-01-01", "2013-01-05"),
        resources=lifecycle_resources,
        instance=instance,
    )
    result = build_training_set(lifecycle_resources, instance)
    assert "features are missing for 9 day(s)" in failure_message(result)


def failure_message(result) -> str:
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.error
    return str(error.message) + str(error.cause.message if error.cause else "")


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"start": "2013-03-01", "end": "2013-02-01"}, "is empty: end is before start"),
        ({"start": "2012-12-01", "end": "2013-01-31"}, "is outside the data"),
        ({"start": "2013-13-01", "end": "2013-01-31"}, "expected YYYY-MM-DD"),
    ],
)
def test_bad_windows_fail_before_any_work(lifecycle_resources, instance, window, message):
    result = build_training_set(lifecycle_resources, instance, window)
    assert message in failure_message(result)


def test_unknown_estimator_or_parameter_is_refused(features_stored, instance):
    with pytest.raises(dg.DagsterInvalidConfigError, match="estimator"):
        train(features_stored, instance, estimator="xgboost")
    result = train(features_stored, instance, params={"max_depth": "deep", "nope": 1})
    assert "nope" in failure_message(result)


def test_the_threshold_is_chosen_on_validation_and_stored_with_the_version(
    features_stored, instance, mlflow_resource
):
    from mlops_assets.lib import decision
    from mlops_assets.lib.modeling import features_and_label
    from mlops_assets.lib.spec import OperatingPointSpec
    from mlops_assets.partitions import dataset_spec as spec

    result = train(features_stored, instance, search="none", threshold_policy="target_share")
    assert result.success
    client = mlflow_resource.client()
    version = client.get_model_version("test_model", "1")
    ref = registry.version_for_alias(client, "test_model", "challenger")
    threshold = float(version.tags["threshold"])
    assert ref.threshold == threshold
    assert float(client.get_run(version.run_id).data.params["threshold"]) == threshold
    policy = OperatingPointSpec.model_validate_json(version.tags["threshold_policy"])
    assert (policy.policy, policy.target_share) == (
        "target_share",
        spec.operating_point.target_share,
    )
    (materialization,) = result.asset_materializations_for_node("model")
    assert materialization.metadata["threshold"].value == threshold

    # The same threshold, recomputed from the validation rows and the registered model.
    model = mlflow_resource.load_pipeline(ref)
    with duckdb.connect(features_stored["warehouse"].database, read_only=True) as con:
        validation = con.sql("SELECT * FROM flights.training_set WHERE split = 'validation'").df()
    X, y = features_and_label(
        validation, spec.categorical_features, spec.numeric_features, spec.target.name
    )
    proba = model.predict_proba(X)[:, 1]
    assert decision.choose_threshold(y, proba, policy) == threshold
    assert abs(float((proba >= threshold).mean()) - policy.target_share) <= 1 / len(y) + 1e-9
    # What `mlflow models serve` returns: probability and the decision at the threshold.
    served = model.predict(X)
    assert list(served.columns) == ["probability", "prediction", "threshold", "unknown_categories"]
    assert served["threshold"].tolist() == [threshold] * len(X)
    assert served["prediction"].tolist() == (proba >= threshold).astype(int).tolist()

    (evaluated,) = result.asset_materializations_for_node("evaluation")
    meta = evaluated.metadata
    assert meta["operating_point/threshold"].value == threshold
    assert meta["operating_point/naive_threshold"].value == decision.NAIVE_THRESHOLD
    assert {"operating_point/hindsight_objective", "calibration_after/ece"} <= set(meta)


def test_gates_with_too_few_test_days_are_not_judged_and_never_pass(
    features_stored, instance, mlflow_resource
):
    result = train(features_stored, instance, search="none", gates={"min_test_days": 5})
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    judged = [c for c in checks.values() if "not judged" in (c.description or "")]
    assert {c.check_name for c in judged} == {"check_beats_baseline", "check_not_degenerate"}
    assert all(not c.passed and c.severity == dg.AssetCheckSeverity.WARN for c in judged)
    version = mlflow_resource.client().get_model_version("test_model", "1")
    assert version.tags["evaluation_gates"] == "failed"
    assert version.aliases == ["challenger"]
