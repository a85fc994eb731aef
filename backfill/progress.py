"""The send progress bar: rows done of a total, a percentage and an ETA, on stderr.

The total comes from ``backfill.counting``, which works in the background while the run
sends: an estimate within the first second (shown as ``~total``), replaced by the exact
count when it is done. Rows done are every row with a final record (sent, not_found,
rejected, failed, invalid, skipped), so a resumed run starts at the rows it had already
done, out of the whole input: its percentage is of the whole export, its rate and ETA of
this run alone. The bar is off when stderr is not a terminal or with --no-progress, and
then nothing is counted.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from backfill import counting
from backfill.codes import Status
from backfill.plans import RetryPlan, SendPlan
from backfill.summary import ResultsSummary

# tqdm's own layout, with the total marked as an estimate.
ESTIMATED_FORMAT = "{l_bar}{bar}| {n_fmt}/~{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


@contextlib.contextmanager
def progress_bar(
    disabled: bool, plan: SendPlan | RetryPlan, stream: IO[str] | None = None
) -> Iterator[Callable[[ResultsSummary], None] | None]:
    """A tqdm bar on stderr when it is a terminal, fed from the run's summary."""
    stream = stream or sys.stderr
    if disabled or not stream.isatty():
        yield None
        return
    from tqdm import tqdm

    count = start_count(plan)
    try:
        with tqdm(unit=" rows", file=stream, dynamic_ncols=True) as bar:
            view = RowsBar(bar, count)
            yield view.update
            view.finish()
    finally:
        count.stop()


def start_count(plan: SendPlan | RetryPlan) -> counting.RowCount:
    """Start counting what a run will send: a retry's chosen records, or a send's input rows."""
    from backfill import pipeline

    limit = plan.options.limit
    if isinstance(plan, RetryPlan):
        return counting.count_records(plan.from_results, plan.statuses, limit)
    dialect = pipeline.mapping_dialect(plan.mapping)
    return counting.count_rows(plan.inputs, plan.input_format, dialect, limit)


class RowsBar:
    """A tqdm bar kept up to date from the run's summary and the row count."""

    def __init__(self, bar: Any, count: counting.RowCount) -> None:
        self.bar = bar
        self.count = count
        self.done_before: int | None = None  # rows final before this run's first record
        self.shown = counting.Count(None, False)
        self.last: ResultsSummary | None = None

    def update(self, summary: ResultsSummary) -> None:
        """Show the rows done, the total as known now and the live counts."""
        rows = summary.rows
        if self.done_before is None:
            self._start_at(rows)
        self._show_total(rows)
        by = summary.by_status
        extra = {"limit": f"{summary.settled[0]:.1f}"} if summary.settled else {}
        self.bar.set_postfix(
            sent=by[Status.SENT],
            not_found=by[Status.NOT_FOUND],
            failed=by[Status.FAILED],
            refresh=False,
            **extra,
        )
        self.bar.update(rows - self.bar.n)  # draws, when due: after the counts are set
        self.last = summary

    def finish(self) -> None:
        """A run that went to its end did every row there was: the total is the rows done."""
        if self.last is not None and self.last.stopped is None and self.bar.total != self.bar.n:
            self.bar.total = self.bar.n
            self.bar.bar_format = None
            self.bar.refresh()

    def _start_at(self, rows: int) -> None:
        """Start the bar at the rows a resumed run had done, which its rate leaves out.

        The sender calls first before this run's first record, so ``rows`` are all earlier.
        """
        self.done_before = rows
        self.bar.n = self.bar.last_print_n = self.bar.initial = self.done_before
        self.bar.last_print_t = time.time()  # tqdm's clock

    def _show_total(self, rows: int) -> None:
        """Set the bar's total when the count has changed; never below the rows done."""
        count = self.count.current(self.done_before or 0)
        if count.total is not None and count.total < rows:
            count = counting.Count(rows, count.exact)
        if count == self.shown:
            return
        self.shown = count
        self.bar.total = count.total
        self.bar.bar_format = None if count.exact or count.total is None else ESTIMATED_FORMAT
