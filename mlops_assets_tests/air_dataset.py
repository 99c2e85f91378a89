"""A second dataset, built by the tests: hourly air readings of six stations in spring 2021.

Its schema differs from the flights' on purpose:
- integer code columns with allowed sets (`StationId`, `Sensor_Kind`: `isin` of integers);
- mixed-case source names (`PM10`, `Temp_C`, `Humidity`) that differ only by case from the
  features made of them (`pm10`, `temp_c`, `humidity`): another table, so no clash;
- an expression key: a reading is identified by its station and a timestamp that the spec
  derives from two text columns (`Obs_Date`, `Obs_Hour`); the `hour` feature is computed from it;
- weekends hold 24 readings (6 stations x 4 hours): fewer than 30 rows on those days;
- a numeric target (`task: regression`): the PM2.5 reading itself, missing (no label) for a few
  readings.

The target depends on the features through an interaction (dry-weather PM10 is harmless, humid
high PM10 is not) and rush hours, on top of a station level and a day-to-day level shared by
every reading of a day: neither the per-category mean nor the last week's mean can express it,
so the model passes its baseline gate on merit, at the default margin. The last days of the
monitored range carry an injected PM10 shift (drift to find). Three rows are broken on purpose:
a station code outside the allowed set, a second reading of the same station and hour (a
duplicate key), and an hour that is not a number (its key cannot be derived).

`python -m mlops_assets_tests.air_dataset` runs the lifecycle's stages on it, in one process on the
Dagster instance of $DAGSTER_HOME, with the spec of $MLOPS_DATASET_SPEC (test_second_dataset.py).
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import yaml

NAME = "air"
START = dt.date(2021, 3, 1)
DAYS = 49
TRAINING_DAYS = 42
"""Six weeks to train on (six test days for the gates), then one week (Monday to Sunday) to
monitor and A/B test."""
END = START + dt.timedelta(days=DAYS - 1)
TRAINING_END = START + dt.timedelta(days=TRAINING_DAYS - 1)
STATIONS = {101: 1, 102: 1, 103: 2, 104: 2, 105: 3, 106: 3}  # station -> sensor kind
WEEKEND_HOURS = range(8, 12)
SHIFTED_DAYS = 4
"""The last days of the range, whose PM10 is multiplied by SHIFT (drift the monitoring finds)."""
SHIFT = 2.5
BAD_STATION = (dt.date(2021, 3, 3), 999)
DUPLICATE = dt.date(2021, 3, 4)
BAD_HOUR = (dt.date(2021, 3, 5), "7h")

SPEC = {
    "name": NAME,
    "description": "Hourly air readings of six stations (test data). Target: PM2.5.",
    "source": {"path": "readings.csv", "null_values": ["NA", ""]},
    "date": {
        "column": "reading_date",
        "expression": "strptime(Obs_Date, '%Y-%m-%d')::DATE",
        "start": START,
        "end": END,
    },
    "key": [
        "StationId",
        {"reading_at": "strptime(Obs_Date, '%Y-%m-%d') + to_hours(Obs_Hour::INTEGER)"},
    ],
    "columns": {
        "Obs_Date": {"type": "string", "regex": r"^\d{4}-\d{2}-\d{2}$"},
        "Obs_Hour": {"type": "int", "ge": 0, "le": 23},
        "StationId": {"type": "int", "isin": sorted(STATIONS)},
        "Sensor_Kind": {"type": "int", "isin": sorted(set(STATIONS.values()))},
        "PM10": {"type": "float", "ge": 0, "le": 2000},
        "Temp_C": {"type": "float", "ge": -50, "le": 60},
        "Humidity": {"type": "float", "nullable": True, "ge": 0, "le": 100, "max_null_rate": 0.2},
        "PM25": {"type": "float", "nullable": True, "ge": 0, "le": 2000, "max_null_rate": 0.2},
    },
    "features": {
        "station": {"kind": "categorical", "expression": "CAST(StationId AS VARCHAR)"},
        "sensor_kind": {"kind": "categorical", "expression": "CAST(Sensor_Kind AS VARCHAR)"},
        "pm10": {"kind": "numeric", "expression": "PM10"},
        "temp_c": {"kind": "numeric", "expression": "Temp_C"},
        "humidity": {"kind": "numeric", "expression": "Humidity", "max_null_rate": 0.2},
        "hour": {"kind": "numeric", "expression": "hour(reading_at)"},
        "day_of_week": {
            "kind": "numeric",
            "expression": "isodow(reading_date)",
            "role": "calendar",
        },
    },
    "target": {"name": "pm25", "expression": "PM25"},
    "task": "regression",
    "training_window": {"start": START, "end": TRAINING_END},
    # Weekends have a sixth of a weekday's rows by design, not by a broken delivery.
    "quality": {"min_row_ratio": 0.1},
}


def readings(seed: int = 0) -> list[dict[str, str]]:
    """Every reading of the range, as CSV text, broken rows included."""
    rng = np.random.default_rng(seed)
    rows = []
    for offset in range(DAYS):
        day = START + dt.timedelta(days=offset)
        level = rng.normal(0, 2)  # the day's weather: shared by its readings
        hours = WEEKEND_HOURS if day.weekday() >= 5 else range(24)
        shifted = offset >= DAYS - SHIFTED_DAYS
        for hour in hours:
            for station, kind in STATIONS.items():
                pm10 = rng.lognormal(np.log(45), 0.5) * (SHIFT if shifted else 1.0)
                humidity = rng.uniform(30, 95)
                rush = hour in (7, 8, 9, 17, 18, 19)
                mean = 12 + 18 * (pm10 > 55 and humidity > 65) + 8 * rush
                mean += 5 * (station >= 105) + level
                pm25 = max(0.5, mean + rng.normal(0, 4))
                rows.append(
                    {
                        "Obs_Date": day.isoformat(),
                        "Obs_Hour": str(hour),
                        "StationId": str(station),
                        "Sensor_Kind": str(kind),
                        "PM10": f"{pm10:.1f}",
                        "Temp_C": f"{rng.normal(10, 5):.1f}",
                        "Humidity": "NA" if rng.random() < 0.03 else f"{humidity:.1f}",
                        "PM25": "NA" if rng.random() < 0.02 else f"{pm25:.1f}",
                    }
                )
    return _break(rows)


def _break(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    def first(day: dt.date) -> dict[str, str]:
        return next(r for r in rows if r["Obs_Date"] == day.isoformat())

    first(BAD_STATION[0])["StationId"] = str(BAD_STATION[1])
    first(BAD_HOUR[0])["Obs_Hour"] = BAD_HOUR[1]
    # A second reading of a station and hour: the same key, other values.
    copy = dict(first(DUPLICATE), PM10="999.0")
    at = next(i for i, r in enumerate(rows) if r["Obs_Date"] == DUPLICATE.isoformat())
    return [*rows[: at + 1], copy, *rows[at + 1 :]]


def write(directory: Path, spec_changes: dict | None = None) -> Path:
    """The readings CSV and the dataset specification in `directory`; the spec's path."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = readings()
    with (directory / "readings.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    path = directory / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **(spec_changes or {})}, sort_keys=False))
    return path


# The champion: one fit (no search), the spec's own gates, which it must pass on merit.
CHAMPION_CONFIG = {
    "ops": {
        "model": {"config": {"search": "none"}},
        "feature_importance": {"config": {"n_repeats": 1}},
    }
}
# The challenger: another family through a non-inferiority margin wide enough for six test days
# (the A/B test, not the offline gate, is what judges it here).
CHALLENGER_CONFIG = {
    "ops": {
        "model": {
            "config": {
                "estimator": "random_forest",
                "search": "none",
                "params": {"n_estimators": 50, "max_depth": 6},
            }
        },
        "evaluation": {"config": {"champion_margin": -0.5}},
        "feature_importance": {"config": {"n_repeats": 1}},
    }
}
# The drift check as configured, without the optional extras (HTML, the Evidently workspace).
MONITORING_CONFIG = {
    "ops": {
        "drift_report": {
            "config": {"html": "none", "save_to_workspace": False, "domain_classifier": False}
        }
    }
}


def main() -> None:
    """ingest -> validate -> features -> champion -> challenger -> monitoring -> A/B, in order."""
    import dagster as dg

    from mlops_assets.definitions import defs
    from mlops_assets.lifecycle import run_job

    monitored = (TRAINING_END + dt.timedelta(days=1), END)
    with dg.DagsterInstance.get() as instance:
        stages = [
            ("data_job", "data", {"start": START, "end": END}),
            ("training_job", "champion", {"config": CHAMPION_CONFIG}),
            ("training_job", "challenger", {"config": CHALLENGER_CONFIG}),
            (
                "monitoring_job",
                "monitoring",
                {"start": monitored[0], "end": monitored[1], "config": MONITORING_CONFIG},
            ),
            ("ab_job", "A/B test", {}),
        ]
        for job, title, arguments in stages:
            run_job(defs, instance, job, title, quiet=True, **arguments)


if __name__ == "__main__":
    main()
