"""Put back one day of a table as it was before a run replaced it: from `<table>_history` in the
DuckDB warehouse, or from the table's earlier versions in the Delta warehouse of the distributed
deployment (when `MLOPS_WAREHOUSE_ROOT` is set, or `--warehouse-root`; until a vacuum).

    python -m mlops_assets.restore raw_records 2013-03-04            # the latest earlier version
    python -m mlops_assets.restore raw_records 2013-03-04 --list     # the versions kept
    python -m mlops_assets.restore raw_records 2013-03-04 --version 2026-11-30T23:10:02.123+00:00

The content it replaces goes to the history in turn, so a restore can be undone the same way.
Tables downstream of the restored one still hold what was built from the replaced content:
materialize them again for that day (e.g. `--select 'validated_records*' --partition 2013-03-04`
after restoring `raw_records`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from functools import partial


def main(argv: list[str] | None = None) -> int:
    import duckdb

    from mlops_assets.distributed import WAREHOUSE_ROOT_ENV
    from mlops_assets.lib import delta
    from mlops_assets.lib.spec import load_spec
    from mlops_assets.lib.storage import restore_day, versions
    from mlops_assets.resources import data_dir

    parser = argparse.ArgumentParser(prog="python -m mlops_assets.restore", description=__doc__)
    parser.add_argument("table", help="table name in the dataset's schema, e.g. raw_records")
    parser.add_argument("day", type=dt.date.fromisoformat, help="the day (partition) to restore")
    parser.add_argument("--version", type=dt.datetime.fromisoformat, help="a version's time")
    parser.add_argument("--list", action="store_true", help="list the versions kept, restore none")
    parser.add_argument("--database", default=str(data_dir() / "warehouse.duckdb"))
    parser.add_argument(
        "--warehouse-root",
        default=os.environ.get(WAREHOUSE_ROOT_ENV),
        help=f"the Delta warehouse's directory (default: ${WAREHOUSE_ROOT_ENV}); else --database",
    )
    parser.add_argument("--schema", help="default: the dataset specification's name")
    args = parser.parse_args(argv)
    schema = args.schema or load_spec().name

    with duckdb.connect(":memory:" if args.warehouse_root else args.database) as con:
        if args.warehouse_root:
            uri = delta.table_uri(args.warehouse_root, schema, args.table)
            kept = delta.versions(con, uri, args.day)
            restore = partial(delta.restore_day, con, uri, schema, args.table, args.day)
        else:
            kept = versions(con, schema, args.table, args.day)
            restore = partial(restore_day, con, schema, args.table, args.day)
        if args.list or not kept:
            for version in kept:
                print(
                    f"{version.replaced_at.isoformat()}  {version.rows} rows  {version.replaced_by}"
                )
            if not kept:
                print(f"{schema}.{args.table}: no earlier version of {args.day}", file=sys.stderr)
            return 0 if kept else 1
        result = restore(replaced_at=args.version)
    print(
        f"{schema}.{args.table} {args.day}: {result.inserted} rows restored, "
        f"{result.deleted} replaced (kept: the restore can be undone the same way)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
