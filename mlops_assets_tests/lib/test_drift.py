"""Drift with real Evidently on small synthetic frames."""

import json
import subprocess
import sys
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from mlops_assets.lib.drift import DriftResult, DriftSettings, compute_drift, save_to_workspace

NUMERIC = ["x", "y"]
CATEGORICAL = ["group"]
DAY = datetime(2013, 7, 15)


def _frame(n: int, seed: int, *, x_shift: float = 0.0, groups: tuple = (0.5, 0.3, 0.2)):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(x_shift, 1.0, n),
            "y": rng.normal(0.0, 1.0, n),
            "group": rng.choice(["a", "b", "c"], n, p=list(groups)),
            "probability": rng.beta(2, 5, n),
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _frame(3000, seed=0)


def _drift(reference, current, **kwargs) -> DriftResult:
    kwargs.setdefault("timestamp", DAY)
    return compute_drift(reference, current, numeric=NUMERIC, categorical=CATEGORICAL, **kwargs)


def test_identical_frames_do_not_drift(reference):
    result = _drift(reference, reference.copy())

    assert result.drift_share == 0
    assert result.n_drifted == 0
    assert result.n_columns == 3
    assert not result.dataset_drift
    assert not result.columns["drifted"].any()
    assert result.columns["score"].max() < 1e-9
    assert result.prediction_score == pytest.approx(0, abs=1e-9)
    assert result.prediction_drifted is False


def test_shifted_numeric_column_drifts_alone(reference):
    result = _drift(reference, _frame(500, seed=1, x_shift=2.0))

    assert result.columns["drifted"].to_dict() == {"x": True, "y": False, "group": False}
    assert result.columns.loc["x", "stat_test"] == "wasserstein"
    assert result.columns.loc["x", "score"] > DriftSettings().num_threshold
    assert result.n_drifted == 1
    assert result.drift_share == pytest.approx(1 / 3)
    assert not result.dataset_drift
    assert result.prediction_drifted is False


def test_changed_categorical_distribution_drifts(reference):
    result = _drift(reference, _frame(500, seed=2, groups=(0.1, 0.2, 0.7)))

    assert result.columns.loc["group", "drifted"]
    assert result.columns.loc["group", "kind"] == "cat"
    assert not result.columns.loc[["x", "y"], "drifted"].any()


def test_settings_choose_columns_tests_and_thresholds(reference):
    current = _frame(500, seed=1, x_shift=2.0)
    settings = DriftSettings(
        exclude=("y",),
        per_column_method={"x": "psi"},
        per_column_threshold={"x": 100.0},
        drift_share=0.5,
    )
    result = _drift(reference, current, settings=settings)

    assert list(result.columns.index) == ["x", "group"]
    assert result.columns.loc["x", "stat_test"] == "psi"
    assert result.columns.loc["x", "threshold"] == 100.0
    assert not result.columns.loc["x", "drifted"]
    with pytest.raises(ValueError, match="drift_share"):
        DriftSettings(drift_share=0)


def test_all_null_column_is_skipped_and_reported(reference):
    current = _frame(500, seed=3)
    current["y"] = np.nan
    result = _drift(reference, current)

    assert result.skipped_columns == {"y": "all values missing in current"}
    assert list(result.columns.index) == ["x", "group"]
    assert result.null_share["y"] == 1.0
    assert result.null_share["x"] == 0.0


def test_empty_current_or_nothing_testable_raises(reference):
    with pytest.raises(ValueError, match="no rows"):
        _drift(reference, reference.iloc[:0])
    nothing = _frame(50, seed=4).assign(x=np.nan, y=np.nan, group=None)
    with pytest.raises(ValueError, match="no column left"):
        _drift(reference, nothing)


def test_quiet_run_matches_rendered_run(reference, tmp_path):
    # The figure-free path must give Evidently's own numbers; catches an upstream change.
    current = _frame(400, seed=5, x_shift=0.3, groups=(0.3, 0.3, 0.4))
    quiet = _drift(reference, current)
    html = tmp_path / "report" / "drift.html"
    rendered = _drift(reference, current, html_path=html)

    pd.testing.assert_frame_equal(quiet.columns, rendered.columns)
    assert quiet.drift_share == rendered.drift_share
    assert quiet.prediction_score == rendered.prediction_score
    # Figures only in the rendered snapshot.
    assert len(json.dumps(quiet.snapshot.dump_dict(), default=str)) < 0.2 * len(
        json.dumps(rendered.snapshot.dump_dict(), default=str)
    )
    text = html.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<html") or text.lstrip().startswith("<!DOCTYPE")
    assert text.rstrip().endswith("</html>")


def test_our_count_matches_evidentlys_drifted_columns_count(reference):
    # A quiet run counts drifted columns from the ValueDrift flags; a rendered run also runs
    # Evidently's DriftedColumnsCount and raises if the two disagree.
    current = _frame(400, seed=12, x_shift=1.5, groups=(0.1, 0.2, 0.7))
    rendered = _drift(reference, current, render=True)
    quiet = _drift(reference, current)
    assert rendered.n_drifted == quiet.n_drifted == 2
    assert quiet.drift_share == pytest.approx(2 / 3)


def test_html_written_only_when_asked(reference, tmp_path):
    page = tmp_path / "reports" / "day.html"
    _drift(reference, _frame(300, seed=6))
    assert not page.exists()
    _drift(reference, _frame(300, seed=6), html_path=page)
    assert page.stat().st_size > 100_000 and b"<html" in page.read_bytes()[:2000].lower()


def test_warnings_format_is_left_alone():
    """In a fresh interpreter: plotly, imported by Evidently, replaces the global warnings format
    when it is first imported, so within this session the result would depend on test order."""
    check = (
        "import warnings\n"
        "before = warnings.formatwarning\n"
        "from mlops_assets_tests.lib.test_drift import _drift, _frame\n"
        "_drift(_frame(500, seed=0), _frame(300, seed=7))\n"
        "print(warnings.formatwarning is before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", check], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "True"


def test_to_metadata_is_flat_plain_numbers(reference):
    current = _frame(500, seed=8, x_shift=2.0)
    current["y"] = np.nan
    meta = _drift(reference, current).to_metadata()

    assert all(type(v) in (int, float, bool) for v in meta.values()), meta
    assert meta["drift_share"] == 0.5
    assert meta["n_drifted_columns"] == 1
    assert meta["n_tested_columns"] == 2
    assert meta["n_skipped_columns"] == 1
    assert meta["dataset_drift"] is True
    assert meta["n_rows"] == 500
    assert meta["drift_score/x"] > 0.5
    assert "drift_score/y" not in meta
    assert meta["null_share/y"] == 1.0
    assert isinstance(meta["prediction_drift_score"], float)


def test_workspace_save_reload_and_replace(reference, tmp_path):
    from evidently.ui.workspace import Workspace

    ws_dir = tmp_path / "ws"
    first = _drift(reference, _frame(300, seed=9))
    other_day = _drift(reference, _frame(300, seed=10), timestamp=datetime(2013, 7, 16))
    first_id = save_to_workspace(first.snapshot, ws_dir, "flights drift")
    save_to_workspace(other_day.snapshot, ws_dir, "flights drift")
    # Re-running a day replaces its snapshot.
    again = _drift(reference, _frame(300, seed=11))
    again_id = save_to_workspace(again.snapshot, ws_dir, "flights drift")

    ws = Workspace(str(ws_dir))
    [project] = ws.search_project("flights drift")
    runs = {str(i): ws.get_run(project.id, i) for i in ws.list_runs(project.id)}
    assert first_id not in runs
    assert sorted(r.timestamp for r in runs.values()) == [DAY, datetime(2013, 7, 16)]
    assert runs[again_id].timestamp == DAY
