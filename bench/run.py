"""Benchmarks that print figures, measured side by side in one run (the machine is noisy).

    uv run python bench/run.py                 # everything below
    uv run python bench/run.py import backfill # some of: import, backfill, partition, training

Every benchmark works in a fresh temporary instance and data directory; nothing in data/ is used.
"""

import argparse
import os
import resource
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
    env = {**os.environ, "DAGSTER_HOME": str(home), "MLOPS_DATA_DIR": str(home / "data")}
    return home, env


def dagster(*args: str) -> list[str]:
    return [PYTHON, "-m", "dagster", *args]


def bench_import() -> None:
    rounds = {"import dagster": [], "import mlops_assets": []}
    for _ in range(5):  # interleaved, so both see the same load
        for statement in rounds:
            rounds[statement].append(timed([PYTHON, "-W", "ignore", "-c", statement]))
    best = {k: min(v) for k, v in rounds.items()}
    print(
        f"import: dagster {best['import dagster']:.2f} s, mlops_assets "
        f"{best['import mlops_assets']:.2f} s (best of 5); "
        f"ratio {best['import mlops_assets'] / best['import dagster']:.2f} (target <= 1.3)"
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


def bench_backfill() -> Path:
    home, env = workspace()
    cold = backfill_year(home, env)
    warm = backfill_year(home, env)
    print(
        f"backfill: 365 days raw -> validated -> features, one CLI run: {cold:.1f} s on a fresh "
        f"data dir (includes staging the source), {warm:.1f} s re-run (target < 30 s)"
    )
    return home


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


PLAIN_TRAINING = textwrap.dedent("""
    import os, duckdb
    from mlops_assets.lib import modeling
    from mlops_assets.lib.spec import load_spec
    from mlops_assets.lib.sources import to_pandas
    spec = load_spec()
    con = duckdb.connect(os.environ["MLOPS_DATA_DIR"] + "/warehouse.duckdb", read_only=True)
    frame = to_pandas(con.sql(
        "SELECT * FROM flights.features WHERE flight_date >= DATE '2013-01-01' "
        "AND flight_date < DATE '2013-07-01' AND is_delayed IS NOT NULL"))
    train, validation, test = modeling.time_split(frame, "flight_date", 0.15, 0.15)
    args = dict(estimator="hist_gradient_boosting", categorical=spec.categorical_features,
                numeric=spec.numeric_features, label="is_delayed")
    search = modeling.search_hyperparameters(train, date_column="flight_date", params={},
                                             method="random", n_trials=4, n_splits=3,
                                             metric="roc_auc", seed=0, **args)
    pipeline = modeling.fit_final(train, params=search.best_params, seed=0, **args)
    X, y = modeling.features_and_label(validation, spec.categorical_features,
                                       spec.numeric_features, "is_delayed")
    pipeline.predict_proba(X)
""")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def bench_training(home: Path | None) -> None:
    if home is None:
        home = bench_backfill()
    env = {**os.environ, "DAGSTER_HOME": str(home), "MLOPS_DATA_DIR": str(home / "data")}
    plain = timed([PYTHON, "-W", "ignore", "-c", PLAIN_TRAINING], env=env)
    plain_rss = peak_rss_mb()
    orchestrated = timed(
        dagster("asset", "materialize", "-m", "mlops_assets", "--select", "training_set,model"),
        env=env,
        cwd=home,
    )
    rss = peak_rss_mb()
    print(
        f"training: plain script {plain:.1f} s, Dagster training_set + model (MLflow tracking, "
        f"registration) {orchestrated:.1f} s; ratio {orchestrated / plain:.2f} (target <= 1.5); "
        f"peak RSS of any child {max(rss, plain_rss):.0f} MB (target < 4096)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    choices = ["import", "backfill", "partition", "training"]
    parser.add_argument("benchmarks", nargs="*", help=f"some of {choices}; default: all")
    chosen = parser.parse_args().benchmarks or choices
    if unknown := set(chosen) - set(choices):
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {choices}")
    home = None
    for name in chosen:
        if name == "import":
            bench_import()
        elif name == "backfill":
            home = bench_backfill()
        elif name == "partition":
            bench_partition()
        elif name == "training":
            bench_training(home)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
