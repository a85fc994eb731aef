"""From input paths and a mapping to checked batches: open, check columns, validate, count.

Both ``validate`` and ``send`` run rows through here, so they can never disagree about
which rows are valid or what their payloads are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from backfill.errors import InputError
from backfill.inputs import LINE, MALFORMED, ROW, InputFile, batches, open_input, read_ahead
from backfill.mapping import Mapping, check_columns
from backfill.payloads import MESSAGE, REASON, build_payloads
from backfill.report import ValidationReport
from backfill.tables import TableWriter

INVALID_OUT_FIRST = ["source", "row", "reason", "message"]


@dataclass
class CheckedBatch:
    """One batch of one input: its rows as read, and each row's reason, message and payload."""

    source: str
    rows: pl.DataFrame
    checked: pl.DataFrame


def open_inputs(paths: Sequence[str], mapping: Mapping, fmt: str | None = None) -> list[InputFile]:
    """Open every input and check the mapping against it before any row is read."""
    if not paths:
        raise InputError("no input given")
    opened: list[InputFile] = []
    try:
        for path in paths:
            inp = open_input(path, fmt)
            opened.append(inp)
            check_columns(mapping, path, inp.columns)
    except BaseException:
        for inp in opened:
            inp.close()
        raise
    if sum(1 for p in paths if p == "-") > 1:
        raise InputError("-: stdin can be given only once")
    return opened


def checked_batches(
    inputs: Sequence[InputFile], mapping: Mapping, bodies: bool = True
) -> Iterator[CheckedBatch]:
    """Every row of every input, validated and turned into payloads, batch by batch."""
    now = datetime.now(UTC)
    wanted = mapping.columns_used()
    for inp in inputs:
        try:
            for rows in read_ahead(batches(inp, wanted)):
                yield CheckedBatch(inp.name, rows, build_payloads(rows, mapping, now, bodies))
        finally:
            inp.close()


def invalid_out_columns(inputs: Sequence[InputFile]) -> list[str]:
    """The invalid-rows file's columns: where and why, then every input column."""
    columns = dict.fromkeys(INVALID_OUT_FIRST)
    for inp in inputs:
        columns.update(dict.fromkeys(["line"] if inp.format == "jsonl" else inp.columns))
    return list(columns)


def invalid_rows(batch: CheckedBatch) -> pl.DataFrame:
    """A batch's invalid rows with their original columns, source, row and reason."""
    # build_payloads keeps the batch's row order, so the two frames line up row for row.
    rows = batch.rows.drop(MALFORMED).with_columns(batch.checked[REASON], batch.checked[MESSAGE])
    rows = rows.filter(pl.col(REASON).is_not_null()).rename({ROW: "row"})
    if LINE in rows.columns:
        rows = rows.select("row", REASON, MESSAGE, pl.col(LINE).alias("line"))
    return rows.with_columns(pl.lit(batch.source).alias("source"))


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
    inputs = open_inputs(paths, mapping, fmt)
    report = ValidationReport(sources=list(paths))
    writer = (
        TableWriter(invalid_out, invalid_out_columns(inputs), InputError) if invalid_out else None
    )
    try:
        for batch in checked_batches(inputs, mapping, bodies):
            report.add(batch.source, batch.checked)
            if writer is not None:
                writer.write(invalid_rows(batch))
            if on_batch is not None:
                on_batch(batch)
    finally:
        for inp in inputs:
            inp.close()
        if writer is not None:
            writer.close()
    return report
