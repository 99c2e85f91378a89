"""The distributed deployment on real servers: PostgreSQL, Redis, the MLflow server, the Dagster
webserver and daemon and two Celery workers, started by `deploy/distributed.sh up` on free ports
in a temporary directory and stopped by `down` when the module's tests are done.

The servers are Debian's `postgresql` and `redis-server` (`.ci/run` installs them). When they are
missing these tests FAIL, naming the install command; MLOPS_SKIP_DISTRIBUTED=1 skips them on
purpose (a machine where no package can be installed).
"""

import datetime as dt
import functools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from mlops_assets.lib import delta
from mlops_assets.partitions import dataset_spec
from mlops_assets_tests.conftest import LENIENT_GATES

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "distributed.sh"
DATA_ASSETS = ["raw_records", "validated_records", "quarantined_records", "features"]
FIRST_DAY = dt.date(2013, 1, 1)
BACKFILL_DAYS = 60
# Four runs side by side, each submitting its first step at once: a worker of concurrency 1 holds
# at most two steps (one running, one prefetched), so the other worker must take some. With two
# runs of 30 days, a run could finish before the other's first step came, all on one worker.
PER_RUN = 15
MODEL_NAME = f"{dataset_spec.name}_model"


def missing_servers() -> list[str]:
    missing = [] if shutil.which("redis-server") else ["redis-server"]
    if not (list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")) or shutil.which("pg_ctl")):
        missing.append("postgresql")
    return missing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.cache
def source_days() -> dict[dt.date, int]:
    """Records per day straight from the embedded CSV: the reference."""
    import pandas as pd

    frame = pd.read_csv(
        dataset_spec.resolve(dataset_spec.source.path), usecols=["year", "month", "day"]
    )
    return {day: int(n) for day, n in pd.to_datetime(frame).dt.date.value_counts().items()}


def expected_counts(first: dt.date, days: int) -> dict[dt.date, int]:
    last = first + dt.timedelta(days=days)
    return {day: n for day, n in source_days().items() if first <= day < last}


def stored_counts(root: str, table: str) -> dict[dt.date, int]:
    date = dataset_spec.date.column
    with delta.session(root) as con:
        rows = con.execute(
            f'SELECT CAST("{date}" AS DATE), count(*) FROM {dataset_spec.name}.{table} GROUP BY 1'
        ).fetchall()
    return dict(rows)


class Stack:
    """The running deployment: its settings, its GraphQL endpoint, its Dagster instance."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.env = {**os.environ, **self.settings(directory / "env.sh")}
        self.env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"
        self.url = f"http://127.0.0.1:{self.env['MLOPS_DAGSTER_PORT']}/graphql"

    @staticmethod
    def settings(path: Path) -> dict[str, str]:
        pairs = [
            line.removeprefix("export ").partition("=") for line in path.read_text().splitlines()
        ]
        return {key: value.strip("'") for key, sep, value in pairs if sep and key[0] != "#"}

    def instance(self):
        from dagster import DagsterInstance
        from dagster._core.instance.ref import InstanceRef

        saved = dict(os.environ)
        os.environ.update(self.env)  # the instance's yaml reads its database URL from there
        try:
            return DagsterInstance.from_ref(InstanceRef.from_dir(self.env["DAGSTER_HOME"]))
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def backfill(self, assets: list[str], days: list[str]) -> str:
        query = """mutation($p: LaunchBackfillParams!) {
          launchPartitionBackfill(backfillParams: $p) {
          __typename ... on LaunchBackfillSuccess { backfillId }
          ... on PythonError { message } ... on InvalidSubsetError { message } } }"""
        params = {"assetSelection": [{"path": [a]} for a in assets], "partitionNames": days}
        body = json.dumps({"query": query, "variables": {"p": params}}).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            result = json.load(response)["data"]["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return result["backfillId"]

    def wait_for_runs(self, instance, backfill_id: str, expected: int, timeout: float = 600):
        """The backfill's runs once `expected` of them have finished, all successfully."""
        from dagster import DagsterRunStatus, RunsFilter

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
            if len(runs) == expected and all(r.is_finished for r in runs):
                failed = [r for r in runs if r.status != DagsterRunStatus.SUCCESS]
                assert not failed, self.failures(instance, failed)
                return runs
            time.sleep(2)
        raise AssertionError(f"backfill {backfill_id}: not {expected} finished runs in {timeout}s")

    def execute(self, job: str, *options: str) -> str:
        """`dagster job execute` in the deployment (its steps go to the workers); the run id."""
        out = subprocess.run(
            ["dagster", "job", "execute", "-m", "mlops_assets.definitions", "-j", job, *options],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        from dagster import RunsFilter

        instance = self.instance()
        runs = instance.get_runs(RunsFilter(job_name=job), limit=1)
        assert out.returncode == 0, (
            self.failures(instance, runs) if runs else out.stdout[-3000:] + out.stderr[-3000:]
        )
        return runs[0].run_id

    @staticmethod
    def failures(instance, runs) -> str:
        from dagster import DagsterEventType

        lines = []
        for run in runs:
            for event in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE):
                error = event.dagster_event.step_failure_data.error
                lines.append(f"{run.run_id[:8]} {event.step_key}: {error.message[:500]}")
        return "\n".join(lines) or f"runs {[r.run_id for r in runs]} failed before any step"

    @staticmethod
    def workers(instance, run_id: str) -> dict[str, str]:
        """step key -> the Celery worker that executed it, from the run's engine events."""
        from dagster import DagsterEventType

        found = {}
        for event in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
            worker = event.dagster_event.engine_event_data.metadata.get("Celery worker")
            if worker is not None:
                found[event.step_key] = worker.value.split("@")[0]
        return found


@pytest.fixture(scope="module")
def stack():
    if os.environ.get("MLOPS_SKIP_DISTRIBUTED") == "1":
        pytest.skip("MLOPS_SKIP_DISTRIBUTED=1")
    if missing := missing_servers():
        names = " ".join(missing)
        pytest.fail(
            f"the distributed tests need {names}: apt-get install -y {names} (as .ci/run does),"
            " or set MLOPS_SKIP_DISTRIBUTED=1 to skip them on purpose"
        )
    # Not under pytest's tmp_path, whose parents are private to their owner: PostgreSQL runs as
    # the postgres user when started by root, and must reach its data directory.
    directory = Path(tempfile.mkdtemp(prefix="mlops-distributed-"))
    directory.chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_"))},
        "MLOPS_DISTRIBUTED_DIR": str(directory),
        "MLOPS_BACKFILL_PARTITIONS_PER_RUN": str(PER_RUN),
        **{f"MLOPS_{name}_PORT": str(free_port()) for name in ("PG", "REDIS", "MLFLOW", "DAGSTER")},
    }
    log = directory / "script.log"  # a file, not a pipe: no server may hold our output open
    try:
        with log.open("a") as out:
            up = subprocess.run([SCRIPT, "up"], env=env, stdout=out, stderr=out, timeout=600)
        assert up.returncode == 0, log.read_text()[-4000:]
        yield Stack(directory)
    finally:
        with log.open("a") as out:
            subprocess.run([SCRIPT, "down"], env=env, stdout=out, stderr=out, timeout=300)
        shutil.rmtree(directory, ignore_errors=True)


def test_a_backfill_fans_out_over_both_workers(stack):
    """60 days as four runs of 15 days side by side, whose steps both workers execute; every day is
    stored once, its records counted against the source; the instance is PostgreSQL."""
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    instance = stack.instance()
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    days = [str(FIRST_DAY + dt.timedelta(d)) for d in range(BACKFILL_DAYS)]
    runs = stack.wait_for_runs(
        instance, stack.backfill(DATA_ASSETS, days), expected=BACKFILL_DAYS // PER_RUN
    )

    ranges = sorted(
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in runs
    )
    assert ranges == [(days[i], days[i + PER_RUN - 1]) for i in range(0, BACKFILL_DAYS, PER_RUN)]
    steps_by_worker: dict[str, list[str]] = {}
    for run in runs:
        for step, worker in stack.workers(instance, run.run_id).items():
            steps_by_worker.setdefault(worker, []).append(f"{run.run_id[:8]}:{step}")
    assert set(steps_by_worker) == {"worker1", "worker2"}, steps_by_worker

    root = stack.env["MLOPS_WAREHOUSE_ROOT"]
    expected = expected_counts(FIRST_DAY, BACKFILL_DAYS)
    assert len(expected) == BACKFILL_DAYS
    assert stored_counts(root, "raw_records") == expected
    assert stored_counts(root, "features") == expected


# Little data and little work (the steps, not the models, are under test): the gates must not
# decide whether the first model becomes champion.
TRAINING = {
    "ops": {
        "training_set": {"config": {"start": "2013-01-01", "end": "2013-01-14"}},
        "model": {"config": {"search": "none", "calibrate": False, "params": {"max_iter": 30}}},
        "evaluation": {"config": LENIENT_GATES},
        "feature_importance": {"config": {"n_repeats": 1, "max_rows": 1000}},
    }
}
MONITORING = {
    "ops": {
        "drift_report": {
            "config": {"domain_classifier": False, "html": "none", "save_to_workspace": False}
        }
    }
}
MONITORED = ("2013-02-20", "2013-02-22")


def test_the_lifecycle_runs_on_the_workers(stack):
    """Train on the backfilled days, then monitor three later days, every step on a worker: the
    champion is in the server's registry with its artifacts in the shared directory, its
    promotion audited and its drift null stored through SQL, and every record scored."""
    from mlflow import MlflowClient

    config = stack.directory / "training.json"
    config.write_text(json.dumps(TRAINING))
    training = stack.execute("training_job", "-c", str(config))
    tags = {
        "dagster/asset_partition_range_start": MONITORED[0],
        "dagster/asset_partition_range_end": MONITORED[1],
    }
    config.write_text(json.dumps(MONITORING))
    monitoring = stack.execute("monitoring_job", "--tags", json.dumps(tags), "-c", str(config))

    instance = stack.instance()
    for run_id, steps in [(training, {"model", "champion_model"}), (monitoring, {"predictions"})]:
        assert steps <= set(stack.workers(instance, run_id)), run_id
    client = MlflowClient(tracking_uri=stack.env["MLFLOW_TRACKING_URI"])
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == "1"
    assert list((stack.directory / "mlflow-artifacts").rglob("MLmodel"))

    root = stack.env["MLOPS_WAREHOUSE_ROOT"]
    first = dt.date.fromisoformat(MONITORED[0])
    expected = expected_counts(first, 3)
    assert stored_counts(root, "predictions") == expected
    assert set(stored_counts(root, "performance")) == set(expected)
    assert set(stored_counts(root, "drift_report")) == set(expected)
    with delta.session(root) as con:
        audit = con.execute(f"SELECT version FROM {dataset_spec.name}.promotion_audit").fetchall()
        nulls = con.execute(
            f"SELECT DISTINCT model_version FROM {dataset_spec.name}.drift_null"
        ).fetchall()
    assert audit == [("1",)]
    assert nulls == [("1",)]
