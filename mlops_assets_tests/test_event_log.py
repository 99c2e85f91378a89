"""The batching event log records a single-run backfill exactly as Dagster's SQLite event log does.

A failure while storing a batch (or at its index commit) must leave nothing of the batch behind:
Dagster then stores the batch's events one by one, and a half-written batch would show as
duplicates. Each test runs the same two overlapping range runs (Jan 1-5, then Jan 4-7) of
raw -> validated -> features on a reference instance (Dagster's storage, one event at a time)
and on an instance with `BatchingSqliteEventLogStorage` and DAGSTER_EVENT_BATCH_SIZE set, then
compares what the UI and the sensors read: materializations per partition, materialized
partitions, the latest materialization per partition and per asset, check executions, and each
run's event types.
"""

import os
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pytest
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable

from mlops_assets import features, ingestion, validation
from mlops_assets.event_log import BatchingSqliteEventLogStorage
from mlops_assets.partitions import daily_backfill, daily_partitions
from mlops_assets_tests.conftest import make_resources_at, range_tags, write_csv

DAY_CHECK = "verdict_of_the_day"


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill,
    check_specs=[dg.AssetCheckSpec(DAY_CHECK, asset="day_verdicts")],
)
def day_verdicts(context: dg.AssetExecutionContext):
    """A verdict per day of the range, as the monitoring assets' `day_checks` give theirs: one
    evaluation event after another, which the batching storage writes as one batch."""
    yield dg.MaterializeResult(metadata={"days": len(context.partition_keys)})
    key = dg.AssetCheckKey(context.asset_key, DAY_CHECK)
    yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))
    for day in context.partition_keys:
        yield dg.AssetCheckEvaluation(
            asset_key=context.asset_key,
            check_name=DAY_CHECK,
            passed=int(day[-1]) % 2 == 0,
            metadata={"day": day},
            partition=day,
        )


ASSETS = [ingestion.raw_records, validation.validate_records, features.features, day_verdicts]
KEYS = [dg.AssetKey(k) for k in ("raw_records", "validated_records", "features", "day_verdicts")]
RUNS = [("2013-01-01", "2013-01-05"), ("2013-01-04", "2013-01-07")]


class RecordingStorage(BatchingSqliteEventLogStorage):
    """Records the event types of each batch; fails where a test asks it to."""

    batches: ClassVar[list[list[str]]] = []
    # Failures to inject, in order: "event" raises while storing a batch's third materialization
    # (two of the batch written, uncommitted); "commit" fails the index commit of the next batch
    # after the run shard's commit.
    failures: ClassVar[list[str]] = []

    def _store_batch(self, events):
        RecordingStorage.batches.append(
            (sorted({e.dagster_event_type.value for e in events}), len(events))
        )
        super()._store_batch(events)

    def store_event(self, event):
        connections = getattr(self._batch, "connections", None)
        if connections and self.failures[:1] == ["event"]:
            rows = connections[event.run_id].execute(
                SqlEventLogStorageTable.select().where(
                    SqlEventLogStorageTable.c.dagster_event_type == "ASSET_MATERIALIZATION"
                )
            )
            if len(rows.fetchall()) >= 2:
                self.failures.pop(0)
                raise OSError("disk full (injected)")
        super().store_event(event)

    @contextmanager
    def _transactions(self, run_id):
        with super()._transactions(run_id) as (run_conn, index_conn):
            if self.failures[:1] == ["commit"]:
                self.failures.pop(0)

                def commit():
                    raise OSError("index commit failed (injected)")

                index_conn.commit = commit
            yield run_conn, index_conn


def record(tmp_path: Path, sample_csv: Path, *, batching: bool, monkeypatch):
    """Run both ranges on a fresh instance; return what its event log answers."""
    overrides = {}
    # Both instances emit one planned event per asset (the repository's storage would by itself).
    monkeypatch.setenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
    if batching:
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
        overrides["event_log_storage"] = {
            "module": __name__,
            "class": "RecordingStorage",
            "config": {"base_dir": str(tmp_path / "events")},
        }
    else:
        monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    resources = make_resources_at(tmp_path, sample_csv)
    (tmp_path / "home").mkdir(parents=True)
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path / "home")) as instance:
        assert isinstance(instance.event_log_storage, RecordingStorage) == batching
        run_ids = []
        for start, end in RUNS:
            result = dg.materialize(
                ASSETS, tags=range_tags(start, end), resources=resources, instance=instance
            )
            assert result.success
            run_ids.append(result.run_id)
        return answers(instance, run_ids, str(tmp_path))


def answers(instance: dg.DagsterInstance, run_ids: list[str], directory: str) -> dict:
    run_index = {run_id: i for i, run_id in enumerate(run_ids)}
    storage = instance.event_log_storage
    out: dict = {}
    for key in KEYS:
        records = instance.fetch_materializations(key, limit=1000, ascending=True).records
        out[key, "materializations"] = sorted(
            # The table's path names each instance's own directory.
            (r.partition_key, run_index[r.run_id], name, repr(value.value).replace(directory, ""))
            for r in records
            for name, value in r.asset_materialization.metadata.items()
        )
        out[key, "partitions"] = sorted(instance.get_materialized_partitions(key))
        latest = storage.get_latest_storage_id_by_partition(
            key, dg.DagsterEventType.ASSET_MATERIALIZATION
        )
        by_id = {r.storage_id: r for r in records}
        out[key, "latest"] = {
            p: (by_id[i].partition_key, run_index[by_id[i].run_id]) for p, i in latest.items()
        }
        entry = instance.get_asset_records([key])[0].asset_entry
        last = entry.last_materialization_record
        out[key, "last"] = (last.partition_key, run_index[last.run_id])
        # The asset key table's row, which a batch writes once from its newest events.
        out[key, "row"] = (run_index[entry.last_run_id], last.storage_id == max(by_id))
    for check_key in (s.key for a in ASSETS for s in a.check_specs):
        history = storage.get_asset_check_execution_history(check_key, limit=100)
        out[check_key] = sorted(
            (
                run_index[h.run_id],
                h.status.value,
                h.partition,
                h.event is not None,
                # The evaluation's verdict (a check still planned has none).
                getattr(h.event and h.event.dagster_event.event_specific_data, "passed", None),
            )
            for h in history
        )
    for run_id in run_ids:
        types = [
            r.event_log_entry.dagster_event_type
            for r in storage.get_records_for_run(run_id).records
        ]
        out[run_index[run_id], "events"] = sorted(str(t) for t in types)
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory, flights_rows) -> Path:
    return write_csv(tmp_path_factory.mktemp("sample") / "flights.csv", flights_rows)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sample):
    with pytest.MonkeyPatch.context() as monkeypatch:
        directory = tmp_path_factory.mktemp("reference")
        return record(directory, sample, batching=False, monkeypatch=monkeypatch)


@pytest.mark.parametrize("failures", [[], ["event", "commit"]], ids=["clean", "failures"])
def test_batched_backfill_is_recorded_as_dagster_records_it(
    failures, reference, tmp_path, sample, monkeypatch
):
    RecordingStorage.batches, RecordingStorage.failures = [], list(failures)
    batched = record(tmp_path, sample, batching=True, monkeypatch=monkeypatch)
    # Per run, one batch of planned events; one batch of the days' materializations for each of
    # raw_records, validated_records, quarantined_records, features and day_verdicts; and the
    # check evaluations: the data checks' one by one (a check output comes between them), the
    # days' verdicts in one batch.
    batches = [(tuple(b), n) for b, n in RecordingStorage.batches]
    assert batches.count((("ASSET_MATERIALIZATION",), 5)) == 5
    assert batches.count((("ASSET_MATERIALIZATION",), 4)) == 5
    assert [n for b, n in batches if b == ("ASSET_CHECK_EVALUATION",) and n > 1] == [5, 4]
    assert RecordingStorage.failures == []  # the injected failures happened
    # The reference was really recorded: 5 + 4 materializations of every asset, Jan 4-5 twice.
    assert [len({m[:2] for m in reference[k, "materializations"]}) for k in KEYS] == [9] * 4
    assert len(reference[dg.AssetCheckKey(KEYS[3], DAY_CHECK)]) == 9
    assert reference[KEYS[0], "latest"]["2013-01-04"] == ("2013-01-04", 1)
    for key in reference:  # one item at a time, so that a failure names what differs
        assert set(batched[key]) ^ set(reference[key]) == set(), key
    assert batched == reference


def test_the_storage_turns_batching_and_planned_subsets_on_unless_the_environment_says(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    monkeypatch.delenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", raising=False)
    storage = BatchingSqliteEventLogStorage(str(tmp_path / "a"))
    assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "1000"
    assert storage.supports_partition_subset_in_asset_materialization_planned_events

    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    monkeypatch.setenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "false")
    storage = BatchingSqliteEventLogStorage(str(tmp_path / "b"), batch_size=50)
    assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "0"
    assert not storage.supports_partition_subset_in_asset_materialization_planned_events
