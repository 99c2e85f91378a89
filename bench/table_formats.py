"""Concurrent one-day overwrites: Delta (delta-rs) vs Iceberg (pyiceberg, SQL catalog).

    uv run --with "pyiceberg[pyarrow,sql-sqlite]<0.12" python bench/table_formats.py

20 days of 1,000 rows written by 4 processes at once, each write replacing exactly its day
(Delta: `predicate`; Iceberg: `overwrite_filter`), retried whole when a commit loses the race.
Prints the wall time, the retries and whether every day is there exactly once. Each process
first makes one write of its own (delta-rs's first write in a process costs seconds of one-time
start-up, paid once per Celery worker, not per step): the figures compare commits, not start-up.
"""

import datetime as dt
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

DAYS = [dt.date(2013, 1, 1) + dt.timedelta(d) for d in range(20)]
ROWS = 1_000
WORKERS = 4


def frame(day: dt.date):
    import pyarrow as pa

    start = dt.datetime.combine(day, dt.time())
    schema = pa.schema([("d", pa.timestamp("us")), ("x", pa.int64()), ("s", pa.string())])
    return pa.table({"d": [start] * ROWS, "x": list(range(ROWS)), "s": ["a"] * ROWS}, schema)


def delta_write(args) -> int:
    root, day = args
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import CommitFailedError

    for retries in range(50):
        try:
            DeltaTable.create(root, schema=frame(day).schema, mode="ignore")
            end = day + dt.timedelta(1)
            write_deltalake(
                root, frame(day), mode="overwrite", predicate=f"d >= '{day}' AND d < '{end}'"
            )
            return retries
        except CommitFailedError:
            time.sleep(0.05)
    raise RuntimeError("50 failed commits")


def iceberg_catalog(root: str):
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog("bench", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}")


def iceberg_write(args) -> int:
    root, day = args
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    start, end = (
        dt.datetime.combine(day, dt.time()),
        dt.datetime.combine(day, dt.time()) + dt.timedelta(1),
    )
    for retries in range(200):
        try:
            table = iceberg_catalog(root).load_table("bench.t")
            table.overwrite(
                frame(day),
                overwrite_filter=And(
                    GreaterThanOrEqual("d", start.isoformat()), LessThan("d", end.isoformat())
                ),
            )
            return retries
        except CommitFailedException:
            time.sleep(0.05)
    raise RuntimeError("200 failed commits")


def warm(name: str) -> None:
    """One write to a scratch table of the process's own: library start-up, outside the timing."""
    import pyarrow as pa

    scratch = tempfile.mkdtemp(prefix="mlops_warm_")
    if name == "delta":
        from deltalake import write_deltalake

        write_deltalake(scratch, pa.table({"x": [1]}), mode="append")
    else:
        catalog = iceberg_catalog(scratch)
        catalog.create_namespace("warm")
        catalog.create_table("warm.t", schema=pa.schema([("x", pa.int64())])).append(
            pa.table({"x": [1]})
        )
    shutil.rmtree(scratch, ignore_errors=True)


def measure(name: str, write, root: str, read) -> None:
    with ProcessPoolExecutor(WORKERS, initializer=warm, initargs=(name,)) as pool:
        list(pool.map(time.sleep, [0.5] * WORKERS))  # every process started and warmed
        start = time.perf_counter()
        retries = sum(pool.map(write, [(root, day) for day in DAYS]))
        elapsed = time.perf_counter() - start
    days = read(root)
    intact = sorted(days) == DAYS and set(days.values()) == {ROWS}
    print(
        f"{name:8s} {len(DAYS)} one-day overwrites from {WORKERS} processes: {elapsed:5.1f} s, "
        f"{retries} whole-write retries, every day once: {intact}"
    )


def delta_days(root: str) -> dict:
    import duckdb
    from deltalake import DeltaTable

    files = DeltaTable(root).file_uris()
    query = f"SELECT CAST(d AS DATE), count(*) FROM read_parquet({files!r}) GROUP BY 1"
    return dict(duckdb.sql(query).fetchall())


def iceberg_days(root: str) -> dict:
    table = iceberg_catalog(root).load_table("bench.t").scan().to_arrow()
    days: dict = {}
    for value in table.column("d").to_pylist():
        days[value.date()] = days.get(value.date(), 0) + 1
    return days


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="mlops_formats_"))
    try:
        measure("delta", delta_write, str(scratch / "delta"), delta_days)
        try:
            catalog = iceberg_catalog(str(scratch))
        except ImportError:
            print('iceberg  skipped: run with --with "pyiceberg[pyarrow,sql-sqlite]<0.12"')
            return
        catalog.create_namespace("bench")
        catalog.create_table("bench.t", schema=frame(DAYS[0]).schema)
        measure("iceberg", iceberg_write, str(scratch), iceberg_days)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
