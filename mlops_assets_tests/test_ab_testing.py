"""A/B outcomes, results and promotion through real Dagster runs, DuckDB and MLflow registry."""

import datetime as dt

import dagster as dg
import duckdb
import pytest

from mlops_assets import ab_testing, monitoring
from mlops_assets.lib import registry
from mlops_assets.lib.ab_testing.decision import decide
from mlops_assets.lib.ab_testing.design import ExperimentDesign
from mlops_assets.lib.ab_testing.inference import Records
from mlops_assets.lib.ab_testing.report import ABResult
from mlops_assets.lib.clock import REPLAY_DATE_ENV
from mlops_assets.resources import OBJECT_IO_MANAGER
from mlops_assets_tests.conftest import FEATURES_TABLE, MODEL, THRESHOLDS, make_env, range_tags

AB_ASSETS = [ab_testing.ab_outcomes, ab_testing.ab_results, ab_testing.ab_promotion]


@pytest.fixture
def env(world, tmp_path, instance, monkeypatch):
    monkeypatch.setenv(REPLAY_DATE_ENV, "2013-02-01")  # every day's labels are known
    env = make_env(world, tmp_path, instance)
    env["resources"][OBJECT_IO_MANAGER] = dg.FilesystemIOManager(base_dir=str(tmp_path / "obj"))
    return env | {"reference": world["reference"]}


def materialize(env, selection, **kwargs):
    return dg.materialize(
        [FEATURES_TABLE, monitoring.predictions, *AB_ASSETS],
        selection=selection,
        resources=env["resources"],
        instance=env["instance"],
        **kwargs,
    )


def table(env, name: str):
    with duckdb.connect(str(env["dir"] / "warehouse.duckdb"), read_only=True) as con:
        return con.sql(f"SELECT * FROM {name} ORDER BY ALL").df()


def outcomes(env):
    return table(env, ab_testing.OUTCOMES_TABLE)


def test_outcomes_route_every_record_deterministically_with_both_scores(env):
    days = range_tags("2013-01-08", "2013-01-10")
    assert materialize(env, [monitoring.predictions, ab_testing.ab_outcomes], tags=days).success
    first = outcomes(env)
    assert len(first) == 90 and set(first["experiment"]) == {f"{MODEL}-v1-vs-v2"}
    assert set(first["arm"]) <= {"control", "treatment", "excluded"}
    assert first[["score_control", "score_treatment"]].notna().all().all()
    assert first["label"].notna().all()
    # Each model's own registered operating point travels with the records.
    assert set(first["threshold_control"]) == {THRESHOLDS["1"]}
    assert set(first["threshold_treatment"]) == {THRESHOLDS["2"]}
    assert materialize(env, [ab_testing.ab_outcomes], tags=days).success  # re-run: same rows
    assert outcomes(env).equals(first)


def test_before_the_minimum_runtime_nothing_is_decided_and_the_design_is_stored(env):
    days = range_tags("2013-01-08", "2013-01-10")
    assert materialize(env, [monitoring.predictions, ab_testing.ab_outcomes], tags=days).success
    result = materialize(env, [ab_testing.ab_results, ab_testing.ab_promotion])
    assert result.success
    (analysis,) = result.asset_materializations_for_node("ab_results")
    assert analysis.metadata["decision"].value == "inconclusive"
    assert analysis.metadata["status"].value.startswith("running: 3 of the minimum 14 days")
    (promotion,) = result.asset_materializations_for_node("ab_promotion")
    assert promotion.metadata["promoted"].value is False
    client = env["resources"]["mlflow"].client()
    assert registry.version_for_alias(client, MODEL, "champion").version == "1"
    (design,) = table(env, ab_testing.DESIGNS_TABLE).to_dict("records")
    assert design["experiment"] == f"{MODEL}-v1-vs-v2" and design["alpha"] == 0.05
    # No champion day before Jan 8 was scored: the margin rests on the champion's test log loss.
    assert design["baseline_days"] == 0
    assert design["baseline_log_loss"] == pytest.approx(env["reference"]["log_loss"])
    # A later run with another config analyses the experiment under its stored design.
    again = materialize(
        env, [ab_testing.ab_results], run_config=results_config(alpha=0.2, min_runtime_weeks=3)
    )
    (rerun,) = again.asset_materializations_for_node("ab_results")
    assert rerun.metadata["design_alpha"].value == 0.05
    assert rerun.metadata["design_min_runtime_weeks"].value == 2
    assert len(table(env, ab_testing.DESIGNS_TABLE)) == 1


def results_config(**values):
    return {"ops": {"ab_results": {"config": values}}}


def test_the_decision_is_reproduced_from_the_stored_design_and_outcomes(env):
    # Version 2 is version 1's model: every daily difference is 0, so from day 7 (one whole
    # week) the sequence lies above the promotion margin and the champion is kept.
    days = range_tags("2013-01-01", "2013-01-10")
    assert materialize(env, [monitoring.predictions, ab_testing.ab_outcomes], tags=days).success
    config = results_config(min_runtime_weeks=1, max_runtime_weeks=2, n_resamples=200)
    result = materialize(env, [ab_testing.ab_results, ab_testing.ab_promotion], run_config=config)
    (analysis,) = result.asset_materializations_for_node("ab_results")
    meta = {k: v.value for k, v in analysis.metadata.items()}
    assert (meta["decision"], meta["decided_on"], meta["days_analysed"]) == (
        "keep",
        "2013-01-07",
        7,
    )
    assert meta["log_loss_diff"] == 0.0 and meta["status"].startswith("challenger not better")
    report = (env["dir"] / "reports" / "ab" / f"{MODEL}-v1-vs-v2.md").read_text()
    assert "| 2013-01-07 **decides** |" in report
    # Reproduced from what is stored: the design row and the outcomes table.
    (row,) = table(env, ab_testing.DESIGNS_TABLE).to_dict("records")
    design = ExperimentDesign.from_row(row)
    assert design.first_day == dt.date(2013, 1, 1)
    again = decide(design, Records.from_frame(outcomes(env), "flight_date"))
    assert (again.decision, str(again.decided_on), again.primary.high) == (
        meta["decision"],
        meta["decided_on"],
        meta["log_loss_diff_cs_high"],
    )


def decided(decision: str):
    @dg.asset(name="ab_results", io_manager_key=OBJECT_IO_MANAGER)
    def fixed_results():
        return ABResult(
            experiment=f"{MODEL}-v1-vs-v2",
            champion_version="1",
            challenger_version="2",
            decision=decision,
            status="fixed for the test",
            decided_on=dt.date(2013, 1, 14),
            evidence={"log_loss_diff": -0.01},
        )

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
        assert audit.fetchall() == [("2", "1", '{"log_loss_diff": -0.01}')]
