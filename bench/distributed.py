"""The 365-day ingest -> validate -> features range: plain script, default instance, distributed.

    uv run python bench/distributed.py [--per-run 92 183] [--days 365]

Side by side in one invocation, each on a fresh data directory (so staging the source is in
every figure):
- plain script: `bench/plain_lifecycle.py`'s data stage (the same library calls, no Dagster), in
  a subprocess, timed around the call (imports excluded);
- default instance: one CLI run as `make data` (SQLite instance with the batching event log,
  DuckDB file, in-process executor), timed around the command;
- distributed: `deploy/distributed.sh up` in a temporary directory on free ports (not timed),
  then the same days as one backfill through the daemon (runs of --per-run days, their steps on
  the two Celery workers, Delta warehouse, PostgreSQL instance with event batching), timed from
  the request to the end of its last run; also from the first run's start (the backfill daemon
  looks for new backfills every 30 s, and each run's process imports the code location). One
  backfill per --per-run value, the deployment restarted for each (the policy is read when the
  code location loads), each on an emptied warehouse and source cache.
Needs Debian's `postgresql` and `redis-server`.
"""

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SELECT = "group:ingestion or group:validation or group:features"
ASSETS = ["raw_records", "validated_records", "quarantined_records", "features"]
PLAIN = """
import datetime as dt, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import plain_lifecycle as plain
data, days = Path(sys.argv[2]), int(sys.argv[3])
start = plain.SPEC.date.start
began = time.perf_counter()
plain.build_data(data, plain.Warehouse(data / "warehouse.duckdb"), start,
                 start + dt.timedelta(days=days - 1))
print(time.perf_counter() - began)
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_"))}
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plain_script(days: int) -> float:
    data = Path(tempfile.mkdtemp(prefix="mlops_bench_"))
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-W",
                "ignore",
                "-c",
                PLAIN,
                str(ROOT / "bench"),
                str(data),
                str(days),
            ],
            env=clean_env(),
            check=True,
            capture_output=True,
            text=True,
        )
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(data, ignore_errors=True)


def default_instance(days: list[str]) -> float:
    home = Path(tempfile.mkdtemp(prefix="mlops_bench_"))
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = clean_env(
        DAGSTER_HOME=str(home),
        MLOPS_DATA_DIR=str(home / "data"),
        DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS="true",
        DAGSTER_EVENT_BATCH_SIZE="1000",
    )
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "mlops_assets"]
    command += ["--select", SELECT, "--partition-range", f"{days[0]}...{days[-1]}"]
    try:
        began = time.perf_counter()
        subprocess.run(command, env=env, cwd=home, check=True, capture_output=True)
        return time.perf_counter() - began
    finally:
        shutil.rmtree(home, ignore_errors=True)


def settings(path: Path) -> dict[str, str]:
    pairs = [line.removeprefix("export ").partition("=") for line in path.read_text().splitlines()]
    return {key: value.strip("'") for key, sep, value in pairs if sep and key[0] != "#"}


def backfill(stack: dict, instance, days: list[str], per_run: int) -> dict:
    """One backfill of `days` through the daemon, timed; figures from its run records."""
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    query = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(
        backfillParams: $p) { __typename ... on LaunchBackfillSuccess { backfillId } } }"""
    params = {"assetSelection": [{"path": [a]} for a in ASSETS], "partitionNames": days}
    body = json.dumps({"query": query, "variables": {"p": params}}).encode()
    url = f"http://127.0.0.1:{stack['MLOPS_DAGSTER_PORT']}/graphql"
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    requested = time.time()
    with urllib.request.urlopen(request, timeout=120) as response:
        backfill_id = json.load(response)["data"]["launchPartitionBackfill"]["backfillId"]
    expected = -(-len(days) // per_run)
    while True:
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
        if len(runs) == expected and all(r.is_finished for r in runs):
            break
        time.sleep(0.5)
    failed = [r.run_id for r in runs if r.status != DagsterRunStatus.SUCCESS]
    if failed:
        raise SystemExit(f"distributed runs failed: {failed}")
    records = instance.get_run_records(RunsFilter(run_ids=[r.run_id for r in runs]))
    run_starts = {r.dagster_run.run_id: r.start_time for r in records}
    steps: dict[str, int] = {}
    step_seconds, waits = 0.0, []
    for run in runs:
        started = {}
        for event in instance.all_logs(run.run_id):
            kind = event.dagster_event_type
            if kind == DagsterEventType.ENGINE_EVENT:
                metadata = event.dagster_event.engine_event_data.metadata
                if "Celery worker" in metadata:
                    name = metadata["Celery worker"].value.split("@")[0]
                    steps[name] = steps.get(name, 0) + 1
            elif kind == DagsterEventType.STEP_START:
                started[event.step_key] = event.timestamp
            elif kind == DagsterEventType.STEP_SUCCESS:
                step_seconds += event.timestamp - started[event.step_key]
        waits.append(min(started.values()) - run_starts[run.run_id])
    last_end = max(r.end_time for r in records)
    return {
        "total": last_end - requested,
        "runs_span": last_end - min(run_starts.values()),
        "runs": len(runs),
        "steps": steps,
        "step_seconds": step_seconds,
        "first_step_wait": sum(waits) / len(waits),
    }


def distributed(days: list[str], per_runs: list[int]) -> dict[int, dict]:
    """Start the deployment once, then one backfill per `per_runs` value, each on an emptied
    warehouse and source cache (so each stages the source and creates its tables)."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    directory = Path(tempfile.mkdtemp(prefix="mlops-distributed-"))
    directory.chmod(0o755)  # PostgreSQL runs as the postgres user when started by root
    env = clean_env(
        MLOPS_DISTRIBUTED_DIR=str(directory),
        MLOPS_PG_PASSWORD=secrets.token_hex(16),  # kept across the restarts
        **{f"MLOPS_{n}_PORT": str(free_port()) for n in ("PG", "REDIS", "MLFLOW", "DAGSTER")},
    )
    script = ROOT / "deploy" / "distributed.sh"
    figures = {}
    try:
        for per_run in per_runs:
            # The policy is read when the code location loads: a restart per setting.
            (directory / "env.sh").unlink(missing_ok=True)
            env["MLOPS_BACKFILL_PARTITIONS_PER_RUN"] = str(per_run)
            with (directory / "script.log").open("a") as out:  # a file: no server holds a pipe
                subprocess.run([script, "down"], env=env, stdout=out, stderr=out)
                subprocess.run([script, "up"], env=env, check=True, stdout=out, stderr=out)
            stack = settings(directory / "env.sh")
            for folder in (stack["MLOPS_WAREHOUSE_ROOT"], f"{stack['MLOPS_DATA_DIR']}/sources"):
                shutil.rmtree(folder, ignore_errors=True)
            os.environ.update(stack)
            instance = DagsterInstance.from_ref(InstanceRef.from_dir(stack["DAGSTER_HOME"]))
            figures[per_run] = backfill(stack, instance, days, per_run)
        return figures
    finally:
        subprocess.run(
            [script, "down"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--per-run", type=int, nargs="+", default=[92, 183], help="days per run, one backfill each"
    )
    parser.add_argument("--days", type=int, default=365, help="days from 2013-01-01 (default 365)")
    args = parser.parse_args()
    days = [str(dt.date(2013, 1, 1) + dt.timedelta(d)) for d in range(args.days)]
    print(f"{os.cpu_count()} cores; {args.days} days raw -> validated -> features", flush=True)

    def load() -> str:
        return f"(load average {os.getloadavg()[0]:.1f})"

    # The local figures before and after the distributed ones: on a shared machine the load moves.
    plain = plain_script(args.days)
    local = default_instance(days)
    print(f"  plain script, data stage        {plain:6.1f} s {load()}", flush=True)
    print(f"  default instance, one CLI run   {local:6.1f} s  {local / plain:.1f}x plain {load()}")
    for per_run, f in distributed(days, args.per_run).items():
        print(
            f"  distributed, {f['runs']} runs of <= {per_run} days: request to last run's end "
            f"{f['total']:.1f} s ({f['total'] / plain:.1f}x plain; target <= 2x), first run's "
            f"start to last end {f['runs_span']:.1f} s ({f['runs_span'] / plain:.1f}x) {load()}\n"
            f"      steps per worker {f['steps']}, {f['step_seconds']:.1f} s inside steps in all;"
            f" a run's first step {f['first_step_wait']:.1f} s after the run's start"
        )
    plain = plain_script(args.days)
    local = default_instance(days)
    print(f"  plain script, data stage, again        {plain:6.1f} s {load()}")
    print(f"  default instance, one CLI run, again   {local:6.1f} s  {local / plain:.1f}x plain")


if __name__ == "__main__":
    main()
