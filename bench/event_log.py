"""The year's ingest -> validate -> features CLI run on Dagster's SQLite event log and on the
batching one (mlops_assets/event_log.py), side by side in one invocation.

    uv run python bench/event_log.py                  # 365 days, both storages
    uv run python bench/event_log.py --days 90        # a shorter range
    uv run python bench/event_log.py --profile        # and cProfile each run: top functions
    uv run python bench/event_log.py --variants batching   # the repository's event log only

Each variant is `dagster asset materialize -m mlops_assets --select 'group:ingestion or
group:validation or group:features' --partition-range 2013-01-01...<last day>` in a fresh temporary
DAGSTER_HOME and MLOPS_DATA_DIR, run twice (the first run also stages the source):
  dagster   Dagster's own SqliteEventLogStorage (no event_log_storage), DAGSTER_EVENT_BATCH_SIZE=0;
  batching  the repository's dagster.yaml (BatchingSqliteEventLogStorage), batch size 1000.
Both with DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=true, as the repository's event log
sets. Prints each run's wall time, the events it stored (from its run shard, by type), and the
time per stored event.
"""

import argparse
import datetime as dt
import os
import pstats
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SELECTION = "group:ingestion or group:validation or group:features"


def home_for(variant: str) -> Path:
    home = Path(tempfile.mkdtemp(prefix=f"mlops_events_{variant}_"))
    config = (ROOT / "dagster.yaml").read_text()
    if variant == "dagster":
        # The repository's event log replaced by Dagster's own, in the same directory.
        config = re.sub(r"^event_log_storage:.*?(?=^telemetry:)", "", config, flags=re.S | re.M)
        assert "mlops_assets.event_log" not in config
    (home / "dagster.yaml").write_text(config)
    return home


def run(home: Path, variant: str, last_day: str, profile: Path | None) -> float:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MLOPS_DATA_DIR": str(home / "data"),
        "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true",
        "DAGSTER_EVENT_BATCH_SIZE": "1000" if variant == "batching" else "0",
    }
    command = [PYTHON]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += ["-m", "dagster", "asset", "materialize", "-m", "mlops_assets"]
    command += ["--select", SELECTION, "--partition-range", f"2013-01-01...{last_day}"]
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=home, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def events_of_last_run(home: Path) -> Counter:
    shards = sorted(
        (p for p in (home / "history" / "runs").glob("*.db") if p.stem != "index"),
        key=lambda p: p.stat().st_mtime,
    )
    with sqlite3.connect(shards[-1]) as con:
        rows = con.execute("SELECT dagster_event_type, count(*) FROM event_logs GROUP BY 1")
        return Counter({kind or "log message": n for kind, n in rows})


def top_functions(profile: Path, n: int = 12) -> str:
    stats = pstats.Stats(str(profile))
    stats.sort_stats("cumulative")
    rows = []
    for (file, line, name), (_, calls, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "site-packages/dagster/" in file or "mlops_assets" in file or "sqlalchemy" in file:
            rows.append((cumulative, calls, f"{Path(file).name}:{line}({name})"))
    rows.sort(reverse=True)
    return "\n".join(f"    {c:7.2f} s {k:7d} calls  {f}" for c, k, f in rows[:n])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=365, help="days from 2013-01-01 (default 365)")
    parser.add_argument("--profile", action="store_true", help="cProfile the second run of each")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["dagster", "batching"],
        choices=["dagster", "batching"],
        help="which event logs to run (default both)",
    )
    args = parser.parse_args()
    last_day = (dt.date(2013, 1, 1) + dt.timedelta(days=args.days - 1)).isoformat()
    print(
        f"{args.days} days, 2013-01-01..{last_day}; nproc {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    results = {}
    for variant in args.variants:
        home = home_for(variant)
        profile = home / "run.prof" if args.profile else None
        first = run(home, variant, last_day, None)
        second = run(home, variant, last_day, profile)
        events = events_of_last_run(home)
        results[variant] = (first, second, events, profile)
        stored = sum(events.values())
        print(
            f"{variant:9} first run {first:6.1f} s, re-run {second:6.1f} s; {stored} events "
            f"stored per run ({', '.join(f'{k} {v}' for k, v in events.most_common(6))}); "
            f"{1000 * second / stored:.1f} ms of the re-run per event"
        )
        if profile is not None:
            print(top_functions(profile))
        if not args.profile:
            shutil.rmtree(home, ignore_errors=True)
    if len(results) == 2:
        (_, base, _, _), (_, batched, _, _) = results["dagster"], results["batching"]
        print(f"re-run: batching / dagster = {batched / base:.2f}")


if __name__ == "__main__":
    main()
