"""End to end, through real processes: `dagster dev` over GraphQL, the CLI, MLflow model serving.

Every server listens on 127.0.0.1 and a free port, runs in its own process group with a
temporary Dagster instance (DAGSTER_HOME) and data directory (MLOPS_DATA_DIR), and is stopped
through its PID. The CLI lifecycle (test 2, whose model test 3 serves) runs in a background
thread beside the `dagster dev` test, whose servers mostly wait: it keeps the file within its
CI time budget on two cores.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest
import requests

from mlops_assets.partitions import dataset_spec
from mlops_assets_tests.conftest import LENIENT_GATES

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = f"{dataset_spec.name}_model"
DATA_ASSETS = ["raw_records", "validated_records", "quarantined_records", "features"]
DAY = "2013-01-05"
CLI_DAYS = ("2013-01-01", "2013-01-03")
SELECT_DATA = "group:ingestion or group:validation or group:features"
# A shell that starts a job in the background makes it ignore SIGINT, and `dagster dev` maps
# SIGTERM onto its SIGINT handler: inherited, that would make the servers ignore SIGTERM too.
# Restored in the child before exec (preexec_fn is unsafe beside the background thread).
DEFAULT_SIGNALS = (
    "import os, signal, sys; "
    "[signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)]; "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_home(tmp: Path) -> dict[str, Path]:
    """A data dir and its Dagster instance, laid out as `make` lays them out: the instance in
    <data>/dagster, with the repository's dagster.yaml."""
    from mlops_assets.instance import install_config

    data = tmp / "data"
    home = data / "dagster"
    home.mkdir(parents=True)
    install_config(home)
    return {"home": home, "data": data}


def environment(home: Path, data: Path) -> dict[str, str]:
    # No MLFLOW_* or MLOPS_* from the developer's shell: an inherited tracking or registry URI
    # would point the servers at another store.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_"))}
    env.update(
        DAGSTER_HOME=str(home),
        MLOPS_DATA_DIR=str(data),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    return env


def tracking_uri(data: Path) -> str:
    return f"sqlite:///{(data / 'mlflow' / 'mlflow.db').resolve()}"


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def group_members(pgid: int) -> list[str]:
    """The live (not zombie) processes of a process group, as "pid command"."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: any process of the group, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [f"group {pgid}"]
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(f"{stat.parent.name} {command.decode(errors='replace')[:200]}")
    return members


class Server:
    """A server process started in a new session, so that its whole process group can be stopped."""

    def __init__(self, name: str, args: list[str], cwd: Path, env: dict[str, str], logs: Path):
        self.name, self.left_over = name, []
        self.stdout, self.stderr = logs / f"{name}.out", logs / f"{name}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-c", DEFAULT_SIGNALS, *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.pgid = self.process.pid  # a session leader's process group id is its PID

    def logs(self) -> str:
        return (
            f"--- {self.name} stderr (tail) ---\n{tail(self.stderr)}\n"
            f"--- {self.name} stdout (tail) ---\n{tail(self.stdout, 2000)}"
        )

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll `ready` until it holds; fail with the server's logs on timeout or early exit."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                pytest.fail(
                    f"{self.name} exited with {self.process.returncode} before {what}\n"
                    + self.logs()
                )
            try:
                if ready():
                    return time.monotonic() - started
            except (requests.RequestException, OSError):
                pass  # not listening yet
            time.sleep(0.5)
        pytest.fail(f"{self.name}: no {what} after {timeout:.0f} s\n" + self.logs())

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the server's PID, then to what is left of its group; SIGKILL at the end.

        The leader first: `dagster dev` stops its webserver, daemon and code server in order,
        while a SIGTERM to the whole group races that (its code-server proxy restarts the code
        server it sees exit, and the new one outlives the shutdown).
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        if group_members(self.pgid):
            os.killpg(self.pgid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while group_members(self.pgid) and time.monotonic() < deadline:
                time.sleep(0.2)
        self.left_over = group_members(self.pgid)
        if self.left_over or self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.killpg(self.pgid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def assert_stopped(self) -> None:
        assert self.process.returncode is not None and not group_members(self.pgid), self.logs()
        assert not self.left_over, (
            f"{self.name}: SIGTERM left {self.left_over}, killed with SIGKILL\n" + self.logs()
        )


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Starts servers whose logs go to tmp_path; stops them all at teardown, whatever happened."""
    servers: list[Server] = []

    def start(name: str, args: list[str], cwd: Path, env: dict[str, str]) -> Server:
        servers.append(Server(name, args, cwd, env, tmp_path))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def run_cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 240):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(args)} exited with {result.returncode}\n"
        f"--- stderr (tail) ---\n{result.stderr[-4000:]}\n--- stdout ---\n{result.stdout[-1500:]}"
    )
    return result


def stored_days(data: Path, table: str) -> dict[str, int]:
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            f"SELECT CAST({dataset_spec.date.column} AS DATE), count(*) FROM "
            f"{dataset_spec.name}.{table} GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return {str(day): n for day, n in rows}


# ---------------------------------------------------------------------------------------------
# The CLI lifecycle of test 2 (a backfill of the data assets as one run, then the training job)
# and the model server of test 3.

TRAINING_CONFIG = {
    "ops": {
        # Three days: one each for train, validation and test.
        "training_set": {
            "config": {
                "start": CLI_DAYS[0],
                "end": CLI_DAYS[1],
                "validation_fraction": 0.3,
                "test_fraction": 0.3,
            }
        },
        "model": {"config": {"search": "none"}},
        # So little data (one test day) must not decide whether the gates pass.
        "evaluation": {"config": LENIENT_GATES},
        "feature_importance": {"config": {"n_repeats": 1, "max_rows": 2000}},
    }
}


def run_cli_lifecycle(paths: dict[str, Path], servers: list[Server]) -> dict:
    """Backfill and train through the CLI, then start serving the champion (test 3 queries it)."""
    env = environment(paths["home"], paths["data"])
    dagster = str(BIN / "dagster")
    selection = ["--select", SELECT_DATA, "--partition-range", "...".join(CLI_DAYS)]
    materialize = run_cli(
        [dagster, "asset", "materialize", "-m", "mlops_assets", *selection],
        cwd=paths["home"],
        env=env,
    )
    config = paths["home"] / "training.yaml"
    config.write_text(json.dumps(TRAINING_CONFIG))  # JSON is YAML
    train = run_cli(
        [dagster, "job", "execute", "-m", "mlops_assets", "-j", "training_job", "-c", str(config)],
        cwd=paths["home"],
        env=env,
    )
    port = free_port()
    serve = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}@champion"]
    servers.append(
        Server(
            "mlflow-serve",
            [*serve, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            cwd=paths["home"],
            env={**env, "MLFLOW_TRACKING_URI": tracking_uri(paths["data"])},
            logs=paths["home"].parent,
        )
    )
    return {**paths, "materialize": materialize, "train": train, "serving": (servers[-1], port)}


@pytest.fixture(scope="module")
def cli_lifecycle_started(tmp_path_factory) -> Iterator[Future]:
    """The CLI lifecycle in a background thread (subprocesses: no GIL contention)."""
    servers: list[Server] = []
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            paths = make_home(tmp_path_factory.mktemp("cli"))
            yield pool.submit(run_cli_lifecycle, paths, servers)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def cli_lifecycle(cli_lifecycle_started: Future) -> dict:
    return cli_lifecycle_started.result(timeout=300)


# ---------------------------------------------------------------------------------------------
# 1. The real `dagster dev`: webserver and daemon, a run launched through GraphQL.

LOCATIONS_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""

MATERIALIZATION_QUERY = """
query ($key: AssetKeyInput!, $partition: String!) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: [$partition], limit: 1) {
        partition runId
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
          ... on MarkdownMetadataEntry { mdStr }
        }
      }
    }
  }
}
"""


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    response = requests.post(
        f"http://127.0.0.1:{port}/graphql",
        json={"query": query, "variables": variables or {}},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def location_loaded(port: int) -> bool:
    workspace = graphql(port, LOCATIONS_QUERY)["workspaceOrError"]
    entries = workspace.get("locationEntries", [])
    if any(
        e["locationOrLoadError"]["__typename"] == "PythonError"
        for e in entries
        if e["locationOrLoadError"]
    ):
        raise AssertionError(f"the code location failed to load: {entries}")
    return any(
        e["loadStatus"] == "LOADED"
        and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
        for e in entries
    )


def latest_materialization(port: int, asset: str, partition: str) -> dict:
    data = graphql(port, MATERIALIZATION_QUERY, {"key": {"path": [asset]}, "partition": partition})
    (event,) = data["assetOrError"]["assetMaterializations"]
    values = {}
    for entry in event["metadataEntries"]:
        value = [v for k, v in entry.items() if k != "label"]
        values[entry["label"]] = value[0] if value else None
    return {"partition": event["partition"], "runId": event["runId"], "metadata": values}


def test_dagster_dev_runs_a_partition_launched_through_graphql(
    tmp_path, start_server, monkeypatch, cli_lifecycle_started
):
    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.events import DagsterEventType
    from dagster_graphql import DagsterGraphQLClient

    # cli_lifecycle_started: the CLI lifecycle runs meanwhile (see the module docstring).
    paths = make_home(tmp_path)
    port = free_port()
    dev = start_server(
        "dagster-dev",
        [str(BIN / "dagster"), "dev", "-m", "mlops_assets", "-h", "127.0.0.1", "-p", str(port)],
        cwd=paths["home"],
        env=environment(paths["home"], paths["data"]),
    )
    dev.wait_until(lambda: location_loaded(port), timeout=90, what="loaded code location")

    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    run_id = client.submit_job_execution(
        "__ASSET_JOB", asset_selection=DATA_ASSETS, tags={"dagster/partition": DAY}, run_config={}
    )
    terminal = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    statuses: list[DagsterRunStatus] = []

    def finished() -> bool:
        statuses.append(client.get_run_status(run_id))
        return statuses[-1] in terminal

    # Queued by the webserver, launched by the daemon: a status change proves both run.
    dev.wait_until(finished, timeout=120, what=f"end of run {run_id}")
    assert statuses[-1] == DagsterRunStatus.SUCCESS, f"run {run_id}: {statuses[-1]}\n" + dev.logs()

    raw = latest_materialization(port, "raw_records", DAY)
    validated = latest_materialization(port, "validated_records", DAY)
    features = latest_materialization(port, "features", DAY)
    for event in (raw, validated, features):
        assert (event["partition"], event["runId"]) == (DAY, run_id)
    rows = raw["metadata"]["dagster/partition_row_count"]
    assert rows > 100 and raw["metadata"]["days"] == 1
    quarantined = latest_materialization(port, "quarantined_records", DAY)
    valid = validated["metadata"]["dagster/partition_row_count"]
    assert valid + quarantined["metadata"]["dagster/partition_row_count"] == rows
    assert features["metadata"]["dagster/partition_row_count"] == valid
    assert 0.0 < features["metadata"]["positive_rate"] < 1.0
    assert "| flight_date" in features["metadata"]["preview"]

    dev.stop()
    dev.assert_stopped()

    # What the UI showed is what the instance and the warehouse hold.
    assert stored_days(paths["data"], "features") == {
        DAY: features["metadata"]["dagster/partition_row_count"]
    }
    monkeypatch.setenv("DAGSTER_HOME", str(paths["home"]))
    with DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        checks = instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    assert run.tags["dagster/partition"] == DAY
    outcomes = {
        e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data.passed
        for e in checks
    }
    assert outcomes and all(outcomes.values()), outcomes
    assert "check_quarantine_share" in outcomes


# ---------------------------------------------------------------------------------------------
# 2. The CLI, with a temporary instance: the DuckDB tables and the MLflow registry it leaves.


def test_cli_backfills_days_and_trains_a_registered_champion(cli_lifecycle):
    import mlflow

    data = cli_lifecycle["data"]
    days = stored_days(data, "features")
    assert sorted(days) == ["2013-01-01", "2013-01-02", "2013-01-03"], days
    assert all(n > 100 for n in days.values()), days
    raw = stored_days(data, "raw_records")
    assert raw.keys() == days.keys() and all(raw[d] >= days[d] for d in days)
    # One run for the whole range (single-run backfill policy), not one per day.
    assert cli_lifecycle["materialize"].stderr.count("RUN_SUCCESS") == 1

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(data), registry_uri=tracking_uri(data))
    version = client.get_model_version(MODEL_NAME, "1")
    assert set(version.aliases) == {"champion", "challenger"}
    assert version.tags["evaluation_gates"] == "passed"
    assert version.tags["data_window"] == "..".join(CLI_DAYS)
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert 0.0 <= run.data.metrics["test_roc_auc"] <= 1.0
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"


# ---------------------------------------------------------------------------------------------
# 3. Serving the champion with MLflow's own scoring server.


def split_body(frame) -> dict:
    """The JSON a client would send (pandas writes NaN as null)."""
    return {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}


def test_mlflow_serves_the_champion(cli_lifecycle):
    data = cli_lifecycle["data"]
    columns = dataset_spec.categorical_features + dataset_spec.numeric_features
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        rows = con.sql(
            f"SELECT {', '.join(columns)} FROM {dataset_spec.name}.features "
            f"ORDER BY {', '.join(dataset_spec.key)} LIMIT 2"
        ).df()
    body = split_body(rows)

    # `mlflow models serve -m models:/flights_model@champion`, started once training finished.
    server, port = cli_lifecycle["serving"]
    url = f"http://127.0.0.1:{port}"
    server.wait_until(
        lambda: requests.get(f"{url}/ping", timeout=5).status_code == 200,
        timeout=90,
        what="answer to GET /ping",
    )
    response = requests.post(f"{url}/invocations", json=body, timeout=60)
    assert response.status_code == 200, f"{response.status_code}: {response.text}\n" + server.logs()
    predictions = response.json()["predictions"]
    # Per row the probability and the decision at the champion's own threshold.
    assert len(predictions) == 2, predictions
    columns_served = {"probability", "prediction", "threshold", "unknown_categories"}
    assert all(set(row) == columns_served for row in predictions), predictions
    assert [row["unknown_categories"] for row in predictions] == [0, 0]

    # A carrier training never saw is scored and counted; a record with nothing is refused.
    unseen = rows.head(1).assign(carrier="ZZ")
    response = requests.post(f"{url}/invocations", json=split_body(unseen), timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["unknown_categories"] == 1
    nothing = rows.head(1).astype(object)
    nothing.loc[:, :] = None  # every feature null
    response = requests.post(f"{url}/invocations", json=split_body(nothing), timeout=60)
    assert response.status_code == 400, response.text
    assert "every feature missing" in response.json()["message"]

    server.stop()
    server.assert_stopped()

    # The served model is the champion: the same pipeline, loaded here, predicts the same.
    import mlflow.sklearn

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(data), registry_uri=tracking_uri(data))
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    pipeline = mlflow.sklearn.load_model(
        client.get_model_version_download_uri(MODEL_NAME, str(champion.version))
    )
    threshold = float(champion.tags["threshold"])
    proba = pipeline.predict_proba(rows)[:, 1]
    served = [row["probability"] for row in predictions]
    assert served == pytest.approx(proba.tolist(), abs=1e-9), f"{served} vs {proba} for {body}"
    assert [row["prediction"] for row in predictions] == (proba >= threshold).astype(int).tolist()
    assert [row["threshold"] for row in predictions] == [pytest.approx(threshold)] * 2
