import datetime as dt

import pandas as pd
import pytest

from mlops_assets.lib.features import build_features, feature_columns
from mlops_assets.lib.sources import read_dates, stage_csv
from mlops_assets.lib.validation import validate_lookup, validate_records
from mlops_assets.partitions import dataset_spec as spec

JAN_1, JAN_2 = dt.date(2013, 1, 1), dt.date(2013, 1, 2)


@pytest.fixture
def raw_day(tmp_path, sample_csv) -> pd.DataFrame:
    staged = stage_csv(
        sample_csv,
        tmp_path,
        required_columns=list(spec.columns),
        null_values=spec.source.null_values,
        date_column=spec.date.column,
        date_expression=spec.date.expression,
    )
    return read_dates(staged, spec.date.column, JAN_1, JAN_2)


def test_clean_real_records_all_pass_with_declared_types(raw_day):
    result = validate_records(raw_day, spec, JAN_1, JAN_2)
    assert len(result.valid) == len(raw_day) and result.quarantined.empty
    dtypes = result.valid.dtypes
    assert str(dtypes["dep_delay"]) == "float64" and str(dtypes["flight"]) == "Int64"
    assert str(dtypes["carrier"]) == "string" and str(dtypes["time_hour"]).startswith("datetime64")


@pytest.mark.parametrize(
    ("column", "value", "check"),
    [
        ("dep_delay", "late", "type(float)"),
        ("sched_dep_time", "5.5", "type(int)"),
        ("dep_delay", "99999", "less_than_or_equal_to(1440"),
        ("origin", "BOS", "isin"),
        ("carrier", "united", "str_matches"),
        ("distance", None, "not_nullable"),
        ("time_hour", "yesterday", "type(timestamp)"),
    ],
)
def test_each_bad_value_is_quarantined_with_its_reason(raw_day, column, value, check):
    bad = raw_day.copy()
    bad.loc[3, column] = value
    result = validate_records(bad, spec, JAN_1, JAN_2)
    assert len(result.valid) == len(bad) - 1
    (row,) = result.quarantined.to_dict("records")
    assert row["failed_column"] == column
    assert check in row["failed_check"]
    assert row["flight"] == bad.loc[3, "flight"]  # the raw text is kept
    assert row["partition_date"] == pd.Timestamp(JAN_1)


def test_an_integer_column_can_have_an_allowed_set(raw_day):
    coded = spec.model_copy(deep=True)
    coded.columns["month"] = coded.columns["month"].model_copy(update={"isin": [1, 2, 3]})
    raw_day.loc[raw_day.index[:2], "month"] = "7"  # an integer outside the set
    result = validate_records(raw_day, coded, JAN_1, JAN_2)
    assert len(result.valid) == len(raw_day) - 2
    assert set(result.quarantined["failed_column"]) == {"month"}
    assert result.quarantined["failed_check"].str.startswith("isin").all()


def test_allowed_values_must_have_the_column_type():
    from mlops_assets.lib.spec import ColumnSpec

    assert ColumnSpec(type="int", isin=[1, 2]).isin == [1, 2]
    with pytest.raises(ValueError, match=r"isin values \['1'\] are not of the column's type int"):
        ColumnSpec(type="int", isin=["1"])


def test_all_failures_of_a_row_are_reported(raw_day):
    bad = raw_day.copy()
    bad.loc[0, ["dep_delay", "origin"]] = ["late", "BOS"]
    (row,) = validate_records(bad, spec, JAN_1, JAN_2).quarantined.to_dict("records")
    assert row["failed_column"] == "dep_delay; origin"
    assert row["failure_case"] == "late; BOS"


def test_duplicates_after_the_first_are_quarantined(raw_day):
    doubled = pd.concat([raw_day, raw_day.iloc[:4]], ignore_index=True)
    result = validate_records(doubled, spec, JAN_1, JAN_2)
    assert result.duplicate_keys == 4
    assert len(result.valid) == len(raw_day)
    assert set(result.quarantined["failed_check"]) == {"multiple_fields_uniqueness"}


def test_rows_dated_outside_the_partition_are_quarantined_into_it(raw_day):
    stray = raw_day.copy()
    stray.loc[1, spec.date.column] = pd.Timestamp("2013-02-01")
    result = validate_records(stray, spec, JAN_1, JAN_2)
    (row,) = result.quarantined.to_dict("records")
    assert row["failed_column"] == spec.date.column
    assert row["partition_date"] == pd.Timestamp(JAN_1)


def test_empty_input_gives_empty_typed_outputs(raw_day):
    result = validate_records(raw_day.iloc[0:0], spec, JAN_1, JAN_2)
    assert result.valid.empty and result.quarantined.empty
    assert result.quarantine_share == 0.0
    assert list(result.valid.columns) == [spec.date.column, *spec.columns]


def test_features_join_the_weather_at_the_scheduled_hour(raw_day):
    valid = validate_records(raw_day, spec, JAN_1, JAN_2).valid
    weather = pd.DataFrame(
        {
            "origin": ["EWR", "JFK", "LGA", "EWR"],
            "time_hour": valid["time_hour"].iloc[0].isoformat(),
            "temp": ["41.5", "40.0", "39.0", "not a number"],
            **{c: "1" for c in ["dewp", "humid", "wind_speed", "precip", "visib"]},
            "pressure": "1000",
        }
    ).astype("string")
    lookup, dropped = validate_lookup(
        weather, spec.lookups["weather"].columns, ["origin", "time_hour"]
    )
    assert dropped == 1  # the unparsable temperature
    features = build_features(valid, {"weather": lookup}, spec)[feature_columns(spec)]
    assert len(features) == len(valid)
    matched = features.merge(valid[["carrier", "flight", "sched_dep_time", "time_hour"]])
    at_hour = matched[matched["time_hour"] == valid["time_hour"].iloc[0]]
    assert at_hour["temp"].notna().all()
    assert matched.loc[matched["time_hour"] != valid["time_hour"].iloc[0], "temp"].isna().all()
    by_key = features.set_index(list(spec.key))["is_delayed"]
    delays = valid.set_index(list(spec.key))["dep_delay"]
    assert (by_key[delays > 15] == 1).all() and (by_key[delays <= 15] == 0).all()
    assert str(features["is_delayed"].dtype) == "Int64"
    assert features["day_of_week"].eq(2).all()  # 2013-01-01 was a Tuesday


def test_schema_mismatches_name_the_missing_and_mistyped_columns():
    import pandas as pd

    from mlops_assets.lib.quality import schema_mismatches

    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": pd.to_datetime(["2013-01-01"] * 2)})
    expected = {"a": "int", "b": "float", "c": "timestamp", "d": "string"}
    assert schema_mismatches(frame, expected) == [
        "missing column 'd'",
        "b: expected float, got object",
    ]
    assert schema_mismatches(frame, {"a": "int", "c": "timestamp"}) == []
