"""From input paths and a mapping to checked batches: open, check columns, validate, count.

Both ``validate`` and ``send`` run rows through here, so they can never disagree about
which rows are valid or what their payloads are.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import polars as pl

from backfill import sources
from backfill.codes import Skip
from backfill.dedupe import SeenKeys
from backfill.errors import InputError, UsageError
from backfill.inputs import (
    LINE,
    ROW,
    WIDE,
    Dialect,
    InputFile,
    batches,
    export_columns,
    open_input,
    read_ahead,
    require_readable,
)
from backfill.locate import Located, locate
from backfill.mapping import Mapping
from backfill.payloads import (
    DEDUPE_KEY,
    MESSAGE,
    PAYLOAD,
    REASON,
    SKIP,
    SKIP_MESSAGE,
    SKIP_RULE,
    build_payloads,
)
from backfill.report import ValidationReport
from backfill.tables import TableWriter

INVALID_OUT_FIRST = ["source", "row", "reason", "message"]
VALIDATING_AT_ONCE = 2  # batches validated side by side (and so held in memory at once)
WIDE_BATCH_BYTES = 4 << 20  # a wide input's rows are read as Python strings first: fewer at once
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class CheckedBatch:
    """One batch of one input: its rows as read, and each row's reason, message and payload."""

    source: str
    rows: pl.DataFrame
    checked: pl.DataFrame


def open_inputs(
    paths: Sequence[str], mapping: Mapping, fmt: str | None = None, dialect: Dialect | None = None
) -> list[InputFile]:
    """Open every input each argument names and check the mapping before any row is read."""
    if not paths:
        raise InputError("no input given")
    if sum(1 for p in paths if p == "-") > 1:
        raise InputError("-: stdin can be given only once")
    units = [unit for path in paths for unit in locate(path)]
    _refuse_twice(units)
    dialect = dialect or mapping_dialect(mapping)
    opened: list[InputFile] = []
    try:
        for unit in units:
            opened.append(open_input(unit, fmt, dialect))
        _, plans = sources.resolve(mapping, opened)  # refuses a source no input has
        for inp in opened:
            require_readable(inp, plans[inp.name].reads)
    except BaseException:
        for inp in opened:
            inp.close()
        raise
    return opened


def mapping_dialect(mapping: Mapping) -> Dialect:
    """The CSV dialect the mapping's [input] table gives (the defaults without one)."""
    return Dialect(mapping.input.delimiter, mapping.input.encoding)


def _refuse_twice(units: Sequence[Located]) -> None:
    """Refuse an input named twice (by two arguments, or a file and its directory)."""
    seen: set[str] = set()
    files: list[Located] = []
    for unit in units:
        if unit.name in seen:
            raise InputError(
                f"{unit.name}: given twice; every row would be sent twice", file=unit.name
            )
        seen.add(unit.name)
        if unit.path is not None and Path(unit.path).is_file():
            for earlier in files:
                assert earlier.path is not None
                if Path(unit.path).samefile(earlier.path):
                    raise InputError(
                        f"{unit.name}: given twice (as {earlier.name}); every row would be"
                        " sent twice",
                        file=unit.name,
                    )
            files.append(unit)


def check_outputs(outputs: Sequence[str | None], inputs: Sequence[str]) -> None:
    """Refuse, before anything is read, an output file that cannot be written or is an input."""
    for out in outputs:
        if out is None:
            continue
        path = Path(out)
        if path.is_dir():
            raise UsageError(f"{out}: is a directory", file=out)
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise UsageError(f"{out}: cannot write: No such file or directory", file=out)
        if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise UsageError(f"{out}: cannot write: {_not_writable_because(parent)}", file=out)
        for name in inputs:
            if name != "-" and path.exists() and Path(name).exists() and path.samefile(name):
                raise UsageError(
                    f"{out}: is one of the inputs; writing it would destroy it", file=out
                )


def _not_writable_because(folder: Path) -> str:
    """Why a folder takes no files: a read-only file system is not a permission to ask for."""
    if hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY:
        return "Read-only file system"
    return "Permission denied"


def checked_batches(
    inputs: Sequence[InputFile],
    mapping: Mapping,
    bodies: bool = True,
    keep: Callable[[str, pl.Series], pl.Series] | None = None,
    batch_bytes: int | None = None,
) -> Iterator[CheckedBatch]:
    """Every row of every input, validated and turned into payloads, batch by batch.

    ``keep(source, row_numbers)`` picks the rows to go on with (a resumed run leaves out the
    rows already done) before any work is spent on them. With ``dedupe`` in the mapping the
    rows done before are read too: their keys decide which later rows are duplicates, as
    they did in the run that started.
    """
    now = datetime.now(UTC)
    resolved, plans = sources.resolve(mapping, inputs)
    seen = SeenKeys() if resolved.filter.dedupe or resolved.filter.dedupe_payload else None
    early = keep if seen is None else None

    def check(item: tuple[str, pl.DataFrame]) -> CheckedBatch:
        source, rows = item
        read = sources.add_sources(rows, plans[source])
        return CheckedBatch(source, rows, build_payloads(read, resolved, now, bodies))

    try:
        for run in _runs(inputs):
            # A batch of a very wide input costs tens of MiB however few its rows: one batch
            # at a time, no read-ahead, keeps its memory as low as a narrow input's.
            wide = len(run[0].columns) > WIDE
            size = min(batch_bytes or WIDE_BATCH_BYTES, WIDE_BATCH_BYTES) if wide else batch_bytes
            frames = _frames(run, plans, size, early)
            # Closed before the inputs are: a read-ahead thread may be reading one of them.
            with closing(frames if wide else read_ahead(frames)) as read:
                for batch in in_order(check, read, 1 if wide else VALIDATING_AT_ONCE):
                    if seen is not None:
                        batch = _only(_deduped(batch, seen, _dedupe_label(resolved)), keep)
                    if batch.checked.height:
                        yield batch
    finally:
        for inp in inputs:
            inp.close()
        if seen is not None:
            seen.close()


def _runs(inputs: Sequence[InputFile]) -> Iterator[list[InputFile]]:
    """The inputs in order, in runs read as one stream of batches: a wide input on its own.

    Reading runs on from one input into the next, so many small files (a bucket prefix, an
    archive's members) keep the cores as busy, and hold as much memory, as one large file.
    """
    narrow: list[InputFile] = []
    for inp in inputs:
        if len(inp.columns) <= WIDE:
            narrow.append(inp)
            continue
        if narrow:
            yield narrow
            narrow = []
        yield [inp]
    if narrow:
        yield narrow


def _frames(
    run: Sequence[InputFile],
    plans: dict[str, sources.InputPlan],
    size: int | None,
    keep: Callable[[str, pl.Series], pl.Series] | None,
) -> Generator[tuple[str, pl.DataFrame], None, None]:
    """Each input's batches in turn, with its name, less the rows ``keep`` leaves out (empty
    batches are dropped); an input is closed once read."""
    for inp in run:
        try:
            for rows in batches(inp, plans[inp.name].reads, size):
                if keep is not None:
                    rows = rows.filter(keep(inp.name, rows[ROW]))
                if rows.height:
                    yield inp.name, rows
        finally:
            inp.close()


def _dedupe_label(mapping: Mapping) -> str:
    """How a duplicate's message names the dedupe key."""
    if mapping.filter.dedupe_payload:
        return "payload"
    return " + ".join(source.label for source in mapping.filter.dedupe)


def _deduped(batch: CheckedBatch, seen: SeenKeys, label: str) -> CheckedBatch:
    """A batch whose rows with a key seen on an earlier row are skipped as duplicates."""
    checked = batch.checked
    first = seen.first_seen(batch.source, checked[ROW], checked[DEDUPE_KEY])
    duplicate = first.row.is_not_null()
    if not duplicate.any():
        return batch
    earlier = pl.lit("row ") + first.row.cast(pl.String)
    other = pl.lit(first.source) != pl.lit(batch.source)
    earlier = pl.when(other).then(pl.lit(first.source) + pl.lit(" ") + earlier).otherwise(earlier)
    dup = pl.lit(duplicate)
    checked = checked.with_columns(
        pl.when(dup).then(pl.lit(Skip.DUPLICATE.value)).otherwise(SKIP).alias(SKIP),
        pl.when(dup).then(pl.lit("dedupe")).otherwise(SKIP_RULE).alias(SKIP_RULE),
        pl.when(dup)
        .then(pl.lit(f"same {label} as ") + earlier)
        .otherwise(SKIP_MESSAGE)
        .alias(SKIP_MESSAGE),
        pl.when(dup).then(None).otherwise(PAYLOAD).alias(PAYLOAD),
    )
    return CheckedBatch(batch.source, batch.rows, checked)


def _only(batch: CheckedBatch, keep: Callable[[str, pl.Series], pl.Series] | None) -> CheckedBatch:
    """The rows of a checked batch that ``keep`` picks (all without one)."""
    if keep is None:
        return batch
    mask = keep(batch.source, batch.checked[ROW])
    return CheckedBatch(batch.source, batch.rows.filter(mask), batch.checked.filter(mask))


def in_order(
    work: Callable[[T], R], items: Iterator[T], at_once: int = VALIDATING_AT_ONCE
) -> Iterator[R]:
    """``work(item)`` for each item, yielded in order, with up to ``at_once`` done side by side.

    Polars releases the GIL while it computes, so batches are validated on several cores.
    When reading fails, the batches read before are still handed over first, as they
    would be one by one.
    """
    with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="backfill-check") as pool:
        running: deque[Future[R]] = deque()
        while True:
            try:
                item = next(items)
            except StopIteration:
                break
            except Exception:
                while running:
                    yield running.popleft().result()
                raise
            running.append(pool.submit(work, item))
            if len(running) >= at_once:
                yield running.popleft().result()
        while running:
            yield running.popleft().result()


class InvalidOut:
    """The invalid-rows file: where and why (source, row, reason, message), then input columns.

    If an export has a column of the same name as one of ours, ours gets a leading
    underscore, so the export's own values are kept as they are.
    """

    def __init__(self, path: str, inputs: Sequence[InputFile]) -> None:
        originals: dict[str, None] = {}
        for inp in inputs:
            originals.update(dict.fromkeys(["line"] if inp.format == "jsonl" else inp.columns))
        self.names: dict[str, str] = {}
        for ours in INVALID_OUT_FIRST:
            name = ours
            while name in originals:
                name = "_" + name
            self.names[ours] = name
        self.writer = TableWriter(path, [*self.names.values(), *originals], InputError)

    def write(self, batch: CheckedBatch) -> None:
        """Append a batch's invalid rows."""
        # build_payloads keeps the batch's row order, so the two frames line up row for row.
        why = batch.checked.select(
            pl.col(ROW).alias(self.names["row"]),
            pl.col(REASON).alias(self.names["reason"]),
            pl.col(MESSAGE).alias(self.names["message"]),
            pl.lit(batch.source).alias(self.names["source"]),
        )
        if LINE in batch.rows.columns:
            originals = batch.rows.select(pl.col(LINE).alias("line"))
        else:  # an export's column named like one of the reader's is kept under another name
            originals = export_columns(batch.rows)
        rows = pl.concat([why, originals], how="horizontal")
        self.writer.write(rows.filter(pl.col(self.names["reason"]).is_not_null()))

    def close(self) -> None:
        """Flush and close the file."""
        self.writer.close()


def validate(
    paths: Sequence[str],
    mapping: Mapping,
    fmt: str | None = None,
    invalid_out: str | None = None,
    on_batch: Callable[[CheckedBatch], None] | None = None,
    bodies: bool = False,
) -> ValidationReport:
    """Validate every row of the inputs and return the report; optionally write invalid rows.

    ``bodies`` builds each valid row's JSON body too, for callers that show payloads.
    """
    check_outputs([invalid_out], paths)
    inputs = open_inputs(paths, mapping, fmt)
    report = ValidationReport(
        sources=list(paths), alternatives=[a.describe() for a in mapping.identifiers()]
    )
    writer: InvalidOut | None = None
    try:
        writer = InvalidOut(invalid_out, inputs) if invalid_out else None
        for batch in checked_batches(inputs, mapping, bodies):
            report.add(batch.source, batch.checked)
            if writer is not None:
                writer.write(batch)
            if on_batch is not None:
                on_batch(batch)
    finally:
        for inp in inputs:
            inp.close()
        if writer is not None:
            writer.close()
    return report
