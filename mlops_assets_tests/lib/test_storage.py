"""Slice replacement on a real DuckDB: atomic, by name, schema changes, history and restore."""

import datetime as dt

import duckdb
import pandas as pd
import pytest

from mlops_assets.lib.storage import SchemaChangeError, Slice, replace_slice, restore_day, versions
from mlops_assets.restore import main as restore_main

DAY_1, DAY_2, DAY_3 = (dt.datetime(2013, 3, d) for d in (1, 2, 3))


def day_slice(day: dt.datetime) -> Slice:
    return Slice("s", "t", "day", day, day + dt.timedelta(days=1))


def write(con, day, frame, retention_days=30):
    con.register("frame", frame)
    return replace_slice(con, day_slice(day), "frame", run_id="r", retention_days=retention_days)


def rows(con, table="s.t"):
    return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def frame(day, values, **extra):
    return pd.DataFrame({"day": [day] * len(values), "a": values, **extra})


@pytest.fixture
def con():
    with duckdb.connect() as con:
        write(con, DAY_1, frame(DAY_1, [1, 2], b=["x", "y"]))
        write(con, DAY_2, frame(DAY_2, [3], b=["z"]))
        yield con


def test_columns_are_matched_by_name_not_position(con):
    shuffled = frame(DAY_2, [30], b=["w"])[["b", "a", "day"]]
    write(con, DAY_2, shuffled)
    assert rows(con) == [(DAY_1, 1, "x"), (DAY_1, 2, "y"), (DAY_2, 30, "w")]


def test_a_new_column_is_added_and_a_dropped_one_kept(con):
    write(con, DAY_2, frame(DAY_2, [4], b=["q"], c=[1.5]))
    write(con, DAY_3, frame(DAY_3, [5]))  # no b, no c
    assert rows(con, "s.t") == [
        (DAY_1, 1, "x", None),
        (DAY_1, 2, "y", None),
        (DAY_2, 4, "q", 1.5),
        (DAY_3, 5, None, None),
    ]


def test_a_changed_type_is_refused_naming_the_column_and_nothing_changes(con):
    before = rows(con)
    with pytest.raises(SchemaChangeError, match=r"column type changed: a \(BIGINT stored, VARCHAR"):
        write(con, DAY_2, frame(DAY_2, ["text"], b=["z"]))
    with pytest.raises(SchemaChangeError, match=r"DROP TABLE s\.t"):
        write(con, DAY_2, frame(DAY_2, ["text"], b=["z"]))
    assert rows(con) == before


def test_a_failure_after_the_delete_rolls_the_whole_write_back(con):
    before = rows(con)
    # Fails only when its rows are read, i.e. on the insert, after the day's rows were deleted.
    con.execute(
        "CREATE TEMP VIEW failing AS SELECT TIMESTAMP '2013-03-01' AS day, "
        "error('disk full')::BIGINT AS a, 'x' AS b"
    )
    with pytest.raises(duckdb.Error, match="disk full"):
        replace_slice(con, day_slice(DAY_1), "failing", run_id="r", retention_days=0)
    assert rows(con) == before


def test_windows_are_written_as_one_replacement_and_a_failing_window_changes_nothing(con):
    two_days = Slice("s", "t", "day", DAY_1, DAY_3)

    def windows(fail: bool):
        yield frame(DAY_1, [10], b=["p"])
        if fail:
            raise RuntimeError("window 2 failed")
        yield frame(DAY_2, [20, 21], b=["q", "r"])

    before = rows(con)
    with pytest.raises(RuntimeError, match="window 2"):
        replace_slice(con, two_days, "staged", run_id="r", retention_days=30, chunks=windows(True))
    assert rows(con) == before
    result = replace_slice(
        con, two_days, "staged", run_id="r", retention_days=30, chunks=windows(False)
    )
    assert (result.inserted, result.deleted) == (3, 3)
    assert rows(con) == [(DAY_1, 10, "p"), (DAY_2, 20, "q"), (DAY_2, 21, "r")]
    tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
    assert sorted(tables) == [("s", "t"), ("s", "t_history")]  # the staging table is gone


def test_rows_outside_the_slice_are_refused(con):
    with pytest.raises(ValueError, match="1 new row"):
        write(con, DAY_2, frame(DAY_3, [9], b=["q"]))


def test_an_empty_frame_empties_the_slice_and_history_keeps_it(con):
    empty = pd.DataFrame({"day": pd.Series(dtype="datetime64[ns]"), "a": [], "b": []})
    result = write(con, DAY_1, empty.astype({"a": "int64", "b": "string"}))
    assert (result.deleted, result.archived, result.inserted) == (2, 2, 0)
    assert rows(con) == [(DAY_2, 3, "z")]
    restored = restore_day(con, "s", "t", DAY_1.date())
    assert restored.inserted == 2
    assert rows(con) == [(DAY_1, 1, "x"), (DAY_1, 2, "y"), (DAY_2, 3, "z")]


def test_an_empty_first_write_creates_the_table():
    with duckdb.connect() as con:
        write(con, DAY_1, pd.DataFrame({"day": pd.Series(dtype="datetime64[ns]"), "a": []}))
        assert rows(con) == []


def test_an_identical_rewrite_archives_nothing_and_a_change_archives_the_old_rows(con):
    assert write(con, DAY_1, frame(DAY_1, [1, 2], b=["x", "y"])).archived == 0
    assert write(con, DAY_1, frame(DAY_1, [7, 2], b=["x", "y"])).archived == 2
    history = con.execute("SELECT a, _replaced_by, _partition_column FROM s.t_history").fetchall()
    assert sorted(history) == [(1, "r", "day"), (2, "r", "day")]


def test_history_older_than_the_retention_is_deleted(con):
    write(con, DAY_1, frame(DAY_1, [7], b=["x"]))
    con.execute("UPDATE s.t_history SET _replaced_at = _replaced_at - INTERVAL 31 DAY")
    write(con, DAY_2, frame(DAY_2, [8], b=["x"]), retention_days=30)
    assert con.execute("SELECT a FROM s.t_history").fetchall() == [(3,)]


def test_a_restore_is_itself_kept_and_can_be_undone(con):
    write(con, DAY_1, frame(DAY_1, [7], b=["n"]))
    restore_day(con, "s", "t", DAY_1.date())
    assert rows(con)[:2] == [(DAY_1, 1, "x"), (DAY_1, 2, "y")]
    newest = versions(con, "s", "t", DAY_1.date())[0]
    assert newest.rows == 1 and newest.replaced_by.startswith("restore of")
    restore_day(con, "s", "t", DAY_1.date())
    assert rows(con)[:1] == [(DAY_1, 7, "n")]


def test_the_restore_command_puts_a_day_back(tmp_path, capsys):
    database = str(tmp_path / "w.duckdb")
    with duckdb.connect(database) as con:
        write(con, DAY_1, frame(DAY_1, [1, 2], b=["x", "y"]))
        write(con, DAY_1, frame(DAY_1, [5], b=["v"]))
    args = ["t", "2013-03-01", "--database", database, "--schema", "s"]
    assert restore_main([*args, "--list"]) == 0
    assert "2 rows" in capsys.readouterr().out
    assert restore_main(args) == 0
    assert restore_main(["t", "2013-03-09", "--database", database, "--schema", "s"]) == 1
    with duckdb.connect(database) as con:
        assert rows(con) == [(DAY_1, 1, "x"), (DAY_1, 2, "y")]
