"""Open CSV/TSV/JSONL inputs (optionally gzip, or stdin) and yield bounded batches of rows.

A batch is a Polars frame with the row number (``ROW``), a malformed-row message or null
(``MALFORMED``) and the row's values as text. CSV batches carry every header column; JSONL
batches carry the columns asked for plus the raw line (``LINE``). Batches are cut at record
boundaries from a byte stream, so memory stays bounded whatever the file size.

An export's columns keep their names in a batch, except one named like ``ROW``,
``MALFORMED`` or ``LINE``: ``frame_column`` gives the name it is kept under. Any name is
only a name: none is read as a Polars pattern (``*``, ``^...$``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import queue
import sys
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import polars as pl

from backfill.errors import InputError

Format = Literal["csv", "tsv", "jsonl"]
FORMATS: dict[str, Format] = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SEPARATORS = {"csv": ",", "tsv": "\t"}
ROW = "__row"
MALFORMED = "__malformed"
LINE = "__line"
NOT_JSON = "not valid JSON"
# No export column has a blank name (CSV names are trimmed and blank ones numbered; a mapping
# refuses a blank name), so an export's own column named like one of ours takes a blank one.
RENAMED = {ROW: " ", MALFORMED: "  ", LINE: "   "}
BATCH_BYTES = 8 << 20
MAX_PENDING_BYTES = 8 * BATCH_BYTES  # a record longer than this is a quote gone wrong
JSONL_SAMPLE_LINES = 10_000
BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"
# Control characters that never occur in a sane export, used to read a chunk as whole lines.
LINE_SEPARATORS = ("\x1f", "\x1e", "\x1d", "\x1c", "\x07")
# The csv module refuses a field over 131,072 characters, and a reader that meets one
# swallows the rest of its chunk as that record: a huge cell must cost no rows. The limit is
# the module's, so it is raised once for the process, on import, rather than per read.
CSV_FIELD_LIMIT = 2**31 - 1
csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))


@dataclass
class InputFile:
    """One opened input: its name as given, format, columns, and the stream positioned at data."""

    name: str
    format: Format
    columns: list[str]
    stream: BinaryIO
    size: int | None = None  # bytes on disk; None for stdin
    pending: bytes = b""  # data already read from the stream while looking at the header
    rows_read: int = field(default=0)

    def close(self) -> None:
        """Close the underlying stream (never stdin)."""
        if self.name != "-":
            self.stream.close()


def frame_column(name: str) -> str:
    """The name a batch keeps an export's column under: its own, unless it is one of ours."""
    return RENAMED.get(name, name)


def export_columns(batch: pl.DataFrame) -> pl.DataFrame:
    """A CSV batch's export columns, under the export's own names."""
    kept = batch.select(pl.all().exclude(ROW, MALFORMED, LINE))
    return kept.rename({v: k for k, v in RENAMED.items() if v in kept.columns})


def detect_format(name: str, override: str | None) -> tuple[Format, bool]:
    """The input's format and whether it is gzip-compressed, from its name or --format."""
    lowered = name.lower()
    compressed = lowered.endswith(".gz")
    stem = lowered[:-3] if compressed else lowered
    if override is not None:
        return FORMATS.get(f".{override}", "csv"), compressed
    if name == "-":
        raise InputError("-: reading stdin needs --format csv, tsv or jsonl")
    for ext, fmt in FORMATS.items():
        if stem.endswith(ext):
            return fmt, compressed
    raise InputError(
        f"{name}: unknown input format (expected .csv, .tsv, .jsonl or .ndjson,"
        " optionally .gz; or give --format)"
    )


def open_input(name: str, format_override: str | None = None) -> InputFile:
    """Open an input and read its columns; any problem is a one-line InputError."""
    fmt, compressed = detect_format(name, format_override)
    stream, size = _open_stream(name, compressed)
    try:
        first = _read(stream, name, 0)
        if not first:
            raise InputError(f"{name}: file is empty (no header or rows)")
        first = first.removeprefix(BOM)
        if fmt == "jsonl":
            return _open_jsonl(name, stream, size, first)
        return _open_delimited(name, fmt, stream, size, first)
    except BaseException:
        if name != "-":
            stream.close()
        raise


def _open_stream(name: str, compressed: bool) -> tuple[BinaryIO, int | None]:
    """The raw byte stream of an input; gzip is checked by its magic bytes."""
    if name == "-":
        return sys.stdin.buffer, None
    path = Path(name)
    try:
        raw: BinaryIO = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, not an input file") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot open: {exc.strerror}") from None
    size = os.fstat(raw.fileno()).st_size
    if not compressed:
        return raw, size
    if raw.read(2) != GZIP_MAGIC:
        raw.close()
        raise InputError(f"{name}: not a gzip file (the name ends in .gz)")
    raw.close()
    return gzip.open(path, "rb"), size  # type: ignore[return-value]


def _read(stream: BinaryIO, name: str, rows_before: int, size: int | None = None) -> bytes:
    """One block of the stream; decompression and disk errors name the file and row."""
    try:
        return stream.read(size or BATCH_BYTES)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(
            f"{name}: compressed data is corrupt or truncated after row {rows_before} ({exc})"
        ) from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read after row {rows_before}: {exc}") from None


def _open_delimited(
    name: str, fmt: Format, stream: BinaryIO, size: int | None, first: bytes
) -> InputFile:
    """Read the header record of a CSV/TSV input."""
    buf = first
    end = _first_record_end(buf)
    while end < 0:
        more = _read(stream, name, 0)
        if not more:
            end = len(buf)
            break
        buf += more
        end = _first_record_end(buf)
    try:
        header_text = buf[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{name}: the header row is not valid UTF-8") from None
    header = next(csv.reader(io.StringIO(header_text), delimiter=SEPARATORS[fmt]), [])
    columns = _column_names(name, header)
    return InputFile(name, fmt, columns, stream, size, pending=buf[end + 1 :])


def _column_names(name: str, header: list[str]) -> list[str]:
    """Header names, stripped; blank names become column_N; duplicates are refused."""
    columns = [h.strip() or f"column_{i + 1}" for i, h in enumerate(header)]
    if not columns or columns == ["column_1"]:
        raise InputError(f"{name}: the header row is empty")
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise InputError(f"{name}: column '{column}' appears twice in the header row")
        seen.add(column)
    return columns


def _open_jsonl(name: str, stream: BinaryIO, size: int | None, first: bytes) -> InputFile:
    """Learn a JSONL input's field names from the keys of its first lines."""
    while first.count(b"\n") < JSONL_SAMPLE_LINES and len(first) < MAX_PENDING_BYTES:
        more = _read(stream, name, 0)
        if not more:
            break
        first += more
    keys: dict[str, None] = {}
    for line in first.split(b"\n")[:JSONL_SAMPLE_LINES]:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # too deep for Python: its row says so later
            continue
        if isinstance(record, dict):
            keys.update(dict.fromkeys(record))
    return InputFile(name, "jsonl", list(keys), stream, size, pending=first)


def _first_record_end(buf: bytes) -> int:
    """Index of the newline that ends the first whole record in buf, or -1.

    A newline ends a record when the quotes before it are balanced; the parity is carried
    from one candidate to the next so a block is scanned once, not once per line.
    """
    pos, parity, start = buf.find(b"\n"), 0, 0
    while pos >= 0:
        parity = (parity + buf.count(b'"', start, pos)) % 2
        if parity == 0:
            return pos
        start, pos = pos, buf.find(b"\n", pos + 1)
    return -1


def _last_record_end(buf: bytes, quoted: bool, limit: int) -> int:
    """Index of the newline that ends the last whole record in buf[:limit], or -1."""
    pos = buf.rfind(b"\n", 0, limit)
    if not quoted:
        return pos
    parity = buf.count(b'"', 0, pos) % 2 if pos >= 0 else 0
    while pos >= 0 and parity:
        prev = buf.rfind(b"\n", 0, pos)
        parity = (parity + buf.count(b'"', prev + 1, pos)) % 2
        pos = prev
    return pos


def _chunks(inp: InputFile, batch_bytes: int) -> Iterator[tuple[bytes, bool]]:
    """Record-aligned byte chunks of at most about batch_bytes; the last may lack a newline.

    Each comes with whether it was cut where its quotes are known to pair up, so that
    they need not be counted again.
    """
    quoted = inp.format != "jsonl"
    buf, inp.pending = inp.pending, b""
    eof = False
    while buf or not eof:
        if not eof and len(buf) < batch_bytes:
            more = _read(inp.stream, inp.name, inp.rows_read, batch_bytes)
            eof, buf = not more, buf + more
            continue
        end = _last_record_end(buf, quoted, batch_bytes)
        if end < 0:
            end = _last_record_end(buf, quoted, len(buf))  # one record longer than a batch
        balanced = quoted and end >= 0
        if end < 0 and len(buf) > MAX_PENDING_BYTES:
            # A quote that never closes would make the whole rest of the file one record:
            # cut anyway; the odd quote count marks the chunk for recovery.
            end = buf.rfind(b"\n")
        if end < 0 and not eof:
            more = _read(inp.stream, inp.name, inp.rows_read, batch_bytes)
            eof, buf = not more, buf + more
            continue
        cut = len(buf) if end < 0 else end + 1
        yield buf[:cut], balanced
        buf = buf[cut:]


def batches(
    inp: InputFile, columns: Sequence[str] = (), batch_bytes: int | None = None
) -> Iterator[pl.DataFrame]:
    """Frames of rows, numbered from 1 per input; JSONL yields ``columns`` plus the line.

    A frame holds about ``batch_bytes`` (default BATCH_BYTES) of input, or one whole record
    when it is longer. A blank column name is refused: blank names are the reader's own.
    """
    if any(not c.strip() for c in columns):
        raise ValueError("a column name cannot be blank")
    number = 0  # records so far (CSV) or lines so far (JSONL)
    for chunk, balanced in _chunks(inp, batch_bytes or BATCH_BYTES):
        if inp.format == "jsonl":
            frame = _jsonl_frame(chunk, number, columns)
            number += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        else:
            frame = _delimited_frame(chunk, inp, number, balanced)
            number += frame.height
        inp.rows_read += frame.height
        if frame.height:
            yield frame


def read_ahead(frames: Iterator[pl.DataFrame], depth: int = 1) -> Iterator[pl.DataFrame]:
    """Yield the frames of an iterator that runs one step ahead in a thread.

    Polars releases the GIL while it parses, so the next batch is read while the caller
    validates this one; ``depth`` bounds how many batches wait, and so the memory used.
    """
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(kind: str, item: Any) -> bool:
        """Put an item for the consumer unless it has gone; False when it has."""
        while not stop.is_set():
            try:
                slots.put((kind, item), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for frame in frames:
                if not hand_over("frame", frame):
                    return
            hand_over("end", None)
        except BaseException as exc:  # handed to the consumer, raised in its thread
            hand_over("error", exc)

    worker = threading.Thread(target=produce, name="backfill-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            kind, item = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _lines(text: str) -> pl.Series:
    """The lines of a chunk as a Series, without line ends; a final empty piece is dropped."""
    lines = pl.Series("line", [text]).str.split("\n").explode()
    if text.endswith("\n"):
        lines = lines.head(len(lines) - 1)
    return lines.str.strip_suffix("\r")


def _raw_lines(chunk: bytes) -> pl.Series | None:
    """The chunk's lines as read by Polars (no quoting), or None if no spare separator exists."""
    spare = next((c for c in LINE_SEPARATORS if c.encode() not in chunk), None)
    if spare is None:
        return None
    frame = pl.read_csv(
        chunk,
        has_header=False,
        separator=spare,
        quote_char=None,
        schema={"line": pl.String},
        empty_string_is_null=False,
        raise_if_empty=False,
    )
    return frame["line"].str.strip_suffix("\r")


def _field_counts(lines: pl.Series, frame: pl.DataFrame, sep: str) -> pl.Series:
    """Fields per record: separators in the line, less those inside the parsed (quoted) values.

    A short row has fewer separators than fields; a long one has separators that the
    truncated row's values do not account for. Both show as a count other than the header's.
    Only lines with a quote can hold a separator inside a value, so only they are rechecked.
    """
    counts = lines.str.count_matches(sep, literal=True) + 1
    quoted = lines.str.contains('"', literal=True).arg_true()
    if quoted.is_empty():
        return counts
    inside = frame[quoted].select(
        pl.sum_horizontal(pl.all().str.count_matches(sep, literal=True).fill_null(0))
    )
    return counts.scatter(quoted, counts.gather(quoted) - inside.to_series())


def _delimited_frame(
    chunk: bytes, inp: InputFile, rows_before: int, balanced: bool = False
) -> pl.DataFrame:
    """Parse a CSV/TSV chunk with Polars, falling back to the csv module for broken chunks."""
    if not balanced and chunk.count(b'"') % 2:
        return _unterminated(chunk, inp, rows_before)
    sep = SEPARATORS[inp.format]
    try:
        lines = _raw_lines(chunk)
        frame = pl.read_csv(
            chunk,
            has_header=False,
            separator=sep,
            schema={f"c{i}": pl.String for i in range(len(inp.columns))},
            truncate_ragged_lines=True,
            missing_columns="insert",
            empty_string_is_null=False,
            raise_if_empty=False,
        )
    except pl.exceptions.PolarsError:
        return _delimited_slow(chunk, inp, rows_before)  # bad bytes or a stray quote
    if lines is None or frame.height != len(lines):
        return _delimited_slow(chunk, inp, rows_before)  # a quoted field spans lines
    frame.columns = [frame_column(c) for c in inp.columns]
    if _all_plain(lines, frame, sep):
        frame = frame.with_columns(pl.lit(None, pl.String).alias(MALFORMED))
    elif _quotes_well_formed(lines, sep):
        frame = frame.with_columns(_ragged(lines, frame, sep).alias(MALFORMED))
    else:
        return _delimited_slow(chunk, inp, rows_before)  # read stray quotes one way only
    blank = lines.str.len_bytes() == 0
    if blank.any():
        frame = frame.filter(~blank)
    return _number(frame, rows_before)


def _all_plain(lines: pl.Series, frame: pl.DataFrame, sep: str) -> bool:
    """Whether every line is blank or one record of exactly the header's fields, quoted by the book.

    Most chunks are, and that is cheap to prove: a line without quotes is its values joined
    by separators, so its length gives their number; only lines with quotes need a pattern.
    Other chunks have their quotes checked and their fields counted line by line.
    """
    length = lines.str.len_bytes()
    values = frame.select(pl.sum_horizontal(pl.all().str.len_bytes())).to_series()
    quoted = lines.str.contains('"', literal=True)
    plain = (length == 0) | (~quoted & (length == values + (frame.width - 1)))
    if plain.all():
        return True
    field = _field_pattern(sep)
    record = f"^{field}(?:{_escaped(sep)}{field}){{{frame.width - 1}}}\r?$"
    return bool(lines.filter(~plain).str.contains(record).all())


def _ragged(lines: pl.Series, frame: pl.DataFrame, sep: str) -> pl.Expr:
    """A message for each record without the header's number of fields, else null."""
    fields = _field_counts(lines, frame, sep)
    expected = frame.width
    if not (fields != expected).any():
        return pl.lit(None, pl.String)
    message = pl.format("expected {} fields, found {}", pl.lit(expected), fields)
    return pl.when(fields != expected).then(message)


def _quotes_well_formed(lines: pl.Series, sep: str) -> bool:
    """Whether every quoted field is quoted by the book (a quote only at a field's ends).

    Polars and the csv module read stray quotes differently; sending such chunks to the
    csv module only keeps a row's reading independent of the rows around it.
    """
    quoted = lines.filter(lines.str.contains('"', literal=True))
    if quoted.is_empty():
        return True
    field, s = _field_pattern(sep), _escaped(sep)
    return bool(quoted.str.contains(f"^{field}(?:{s}{field})*\r?$").all())


def _field_pattern(sep: str) -> str:
    """A regular expression for one field: quoted by the book, or without quotes."""
    s = _escaped(sep)
    return f'(?:"(?:[^"]|"")*"|[^"{s}]*)'


def _escaped(sep: str) -> str:
    """A separator as written in a regular expression."""
    return "\\t" if sep == "\t" else sep


def _unterminated(chunk: bytes, inp: InputFile, rows_before: int) -> pl.DataFrame:
    """Read a chunk whose last record opens a quote that never closes.

    The record with the open quote is malformed; the lines after it are read again as
    records of their own, so one stray quote costs one row, not the rest of the file.
    """
    lines = chunk.splitlines(keepends=True)
    start, parity = 0, 0
    for i, line in enumerate(lines):
        parity = (parity + line.count(b'"')) % 2
        if parity == 0:
            start = i + 1
    head = _delimited_frame(b"".join(lines[:start]), inp, rows_before) if start else None
    before = rows_before + (head.height if head is not None else 0)
    bad = _delimited_slow(lines[start].rstrip(b"\r\n") + b'"\n', inp, before)
    bad = bad.with_columns(
        pl.lit("a quote opened in this row is never closed", pl.String).alias(MALFORMED)
    )
    rest = b"".join(lines[start + 1 :])
    tail = _delimited_frame(rest, inp, before + bad.height) if rest else None
    return pl.concat([f for f in (head, bad, tail) if f is not None])


def _number(frame: pl.DataFrame, rows_before: int) -> pl.DataFrame:
    """Put the 1-based row number first."""
    rows = pl.int_range(rows_before + 1, rows_before + 1 + pl.len(), dtype=pl.Int64)
    return frame.select(rows.alias(ROW), pl.col(MALFORMED), pl.all().exclude(MALFORMED))


def _delimited_slow(chunk: bytes, inp: InputFile, rows_before: int) -> pl.DataFrame:
    """Parse a chunk record by record with the csv module (bad bytes, stray quotes, newlines)."""
    text = chunk.decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=SEPARATORS[inp.format])
    expected = len(inp.columns)
    rows: list[list[str]] = []
    problems: list[str | None] = []
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rows.append([""] * expected)
            problems.append(
                f"unreadable record ({exc}); the rest of the file was read as part of it"
            )
            break
        if not record:
            continue  # a blank line is not a record
        problems.append(_record_problem(record, expected))
        rows.append([_clean(v) for v in (record + [""] * expected)[:expected]])
    columns = [frame_column(c) for c in inp.columns]
    frame = pl.DataFrame(rows, schema=columns, orient="row") if rows else _empty(columns)
    frame = frame.with_columns(pl.Series(MALFORMED, problems, dtype=pl.String))
    return _number(frame, rows_before)


def _record_problem(record: list[str], expected: int) -> str | None:
    """Why a parsed record cannot be used, or None."""
    if len(record) != expected:
        return f"expected {expected} fields, found {len(record)}"
    if any(_has_bad_bytes(v) for v in record):
        return "not valid UTF-8"
    return None


def _has_bad_bytes(value: str) -> bool:
    """Whether a surrogate-escaped string held bytes that are not UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _clean(value: str) -> str:
    """A value that Polars can hold: undecodable bytes become U+FFFD."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _empty(columns: Sequence[str]) -> pl.DataFrame:
    """A frame with no rows and the given text columns."""
    return pl.DataFrame(schema={c: pl.String for c in columns})


def _decode_lines(chunk: bytes) -> tuple[str, list[int]]:
    """Decode a JSONL chunk; lines that are not UTF-8 are blanked and their indexes returned."""
    try:
        return chunk.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    parts = chunk.split(b"\n")
    bad: list[int] = []
    for i, part in enumerate(parts):
        try:
            part.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(i)
            parts[i] = b"\x00"
    return b"\n".join(parts).decode("utf-8"), bad


def json_path(column: str) -> str | None:
    """A JSONPath that selects one top-level field by name, or None when none can.

    Polars' JSONPath reads a quoted name up to the next quote of its kind (one single quote
    may be escaped), and finds no name with a backslash in it.
    """
    if "\\" in column:
        return None
    if '"' not in column:
        return f'$["{column}"]'
    if column.count("'") <= 1:
        return "$['" + column.replace("'", "\\'") + "']"
    return None


def load_json(text: str) -> Any:
    """JSON text read by Python as Polars reads it, at any depth Python can.

    Polars' parser (serde_json) gives up at 128 levels; Python's goes on to its recursion
    limit (RecursionError). What serde_json refuses is refused here too (ValueError): NaN
    and Infinity, numbers past the float range, lone surrogates; and "-0" is a float there.
    """
    value = json.loads(text, parse_constant=_no_constant, parse_float=_finite, parse_int=_integer)
    compact_json(value).encode("utf-8")  # a lone surrogate cannot be encoded
    return value


def compact_json(value: Any) -> str:
    """A value as compact JSON text, in serde_json's style (no spaces, no ASCII escapes)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _no_constant(name: str) -> Any:
    """Refuse NaN, Infinity and -Infinity, which JSON does not have."""
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    """A JSON number as a float, refused past the float range."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _integer(text: str) -> int | float:
    """A JSON integer as serde_json reads it: a float beyond 64 bits, and for "-0"."""
    value = int(text)
    if text == "-0" or not -(2**63) <= value < 2**64:
        return _finite(text)
    return value


def _jsonl_frame(chunk: bytes, lines_before: int, columns: Sequence[str]) -> pl.DataFrame:
    """Parse a JSONL chunk: one row per non-blank line, fields as text, broken lines flagged.

    Polars reads the lines and their fields; Python reads only what Polars cannot: lines
    nested too deep for it, and fields whose names its JSONPath cannot express.
    """
    text, undecodable = _decode_lines(chunk)
    line = _lines(text)
    frame = pl.DataFrame({LINE: line}).with_columns(
        pl.int_range(lines_before + 1, lines_before + 1 + pl.len(), dtype=pl.Int64).alias(ROW)
    )
    frame = frame.filter(pl.col(LINE).str.strip_chars() != "")
    body = pl.col(LINE)
    paths = {c: json_path(c) for c in columns}
    frame = frame.with_columns(
        pl.when(pl.col(ROW).is_in([lines_before + 1 + i for i in undecodable]))
        .then(pl.lit("not valid UTF-8"))
        .when(~body.str.strip_chars_start().str.starts_with("{"))
        .then(pl.lit("not a JSON object"))
        .when(body.str.json_path_match("$").is_null())
        .then(pl.lit(NOT_JSON))
        .otherwise(None)
        .alias(MALFORMED),
        *[
            (pl.lit(None, pl.String) if p is None else body.str.json_path_match(p)).alias(
                frame_column(c)
            )
            for c, p in paths.items()
        ],
    )
    unread = [c for c, p in paths.items() if p is None]
    frame = _read_in_python(frame, pl.col(MALFORMED) == NOT_JSON, columns)
    if unread:
        frame = _read_in_python(frame, pl.col(MALFORMED).is_null(), unread)
    return frame.select(ROW, MALFORMED, pl.all().exclude(ROW, MALFORMED, LINE), LINE)


def _read_in_python(frame: pl.DataFrame, wanted: pl.Expr, columns: Sequence[str]) -> pl.DataFrame:
    """Read again with Python the lines ``wanted`` selects: their verdict and ``columns``."""
    rows = frame.select(wanted.fill_null(False)).to_series().arg_true()
    if rows.is_empty():
        return frame
    records = [_python_record(line) for line in frame[LINE].gather(rows)]
    found = {
        MALFORMED: pl.Series([problem for _, problem in records], dtype=pl.String),
        **{frame_column(c): _field_texts([r.get(c) for r, _ in records]) for c in columns},
    }
    return frame.with_columns(
        frame[name].clone().scatter(rows, values) for name, values in found.items()
    )


def _python_record(line: str) -> tuple[dict[str, Any], str | None]:
    """A line read as a JSON object by Python, or why it cannot be."""
    try:
        record = load_json(line)
    except RecursionError:
        return {}, "nested too deeply to read"
    except ValueError:
        return {}, NOT_JSON
    return (record, None) if isinstance(record, dict) else ({}, NOT_JSON)


def _field_texts(values: list[Any]) -> pl.Series:
    """Values as Polars' JSONPath gives them: strings as they are, the rest as JSON text."""
    # serde_json's own text where its parser can read the value, so numbers read alike.
    strings = [v if isinstance(v, str) else None for v in values]
    others = [None if v is None or isinstance(v, str) else compact_json(v) for v in values]
    table = pl.DataFrame({"s": strings, "j": others}, schema={"s": pl.String, "j": pl.String})
    return table.select(pl.coalesce("s", pl.col("j").str.json_path_match("$"), "j")).to_series()
