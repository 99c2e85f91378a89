"""A SQLite event log whose batches are one transaction per shard instead of one per event.

Dagster's SQLite event log stores each event with its own connection and commit, to the run's
shard and, for asset, check and run-status events, to the cross-run index shard (~20-30 ms per
event on this kind of machine). A single-run backfill of 365 days emits one materialization per
day and asset; Dagster already hands those to `store_event_batch` when DAGSTER_EVENT_BATCH_SIZE > 0
(which this storage sets for the processes of its instance), but the SQLite storage inherits a
loop over `store_event`. Here a batch opens both shards once, stores every event through the
unchanged `store_event` on those two open transactions (so each event is recorded exactly as
Dagster records it: the run-shard row, the index mirror, indexed tags, check executions), writes
each asset's row of the asset key table once, from its newest events (the others would be
overwritten within the batch), then commits the run shard and the index shard.

Failure: an error while storing any event of the batch rolls both transactions back, nothing of the
batch is written, and Dagster then stores the events one by one. If the index commit itself fails
after the run shard committed, the batch's run-shard rows are deleted again before the error goes
on, so the one-by-one fallback does not record them twice.

Configured in dagster.yaml as `event_log_storage` (module mlops_assets.event_log), without a
`base_dir`: it then lives where Dagster's own SQLite event log would, `$DAGSTER_HOME/history/runs`,
so the instance's storage follows DAGSTER_HOME (one instance per data directory, see the Makefile).
"""

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import sqlalchemy as db
from dagster import Field, StringSource
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.ref import _event_logs_directory
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
PLANNED_SUBSET_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
BATCH_SIZE = 1000
CHECK_EVALUATIONS = {DagsterEventType.ASSET_CHECK_EVALUATION}


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` with `store_event_batch` in one transaction per shard."""

    def __init__(
        self,
        base_dir: str,
        inst_data: ConfigurableClassData | None = None,
        batch_size: int = BATCH_SIZE,
    ):
        # The open connections of the batch this thread is storing, by shard name; other threads
        # (the event watcher) wait on the storage's lock as they do for any write.
        self._batch = threading.local()
        self._checks: list[EventLogEntry] = []  # check evaluations not yet written, in order
        self._checks_lock = threading.Lock()
        super().__init__(base_dir, inst_data)
        # Dagster hands a step's events over in batches only when DAGSTER_EVENT_BATCH_SIZE is set
        # in the process that runs the step. Every process of this instance loads this storage
        # (CLI, webserver, daemon, run workers), so it sets the variable unless the environment
        # already does: a bare `dagster asset materialize` of the year took 35-38 s without it.
        if batch_size:
            os.environ.setdefault(BATCH_SIZE_ENV, str(batch_size))

    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        """One "planned" event per asset for a range run, not one per day and asset (half the
        event log writes of a year-long run), unless DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS
        says otherwise. Dagster's trade-off: a failed range run does not mark its partitions
        failed; they show as missing."""
        if os.environ.get(PLANNED_SUBSET_ENV) is None:
            return True
        return super().supports_partition_subset_in_asset_materialization_planned_events

    @classmethod
    def config_type(cls) -> dict:
        return {
            "base_dir": Field(StringSource, is_required=False),
            "batch_size": Field(
                int,
                is_required=False,
                default_value=BATCH_SIZE,
                description="Events per batch when DAGSTER_EVENT_BATCH_SIZE is not set (0: off).",
            ),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> "BatchingSqliteEventLogStorage":
        base_dir = (config_value or {}).get("base_dir")
        if base_dir is None:
            home = os.environ.get("DAGSTER_HOME")
            if not home:
                raise ValueError("BatchingSqliteEventLogStorage: no base_dir and no DAGSTER_HOME")
            base_dir = _event_logs_directory(os.path.expanduser(home))
        return cls(
            base_dir,
            inst_data=inst_data,
            batch_size=(config_value or {}).get("batch_size", BATCH_SIZE),
        )

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        connections = getattr(self._batch, "connections", None)
        if connections is None:
            with super()._connect(shard) as conn:
                yield conn
        elif shard in connections:
            yield connections[shard]  # already in the batch's transaction
        else:  # the batch holds the storage's lock: opening another shard would wait forever
            raise RuntimeError(
                f"event batch of run {next(iter(connections))} touched shard {shard}"
            )

    def has_table(self, table_name: str) -> bool:
        # Asked for every event with indexed tags (a new connection each time); tables are only
        # ever added by migrations, so within one batch the first answer holds.
        tables = getattr(self._batch, "tables", None)
        if tables is None:
            return super().has_table(table_name)
        if table_name not in tables:
            tables[table_name] = super().has_table(table_name)
        return tables[table_name]

    def _store_asset_event(self, conn: Connection, event: EventLogEntry, event_id: int) -> None:
        # Each event of an asset overwrites the same columns of its row in the asset key table
        # (the last materialization, its run, its time), by an insert that fails and an update,
        # after a schema inspection: half of a batch's time. Only the newest event of each asset
        # and event type can be the last writer of a column, so a batch keeps those, in order,
        # and writes them at its end (`store_event_batch`).
        newest = getattr(self._batch, "asset_rows", None)
        if newest is None or event.dagster_event is None:
            super()._store_asset_event(conn, event, event_id)
            return
        key = (event.dagster_event.asset_key, event.dagster_event_type)
        newest.pop(key, None)
        newest[key] = (event, event_id)

    def store_event(self, event: EventLogEntry) -> None:
        """Check evaluations wait, in order, and are written as one batch before the next event
        of another kind (the step's end at the latest) or when `DAGSTER_EVENT_BATCH_SIZE` are
        waiting. Dagster batches only materializations: a monitoring run's per-day checks (three
        for each of 184 days) were 552 transactions of their own, 8 s on a busy disk. Readers see
        a step's evaluations when its next event is stored; a process killed before that loses
        them, as it loses the materializations in Dagster's own batches."""
        if getattr(self._batch, "connections", None) is not None:  # inside store_event_batch
            super().store_event(event)
            return
        size = int(os.environ.get(BATCH_SIZE_ENV) or 0)
        if size > 1 and event.run_id and event.dagster_event_type in CHECK_EVALUATIONS:
            with self._checks_lock:
                self._checks.append(event)
                full = len(self._checks) >= size
            if full:
                self._store_waiting_checks()
            return
        self._store_waiting_checks()
        super().store_event(event)

    def _store_waiting_checks(self) -> None:
        with self._checks_lock:
            waiting, self._checks = self._checks, []
        if not waiting:
            return
        try:
            self._store_batch(waiting)
        except Exception:  # nothing of the batch was written: one by one, as Dagster falls back
            for event in waiting:
                super().store_event(event)

    def dispose(self) -> None:
        self._store_waiting_checks()
        super().dispose()

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        self._store_waiting_checks()  # they came first
        self._store_batch(events)

    def _store_batch(self, events: Sequence[EventLogEntry]) -> None:
        if not events:
            return
        run_ids = {event.run_id for event in events}
        if len(run_ids) != 1:  # Dagster batches the events of one step; anything else as before
            super().store_event_batch(events)
            return
        (run_id,) = run_ids
        with self._db_lock, self._transactions(run_id) as (run_conn, index_conn):
            self._batch.connections = {run_id: run_conn, INDEX_SHARD_NAME: index_conn}
            self._batch.tables, self._batch.asset_rows = {}, {}
            try:
                for event in events:
                    self.store_event(event)
                newest, self._batch.asset_rows = self._batch.asset_rows, None
                for event, event_id in newest.values():
                    self._store_asset_event(index_conn, event, event_id)
            finally:
                del self._batch.connections, self._batch.tables
                self._batch.asset_rows = None
            # The run shard is write-locked from the batch's first insert to its commit, and
            # `store_event` inserts one row per event there: the batch's rows are the last ones.
            last = run_conn.execute(db.select(db.func.max(SqlEventLogStorageTable.c.id))).scalar()
            run_conn.commit()
            try:
                index_conn.commit()
            except Exception:
                run_conn.execute(
                    SqlEventLogStorageTable.delete().where(
                        SqlEventLogStorageTable.c.id > last - len(events),
                        SqlEventLogStorageTable.c.id <= last,
                    )
                )
                run_conn.commit()
                raise

    @contextmanager
    def _transactions(self, run_id: str) -> Iterator[tuple[Connection, Connection]]:
        """Connections to the run shard and the index shard, each in a transaction that is rolled
        back unless committed (opened as `_connect` opens one, the caller holding the lock)."""
        with ExitStack() as stack:
            connections = []
            for shard in (run_id, INDEX_SHARD_NAME):
                engine = create_engine(
                    self.conn_string_for_shard(shard),
                    poolclass=NullPool,
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
                )
                stack.callback(engine.dispose)
                if shard not in self._initialized_dbs:
                    self._initdb(engine)
                    self._initialized_dbs.add(shard)
                connection = stack.enter_context(engine.connect())
                connection.begin()  # closing the connection rolls back what was not committed
                connections.append(connection)
            yield connections[0], connections[1]
