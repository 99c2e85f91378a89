"""Get the Dagster instance of $DAGSTER_HOME ready for CLI runs: `python -m mlops_assets.instance`.

The `make` targets run it before any Dagster command. It
1. creates the instance's storage once, under a file lock: several first runs started together
   on a fresh instance otherwise race to create the SQLite schema (and some fail);
2. marks as failed every run whose process died without saying so (kill -9, out of memory) and
   frees its `duckdb` pool slot: such a run stays STARTED forever, and its slot blocks every later
   run. (Run monitoring in dagster.yaml does the same for runs the daemon launched, under
   `dagster dev`; a CLI run has no daemon watching it.)
"""

from __future__ import annotations

import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def _locked(home: Path):
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".instance.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepare() -> list[str]:
    """Create the storage of $DAGSTER_HOME's instance if new; fail dead runs. Their ids."""
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit("DAGSTER_HOME is not set: it names the instance to prepare")
    home = Path(os.environ["DAGSTER_HOME"])
    with _locked(home), dg.DagsterInstance.get() as instance:
        return fail_dead_runs(instance)


def fail_dead_runs(instance) -> list[str]:
    """Mark failed the unfinished runs of this host whose process is gone; free their slots."""
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    unfinished = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    failed = []
    for run in instance.get_runs(filters=RunsFilter(statuses=unfinished)):
        starts = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_START)
        pids = {e.dagster_event.pid for e in starts if e.dagster_event.pid is not None}
        if not pids or any(_alive(pid) for pid in pids):
            continue  # not started yet, or still running
        instance.report_run_failed(
            run, f"the process of this run (pid {sorted(pids)}) died without finishing it"
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    # A zombie has exited: only its parent has not collected it yet.
    return not (stat.exists() and stat.read_text().rpartition(")")[2].split()[0] == "Z")


def main() -> int:
    failed = prepare()
    for run_id in failed:
        print(f"run {run_id}: its process died; marked failed, its pool slots freed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
