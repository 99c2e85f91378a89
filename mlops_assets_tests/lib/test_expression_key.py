"""Expression keys: a record identified by SQL over its source columns, as the date is derived.

On the air readings of `air_dataset.py`: a reading is its station and a timestamp built from two
text columns. The end-to-end run is in test_second_dataset.py.
"""

import datetime as dt

import pandas as pd
import pytest

from mlops_assets.lib.features import build_features
from mlops_assets.lib.sources import SourceError, read_dates, stage_csv
from mlops_assets.lib.spec import DEFAULT_SPEC, DatasetSpec, load_spec
from mlops_assets.lib.validation import validate_records
from mlops_assets_tests import air_dataset as air

READING_AT = air.SPEC["key"][1]["reading_at"]


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> DatasetSpec:
    return load_spec(air.write(tmp_path_factory.mktemp("air")))


def records(spec: DatasetSpec, day: dt.date, derived: dict[str, str] | None = None):
    staged = stage_csv(
        spec.resolve(spec.source.path),
        spec.base_dir / "staged",
        required_columns=list(spec.columns),
        null_values=spec.source.null_values,
        date_column=spec.date.column,
        date_expression=spec.date.expression,
    )
    return read_dates(
        staged,
        spec.date.column,
        day,
        day + dt.timedelta(days=1),
        columns=list(spec.columns),
        bounds=(spec.date.start, spec.date.end),
        derived=spec.key_expressions if derived is None else derived,
    )


def test_a_key_entry_with_sql_derives_a_key_column_and_plain_keys_stay_as_they_were(spec):
    assert spec.key == ["StationId", "reading_at"]
    assert spec.key_expressions == {"reading_at": READING_AT}
    assert spec.feature_table_columns[:3] == ["reading_date", "StationId", "reading_at"]
    # Dumped and read back (what a copy of the spec does), the derived key survives.
    again = DatasetSpec.model_validate({**spec.model_dump(), "base_dir": spec.base_dir})
    assert (again.key, again.key_expressions) == (spec.key, spec.key_expressions)
    flights = load_spec(DEFAULT_SPEC)
    assert (flights.key, flights.key_expressions) == (["carrier", "flight", "sched_dep_time"], {})


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (["StationId", {"a": "1", "b": "2"}], "must be a column name or {name: SQL}"),
        (["StationId", {"PM10": "PM10 * 2"}], "both a derived key and a source column"),
        (["StationId", {"obs_date": "Obs_Date"}], "'obs_date' and 'Obs_Date' differ only by case"),
        (["StationId", {"reading_date": "Obs_Date"}], "reserved"),
    ],
)
def test_a_derived_key_that_would_clash_is_refused_when_the_spec_loads(tmp_path, key, message):
    with pytest.raises(ValueError, match="is invalid") as error:
        load_spec(air.write(tmp_path, {"key": key}))
    assert message in str(error.value)


def test_the_derived_key_is_read_typed_beside_the_text_columns(spec):
    day = dt.date(2021, 3, 2)
    raw = records(spec, day)
    assert raw["reading_at"].dtype.kind == "M"
    expected = pd.to_datetime(raw["Obs_Date"]) + pd.to_timedelta(raw["Obs_Hour"].astype(int), "h")
    assert (raw["reading_at"] == expected).all()
    assert raw["Obs_Hour"].dtype == "string"  # the source columns stay text as ingested


def test_an_unknown_column_in_the_key_sql_is_an_error_naming_it(spec):
    with pytest.raises(SourceError, match=r"cannot compute .*reading_at.*Obs_Minute"):
        records(spec, dt.date(2021, 3, 2), {"reading_at": "Obs_Minute || 'x'"})


def test_copies_of_a_key_and_a_key_that_cannot_be_derived_are_quarantined(spec):
    start, end = dt.date(2021, 3, 4), dt.date(2021, 3, 6)
    raw = pd.concat([records(spec, start), records(spec, dt.date(2021, 3, 5))])
    result = validate_records(raw, spec, start, end)
    reasons = result.quarantined.set_index("failed_check")["failed_column"].to_dict()
    assert reasons == {
        # The second reading of station 101 at 00:00 on the 4th: the same derived key.
        "multiple_fields_uniqueness": "reading_date; StationId; reading_at",
        # Hour "7h": not an int, and no timestamp can be derived from it.
        "type(int); not_nullable": "Obs_Hour; reading_at",
    }
    assert result.duplicate_keys == 1
    assert len(result.valid) == len(raw) - 2
    features = build_features(result.valid, {}, spec)
    assert not features.duplicated(["reading_date", "StationId", "reading_at"]).any()
    assert (features["hour"] == features["reading_at"].dt.hour).all()
