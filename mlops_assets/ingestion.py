"""Raw records: each day's rows from the source, exactly as ingested (text), in DuckDB."""

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.lib.spec import PARTITION_COLUMN
from mlops_assets.metadata import (
    daily_metadata,
    describe_once,
    failed_days_markdown,
    range_totals,
)
from mlops_assets.partitions import daily_backfill, daily_partitions, dataset_spec, partition_window
from mlops_assets.resources import DUCKDB_POOL, DatasetSource, stored_daily_counts

if TYPE_CHECKING:
    import pandas as pd

    from mlops_assets.lib.chunks import DayChunks
    from mlops_assets.lib.spec import DatasetSpec

ROW_COUNT_CHECK = "check_row_count_against_trailing_days"
DUPLICATE_KEY_CHECK = "check_no_duplicate_keys"


class DeliveryConfig(dg.Config):
    accept_refused_delivery: bool = Field(
        default=False,
        description="Store a delivery the gates refuse (e.g. a day that really had no records). "
        "The reasons are still logged; the replaced rows stay in the history.",
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill,
    metadata={"partition_expr": PARTITION_COLUMN},
    group_name="ingestion",
    kinds={"duckdb", "pandas"},
    pool=DUCKDB_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            ROW_COUNT_CHECK,
            asset="raw_records",
            description="Every day has rows, and not fewer than min_row_ratio x the median of "
            "the trailing stored days. Judged before the write: a failing delivery is refused.",
        ),
        dg.AssetCheckSpec(
            DUPLICATE_KEY_CHECK,
            asset="raw_records",
            description="No two records share a key on the same date (copies are quarantined).",
        ),
    ],
)
def raw_records(
    context: dg.AssetExecutionContext,
    config: DeliveryConfig,
    source: DatasetSource,
    warehouse: DuckDBResource,
):
    """The source rows of each day, every column as text exactly as ingested, plus the date.

    The delivery is judged before it replaces anything (see `judge_delivery`); a refused one
    fails the run with the reasons and leaves every stored table as it was. Both the judging and
    the write read the range a window of whole days at a time (`DayChunks`).
    """
    spec = dataset_spec
    start, end = partition_window(context)
    chunks = source.chunks(spec, start, end)
    extra = source.extra_columns(spec)
    if extra:
        context.log.warning(f"source columns not in the specification, not read: {extra}")
    verdict = judge_delivery(chunks, spec, start, end, source, warehouse)
    context.log.info(
        f"{verdict.rows} {spec.name} records dated {start} .. {end - dt.timedelta(1)}, "
        f"{len(chunks.windows)} window(s)"
    )
    if verdict.problems:
        message = "\n".join(f"- {p}" for p in verdict.problems)
        if not config.accept_refused_delivery:
            raise dg.Failure(
                description=f"delivery refused, nothing stored was changed:\n{message}\n"
                "(accept it anyway with the config accept_refused_delivery: true)",
                metadata={"problems": len(verdict.problems), "source": spec.source.path},
            )
        context.log.warning(f"refused delivery accepted by configuration:\n{message}")

    def stored(frame, first, last):
        if first == chunks.windows[0][0]:
            describe_once(context, frame)
        daily_metadata(context, frame, PARTITION_COLUMN, first, last)
        return frame

    yield dg.Output(
        chunks.map(stored),
        metadata={
            "source": spec.source.path,
            "extra_columns": ", ".join(extra) or "none",
            **range_totals(
                context,
                {"days": (end - start).days, "rows_dated_outside_range": verdict.outside_rows},
            ),
        },
    )

    table = verdict.row_counts
    failed = table[table["failed"]]
    yield dg.AssetCheckResult(
        check_name=ROW_COUNT_CHECK,
        passed=failed.empty,
        metadata={
            "failed_days": len(failed),
            "min_rows_per_day": int(table["rows"].min()),
            "min_ratio_to_trailing_median": float(table["ratio"].min()),
            "threshold": spec.quality.min_row_ratio,
            "failures": failed_days_markdown(failed),
        },
    )

    yield dg.AssetCheckResult(
        check_name=DUPLICATE_KEY_CHECK,
        passed=not verdict.duplicates,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "duplicate_records": verdict.duplicates,
            "key": ", ".join([spec.date.column, *spec.key]),
        },
    )


@dataclass(frozen=True)
class Verdict:
    problems: list[str]
    row_counts: "pd.DataFrame"
    outside_rows: int
    rows: int
    duplicates: int


def judge_delivery(
    chunks: "DayChunks",
    spec: "DatasetSpec",
    start: dt.date,
    end: dt.date,
    source: DatasetSource,
    warehouse: DuckDBResource,
) -> Verdict:
    """What would make this delivery damage what is stored, decided before anything is written.

    Refused: an empty day, or one below min_row_ratio x the median of the trailing stored days;
    a column with more nulls on a day than its limit; more than max_quarantine_share of the
    records failing their checks, counting the rows of the source dated outside the declared
    range (they are quarantined in the nearest day's partition, never dropped). Each window of
    `chunks` is judged on its own (a day and its key never span two windows) and the counts
    added up.
    """
    from collections import Counter

    import pandas as pd

    from mlops_assets.lib.quality import (
        daily_row_counts,
        null_limits,
        null_rate_problems,
        row_count_anomalies,
        row_count_problems,
    )
    from mlops_assets.lib.validation import validate_records

    date, quality = spec.date.column, spec.quality
    limits = null_limits(spec)
    counts, null_problems, reasons = [], [], Counter()
    rows = in_range = quarantined = duplicates = 0
    for (first, last), frame in zip(chunks.windows, chunks, strict=False):
        in_window = frame[frame[date].between(pd.Timestamp(first), pd.Timestamp(last), "left")]
        counts.append(daily_row_counts(in_window, date, first, last))
        null_problems += null_rate_problems(in_window, limits, date)
        result = validate_records(frame, spec, first, last)
        quarantined += len(result.quarantined)
        reasons.update(result.quarantined["failed_check"].tolist())
        duplicates += int(frame.duplicated([date, *spec.key]).sum())
        rows, in_range = rows + len(frame), in_range + len(in_window)
    history = stored_daily_counts(
        warehouse,
        f"{spec.name}.raw_records",
        date,
        start - dt.timedelta(days=quality.trailing_days),
        start,
    )
    table = row_count_anomalies(
        pd.concat(counts),  # the windows cover [start, end), empty days included
        history,
        trailing_days=quality.trailing_days,
        min_ratio=quality.min_row_ratio,
    )
    problems = row_count_problems(table) + null_problems

    outside, examples = source.outside_range(spec)
    # Out-of-range rows this window holds are among the quarantined; the others count too.
    elsewhere = outside - (rows - in_range)
    bad, total = quarantined + elsewhere, rows + elsewhere
    share = bad / total if total else 0.0
    if share > quality.max_quarantine_share:
        listed = [f"{check} ({n})" for check, n in reasons.most_common(3)]
        if outside:
            first, last = spec.date.start, spec.date.end
            listed.append(f"dated outside {first}..{last} ({outside}, e.g. {examples})")
        problems.append(
            f"{share:.1%} of the records fail their checks (limit "
            f"{quality.max_quarantine_share:.0%}): {'; '.join(listed)}"
        )
    return Verdict(problems, table, outside, rows, duplicates)
