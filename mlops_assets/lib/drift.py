"""Data and prediction drift of one batch (e.g. a day) against a reference, with Evidently 0.7.

Column names always come from the caller; nothing here knows the dataset. No Dagster imports, and
Evidently (~6 s to import, it pulls in plotly) is imported inside the functions so that the code
location loads fast.

Why the defaults are not Evidently's: against a six-month reference, one day of data is narrow
(one day's weather, one weekday), so Evidently's default tests (normed Wasserstein >= 0.1,
Jensen-Shannon >= 0.1) flag most columns on every day and the drift share saturates. The defaults
below were measured on real daily batches (bench/drift_signal.py): higher distance thresholds, and
columns that are constant within a batch by construction (the weekday of a daily batch) belong in
`DriftSettings.exclude`. Daily covariate drift did NOT separate the months whose delay rate and
model quality differ (that change is in P(label | features)): watch performance once labels land.

Speed: `Report.run` builds a plotly figure for every `ValueDrift` while computing, and the
`DataDriftPreset` recomputes every column through legacy metrics to render its table. Without an
HTML file the figures are wasted, so `compute_drift` runs a `ValueDrift` per column directly (no
preset) and, unless rendering, through a calculation that skips the figures (`_QuietValueDrift`);
it counts the drifted columns from their flags, and adds Evidently's `DriftedColumnsCount` (which
runs the same tests again) only when rendering.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

MetadataValue = float | int | bool


@dataclass(frozen=True)
class DriftSettings:
    """Which columns to test and how; thresholds are on each stat test's own score.

    Distance tests (wasserstein, jensenshannon, psi, hellinger, ...) flag drift when the score is
    >= the threshold; p-value tests (ks, chisquare, z, ...) when the p-value is < the threshold.
    A method of None lets Evidently choose by column type and size.
    """

    # None = every numeric and categorical column passed to compute_drift.
    columns: tuple[str, ...] | None = None
    # Never tested: put here columns constant within a batch by construction (a daily batch's
    # weekday or date); against a multi-day reference they drift every time and say nothing.
    exclude: tuple[str, ...] = ()
    # Normed Wasserstein (distance / reference std). One day against six months sits at 0.4-1.9
    # for weather columns in EVERY month, reference months included (bench/drift_signal.py), so
    # Evidently's 0.1 flags them daily. At 1.0 a column drifts when its day is a whole reference
    # std away: ordinary days pass, a broken feature or a unit change does not.
    num_method: str | None = "wasserstein"
    num_threshold: float | None = 1.0
    # Jensen-Shannon distance of category shares (Evidently's default test and threshold): the
    # destination mix crosses 0.1 after the autumn schedule change.
    cat_method: str | None = "jensenshannon"
    cat_threshold: float | None = 0.1
    per_column_method: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    per_column_threshold: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    # The model's score is the most direct signal; tested on its own, never in the drift share.
    # The daily score distribution moves by 0.3-0.6 reference std with the day's weather.
    prediction_method: str | None = "wasserstein"
    prediction_threshold: float | None = 1.0
    # Dataset drift when at least this share of the tested columns drifts (Evidently's rule: >=).
    drift_share: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.drift_share <= 1:
            raise ValueError(f"drift_share must be in (0, 1], got {self.drift_share}")
        # Tuples and read-only mappings keep the frozen settings actually immutable.
        for name in ("columns", "exclude"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        for name in ("per_column_method", "per_column_threshold"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def method_for(self, column: str, kind: str) -> str | None:
        """The stat test for a column of kind "num" or "cat"."""
        default = self.num_method if kind == "num" else self.cat_method
        return self.per_column_method.get(column, default)

    def threshold_for(self, column: str, kind: str) -> float | None:
        """The threshold for a column of kind "num" or "cat"."""
        default = self.num_threshold if kind == "num" else self.cat_threshold
        return self.per_column_threshold.get(column, default)


@dataclass
class DriftResult:
    """Drift of one batch. `columns` has one row per tested column (index: column name)."""

    drift_share: float
    n_drifted: int
    n_columns: int
    dataset_drift: bool
    # columns: kind ("num"/"cat"), stat_test, threshold, score, drifted
    columns: pd.DataFrame
    prediction_score: float | None
    prediction_drifted: bool | None
    prediction_stat_test: str | None
    # Columns dropped from the test, with the reason (e.g. all values missing in current).
    skipped_columns: dict[str, str]
    n_rows: int
    null_share: dict[str, float]
    timestamp: datetime
    snapshot: Snapshot = field(repr=False)

    def to_metadata(self) -> dict[str, MetadataValue]:
        """Flat numbers for Dagster metadata; stable keys across batches, so the UI plots them."""
        meta: dict[str, MetadataValue] = {
            "drift_share": float(self.drift_share),
            "n_drifted_columns": int(self.n_drifted),
            "n_tested_columns": int(self.n_columns),
            "n_skipped_columns": len(self.skipped_columns),
            "dataset_drift": bool(self.dataset_drift),
            "n_rows": int(self.n_rows),
        }
        if self.prediction_score is not None:
            meta["prediction_drift_score"] = float(self.prediction_score)
            meta["prediction_drifted"] = bool(self.prediction_drifted)
        for column, row in self.columns.iterrows():
            meta[f"drift_score/{column}"] = float(row["score"])
        for column, share in self.null_share.items():
            meta[f"null_share/{column}"] = float(share)
        return meta


def _skip_reason(reference: pd.Series, current: pd.Series) -> str | None:
    # Evidently drops NaN and +-inf before testing and raises on an empty remainder.
    def usable(col: pd.Series) -> bool:
        values = col.replace([math.inf, -math.inf], math.nan) if col.dtype.kind == "f" else col
        return bool(values.notna().any())

    if not usable(current):
        return "all values missing in current"
    if not usable(reference):
        return "all values missing in reference"
    return None


@contextmanager
def _evidently_quiet() -> Iterator[None]:
    """Silence Evidently's numpy warnings here only, and undo plotly's global warnings format.

    plotly (imported with Evidently) replaces `warnings.formatwarning` at import time for the
    whole process; the correlation step warns on columns constant within a batch.
    """
    saved_format = warnings.formatwarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        warnings.formatwarning = saved_format


def _no_figures(result: Any, options: Any, color_options: Any) -> list:
    return []


class _QuietValueDrift:
    """A ValueDrift whose calculation skips the plotly figures (kept: score, test, config).

    Evidently 0.7 has no switch for this: `ValueDriftCalculation.calculate` always calls `_render`.
    Snapshot._run_items only calls `to_calculation()` on a non-container item, so this stand-in
    hands it the stock calculation with `_render` shadowed on that one instance. Nothing global
    changes (subclassing the calculation would: Evidently rebinds `ValueDrift` to any subclass),
    and the snapshot stores the plain ValueDrift config. A test checks the numbers against a
    rendered run.
    """

    def __init__(self, metric: Any) -> None:
        self.metric = metric

    def to_calculation(self) -> Any:
        calculation = self.metric.to_calculation()
        calculation._render = _no_figures
        return calculation


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    prediction: str | None = "probability",
    settings: DriftSettings | None = None,
    html_path: Path | None = None,
    timestamp: datetime | None = None,
    render: bool = False,
    tags: Sequence[str] = (),
) -> DriftResult:
    """Drift of `current` against `reference`: per column, as a share, and of `prediction`.

    The snapshot's timestamp is `timestamp` (pass the partition date, the Evidently UI orders runs
    by it). HTML is written only when `html_path` is given; `render=True` keeps the figures in the
    snapshot without writing HTML (for a workspace whose UI should show them). Columns entirely
    missing in current or reference are skipped and listed in `skipped_columns`.

    Raises ValueError if `current` or `reference` has no rows, a named column is absent, or no
    feature column is left to test (the caller decides whether to skip the batch).
    """
    settings = settings or DriftSettings()
    if len(current) == 0:
        raise ValueError("current has no rows: nothing to compare")
    if len(reference) == 0:
        raise ValueError("reference has no rows: nothing to compare against")
    selected = set(settings.columns) if settings.columns is not None else None
    kinds = {c: "num" for c in numeric} | {c: "cat" for c in categorical}
    candidates = [
        c for c in kinds if c not in settings.exclude and (selected is None or c in selected)
    ]
    if selected is not None and (unknown := selected - kinds.keys()):
        raise ValueError(f"settings.columns not among numeric/categorical: {sorted(unknown)}")
    needed = [*kinds, *([prediction] if prediction else [])]
    for name, frame in (("reference", reference), ("current", current)):
        if missing := [c for c in needed if c not in frame.columns]:
            raise ValueError(f"{name} lacks columns {missing}")

    skipped: dict[str, str] = {}
    tested: list[str] = []
    for column in candidates:
        if reason := _skip_reason(reference[column], current[column]):
            skipped[column] = reason
        else:
            tested.append(column)
    if not tested:
        raise ValueError(f"no column left to test; skipped: {skipped or 'none selected'}")
    pred_reason = _skip_reason(reference[prediction], current[prediction]) if prediction else None
    if prediction and pred_reason:
        skipped[prediction] = pred_reason
    test_prediction = bool(prediction) and pred_reason is None

    timestamp = timestamp or datetime.now()
    with _evidently_quiet():
        snapshot, metric_ids = _run_report(
            reference,
            current,
            tested=tested,
            kinds=kinds,
            prediction=prediction if test_prediction else None,
            settings=settings,
            render=render or html_path is not None,
            timestamp=timestamp,
            tags=list(tags),
        )
        if html_path is not None:
            html_path = Path(html_path)
            html_path.parent.mkdir(parents=True, exist_ok=True)
            # save_html silently writes nothing when given a Path: it only handles str.
            snapshot.save_html(str(html_path))

    rows = {c: _value_drift_row(snapshot, metric_ids[c]) | {"kind": kinds[c]} for c in tested}
    columns = pd.DataFrame.from_dict(rows, orient="index")[
        ["kind", "stat_test", "threshold", "score", "drifted"]
    ]
    n_drifted = int(columns["drifted"].sum())
    share = n_drifted / len(tested)
    if "__count__" in metric_ids:
        count = snapshot.metric_results[metric_ids["__count__"]]
        if round(count.count.value) != n_drifted:
            raise RuntimeError(
                f"Evidently counts {count.count.value} drifted columns, its tests flag {n_drifted}"
            )
    pred = _value_drift_row(snapshot, metric_ids[prediction]) if test_prediction else None
    observed = [c for c in needed if c in current.columns]
    return DriftResult(
        drift_share=float(share),
        n_drifted=n_drifted,
        n_columns=len(tested),
        dataset_drift=bool(share >= settings.drift_share),
        columns=columns,
        prediction_score=pred["score"] if pred else None,
        prediction_drifted=pred["drifted"] if pred else None,
        prediction_stat_test=pred["stat_test"] if pred else None,
        skipped_columns=skipped,
        n_rows=len(current),
        null_share={c: float(current[c].isna().mean()) for c in observed},
        timestamp=timestamp,
        snapshot=snapshot,
    )


def _run_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    tested: list[str],
    kinds: Mapping[str, str],
    prediction: str | None,
    settings: DriftSettings,
    render: bool,
    timestamp: datetime,
    tags: list[str],
) -> tuple[Snapshot, dict[str, str]]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    num = [c for c in tested if kinds[c] == "num"]
    cat = [c for c in tested if kinds[c] == "cat"]
    methods = {c: settings.method_for(c, kinds[c]) for c in tested}
    thresholds = {c: settings.threshold_for(c, kinds[c]) for c in tested}
    value_drifts = {
        c: ValueDrift(column=c, method=methods[c], threshold=thresholds[c]) for c in tested
    }
    if prediction:
        value_drifts[prediction] = ValueDrift(
            column=prediction,
            method=settings.prediction_method,
            threshold=settings.prediction_threshold,
        )
    # Same per-column tests as the ValueDrifts, so the count agrees with the per-column flags.
    count = DriftedColumnsCount(
        columns=tested,
        drift_share=settings.drift_share,
        per_column_method={c: m for c, m in methods.items() if m is not None} or None,
        per_column_threshold={c: t for c, t in thresholds.items() if t is not None} or None,
    )
    definition = DataDefinition(
        numerical_columns=num + ([prediction] if prediction else []),
        categorical_columns=cat,
    )
    used = [*tested, *([prediction] if prediction else [])]
    # DriftedColumnsCount runs the same per-column tests again (through legacy code that also
    # prepares plot data): ~40% of a quiet day. Without HTML the count comes from the
    # ValueDrift flags instead (the same tests, so the same count; a rendered run checks it
    # against Evidently's); the snapshot then holds the per-column values, not the count.
    if render:
        items = [count, *value_drifts.values()]
    else:
        items = [_QuietValueDrift(v) for v in value_drifts.values()]
    # include_tests: ValueDrift's pass/fail test is the only place Evidently reports the flag.
    snapshot = Report(items, include_tests=True).run(
        Dataset.from_pandas(current[used], data_definition=definition),
        Dataset.from_pandas(reference[used], data_definition=definition),
        timestamp=timestamp,
        tags=tags,
    )
    metric_ids = {c: v.get_metric_id() for c, v in value_drifts.items()}
    if render:
        metric_ids["__count__"] = count.get_metric_id()
    return snapshot, metric_ids


def _value_drift_row(snapshot: Snapshot, metric_id: str) -> dict[str, Any]:
    from evidently.legacy.tests.base_test import TestStatus

    result = snapshot.metric_results[metric_id]
    params = result.metric_value_location.metric.params
    return {
        "stat_test": params.get("method"),
        "threshold": params.get("threshold"),
        "score": float(result.value),
        "drifted": any(t.status == TestStatus.FAIL for t in result.tests),
    }


def save_to_workspace(
    snapshot: Snapshot,
    workspace_dir: Path,
    project_name: str,
    *,
    replace_same_timestamp: bool = True,
    description: str | None = None,
) -> str:
    """Add the snapshot to a local Evidently workspace (project created on first use); its id.

    View with `evidently ui --workspace <workspace_dir>` (default http://127.0.0.1:8000).
    With `replace_same_timestamp`, runs of the project with the same timestamp and tags are
    deleted first, so re-running a batch replaces its snapshot instead of adding a duplicate.
    That scan reads every stored snapshot of the project (small without figures, ~4 MB each with
    them): to save many batches, use `save_snapshots_to_workspace`, which scans once.
    """
    [snapshot_id] = save_snapshots_to_workspace(
        [snapshot],
        workspace_dir,
        project_name,
        replace_same_timestamp=replace_same_timestamp,
        description=description,
    )
    return snapshot_id


def save_snapshots_to_workspace(
    snapshots: Sequence[Snapshot],
    workspace_dir: Path,
    project_name: str,
    *,
    replace_same_timestamp: bool = True,
    description: str | None = None,
) -> list[str]:
    """`save_to_workspace` for many snapshots (e.g. the days of a backfill): their ids, in order.

    The project's stored runs are read once, not once per snapshot (a backfill of n days would
    otherwise read n^2 / 2 snapshot files).
    """
    from evidently.ui.workspace import Workspace

    with _evidently_quiet():
        workspace = Workspace(str(workspace_dir))
        projects = workspace.search_project(project_name)
        if projects:
            project = projects[0]
        else:
            project = workspace.create_project(project_name, description=description)
        if replace_same_timestamp and snapshots:
            # Same timestamp AND tags: other snapshots of the day (the dashboard's daily
            # figures, lib.dashboard) are not this kind and stay.
            models = [s.to_snapshot_model() for s in snapshots]
            replaced = {(m.timestamp, frozenset(m.tags)) for m in models}
            for run_id in workspace.list_runs(project.id):
                run = workspace.get_run(project.id, run_id)
                if run is not None and (run.timestamp, frozenset(run.tags)) in replaced:
                    workspace.delete_run(project.id, run_id)
        return [str(workspace.add_run(project.id, s).id) for s in snapshots]
