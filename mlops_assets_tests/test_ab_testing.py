"""A/B outcomes, results and promotion through real Dagster runs, DuckDB and MLflow registry."""

import dagster as dg
import duckdb
import pytest

from mlops_assets import ab_testing, monitoring
from mlops_assets.lib import registry
from mlops_assets.lib.clock import REPLAY_DATE_ENV
from mlops_assets.resources import OBJECT_IO_MANAGER
from mlops_assets_tests.conftest import FEATURES_TABLE, MODEL, make_env, range_tags

AB_ASSETS = [ab_testing.ab_outcomes, ab_testing.ab_results, ab_testing.ab_promotion]


@pytest.fixture
def env(world, tmp_path, instance, monkeypatch):
    monkeypatch.setenv(REPLAY_DATE_ENV, "2013-02-01")  # every day's labels are known
    env = make_env(world, tmp_path, instance)
    env["resources"][OBJECT_IO_MANAGER] = dg.FilesystemIOManager(base_dir=str(tmp_path / "obj"))
    return env


def materialize(env, selection, **kwargs):
    return dg.materialize(
        [FEATURES_TABLE, monitoring.predictions, *AB_ASSETS],
        selection=selection,
        resources=env["resources"],
        instance=env["instance"],
        **kwargs,
    )


def outcomes(env):
    with duckdb.connect(str(env["dir"] / "warehouse.duckdb"), read_only=True) as con:
        return con.sql(f"SELECT * FROM {ab_testing.OUTCOMES_TABLE} ORDER BY ALL").df()


def test_outcomes_route_every_record_deterministically_with_both_scores(env):
    days = range_tags("2013-01-08", "2013-01-10")
    assert materialize(env, [monitoring.predictions, ab_testing.ab_outcomes], tags=days).success
    first = outcomes(env)
    assert len(first) == 90 and set(first["experiment"]) == {f"{MODEL}-v1-vs-v2"}
    assert set(first["arm"]) <= {"control", "treatment", "excluded"}
    assert first[["score_control", "score_treatment"]].notna().all().all()
    assert first["label"].notna().all()
    assert materialize(env, [ab_testing.ab_outcomes], tags=days).success  # re-run: same rows
    assert outcomes(env).equals(first)


def test_before_the_horizon_the_decision_is_inconclusive_and_nothing_moves(env):
    days = range_tags("2013-01-08", "2013-01-10")
    assert materialize(env, [monitoring.predictions, ab_testing.ab_outcomes], tags=days).success
    # The test model's in-sample accuracy (0.99) leaves no room for the default 0.02 effect.
    config = {"ops": {"ab_results": {"config": {"mde": 0.005, "n_resamples": 100}}}}
    result = materialize(env, [ab_testing.ab_results, ab_testing.ab_promotion], run_config=config)
    assert result.success
    (analysis,) = result.asset_materializations_for_node("ab_results")
    assert analysis.metadata["decision"].value == "inconclusive"
    assert "horizon" in analysis.metadata["report"].value
    (promotion,) = result.asset_materializations_for_node("ab_promotion")
    assert promotion.metadata["promoted"].value is False
    client = env["resources"]["mlflow"].client()
    assert registry.version_for_alias(client, MODEL, "champion").version == "1"


def decided(decision: str):
    @dg.asset(name="ab_results", io_manager_key=OBJECT_IO_MANAGER)
    def fixed_results():
        return {
            "experiment": f"{MODEL}-v1-vs-v2",
            "champion_version": "1",
            "challenger_version": "2",
            "decision": decision,
            "evidence": {"p_value": 0.001},
        }

    return fixed_results


def promote_after(env, decision: str):
    return dg.materialize(
        [decided(decision), ab_testing.ab_promotion],
        resources=env["resources"],
        instance=env["instance"],
        raise_on_error=False,
    )


def test_aliases_move_only_on_promote_and_only_past_the_gates(env):
    client = env["resources"]["mlflow"].client()
    champion = lambda: registry.version_for_alias(client, MODEL, "champion").version  # noqa: E731
    assert promote_after(env, "keep").success and champion() == "1"
    client.set_model_version_tag(MODEL, "2", "evaluation_gates", "failed")
    assert not promote_after(env, "promote").success and champion() == "1"
    client.set_model_version_tag(MODEL, "2", "evaluation_gates", "passed")
    assert promote_after(env, "promote").success and champion() == "2"
    assert client.get_model_version(MODEL, "2").tags["promotion_reason"].startswith("A/B test")
    again = promote_after(env, "promote")  # idempotent: no second promotion, no second audit row
    (event,) = again.asset_materializations_for_node("ab_promotion")
    assert event.metadata["promoted"].value is False
    with duckdb.connect(str(env["dir"] / "warehouse.duckdb"), read_only=True) as con:
        audit = con.sql("SELECT version, previous_version, evidence FROM flights.promotion_audit")
        assert audit.fetchall() == [("2", "1", '{"p_value": 0.001}')]
