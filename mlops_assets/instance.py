"""Get the Dagster instance of $DAGSTER_HOME ready for CLI runs: `python -m mlops_assets.instance`.

The `make` targets run it before any Dagster command, with DAGSTER_HOME=$MLOPS_DATA_DIR/dagster
(one instance per data directory). It
1. puts the repository's dagster.yaml in $DAGSTER_HOME (see `install_config`);
2. creates the instance's storage once, under a file lock: several first runs started together
   on a fresh instance otherwise race to create the SQLite schema (and some fail);
3. marks as failed every run whose process died without saying so (kill -9, out of memory) and
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

CONFIG = Path(__file__).resolve().parent.parent / "dagster.yaml"
"""The instance settings every data directory's instance is made from."""
COPY_HEADER = "# A copy, refreshed by `python -m mlops_assets.instance`: edit the original"


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
    home = Path(os.environ["DAGSTER_HOME"]).expanduser()
    with _locked(home):
        install_config(home)
        with dg.DagsterInstance.get() as instance:
            return fail_dead_runs(instance)


def install_config(home: Path, source: Path = CONFIG) -> None:
    """Write the settings of `source` (the repository's dagster.yaml) as `home`/dagster.yaml.

    A missing file is written and an outdated copy refreshed, so that a change to the
    repository's settings reaches every data directory's instance; a dagster.yaml without the
    copy's first line is the user's own (e.g. storage in Postgres) and is left as it is.
    """
    target = home / "dagster.yaml"
    if target.exists() and target.resolve() == source.resolve():
        return  # DAGSTER_HOME is the repository itself
    wanted = instance_settings(home, source)
    if target.exists():
        current = target.read_text()
        if current == wanted or not current.startswith(COPY_HEADER):
            return
    home.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".dagster.yaml.{os.getpid()}")
    partial.write_text(wanted)
    os.replace(partial, target)  # atomic: a process reading the settings never sees half a file


def instance_settings(home: Path, source: Path = CONFIG) -> str:
    """The text of `home`'s dagster.yaml: `source`'s settings, with the event log's directory.

    Without a `base_dir` the batching event log follows $DAGSTER_HOME; written out, it stays in
    `home` whichever process opens the instance, even one reading it by its directory.
    """
    import yaml

    settings = yaml.safe_load(source.read_text())
    events = settings.get("event_log_storage") or {}
    if events.get("module") == "mlops_assets.event_log" and not events.get("config"):
        from dagster._core.instance.ref import _event_logs_directory

        events["config"] = {"base_dir": _event_logs_directory(str(home.resolve()))}
    return f"{COPY_HEADER}\n# of {source}, whose comments explain each setting\n" + yaml.safe_dump(
        settings, sort_keys=False
    )


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
