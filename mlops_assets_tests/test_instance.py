"""The Dagster CLI on a fresh instance: concurrent first runs, and a run killed with kill -9.

Real `dagster asset materialize` processes on the repository's dagster.yaml, over a small source
(14 days x 30 flights, through a dataset specification pointing at it), so each run is short.
"""

import os
import shutil
import signal
import subprocess
import time

import duckdb
import pytest
import yaml

from mlops_assets.lib.spec import DEFAULT_SPEC
from mlops_assets_tests.conftest import ROWS_PER_DAY, SAMPLE_DAYS, write_csv
from mlops_assets_tests.test_e2e import BIN, REPO, SELECT_DATA, environment, make_home

SELECT = SELECT_DATA
CONCURRENT = 8


def materialize(days: str, paths, env, **kwargs) -> subprocess.Popen:
    args = [str(BIN / "dagster"), "asset", "materialize", "-m", "mlops_assets", "--select", SELECT]
    flag = "--partition-range" if "..." in days else "--partition"
    return subprocess.Popen([*args, flag, days], cwd=paths["home"], env=env, **kwargs)


def prepare(paths, env) -> str:
    done = subprocess.run(
        [str(BIN / "python"), "-m", "mlops_assets.instance"],
        cwd=paths["home"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def feature_days(paths) -> dict[str, int]:
    with duckdb.connect(str(paths["data"] / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT flight_date::DATE::VARCHAR, count(*) FROM flights.features GROUP BY 1"
        ).fetchall()
    return dict(rows)


def test_concurrent_first_runs_and_a_killed_run_need_no_manual_step(tmp_path, flights_rows):
    paths = make_home(tmp_path)
    spec = yaml.safe_load(DEFAULT_SPEC.read_text())
    spec["source"]["path"] = str(write_csv(tmp_path / "flights.csv", flights_rows))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {
        **environment(paths["home"], paths["data"]),
        "MLOPS_DATASET_SPEC": str(tmp_path / "spec.yaml"),
    }

    # 1. A fresh instance, prepared once, then 8 first runs at the same time, one day each.
    assert prepare(paths, env) == ""
    days = [f"2013-01-{d:02d}" for d in range(1, CONCURRENT + 1)]
    runs = [materialize(day, paths, env, stderr=subprocess.PIPE, text=True) for day in days]
    outcomes = [(run.wait(timeout=600), run.stderr.read()[-3000:]) for run in runs]
    assert [code for code, _ in outcomes] == [0] * CONCURRENT, outcomes
    assert feature_days(paths) == dict.fromkeys(days, ROWS_PER_DAY)

    # 2. A range run killed with kill -9 once it holds the duckdb pool slot (mid-range) ...
    log = tmp_path / "killed.log"
    with log.open("w") as stderr:
        killed = materialize("2013-01-01...2013-01-14", paths, env, stderr=stderr)
        deadline = time.monotonic() + 300
        while 'Started execution of step "validate_records"' not in log.read_text():
            assert killed.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()

    # ... is found dead and failed by the preparation every make target runs first, and the
    # rerun then completes (without it, the rerun would wait forever for the pool slot).
    assert "marked failed, its pool slots freed" in prepare(paths, env)
    rerun = materialize("2013-01-01...2013-01-14", paths, env)
    assert rerun.wait(timeout=600) == 0
    expected = {f"2013-01-{d:02d}": ROWS_PER_DAY for d in range(1, SAMPLE_DAYS + 1)}
    assert feature_days(paths) == expected


def test_preparing_twice_changes_nothing(tmp_path):
    paths = make_home(tmp_path)
    env = environment(paths["home"], paths["data"])
    assert prepare(paths, env) == prepare(paths, env) == ""
    # Every storage under the instance's directory, not the working directory.
    assert (paths["home"] / "history" / "runs.db").exists()
    assert (paths["home"] / "history" / "runs" / "index.db").exists()


def test_each_instance_gets_the_repositorys_settings_and_keeps_its_own(tmp_path):
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    from mlops_assets.instance import CONFIG, install_config

    home = tmp_path / "data" / "dagster"
    install_config(home)
    settings = yaml.safe_load((home / "dagster.yaml").read_text())
    assert settings == {
        **yaml.safe_load(CONFIG.read_text()),
        "event_log_storage": {
            "module": "mlops_assets.event_log",
            "class": "BatchingSqliteEventLogStorage",
            "config": {"base_dir": f"{home}/history/runs/"},
        },
    }
    # Opened by its directory, with $DAGSTER_HOME elsewhere: every storage is still in `home`.
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert type(instance.event_log_storage).__name__ == "BatchingSqliteEventLogStorage"
        assert instance.get_runs() == []
    assert (home / "history" / "runs.db").exists()
    assert (home / "history" / "runs" / "index.db").exists()

    # An outdated copy is refreshed from the repository's file ...
    changed = tmp_path / "dagster.yaml"
    changed.write_text(
        CONFIG.read_text().replace("max_concurrent_runs: 4", "max_concurrent_runs: 2")
    )
    install_config(home, changed)
    assert yaml.safe_load((home / "dagster.yaml").read_text())["concurrency"]["runs"] == {
        "max_concurrent_runs": 2
    }
    # ... but a dagster.yaml of the user's own (say, Postgres storage) is never overwritten.
    own = "storage:\n  postgres:\n    postgres_url: {env: PG_URL}\n"
    (home / "dagster.yaml").write_text(own)
    install_config(home)
    assert (home / "dagster.yaml").read_text() == own


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_keeps_each_data_directorys_instance_inside_it():
    show = "show-instance: ; @echo $$MLOPS_DATA_DIR $$DAGSTER_HOME"
    # A DAGSTER_HOME left in the shell must not make two data directories share an instance.
    env = {**os.environ, "DAGSTER_HOME": "/elsewhere", "MLOPS_DATA_DIR": "relative/dir"}
    done = subprocess.run(
        ["make", "--no-print-directory", "-s", "-C", str(REPO), "--eval", show, "show-instance"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    data = REPO / "relative" / "dir"
    assert done.stdout.split() == [str(data), str(data / "dagster")]
