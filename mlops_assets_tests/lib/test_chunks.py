"""Windows of whole days: every day exactly once, in order, none over the row budget."""

import datetime as dt

from mlops_assets.lib.chunks import DayChunks, chunk_windows

D = dt.date(2013, 1, 1)


def day(n: int) -> dt.date:
    return D + dt.timedelta(days=n)


def test_windows_cover_every_day_once_within_the_budget():
    counts = {day(0): 40, day(1): 40, day(2): 30, day(4): 90, day(5): 150, day(6): 10}
    # Hand-worked: 40+40 fit 100, +30 does not; day 3 is empty and joins day 2; 30+90 > 100;
    # day 5 alone holds more than the budget; day 6 starts the last window.
    assert chunk_windows(counts, day(0), day(7), 100) == [
        (day(0), day(2)),
        (day(2), day(4)),
        (day(4), day(5)),
        (day(5), day(6)),
        (day(6), day(7)),
    ]


def test_an_empty_range_is_one_window_and_no_range_none():
    assert chunk_windows({}, day(0), day(3), 100) == [(day(0), day(3))]
    assert chunk_windows({}, day(0), day(0), 100) == []


def test_chunks_are_read_when_iterated_and_after_runs_once_at_the_end():
    reads, ends = [], []
    chunks = DayChunks([(day(0), day(1)), (day(1), day(3))], lambda a, b: reads.append((a, b)))
    mapped = chunks.map(lambda frame, a, b: (a, b), after=lambda: ends.append(len(reads)))
    assert reads == []  # nothing read before iteration
    assert list(mapped) == [(day(0), day(1)), (day(1), day(3))]
    assert reads == [(day(0), day(1)), (day(1), day(3))] and ends == [2]
