"""A range of days handled a few whole days at a time, so that no step holds a range in memory.

A backfill of a year runs as one run (fewest imports and events), but a year at 10x the rows is
3.4M records: built as one pandas frame in each data step it took 1.5 GB for 60 days. A
`DayChunks` is the range cut into windows of whole days holding at most `CHUNK_ROWS` rows (a day
with more is a window by itself), read or computed one window at a time: the IO manager reads an
input that asks for it (an asset input annotated `DayChunks`) window by window, and writes an
output given as one window by window into a staging table, which then replaces the slice in one
transaction.

No pandas and no Dagster here: assets annotate inputs with this class when the code location
loads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

CHUNK_ROWS = 100_000
"""Rows per window (whole days): ~100 MB of pandas per step at the flights' width."""

Window = tuple[dt.date, dt.date]


def chunk_windows(
    counts: Mapping[dt.date, int], start: dt.date, end: dt.date, max_rows: int
) -> list[Window]:
    """[start, end) cut into consecutive [first, last) windows of whole days, each holding at
    most `max_rows` rows by `counts` (rows per day; a day missing from it has none), except a
    day that alone holds more. Empty days join the window they fall in."""
    windows, first, rows = [], start, 0
    day = start
    while day < end:
        n = int(counts.get(day, 0))
        if rows and rows + n > max_rows:
            windows.append((first, day))
            first, rows = day, 0
        rows += n
        day += dt.timedelta(days=1)
    if first < end:
        windows.append((first, end))
    return windows


class DayChunks:
    """The rows of a range of days, as frames of one window each, computed when iterated.

    `read(first, last)` gives the rows of the days [first, last); any window of the range may be
    read, not only the listed ones (a step reading two inputs day-aligned). `after`, if given,
    runs once the last window has been given (a check over the whole range that must fail before
    the write commits).
    """

    def __init__(
        self,
        windows: list[Window],
        read: Callable[[dt.date, dt.date], pd.DataFrame],
        after: Callable[[], None] | None = None,
    ):
        self.windows = list(windows)
        self._read = read
        self._after = after

    def read(self, first: dt.date, last: dt.date) -> pd.DataFrame:
        return self._read(first, last)

    def __iter__(self) -> Iterator[pd.DataFrame]:
        for first, last in self.windows:
            yield self._read(first, last)
        if self._after is not None:
            self._after()

    def map(
        self,
        transform: Callable[[pd.DataFrame, dt.date, dt.date], pd.DataFrame],
        after: Callable[[], None] | None = None,
    ) -> DayChunks:
        """The same windows, each window's frame passed through `transform(frame, first, last)`."""
        return DayChunks(self.windows, lambda a, b: transform(self._read(a, b), a, b), after)

    def __repr__(self) -> str:
        span = f"{self.windows[0][0]}..{self.windows[-1][1]}" if self.windows else "no days"
        return f"DayChunks({len(self.windows)} window(s), {span})"
