import duckdb
import pandas as pd

from mlops_assets.lib.sql import fetch_frame


def test_text_comes_as_arrow_strings_and_other_types_as_duckdb_gives_them():
    with duckdb.connect() as con:
        frame = fetch_frame(
            con,
            "SELECT * FROM (VALUES ('a', 1, 1.5, DATE '2013-01-01'), (NULL, 2, NULL, NULL)) "
            "t(s, i, f, d) WHERE i >= ?",
            [1],
        )
        plain = con.execute("SELECT 1 AS i, 'x' AS s").fetchdf()
    assert frame["s"].dtype == pd.StringDtype("pyarrow")
    assert frame["s"].tolist()[0] == "a" and frame["s"].isna().tolist() == [False, True]
    assert frame["i"].dtype == "int32" and frame["f"].dtype == "float64"  # INTEGER, DOUBLE
    assert pd.api.types.is_datetime64_any_dtype(frame["d"])
    assert plain["s"].dtype == object  # what DuckDB itself gives, and fetch_frame changes
