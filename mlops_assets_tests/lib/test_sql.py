import duckdb
import pandas as pd

from mlops_assets.lib.sql import fetch_frame

COLUMNS = {
    "text": ("'a'", "VARCHAR"),
    "big": ("1", "BIGINT"),
    "int": ("2", "INTEGER"),
    "small": ("5", "UTINYINT"),
    "real": ("1.5", "DOUBLE"),
    "money": ("1.25", "DECIMAL(10, 2)"),
    "flag": ("true", "BOOLEAN"),
    "day": ("'2013-01-01'", "DATE"),
    "stamp": ("'2013-01-01 10:00'", "TIMESTAMP"),
    "stamp_ms": ("'2013-01-01 10:00'", "TIMESTAMP_MS"),
    "stamp_utc": ("'2013-01-01 10:00+00'", "TIMESTAMPTZ"),
}


def test_text_comes_as_arrow_strings_and_every_other_type_as_fetchdf_gives_it():
    with duckdb.connect() as con:
        con.execute(
            "CREATE TABLE t AS SELECT "
            + ", ".join(f"{value}::{kind} AS {name}" for name, (value, kind) in COLUMNS.items())
        )
        # A second row with NULLs in half the columns: NULLs make fetchdf's ints nullable.
        nullable = list(COLUMNS)[::2]
        nulls = ", ".join(f"NULL AS {c}" for c in nullable)
        con.execute(f"INSERT INTO t BY NAME SELECT * REPLACE ({nulls}) FROM t")
        expected = con.execute("SELECT * FROM t").fetchdf()
        frame = fetch_frame(con, "SELECT * FROM t WHERE small >= ?", [0])
    assert frame["text"].dtype == pd.StringDtype("pyarrow")
    assert frame["text"].tolist()[0] == "a" and frame["text"].isna().tolist() == [False, True]
    assert expected["text"].dtype == object  # what DuckDB gives, and fetch_frame changes
    others = [c for c in COLUMNS if c != "text"]
    pd.testing.assert_frame_equal(frame[others], expected[others])
    assert str(frame["int"].dtype) == "Int32" and str(frame["big"].dtype) == "int64"
