"""How many rows a run will read, worked out in the background for the progress bar's total.

A run has an estimate from its first second, and better ones as the count goes on:

- Parquet: the row count in the file's metadata, exact at once, local or in a bucket.
- Text (CSV/TSV, JSON Lines, JSON arrays; plain, gzip, a file, an archive member, an object):
  the rows per byte of its first MiB (decompressed, with that part's compression ratio for
  gzip), times its size. An input that fits in that MiB is counted exactly there.
- Then each local text input (gzip and archive members too) is counted exactly: newlines
  counted by ``bytes.count`` a few MiB at a time, less blank lines and a CSV's header line.
  Each count replaces its input's estimate as soon as it is done.
- Objects in a bucket are not read twice: the first block of at most ``REMOTE_SAMPLES`` of
  them is read (fsspec fetches one ranged block), the rest are reckoned by their size at the
  rows per byte seen so far.

What stays an estimate says so (``exact`` false): objects in a bucket, JSON arrays (counting
their elements means parsing them), encodings such as UTF-16 whose newline is not the byte
0x0A, and a CSV where a quoted value holds a newline, where newlines outnumber rows (found
cheaply: a line with an odd number of quotes). stdin is never counted: its total stays
unknown. The bar's total is set to the rows done when a run ends anyway.

Counting must never slow or stop a run: one daemon thread (niced on Linux), one chunk in
memory, stopped when the run ends; a failure of any kind (an unreadable file, a permission, the
network) leaves the count unknown, without a word: the run's own reader reports real problems.
A retry counts no input: its total is the records of the chosen statuses in its results file.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, cast

import polars as pl

from backfill.inputs import (
    GZIP_MAGIC,
    PARQUET_MAGIC,
    Dialect,
    format_of_name,
    open_input,
    sniff_format,
)
from backfill.locate import Located, locate

HEAD_BYTES = 1 << 20  # measured for an estimate
CHUNK_BYTES = 2 << 20  # read at a time: each bytes.count holds the GIL about a millisecond
MAX_INFLATED_HEAD = 32 << 20  # a gzip bomb's first MiB is not inflated any further
REMOTE_SAMPLES = 4  # objects whose first block is read; the rest are reckoned by size
NICENESS = 10
_QUOTES_AND_NEWLINES = b'"\n'
_OTHER_BYTES = bytes(b for b in range(256) if b not in _QUOTES_AND_NEWLINES)
BLANK = (b"", b"\r")  # a line the readers skip (their lines end at \n, a \r dropped)
_BLANK_LINE = re.compile(rb"\n(?=\r?\n)")
_JSON_STRUCTURE = re.compile(rb'["\\\[\]{}]')
_ASCII_PROBE = '\n"{[ ,'
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Count:
    """A number of rows (None: unknown), and whether it was counted rather than estimated."""

    total: int | None
    exact: bool


class RowCount:
    """The rows a run will read, as far as known; safe to read from any thread."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit  # --limit: rows the run takes at most
        self.finished = threading.Event()  # the count will not change any more
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._count = Count(None, False)

    def current(self, done_before: int = 0) -> Count:
        """The count, capped by --limit; ``done_before``: rows a resumed run had already done."""
        with self._lock:
            count = self._count
        if count.total is None or self.limit is None:
            return count
        return Count(min(count.total, done_before + self.limit), count.exact)

    @property
    def total(self) -> int | None:
        """The rows the run will read, counted or estimated; None when unknown."""
        return self.current().total

    @property
    def exact(self) -> bool:
        """Whether the total was counted, not estimated."""
        return self.current().exact

    def stop(self) -> None:
        """Stop counting (the run is over)."""
        self.stopping.set()

    def publish(self, count: Count) -> None:
        """Set a new count."""
        with self._lock:
            self._count = count


def count_rows(
    arguments: Sequence[str],
    fmt: str | None = None,
    dialect: Dialect | None = None,
    limit: int | None = None,
) -> RowCount:
    """Start counting the rows of a run's INPUT arguments, read as the run reads them."""
    count = RowCount(limit)
    encoding = (dialect or Dialect()).encoding
    _start(count, lambda: _count_inputs(count, list(arguments), fmt, encoding))
    return count


def count_records(results_path: str, statuses: Iterable[str], limit: int | None = None) -> RowCount:
    """Start counting the records of a results file a retry sends again."""
    from backfill.results import read_results

    count = RowCount(limit)
    chosen = list(statuses)

    def work() -> None:
        total = 0
        for batch in read_results(results_path):
            if count.stopping.is_set():
                return
            total += batch.filter(pl.col("status").is_in(chosen)).height
        count.publish(Count(total, True))

    _start(count, work)
    return count


def _start(count: RowCount, work: Callable[[], None]) -> None:
    """Run the counting in a daemon thread that never raises."""

    def run() -> None:
        _lower_priority()
        try:
            work()
        except BaseException:  # a thread's own: Ctrl-C goes to the main thread
            log.debug("counting rows failed", exc_info=True)
        finally:
            count.finished.set()

    threading.Thread(target=run, name="backfill-count", daemon=True).start()


def _lower_priority() -> None:
    """Let the sending threads go first: on Linux a nice value is a thread's own."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)


@dataclass
class _Part:
    """One input (a file, archive member or object) and what is known of its rows."""

    unit: Located
    rows: int | None = None
    exact: bool = False
    recount: bool = False  # a local text input whose estimate a count can replace
    header: bool = False  # CSV/TSV: the first line is no row
    gzipped: bool = False
    parquet: bool = False
    failed: bool = False  # could not be read: the total is unknown


def _count_inputs(count: RowCount, arguments: list[str], fmt: str | None, encoding: str) -> None:
    """Estimate every input, then count the local ones exactly, publishing as it goes."""
    if "-" in arguments:
        return  # stdin cannot be read twice
    parts = [_Part(unit) for argument in arguments for unit in locate(argument)]
    sampled = 0
    for part in parts:
        if count.stopping.is_set():
            return
        remote_text = (
            part.unit.remote is not None and format_of_name(part.unit.name, fmt) != "parquet"
        )
        if remote_text and sampled >= REMOTE_SAMPLES:
            continue
        sampled += remote_text
        _quietly(part, _measure, part, fmt, encoding)
        count.publish(_total(parts))
    for part in parts:
        if count.stopping.is_set():
            return
        if part.recount and not part.exact:
            _quietly(part, _count_exactly, part, count.stopping)
            count.publish(_total(parts))


def _quietly(part: _Part, action: Callable[..., None], *args: object) -> None:
    """Do one input's part of the count; a failure makes the total unknown, without a word."""
    try:
        action(*args)
    except Exception:
        part.failed = True
        log.debug("cannot count the rows of %s", part.unit.name, exc_info=True)


def _total(parts: list[_Part]) -> Count:
    """The rows of all parts; those not measured are reckoned by size at the rows per byte seen."""
    if any(p.failed for p in parts):
        return Count(None, False)
    missing = [p for p in parts if p.rows is None]
    known = sum(p.rows or 0 for p in parts)
    if not missing:
        return Count(known, all(p.exact for p in parts))
    measured = [p for p in parts if p.rows is not None and p.unit.size and not p.parquet]
    if not measured or any(p.unit.size is None for p in missing):
        return Count(None, False)
    per_byte = sum(p.rows or 0 for p in measured) / sum(p.unit.size or 0 for p in measured)
    return Count(known + round(per_byte * sum(p.unit.size or 0 for p in missing)), False)


# --- one input: an estimate from its head, then an exact count -----------------------------


def _measure(part: _Part, fmt: str | None, encoding: str) -> None:
    """A first count of one input: Parquet's from its metadata, text's from its first MiB."""
    unit = part.unit
    named = format_of_name(unit.name, fmt)
    in_place = unit.path is not None or unit.remote is not None  # not an archive member
    if named == "parquet" and in_place and not unit.name.lower().endswith(".gz"):
        part.parquet, part.rows, part.exact = True, _parquet_rows(unit), True
        return
    with contextlib.closing(unit.opener()) as stream:
        head, whole = _read_head(stream)
    ratio = 1.0
    if head.startswith(GZIP_MAGIC):
        part.gzipped = True
        head, ratio, whole = _inflated(head, whole)
    if named == "parquet" or head.startswith(PARQUET_MAGIC):
        _measure_parquet(part)
        return
    fmt_found = named or sniff_format(head)  # Parquet was told apart above
    if fmt_found is None:
        return
    countable = _ascii_compatible(encoding)
    if not countable:
        # Measured on the text as UTF-8, where a newline is one byte again.
        text = head.decode(encoding, errors="replace").encode()
        ratio *= len(text) / max(len(head), 1)
        head = text
    size = None if unit.size is None else unit.size * ratio
    if fmt_found == "json" and head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"[":
        _estimate_array(part, head, whole, size)
        return
    part.header = fmt_found in ("csv", "tsv")
    part.recount = countable and unit.remote is None
    _estimate_lines(part, head, whole, size)
    part.exact = part.exact and countable


def _measure_parquet(part: _Part) -> None:
    """A Parquet input found by its bytes, or inside gzip or an archive: its metadata if at hand.

    One inside gzip or an archive is copied to a scratch file to be read: that is left to
    the exact count, local inputs only.
    """
    part.parquet = True
    if part.gzipped or (part.unit.path is None and part.unit.remote is None):
        part.recount = part.unit.remote is None
        return
    part.rows, part.exact = _parquet_rows(part.unit), True


def _parquet_rows(unit: Located) -> int:
    """A Parquet file's or object's rows, from its metadata."""
    if unit.remote is not None:
        from backfill import remote

        url, options = remote.parquet_source(unit.remote)
        return int(pl.scan_parquet(url, storage_options=options).select(pl.len()).collect().item())
    assert unit.path is not None
    return int(pl.scan_parquet(unit.path).select(pl.len()).collect().item())


def _copied_parquet_rows(unit: Located) -> int:
    """A Parquet input's rows when it is inside gzip or an archive: read from a scratch copy."""
    inp = open_input(unit, "parquet")  # the copy is removed on close
    try:
        assert inp.parquet is not None
        return int(inp.parquet.select(pl.len()).collect().item())
    finally:
        inp.close()


def _read_head(stream: BinaryIO) -> tuple[bytes, bool]:
    """The first HEAD_BYTES of a stream, and whether they are all of it."""
    head = bytearray()
    while len(head) < HEAD_BYTES:
        block = stream.read(HEAD_BYTES - len(head))
        if not block:
            return bytes(head), True
        head += block
    return bytes(head), not stream.read(1)


def _inflated(raw: bytes, whole: bool) -> tuple[bytes, float, bool]:
    """A gzip head decompressed, its compression ratio, and whether it is the whole input."""
    inflater = zlib.decompressobj(wbits=31)
    data = inflater.decompress(raw, MAX_INFLATED_HEAD)
    used = len(raw) - len(inflater.unconsumed_tail) - len(inflater.unused_data)
    ended = inflater.eof and not inflater.unused_data  # else more gzip members follow
    return data, len(data) / max(used, 1), whole and ended


def _ascii_compatible(encoding: str) -> bool:
    """Whether an encoding writes newlines, quotes and brackets as ASCII does (a BOM aside)."""
    try:
        return (_ASCII_PROBE * 2).encode(encoding).endswith(_ASCII_PROBE.encode() * 2)
    except (LookupError, UnicodeError):
        return False


def _estimate_lines(part: _Part, head: bytes, whole: bool, size: float | None) -> None:
    """Rows of a line-based input from its head: counted if whole, else by its rows per byte."""
    lines = _Lines(quotes=part.header)
    if whole:
        lines.feed(head)
        part.rows, part.exact = lines.records(part.header), lines.exact
        return
    cut = head.rfind(b"\n") + 1
    skip = head.find(b"\n") + 1 if part.header else 0
    if size is None or cut <= skip:
        return  # no whole row in the first MiB
    lines.feed(head[:cut])
    per_byte = lines.records(part.header) / (cut - skip)
    part.rows = round(per_byte * max(size - skip, 0))


def _estimate_array(part: _Part, head: bytes, whole: bool, size: float | None) -> None:
    """Elements of a JSON array from its head: counted if whole, else by elements per byte."""
    elements, end = _array_elements(head)
    if whole:
        part.rows, part.exact = elements, True
    elif size is not None and elements:
        part.rows = round(elements / end * size)


def _array_elements(data: bytes) -> tuple[int, int]:
    """Elements (objects, arrays) of a JSON array that end in ``data``, and where the last ends."""
    depth, in_string, skip_to, elements, end = 0, False, 0, 0, 0
    for found in _JSON_STRUCTURE.finditer(data):
        at = found.start()
        if at < skip_to:
            continue
        char = data[at : at + 1]
        if in_string:
            if char == b"\\":
                skip_to = at + 2
            in_string = char != b'"'
        elif char == b'"':
            in_string = True
        elif char in b"[{":
            depth += 1
        else:
            depth -= 1
            if depth == 1:
                elements, end = elements + 1, at + 1
    return elements, end


def _count_exactly(part: _Part, stopping: threading.Event) -> None:
    """Count a local text input's rows to the end, a chunk at a time."""
    if part.parquet:
        part.rows, part.exact = _copied_parquet_rows(part.unit), True
        return
    lines = _Lines(quotes=part.header)
    with contextlib.closing(part.unit.opener()) as raw:
        stream = cast(BinaryIO, gzip.GzipFile(fileobj=raw)) if part.gzipped else raw
        with contextlib.closing(stream):
            while chunk := stream.read(CHUNK_BYTES):
                if stopping.is_set():
                    return
                lines.feed(chunk)
    part.rows, part.exact = lines.records(part.header), lines.exact


class _Lines:
    """Records in text fed a chunk at a time: lines, less blank ones.

    With ``quotes``, it also tells whether a line holds an odd number of quotes, which in a
    well-formed CSV means a quoted value spans lines (then lines outnumber records): the
    quotes and newlines are kept, quote pairs dropped, and any quote left is on such a line.
    """

    def __init__(self, quotes: bool = False) -> None:
        self.quotes = quotes
        self.newlines = 0
        self.blank = 0
        self.line = b""  # the start of the line not yet ended: enough to tell if it is blank
        self.open_quote = b""  # an odd quote in the line not yet ended
        self.odd = False

    @property
    def exact(self) -> bool:
        """Whether lines are records (no quoted value spans lines)."""
        return not self.odd

    def feed(self, chunk: bytes) -> None:
        """Count one more chunk of the text."""
        first = chunk.find(b"\n")
        if first < 0:
            self.line = (self.line + chunk[:2])[:2]
        else:
            self.newlines += chunk.count(b"\n")
            if (self.line + chunk[: min(first, 2)])[:2] in BLANK:
                self.blank += 1
            if b"\n\n" in chunk or b"\n\r\n" in chunk:
                self.blank += len(_BLANK_LINE.findall(chunk))
            self.line = chunk[chunk.rfind(b"\n") + 1 :][:2]
        if self.quotes and not self.odd and (self.open_quote or b'"' in chunk):
            self._check_quotes(chunk)

    def _check_quotes(self, chunk: bytes) -> None:
        """Note a line with an odd number of quotes among the lines this chunk ends."""
        marks = self.open_quote + chunk.translate(None, _OTHER_BYTES)
        cut = marks.rfind(b"\n") + 1
        if b'"' in marks[:cut].replace(b'""', b""):
            self.odd = True
        self.open_quote = b'"' * (marks.count(b'"', cut) % 2)

    def records(self, header: bool) -> int:
        """Non-blank lines, less the header line when there is one."""
        lines = self.newlines + (self.line not in BLANK) - self.blank
        return max(lines - (1 if header else 0), 0)
