"""The registry module on a real MLflow store (SQLite in tmp_path) and a real DuckDB file."""

import json
import os

import duckdb
import mlflow
import pytest

from mlops_assets.lib import registry

NAME = "m"


@pytest.fixture
def store(tmp_path):
    """A registered model with versions 1..3 (no artifacts needed to move aliases)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = registry.client(uri)
    experiment = registry.ensure_experiment(client, "e", str(tmp_path / "artifacts"))
    client.create_registered_model(NAME)
    for _ in range(3):
        run = client.create_run(experiment)
        client.create_model_version(NAME, str(tmp_path / "artifacts"), run.info.run_id)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        yield client, con


def promote(client, con, version, reason="why"):
    return registry.promote(
        client, con, NAME, version, reason=reason, evidence={"x": 1}, run_id="r", schema="s"
    )


def passed(client, *versions):
    for version in versions:
        client.set_model_version_tag(NAME, version, registry.GATES_TAG, registry.GATES_PASSED)


def test_a_version_whose_gates_did_not_pass_is_refused(store):
    client, con = store
    with pytest.raises(ValueError, match=r"version 1 cannot be promoted: .* not evaluated"):
        promote(client, con, "1")
    client.set_model_version_tag(NAME, "1", registry.GATES_TAG, "failed")
    with pytest.raises(ValueError, match="gates are failed"):
        promote(client, con, "1")
    assert registry.version_for_alias(client, NAME, registry.CHAMPION) is None


def test_promotion_moves_the_alias_and_audits_once(store):
    client, con = store
    passed(client, "1", "2")
    assert promote(client, con, "1", "first") is None
    assert promote(client, con, "2", "better") == "1"
    assert promote(client, con, "2", "again") == "2"  # a re-run changes nothing
    assert registry.version_for_alias(client, NAME, registry.CHAMPION).version == "2"
    tags = client.get_model_version(NAME, "2").tags
    assert tags["previous_champion"] == "1" and tags["promotion_reason"] == "better"
    audit = con.execute(
        "SELECT version, previous_version, reason, evidence FROM s.promotion_audit "
        "ORDER BY promoted_at, version"
    ).fetchall()
    assert [row[:3] for row in audit] == [("1", "none", "first"), ("2", "1", "better")]
    assert json.loads(audit[0][3]) == {"x": 1}


def test_serving_models_name_who_scores(store):
    client, con = store
    assert registry.serving_models(client, NAME).scored() == []
    passed(client, "1")
    promote(client, con, "1")
    client.set_registered_model_alias(NAME, registry.CHALLENGER, "1")
    serving = registry.serving_models(client, NAME)
    assert not serving.experiment_running
    assert [(a, r.version) for a, r in serving.scored()] == [("champion", "1")]
    client.set_registered_model_alias(NAME, registry.CHALLENGER, "3")
    serving = registry.serving_models(client, NAME)
    assert serving.experiment_running
    assert [(a, r.version) for a, r in serving.scored()] == [("champion", "1"), ("challenger", "3")]


def test_clients_and_scoped_tracking_leave_mlflow_settings_as_they_were(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    registry.client(uri)
    assert mlflow.get_tracking_uri() == before
    with registry.scoped_tracking(uri):
        assert mlflow.get_tracking_uri() == uri
        assert os.environ["MLFLOW_TRACKING_URI"] == uri  # what MLflow itself does inside
    assert mlflow.get_tracking_uri() == before
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ


def test_serving_requirements_pin_this_environment():
    pins = dict(p.split("==") for p in registry.serving_requirements())
    assert set(pins) == set(registry.SERVING_PACKAGES)
    assert pins["mlflow"] == mlflow.__version__
