"""The distributed warehouse's Delta tables: a slice replaced in one commit with the checks of the
DuckDB warehouse, concurrent writers of other days all landing, and SQL sessions serialized."""

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from mlops_assets.lib import delta
from mlops_assets.lib.storage import SchemaChangeError, Slice

DAY = dt.datetime(2013, 1, 1)


def day_slice(day: int, name: str = "t") -> Slice:
    start = DAY + dt.timedelta(days=day)
    return Slice("s", name, "d", start, start + dt.timedelta(days=1))


def rows(day: int, n: int, **columns) -> pd.DataFrame:
    frame = pd.DataFrame({"d": [DAY + dt.timedelta(days=day)] * n, "x": range(n)})
    return frame.assign(**columns)


def write(root: Path, frame: pd.DataFrame, target: Slice):
    with duckdb.connect() as con:
        con.register("new_rows", frame)
        return delta.replace_slice(
            con, delta.table_uri(str(root), "s", target.name), target, "new_rows", run_id="r"
        )


def stored(root: Path, name: str = "t") -> pd.DataFrame:
    with duckdb.connect() as con:
        uri = delta.table_uri(str(root), "s", name)
        frame = delta.read_slice(con, uri, Slice("s", name))
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def counts(root: Path, name: str = "t") -> dict:
    frame = stored(root, name)
    return {d.day: n for d, n in frame.groupby("d").size().items()}


def test_a_day_is_replaced_and_the_other_days_stay(tmp_path):
    write(tmp_path, rows(0, 3), day_slice(0))
    write(tmp_path, rows(1, 4), day_slice(1))
    result, version = write(tmp_path, rows(1, 2), day_slice(1))
    assert counts(tmp_path) == {1: 3, 2: 2}
    assert (result.inserted, result.deleted, version) == (2, 4, 2)
    result, _ = write(tmp_path, rows(1, 2), day_slice(1))  # a rerun: the same rows, once
    assert counts(tmp_path) == {1: 3, 2: 2} and result.deleted == 2
    # The replaced rows stay in the earlier version (time travel).
    earlier = delta.open_table(str(tmp_path / "s" / "t"))
    earlier.load_as_version(1)
    assert earlier.to_pyarrow_table().num_rows == 7


def test_columns_by_name_a_new_column_added_a_missing_one_null(tmp_path):
    write(tmp_path, rows(0, 2, y="a"), day_slice(0))
    write(tmp_path, rows(1, 2, z=1.5)[["z", "x", "d"]], day_slice(1))  # another order, no y
    frame = stored(tmp_path)
    assert list(frame.columns) == ["d", "x", "y", "z"]
    assert frame["y"].tolist()[:2] == ["a", "a"]
    assert frame["y"].isna().tolist() == [False, False, True, True]
    assert frame["z"].isna().tolist() == [True, True, False, False]
    assert frame["x"].tolist() == [0, 1, 0, 1]


def test_bad_rows_are_refused_and_nothing_changes(tmp_path):
    write(tmp_path, rows(0, 2), day_slice(0))
    with pytest.raises(SchemaChangeError, match=r"column type changed: x \(BIGINT stored"):
        write(tmp_path, rows(1, 2).assign(x=["p", "q"]), day_slice(1))
    with pytest.raises(ValueError, match="2 new row"):
        write(tmp_path, rows(3, 2), day_slice(1))
    with pytest.raises(SchemaChangeError, match="lack the partition column"):
        write(tmp_path, rows(1, 2).drop(columns="d"), day_slice(1))
    assert counts(tmp_path) == {1: 2}
    assert delta.open_table(str(tmp_path / "s" / "t")).version() == 0


def test_an_empty_frame_empties_its_day_and_a_whole_table_write_replaces_all(tmp_path):
    write(tmp_path, rows(0, 2), day_slice(0))
    write(tmp_path, rows(1, 2), day_slice(1))
    write(tmp_path, rows(1, 2).iloc[:0], day_slice(1))
    assert counts(tmp_path) == {1: 2}
    write(tmp_path, rows(1, 2), day_slice(1))
    # No rows and untyped columns (what the IO manager writes for a frame without columns).
    write(tmp_path, pd.DataFrame({"d": pd.Series(dtype=object), "x": []}), day_slice(1))
    assert counts(tmp_path) == {1: 2}
    write(tmp_path, rows(5, 1), Slice("s", "t"))
    assert counts(tmp_path) == {6: 1}


def test_a_replaced_day_is_restored_from_the_earlier_version_and_the_restore_undone(tmp_path):
    from mlops_assets.restore import main as restore

    write(tmp_path, rows(0, 3), day_slice(0))
    write(tmp_path, rows(1, 4), day_slice(1))
    two_days = Slice("s", "t", "d", DAY, DAY + dt.timedelta(days=2))  # a range run's write
    write(tmp_path, pd.concat([rows(0, 1, x=9), rows(1, 2, x=8)]), two_days)
    args = ["t", "2013-01-02", "--warehouse-root", str(tmp_path), "--schema", "s"]
    with duckdb.connect() as con:
        kept = delta.versions(con, str(tmp_path / "s" / "t"), DAY.date() + dt.timedelta(days=1))
    assert [(v.rows, v.replaced_by, v.table_version) for v in kept] == [(4, "r", 1)]

    assert restore(args) == 0
    frame = stored(tmp_path)
    assert frame.groupby("d")["x"].apply(list).tolist() == [[9], [0, 1, 2, 3]]  # day 1 untouched
    assert restore(args) == 0  # the restore is a version too: undo it
    assert counts(tmp_path) == {1: 1, 2: 2}
    assert restore([*args[:1], "2013-01-05", *args[2:]]) == 1  # nothing kept for that day


WRITER = """
import sys, time, duckdb, pandas as pd
from pathlib import Path
from mlops_assets.lib import delta
from mlops_assets.lib.storage import Slice
import datetime as dt
root, go, *days = sys.argv[1:]
with duckdb.connect() as con:  # start-up (delta-rs's first commit in a process) before the signal
    con.register("warm", pd.DataFrame({"a": [1]}))
    warm = str(Path(root) / "warm" / go[-2:])
    delta.replace_slice(con, warm, Slice("w", "w"), "warm", run_id="w")
Path(go + ".ready").touch()
while not Path(go).exists():
    time.sleep(0.005)
for day in days:
    start = dt.datetime(2013, 1, 1) + dt.timedelta(days=int(day))
    frame = pd.DataFrame({"d": [start] * 50, "x": range(50), "w": [go[-6:]] * 50})
    with duckdb.connect() as con:
        con.register("new_rows", frame)
        target = Slice("s", "t", "d", start, start + dt.timedelta(days=1))
        delta.replace_slice(con, str(Path(root) / "s" / "t"), target, "new_rows", run_id=go)
"""


def run_writers(root: Path, days_per_writer: list[list[int]]) -> None:
    """One process per list of days, all released at the same moment."""
    go = root / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), f"{go}-{i:02d}", *map(str, days)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i, days in enumerate(days_per_writer)
    ]
    signals = [Path(f"{go}-{i:02d}") for i in range(len(processes))]
    while not all(Path(f"{signal}.ready").exists() for signal in signals):  # warmed up
        assert all(p.poll() is None for p in processes), processes[0].communicate()[0][-3000:]
        time.sleep(0.05)
    for signal in signals:
        signal.touch()
    for process in processes:
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 0, output[-3000:]


def test_concurrent_writers_of_other_days_all_land_and_of_one_day_leave_one_copy(tmp_path):
    # Day 3 is written by two processes at once, one of them three times in a row.
    run_writers(tmp_path, [[0, 2, 4, 6], [1, 3, 5, 7], [3, 3, 3, 8]])
    assert counts(tmp_path) == {day: 50 for day in range(1, 10)}
    assert stored(tmp_path).query("d == @dt.datetime(2013, 1, 4)")["w"].nunique() == 1


def test_a_session_stores_sql_tables_and_keeps_io_manager_tables_read_only(tmp_path):
    root = str(tmp_path)
    write(tmp_path, rows(0, 2), day_slice(0))
    with delta.session(root) as con:
        assert con.execute("SELECT count(*) FROM s.t").fetchall() == [(2,)]
        with pytest.raises(duckdb.Error):
            con.execute("DELETE FROM s.t")
        con.execute("CREATE TABLE s.audit AS SELECT 1 AS n, 'first' AS note")
        con.execute("CREATE TABLE scratch AS SELECT 1 AS n")  # schema main: not stored
    with delta.session(root) as con:
        con.execute("INSERT INTO s.audit VALUES (2, 'second')")
        con.execute("DELETE FROM s.audit WHERE n = 1")
    with pytest.raises(RuntimeError), delta.session(root) as con:
        con.execute("INSERT INTO s.audit VALUES (3, 'lost')")
        raise RuntimeError("the block fails: nothing is stored")
    with delta.session(root) as con:
        assert con.execute("FROM s.audit").fetchall() == [(2, "second")]
        assert con.execute("SELECT count(*) FROM s.t").fetchall() == [(2,)]
    assert sorted(delta.tables(root)) == [("s", "audit"), ("s", "t")]


COUNTER = """
import sys
from mlops_assets.lib import delta
root = sys.argv[1]
for _ in range(8):
    with delta.session(root) as con:  # read, then write what was read plus one
        con.execute("INSERT INTO s.counter SELECT max(n) + 1 FROM s.counter")
"""


def test_sessions_of_several_processes_are_serialized(tmp_path):
    """Read-modify-write from three processes: without the lock two would read the same maximum
    and store the same number twice."""
    root = str(tmp_path)
    with delta.session(root) as con:
        con.execute("CREATE SCHEMA s; CREATE TABLE s.counter AS SELECT 0 AS n")
    processes = [
        subprocess.Popen([sys.executable, "-c", COUNTER, root], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for process in processes:
        _, error = process.communicate(timeout=180)
        assert process.returncode == 0, error[-3000:]
    with delta.session(root) as con:
        assert [n for (n,) in con.execute("FROM s.counter ORDER BY n").fetchall()] == list(
            range(25)
        )
