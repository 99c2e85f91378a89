import datetime as dt
import zipfile

import pytest

from mlops_assets.lib.sources import SourceError, read_dates, stage_csv
from mlops_assets.partitions import dataset_spec as spec
from mlops_assets_tests.conftest import ROWS_PER_DAY, write_csv


def stage(path, cache_dir):
    return stage_csv(
        path,
        cache_dir,
        required_columns=list(spec.columns),
        null_values=spec.source.null_values,
        date_column=spec.date.column,
        date_expression=spec.date.expression,
    )


def test_stages_once_per_content_and_reads_one_day(tmp_path, sample_csv):
    staged = stage(sample_csv, tmp_path / "cache")
    assert stage(sample_csv, tmp_path / "cache") == staged
    day = read_dates(staged, spec.date.column, dt.date(2013, 1, 3), dt.date(2013, 1, 4))
    assert len(day) == ROWS_PER_DAY
    assert set(day[spec.date.column].dt.date) == {dt.date(2013, 1, 3)}
    assert str(day["dep_delay"].dtype) == "string"  # as ingested, typed later


def test_changed_content_is_staged_again(tmp_path, flights_rows):
    path = write_csv(tmp_path / "f.csv", flights_rows)
    first = stage(path, tmp_path / "cache")
    write_csv(path, flights_rows[:-1])
    assert stage(path, tmp_path / "cache") != first


def test_zipped_sources_are_read(tmp_path, sample_csv):
    archive = tmp_path / "flights.csv.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(sample_csv, "flights.csv")
    staged = stage(archive, tmp_path / "cache")
    assert len(read_dates(staged, spec.date.column, dt.date(2013, 1, 1), dt.date(2014, 1, 1))) > 0


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match=r"absent\.csv: source file does not exist"):
        stage(tmp_path / "absent.csv", tmp_path / "cache")


def test_missing_or_renamed_column_names_file_and_column(tmp_path, flights_rows):
    rows = [{("delay" if k == "dep_delay" else k): v for k, v in r.items()} for r in flights_rows]
    path = write_csv(tmp_path / "renamed.csv", rows)
    with pytest.raises(SourceError, match=r"renamed.csv: missing column\(s\) \['dep_delay'\]"):
        stage(path, tmp_path / "cache")


def test_unparsable_dates_stop_with_count_and_examples(tmp_path, flights_rows):
    rows = [dict(r) for r in flights_rows]
    rows[5]["month"], rows[9]["day"] = "Jan", "32"
    path = write_csv(tmp_path / "dates.csv", rows)
    with pytest.raises(
        SourceError, match=r"dates.csv: 2 row\(s\) have an unparsable date"
    ) as error:
        stage(path, tmp_path / "cache")
    assert "'month': 'Jan'" in str(error.value)
    assert not list((tmp_path / "cache").glob("*.parquet"))


def test_truncated_csv_is_an_error_naming_the_file(tmp_path, sample_csv):
    text = sample_csv.read_text()
    truncated = tmp_path / "truncated.csv"
    truncated.write_text(text[: len(text) // 2].rsplit(",", 3)[0])
    with pytest.raises(SourceError, match=r"truncated\.csv"):
        stage(truncated, tmp_path / "cache")


def test_corrupt_zip_is_an_error_naming_the_file(tmp_path, sample_csv):
    archive = tmp_path / "flights.csv.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        zipped.write(sample_csv, "flights.csv")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"flights\.csv\.zip: corrupt or truncated zip archive"):
        stage(archive, tmp_path / "cache")
