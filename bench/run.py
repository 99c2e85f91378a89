"""Benchmarks that print figures, measured side by side in one run (the machine is noisy).

    uv run python bench/run.py                 # everything below
    uv run python bench/run.py import backfill # some of: import, backfill, partition

Every benchmark works in a fresh temporary instance and data directory; nothing in data/ is used.
Its processes load bytecode, as on a user's machine, even where PYTHONDONTWRITEBYTECODE is set.
Training against a plain script is in bench/lifecycle.py's table of stages: there the plain side
(bench/plain_lifecycle.py) makes the same library calls as the training job (search, calibration,
threshold, evaluation, registration), where a bare fit here compared unequal work.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def timed(command: list[str], env: dict | None = None, cwd: Path = ROOT) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def workspace() -> tuple[Path, dict]:
    """A temporary DAGSTER_HOME (with the project's dagster.yaml) and MLOPS_DATA_DIR."""
    home = Path(tempfile.mkdtemp(prefix="mlops_bench_"))
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**user_env(), "DAGSTER_HOME": str(home), "MLOPS_DATA_DIR": str(home / "data")}
    return home, env


def user_env() -> dict:
    """This environment as a user's: Python loads bytecode. The install compiles the
    dependencies'; Python caches the project's own at its first import, unless
    PYTHONDONTWRITEBYTECODE is set, when every process would compile the project's source."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def dagster(*args: str) -> list[str]:
    return [PYTHON, "-m", "dagster", *args]


def bench_import() -> None:
    # The code location is built on first access of `defs`, not by importing the package.
    dagster, location = "import dagster", "from mlops_assets import defs"
    env = user_env()
    timed([PYTHON, "-W", "ignore", "-c", location], env=env)  # writes the project's bytecode
    rounds = {dagster: [], location: []}
    for _ in range(5):  # interleaved, so both see the same load
        for statement in rounds:
            rounds[statement].append(timed([PYTHON, "-W", "ignore", "-c", statement], env=env))
    best = {k: min(v) for k, v in rounds.items()}
    print(
        f"import: dagster {best[dagster]:.2f} s, the code location {best[location]:.2f} s "
        f"(best of 5); ratio {best[location] / best[dagster]:.2f} (target <= 1.3)"
    )


def backfill_year(home: Path, env: dict) -> float:
    return timed(
        dagster(
            "asset",
            "materialize",
            "-m",
            "mlops_assets",
            "--select",
            "group:ingestion or group:validation or group:features",
            "--partition-range",
            "2013-01-01...2013-12-31",
        ),
        env=env,
        cwd=home,
    )


def bench_backfill() -> None:
    home, env = workspace()
    cold = backfill_year(home, env)
    warm = backfill_year(home, env)
    print(
        f"backfill: 365 days raw -> validated -> features, one CLI run: {cold:.1f} s on a fresh "
        f"data dir (includes staging the source), {warm:.1f} s re-run (target < 15 s)"
    )
    shutil.rmtree(home, ignore_errors=True)


PARTITION_SCRIPT = textwrap.dedent("""
    import statistics, sys, time, warnings
    import dagster as dg
    warnings.filterwarnings("ignore")
    from mlops_assets import features, ingestion, validation
    from mlops_assets.definitions import defs
    assets = [ingestion.raw_records, validation.validate_records, features.features]
    def run(**kwargs):
        start = time.perf_counter()
        assert dg.materialize(assets, resources=defs.resources, instance=instance, **kwargs).success
        return time.perf_counter() - start
    def one_day():
        return statistics.median(run(partition_key="2013-01-05") for _ in range(3))
    def stored(last):
        run(tags={"dagster/asset_partition_range_start": "2013-01-01",
                  "dagster/asset_partition_range_end": last})
    with dg.instance_for_test() as instance:
        stored("2013-01-10")
        ten = one_day()
        stored("2013-10-27")
        three_hundred = one_day()
    print(f"{ten} {three_hundred}")
""")


def bench_partition() -> None:
    home, env = workspace()
    out = subprocess.run(
        [PYTHON, "-c", PARTITION_SCRIPT],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    ten, three_hundred = map(float, out[-2:])
    print(
        f"partition: one day with 10 days stored {ten:.2f} s, with 300 stored "
        f"{three_hundred:.2f} s (median of 3); ratio {three_hundred / ten:.2f} (target <= 1.2)"
    )
    shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    benchmarks = {"import": bench_import, "backfill": bench_backfill, "partition": bench_partition}
    choices = list(benchmarks)
    parser.add_argument("benchmarks", nargs="*", help=f"some of {choices}; default: all")
    chosen = parser.parse_args().benchmarks or choices
    if unknown := set(chosen) - set(choices):
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {choices}")
    for name in chosen:
        benchmarks[name]()


if __name__ == "__main__":
    main()
