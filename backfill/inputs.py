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

import codecs
import contextlib
import csv
import gzip
import io
import json
import math
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal, NamedTuple, TypeVar, cast

import polars as pl

from backfill.errors import Hint, InputError
from backfill.locate import Located, open_file

Format = Literal["csv", "tsv", "jsonl", "json", "parquet"]
FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
}
T = TypeVar("T")  # what read_ahead hands over
SEPARATORS = {"csv": ",", "tsv": "\t"}
SNIFFED_DELIMITERS = (",", ";", "\t", "|")  # delimiter = "auto" picks the commonest in the header
PARQUET_MAGIC = b"PAR1"
SNIFF_BYTES = 512  # read first, to tell a format by its start
UNDECODABLE = "\uffff"  # put for bytes the input's encoding cannot read (a noncharacter)
ROW = "__row"
MALFORMED = "__malformed"
LINE = "__line"
NOT_JSON = "not valid JSON"
SURROGATE_ESCAPE = r"\\[uU][dD][89a-fA-F]"
# A key with an escape in it (\u0061, \/): escapes are paired off from its opening quote on.
ESCAPED_KEY = r'"(?:[^"\\]|\\.)*\\[u/](?:[^"\\]|\\.)*"\s*:'
JSONPATH_DEPTH = 128  # Polars' JSONPath (serde_json) reads no line nested deeper
MAYBE_NOT_STRING = r"^[-0-9\[{]"  # how a number, an array or an object starts
REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$#&-~")
# No export column has a blank name (CSV names are trimmed and blank ones numbered; a mapping
# refuses a blank name), so an export's own column named like one of ours takes a blank one.
RENAMED = {ROW: " ", MALFORMED: "  ", LINE: "   "}
BATCH_BYTES = 8 << 20
PARQUET_BATCHES_PER_READ = 4
MAX_PENDING_BYTES = 8 * BATCH_BYTES  # a record longer than this is a quote gone wrong
# A chunk of blank or tiny lines would be millions of rows, each as wide as the header: a
# chunk holds at most this many lines and about this many cells (lines x columns).
MAX_CHUNK_LINES = 1 << 18
MAX_CHUNK_CELLS = 1 << 20
# A header wider than this is read by the csv module: Polars' reader takes hundreds of MiB
# for a chunk of 50,000 columns, and _all_plain's pattern, with a copy per field, passes
# the regex engine's size limit at about 4,500.
WIDE = 1_000
# Possessive (++): a plain + keeps a way back for every line, a few hundred bytes each.
BLANK_LINES = re.compile(rb"(?:\r?\n)++")
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
    # Data already read from the stream while looking at the header.
    pending: bytearray = field(default_factory=bytearray)
    rows_read: int = field(default=0)
    delimiter: str = ","
    encoding: str = "utf-8"
    parquet: pl.LazyFrame | None = None  # a Parquet input is scanned by Polars, not chunked
    scratch: str | None = None  # a temporary copy to remove on close (Parquet in an archive)

    def close(self) -> None:
        """Close the underlying stream (never stdin) and remove a scratch copy."""
        if self.name != "-":
            self.stream.close()
        if self.scratch is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.scratch)
            self.scratch = None


@dataclass(frozen=True)
class Dialect:
    """How delimited text is written: delimiter (None: by format; "auto": sniffed), encoding."""

    delimiter: str | None = None
    encoding: str = "utf-8"


class Chunk(NamedTuple):
    """Whole records of an input, or (``too_long``) a line too long to read, skipped."""

    data: bytes
    balanced: bool  # cut where the quotes are known to pair up: no need to count them again
    too_long: bool = False
    one_record: bool = False  # a record of more lines than a chunk may hold


def frame_column(name: str) -> str:
    """The name a batch keeps an export's column under: its own, unless it is one of ours."""
    return RENAMED.get(name, name)


def export_columns(batch: pl.DataFrame) -> pl.DataFrame:
    """A CSV batch's export columns, under the export's own names."""
    kept = batch.select(pl.all().exclude(ROW, MALFORMED, LINE))
    return kept.rename({v: k for k, v in RENAMED.items() if v in kept.columns})


def format_of_name(name: str, override: str | None) -> Format | None:
    """The input's format from --format or its name (a .gz suffix aside); None if it says none."""
    if override is not None:
        return FORMATS.get(f".{override}", "csv")
    if name == "-":
        raise InputError(
            "-: reading stdin needs its format: csv, tsv, jsonl, json or parquet",
            file="-",
            hint=Hint.FORMAT_FOR_STDIN,
        )
    stem = name.lower().removesuffix(".gz")
    return next((fmt for ext, fmt in FORMATS.items() if stem.endswith(ext)), None)


def open_input(
    source: Located | str, format_override: str | None = None, dialect: Dialect | None = None
) -> InputFile:
    """Open an input and read its columns; any problem is a one-line InputError.

    Gzip is told by its magic bytes whatever the name; a name that says nothing of the
    format (a bare .gz, say) is sniffed: Parquet by its magic bytes, JSON by its first byte.
    """
    unit = source if isinstance(source, Located) else Located(source, _opener(source), path=source)
    name = unit.name
    fmt = format_of_name(name, format_override)
    stream = unit.opener()
    try:
        stream = _ungzipped(stream, name)
        head = _read(stream, name, 0, min(SNIFF_BYTES, BATCH_BYTES))
        fmt = fmt or _sniffed(head, name)
        if fmt == "parquet":
            return _open_parquet(unit, stream, head)
        stream = cast(BinaryIO, _Prefixed(head, stream))
        if fmt == "json":
            stream = _array_or_lines(stream, head, name)
        dialect = dialect or Dialect()
        if dialect.encoding.replace("_", "-").lower() not in ("utf-8", "utf8"):
            stream = cast(BinaryIO, _Transcoded(stream, dialect.encoding, name))
        first = _read(stream, name, 0)
        if not first:
            raise InputError(f"{name}: file is empty (no header or rows)", file=name)
        first = first.removeprefix(BOM)
        if fmt in ("jsonl", "json"):
            opened = _open_jsonl(name, stream, unit.size, first)
        else:
            opened = _open_delimited(name, fmt, stream, unit.size, first, dialect.delimiter)
        opened.encoding = dialect.encoding
        return opened
    except BaseException:
        if name != "-":
            stream.close()
        raise


def _opener(name: str) -> Callable[[], BinaryIO]:
    """How to open a name given as a string: stdin, or a local file."""
    return (lambda: sys.stdin.buffer) if name == "-" else (lambda: open_file(name))


def _ungzipped(stream: BinaryIO, name: str) -> BinaryIO:
    """The stream, decompressed when it starts with gzip's magic bytes."""
    magic = _read(stream, name, 0, 2)
    stream = cast(BinaryIO, _Prefixed(magic, stream))
    if magic != GZIP_MAGIC:
        return stream
    return cast(BinaryIO, _Gunzipped(fileobj=stream, mode="rb"))


class _Gunzipped(gzip.GzipFile):
    """A gzip stream that closes the stream it reads from when it is closed."""

    def close(self) -> None:
        underlying = self.fileobj
        super().close()
        if isinstance(underlying, io.IOBase):
            underlying.close()


def sniff_format(head: bytes) -> Format | None:
    """The format of an input's first (ungzipped) bytes: Parquet, JSON Lines, a JSON array."""
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    first = head.removeprefix(BOM).lstrip(b" \t\r\n")[:1]
    return "jsonl" if first == b"{" else "json" if first == b"[" else None


def _sniffed(head: bytes, name: str) -> Format:
    """The format of an input whose name does not say, or why it cannot be read."""
    found = sniff_format(head)
    if found is not None:
        return found
    raise InputError(
        f"{name}: unknown input format (expected .csv, .tsv, .jsonl, .ndjson, .json or"
        " .parquet, optionally .gz; or name its format)",
        file=name,
        hint=Hint.FORMAT,
    )


class _Prefixed(io.RawIOBase):
    """A stream with bytes already read from it put back in front."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head = head
        self.stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.stream.read(size)
        if size is None or size < 0:
            taken, self.head = self.head + self.stream.read(), b""
            return taken
        taken, self.head = self.head[:size], self.head[size:]
        if len(taken) < size:  # a short read would look like a short file to a sniffer
            taken += self.stream.read(size - len(taken))
        return taken

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.stream.close()
        super().close()


class _Transcoded(io.RawIOBase):
    """Text in another encoding read as UTF-8 bytes; what it cannot decode becomes UNDECODABLE."""

    def __init__(self, stream: BinaryIO, encoding: str, name: str) -> None:
        try:
            self.decoder = codecs.getincrementaldecoder(encoding)(errors=UNDECODABLE_ERRORS)
        except LookupError:
            raise InputError(f"{name}: unknown encoding '{encoding}'", file=name) from None
        self.stream = stream
        self.done = False
        self.name, self.encoding = name, encoding

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self.done:
            raw = self.stream.read(size if size and size > 0 else BATCH_BYTES)
            self.done = not raw
            try:
                text = self.decoder.decode(raw, final=self.done)
            except UnicodeError as exc:  # UTF-16 without its byte order mark, say
                raise InputError(
                    f"{self.name}: cannot be read as {self.encoding} ({exc})", file=self.name
                ) from None
            if text:
                return text.encode("utf-8", "surrogatepass")
        return b""

    def close(self) -> None:
        self.stream.close()
        super().close()


def _mark_undecodable(error: UnicodeError) -> tuple[str, int]:
    """Put UNDECODABLE where the encoding cannot read the input's bytes."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return UNDECODABLE, error.end


UNDECODABLE_ERRORS = "backfill-undecodable"
codecs.register_error(UNDECODABLE_ERRORS, _mark_undecodable)


def _array_or_lines(stream: BinaryIO, head: bytes, name: str) -> BinaryIO:
    """A .json input: JSON Lines as they are, or one JSON array read element by element."""
    if head.removeprefix(BOM).lstrip(b" \t\r\n")[:1] != b"[":
        return stream
    return cast(BinaryIO, _ArrayLines(stream, name))


class _ArrayLines(io.RawIOBase):
    """One JSON array read as JSON Lines: each element on a line of its own, in order.

    A streaming scan of the array's structure (strings, escapes, nesting): the array is
    never held whole, however large, and each element's number is its line number.
    """

    SPECIAL = re.compile(rb'["\\\[\]{},\r\n]')

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.stream = stream
        self.name = name
        self.depth = 0
        self.in_string = False
        self.skip = 0  # bytes of the next block an escape covers (a backslash at a block end)
        self.closed_array = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while True:
            raw = self.stream.read(BATCH_BYTES)
            if not raw:
                if self.depth:
                    raise InputError(
                        f"{self.name}: the JSON array is cut short (never closed)", file=self.name
                    )
                return b""
            out = self._lines(raw)
            if out:
                return out

    def close(self) -> None:
        self.stream.close()
        super().close()

    def _lines(self, raw: bytes) -> bytes:
        """A block of the array as lines: outer brackets out, element commas as newlines."""
        out = bytearray()
        start, skip_to = 0, self.skip
        for found in self.SPECIAL.finditer(raw):
            at = found.start()
            if at < skip_to:
                continue
            char = raw[at : at + 1]
            replacement = self._token(char, at)
            if replacement is None:
                if char == b"\\":
                    skip_to = at + 2
                continue
            out += raw[start:at] + replacement
            start = at + 1
        self.skip = max(0, skip_to - len(raw))
        return bytes(out + raw[start:]) if self.depth or start < len(raw) else bytes(out)

    def _token(self, char: bytes, at: int) -> bytes | None:
        """What a structural byte becomes in the lines, or None to keep it as it is."""
        if self.in_string:
            if char == b'"':
                self.in_string = False
            return None
        if char == b'"':
            self.in_string = True
            return None
        if char in b"\r\n":
            return b" "  # a pretty-printed element is put on one line
        if char in b"[{":
            self.depth += 1
            return b"" if self.depth == 1 and char == b"[" else None
        if char in b"]}":
            self.depth -= 1
            return b"\n" if self.depth == 0 else None
        return b"\n" if self.depth == 1 else None  # a comma between elements


def _open_parquet(unit: Located, stream: BinaryIO, head: bytes) -> InputFile:
    """Open a Parquet input for Polars to scan row group by row group.

    A local file is scanned where it is, an object in a bucket through Polars' object store;
    one inside an archive or gzip is first copied to a scratch file (Parquet needs random
    access), removed when the input is closed.
    """
    scratch = None
    if unit.remote is not None:
        from backfill import remote  # here: it needs fsspec and a cloud client

        url, options = remote.parquet_source(unit.remote)
        lazy = pl.scan_parquet(url, storage_options=options)
    elif unit.path is not None and not isinstance(stream, gzip.GzipFile):
        lazy = pl.scan_parquet(unit.path)
    else:
        fd, scratch = tempfile.mkstemp(prefix="backfill-", suffix=".parquet")
        with os.fdopen(fd, "wb") as copy:
            shutil.copyfileobj(_Prefixed(head, stream), copy, 1 << 20)
        lazy = pl.scan_parquet(scratch)
    try:
        schema = lazy.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        if scratch is not None:
            os.unlink(scratch)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"{unit.name}: not a readable Parquet file ({reason})", file=unit.name
        ) from None
    inp = InputFile(unit.name, "parquet", list(schema.names()), stream, unit.size)
    inp.parquet, inp.scratch = lazy, scratch
    return inp


def parquet_types(inp: InputFile) -> dict[str, pl.DataType]:
    """A Parquet input's columns and their types."""
    assert inp.parquet is not None
    return dict(inp.parquet.collect_schema())


def unreadable(dtype: pl.DataType) -> bool:
    """Whether a Parquet column's type has no text form the rules can read."""
    return isinstance(dtype, pl.Binary | pl.Object | pl.Time | pl.Duration)


def require_readable(inp: InputFile, columns: Sequence[str]) -> None:
    """Refuse, before any row is read, a Parquet column of a type with no text form."""
    if inp.format != "parquet":
        return
    types = parquet_types(inp)
    for column in columns:
        if column in types and unreadable(types[column]):
            raise InputError(
                f"{inp.name}: column '{column}' is of the Parquet type {types[column]},"
                " which has no text form to read",
                file=inp.name,
                field=column,
            )


def _parquet_frames(inp: InputFile, batch_bytes: int) -> Iterator[pl.DataFrame]:
    """A Parquet input's rows in batches, every column as the text the rules read.

    Native types are read as what they are: a timestamp as an ISO time (a naive one takes
    the mapping's time zone), a struct or list as its JSON text, for paths into it.
    """
    assert inp.parquet is not None
    types = parquet_types(inp)
    kept = [i for i, dtype in enumerate(types.values()) if not unreadable(dtype)]
    names = list(types)
    texts = [_as_text(pl.nth(i), types[names[i]]).alias(frame_column(names[i])) for i in kept]
    rows = max(1024, batch_bytes // 128)  # Parquet rows are compact: about what a CSV chunk holds
    scan = inp.parquet.select(texts)
    try:
        total = inp.parquet.select(pl.len()).collect().item()
        # A slice at a time: Polars reads only the row groups it needs, where a streamed
        # collect runs ahead of the reader and holds several times the memory. A slice
        # that starts or ends inside a row group decodes the part it skips too, so slices
        # span several batches: a quarter of the boundaries for one slice held at a time.
        for start in range(0, total, rows * PARQUET_BATCHES_PER_READ):
            read = scan.slice(start, rows * PARQUET_BATCHES_PER_READ).collect()
            read = read.select(
                pl.int_range(start + 1, start + 1 + read.height, dtype=pl.Int64).alias(ROW),
                pl.lit(None, pl.String).alias(MALFORMED),
                pl.all(),
            )
            yield from read.iter_slices(rows)
    except (pl.exceptions.PolarsError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"{inp.name}: cannot read after row {inp.rows_read}: {reason}",
            file=inp.name,
            row=inp.rows_read + 1,
        ) from None


def _as_text(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A Parquet column as text: numbers as written, times in ISO 8601, nested values as JSON."""
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return column.dt.strftime("%Y-%m-%dT%H:%M:%S%.f")
        return column.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")
    if isinstance(dtype, pl.Date):
        return column.dt.strftime("%Y-%m-%d")
    if isinstance(dtype, pl.Struct):
        return column.struct.json_encode()
    if isinstance(dtype, pl.List | pl.Array):
        wrapped = pl.struct(column.alias("v")).struct.json_encode()
        return wrapped.str.strip_prefix('{"v":').str.strip_suffix("}")
    return column.cast(pl.String)


def _read(stream: BinaryIO, name: str, rows_before: int, size: int | None = None) -> bytes:
    """One block of the stream; decompression and disk errors name the file and row."""
    try:
        return stream.read(size or BATCH_BYTES)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(
            f"{name}: compressed data is corrupt or truncated after row {rows_before} ({exc})",
            file=name,
            row=rows_before + 1,
        ) from None
    except OSError as exc:
        raise InputError(
            f"{name}: cannot read after row {rows_before}: {exc}", file=name, row=rows_before + 1
        ) from None


def _open_delimited(
    name: str,
    fmt: Format,
    stream: BinaryIO,
    size: int | None,
    first: bytes,
    delimiter: str | None = None,
) -> InputFile:
    """Read the header record of a delimited input; "auto" sniffs the delimiter from it."""
    buf, eof = bytearray(first), False
    end = _first_record_end(buf)
    if end < 0:
        eof = _grow(buf, lambda: _read(stream, name, 0), quoted=True)
        end = _first_record_end(buf)
    if end < 0 and not eof:
        raise InputError(
            f"{name}: the header row is longer than {_size(MAX_PENDING_BYTES)}", file=name
        )
    end = len(buf) if end < 0 else end
    try:
        header_text = buf[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{name}: the header row is not valid UTF-8", file=name) from None
    # Only a transcoded input marks bytes it cannot read: in UTF-8, U+FFFF is a character.
    if UNDECODABLE in header_text and isinstance(stream, _Transcoded):
        raise InputError(f"{name}: the header row has bytes its encoding cannot read", file=name)
    sep = delimiter or SEPARATORS.get(fmt, ",")
    if sep == "auto":
        sep = sniff_delimiter(header_text)
    if len(sep) != 1 or sep in '"\r\n':
        raise InputError(
            f"{name}: the delimiter must be one character (not a quote), got {sep!r}", file=name
        )
    header = next(csv.reader(io.StringIO(header_text), delimiter=sep), [])
    columns = _column_names(name, header)
    inp = InputFile(name, fmt, columns, stream, size, pending=buf[end + 1 :])
    inp.delimiter = sep
    return inp


def sniff_delimiter(header: str) -> str:
    """The delimiter a header line uses most of ",", ";", tab and "|" (outside quotes)."""
    unquoted = "".join(header.split('"')[::2])
    counts = {d: unquoted.count(d) for d in SNIFFED_DELIMITERS}
    best = max(SNIFFED_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _column_names(name: str, header: list[str]) -> list[str]:
    """Header names, stripped; blank names become column_N; duplicates are refused."""
    columns = [h.strip() or f"column_{i + 1}" for i, h in enumerate(header)]
    if not columns or columns == ["column_1"]:
        raise InputError(f"{name}: the header row is empty", file=name)
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise InputError(
                f"{name}: column '{column}' appears twice in the header row",
                file=name,
                field=column,
            )
        seen.add(column)
    return columns


def _open_jsonl(name: str, stream: BinaryIO, size: int | None, first: bytes) -> InputFile:
    """Learn a JSONL input's field names from the keys of its first lines."""
    buf, lines, eof = bytearray(first), first.count(b"\n"), False
    while lines < JSONL_SAMPLE_LINES and len(buf) < MAX_PENDING_BYTES and not eof:
        more = _read(stream, name, 0)
        eof = not more
        buf += more
        lines += more.count(b"\n")
    end = _line_limit(buf, JSONL_SAMPLE_LINES, len(buf))
    if not eof:  # a line the last block cut short is not read (it may be one too long to)
        end = buf.rfind(b"\n", 0, end) + 1
    return InputFile(name, "jsonl", _keys(buf[:end]), stream, size, pending=buf)


def _keys(sample: bytearray) -> list[str]:
    """The keys of the JSON objects among the lines, in the order first seen."""
    keys: dict[str, None] = {}
    for line in sample.split(b"\n"):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # too deep for Python: its row says so later
            continue
        if isinstance(record, dict):
            keys.update(dict.fromkeys(record))
    return list(keys)


def _first_record_end(buf: bytes | bytearray, quoted: bool = True, odd: bool = False) -> int:
    """Index of the newline that ends the first whole record in buf, or -1.

    ``odd`` says a quote is open where buf starts. A newline inside quotes is passed by
    going on after the quote that closes them, so a block is scanned once, not once per line.
    """
    start = 0
    while True:
        if odd:
            start = buf.find(b'"', start) + 1
            if not start:
                return -1
        pos = buf.find(b"\n", start)
        if pos < 0:
            return -1
        odd = quoted and buf.count(b'"', start, pos) % 2 == 1
        if not odd:
            return pos
        start = pos


def _last_record_end(buf: bytes | bytearray, quoted: bool, limit: int) -> int:
    """Index of the newline that ends the last whole record in buf[:limit], or -1."""
    pos = buf.rfind(b"\n", 0, limit)
    if not quoted:
        return pos
    parity = buf.count(b'"', 0, pos) % 2 if pos >= 0 else 0
    while pos >= 0 and parity:
        # The newlines after the last quote are inside quotes too: step back past it.
        prev = buf.rfind(b"\n", 0, buf.rfind(b'"', 0, pos))
        parity = (parity + buf.count(b'"', prev + 1, pos)) % 2
        pos = prev
    return pos


def _line_limit(buf: bytes | bytearray, lines: int, limit: int) -> int:
    """The end of buf's first ``lines`` lines, or ``limit`` if it comes first.

    The lines are looked for in windows that double, then bisected: the search reads about
    three times the bytes of the lines it finds, however short they are.
    """
    low, high, left = 0, min(limit, lines), lines  # a line holds at least its newline
    while (inside := buf.count(b"\n", low, high)) < left:
        if high >= limit:
            return limit
        low, high, left = high, min(limit, 2 * high), left - inside
    # buf[:low] holds fewer than ``lines`` newlines (``left`` short), buf[:high] enough.
    while high - low > 1:
        middle = (low + high) // 2
        inside = buf.count(b"\n", low, middle)
        if inside >= left:
            high = middle
        else:
            low, left = middle, left - inside
    return high


def _record_end(buf: bytearray, quoted: bool, batch_bytes: int, lines: int) -> tuple[int, bool]:
    """The newline to cut buf at: the last record end in its first batch and ``lines`` lines.

    When the first record is longer than a batch: the last record end in ``lines`` lines;
    when it alone holds more lines, its own end, and True. -1 while it is not all read.
    """
    end = _last_record_end(buf, quoted, _line_limit(buf, lines, batch_bytes))
    if end < 0:
        end = _last_record_end(buf, quoted, _line_limit(buf, lines, len(buf)))
    if end >= 0:
        return end, False
    end = _first_record_end(buf, quoted)
    return end, end >= 0


def _grow(buf: bytearray, read: Callable[[], bytes], quoted: bool) -> bool:
    """Read on into buf up to a record end or MAX_PENDING_BYTES; True at the input's end.

    Only the new block is searched, with the quote parity carried over, so that a long
    record is read in linear time.
    """
    odd = quoted and buf.count(b'"') % 2 == 1
    while len(buf) <= MAX_PENDING_BYTES:
        more = read()
        if not more:
            return True
        buf += more
        if _first_record_end(more, quoted, odd) >= 0:
            return False
        odd ^= quoted and more.count(b'"') % 2 == 1
    return False


def _skip_line(buf: bytearray, read: Callable[[], bytes]) -> bool:
    """Drop buf's first line, reading past its end a block at a time; True at the input's end.

    The rest of the line is never held: only the block being searched for its end.
    """
    end = buf.find(b"\n")
    while end < 0:
        buf.clear()
        more = read()
        if not more:
            return True
        buf += more
        end = buf.find(b"\n")
    del buf[: end + 1]
    return False


def _chunks(inp: InputFile, batch_bytes: int, lines: int) -> Iterator[Chunk]:
    """Record-aligned chunks of about batch_bytes and at most ``lines`` lines.

    A chunk holds more only when it is one record; the last may lack a newline. A line
    longer than MAX_PENDING_BYTES is not read: it comes as one ``too_long`` chunk.
    """
    quoted = inp.format != "jsonl"

    def read() -> bytes:
        return _read(inp.stream, inp.name, inp.rows_read, batch_bytes)

    # A bytearray: appending to it and cutting chunks off its front copy nothing twice.
    buf, inp.pending = inp.pending, bytearray()
    eof = False
    while buf or not eof:
        if not eof and len(buf) < batch_bytes:
            more = read()
            eof = not more
            buf += more
            continue
        if quoted and (blank := BLANK_LINES.match(buf)):
            del buf[: blank.end()]  # blank lines between CSV records are no records
            continue
        end, one_record = _record_end(buf, quoted, batch_bytes, lines)
        balanced = quoted and end >= 0
        if end < 0 and (len(buf) > MAX_PENDING_BYTES or (eof and quoted and buf.count(b'"') % 2)):
            # A quote that never closes would make the whole rest of the file one record:
            # cut anyway at a line end; the odd quote count marks the chunk for recovery.
            end, one_record = buf.rfind(b"\n", 0, _line_limit(buf, lines, len(buf))), False
            if end < 0 and not eof:
                # One line past the limit. Its end is the next newline, whatever its quotes
                # (for CSV too): a quote this far back has gone wrong, so its count says
                # nothing, and the lines after are read as records as after any open quote.
                yield Chunk(b"", False, too_long=True)
                eof = _skip_line(buf, read)
                continue
        if end < 0 and not eof:
            eof = _grow(buf, read, quoted)
            continue
        yield _cut(buf, len(buf) if end < 0 else end + 1, balanced, one_record)


def _cut(buf: bytearray, size: int, balanced: bool, one_record: bool) -> Chunk:
    """The first ``size`` bytes of buf as a chunk, taken off its front (copied once, not twice)."""
    with memoryview(buf) as view:
        chunk = Chunk(bytes(view[:size]), balanced, one_record=one_record)
    del buf[:size]
    return chunk


def _chunk_lines(inp: InputFile) -> int:
    """The most lines a chunk of this input may hold: about MAX_CHUNK_CELLS cells of CSV."""
    width = 1 if inp.format == "jsonl" else len(inp.columns)  # JSONL keeps only a few columns
    return max(1, min(MAX_CHUNK_LINES, MAX_CHUNK_CELLS // width))


def batches(
    inp: InputFile, columns: Sequence[str] = (), batch_bytes: int | None = None
) -> Iterator[pl.DataFrame]:
    """Frames of rows, numbered from 1 per input; JSONL yields ``columns`` plus the line.

    A frame holds about ``batch_bytes`` (default BATCH_BYTES) of input, or one whole record
    when it is longer. A blank column name is refused: blank names are the reader's own.
    """
    if any(not c.strip() for c in columns):
        raise ValueError("a column name cannot be blank")
    if inp.format == "parquet":
        for frame in _parquet_frames(inp, batch_bytes or BATCH_BYTES):
            inp.rows_read += frame.height
            yield frame
        return
    number = 0  # records so far (CSV) or lines so far (JSONL)
    for chunk in _chunks(inp, batch_bytes or BATCH_BYTES, _chunk_lines(inp)):
        if chunk.too_long:
            frame = _not_read(inp, columns, number + 1)
            number += 1
        elif inp.format == "jsonl":
            frame = _jsonl_frame(chunk.data, number, columns)
            number += chunk.data.count(b"\n") + (0 if chunk.data.endswith(b"\n") else 1)
        else:
            frame = _delimited_frame(chunk.data, inp, number, chunk.balanced, chunk.one_record)
            number += frame.height
        inp.rows_read += frame.height
        if frame.height:
            yield _undecodable_marked(frame, inp)


def _undecodable_marked(frame: pl.DataFrame, inp: InputFile) -> pl.DataFrame:
    """A frame whose rows with bytes the input's encoding cannot read are malformed, naming
    the first such column."""
    if inp.encoding.replace("_", "-").lower() in ("utf-8", "utf8"):
        return frame  # UTF-8 inputs are checked as they are parsed
    found = []
    for i, name in enumerate(frame.columns):
        if name in (ROW, MALFORMED):
            continue
        where = "" if name == LINE else f"column '{export_name(name)}': "
        bad = pl.nth(i).str.contains(UNDECODABLE, literal=True)
        found.append(pl.when(bad).then(pl.lit(f"{where}bytes that are not {inp.encoding}")))
    if not found:
        return frame
    return frame.with_columns(pl.coalesce(MALFORMED, *found).alias(MALFORMED))


def export_name(column: str) -> str:
    """An export's own name of a batch column (the reverse of frame_column)."""
    return next((k for k, v in RENAMED.items() if v == column), column)


def _not_read(inp: InputFile, columns: Sequence[str], row: int) -> pl.DataFrame:
    """The one malformed row of a line too long to read, with no values."""
    jsonl = inp.format == "jsonl"
    names = [frame_column(c) for c in (columns if jsonl else inp.columns)]
    message = f"{'line' if jsonl else 'record'} longer than {_size(MAX_PENDING_BYTES)}: not read"
    schema = {ROW: pl.Int64, MALFORMED: pl.String, **dict.fromkeys(names, pl.String)}
    if jsonl:
        schema[LINE] = pl.String
    row_values = {ROW: [row], MALFORMED: [message]}
    return pl.DataFrame({n: row_values.get(n, [None]) for n in schema}, schema=schema)


def _size(size: int) -> str:
    """A size limit as a user reads it: 64 MiB."""
    return f"{size >> 20} MiB" if size % (1 << 20) == 0 else f"{size:,} bytes"


def read_ahead(frames: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """Yield the frames (or items) of an iterator that runs one step ahead in a thread.

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
    lines = _polars_lines(chunk)
    return None if lines is None else lines.str.strip_suffix("\r")


def _polars_lines(chunk: bytes) -> pl.Series | None:
    """The chunk's lines by Polars' reader, split at a byte no line holds; None without one.

    The reader takes a \r before a line end as part of the line end, and refuses bytes that
    are not UTF-8 (a PolarsError).
    """
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
    return frame["line"]


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
    chunk: bytes, inp: InputFile, rows_before: int, balanced: bool = False, one_record: bool = False
) -> pl.DataFrame:
    """Parse a CSV/TSV chunk with Polars, falling back to the csv module for broken chunks."""
    if not balanced and chunk.count(b'"') % 2:
        return _unterminated(chunk, inp, rows_before)
    if len(inp.columns) > WIDE or one_record or chunk.startswith(BOM):
        # Polars' reader costs some KiB a column for each piece it splits a chunk into; and
        # one record of that many lines is not a chunk to check line by line. Polars also
        # drops a byte order mark at the start of what it is given: here that is data (the
        # file's own was skipped when it was opened).
        return _delimited_slow(chunk, inp, rows_before)
    sep = inp.delimiter
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
        malformed = pl.repeat(None, frame.height, dtype=pl.String, eager=True)
    elif _quotes_well_formed(lines, sep):
        malformed = _ragged(lines, frame, sep)
    else:
        return _delimited_slow(chunk, inp, rows_before)  # read stray quotes one way only
    blank = lines.str.len_bytes() == 0
    if blank.any():
        frame, malformed = frame.filter(~blank), malformed.filter(~blank)
    return _number(frame, malformed, rows_before)


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


def _ragged(lines: pl.Series, frame: pl.DataFrame, sep: str) -> pl.Series:
    """A message for each record without the header's number of fields, else null."""
    fields = _field_counts(lines, frame, sep)
    expected = frame.width
    message = pl.format("expected {} fields, found {}", pl.lit(expected), fields)
    return pl.select(pl.when(fields != expected).then(message)).to_series()


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


def _number(frame: pl.DataFrame, malformed: pl.Series, rows_before: int) -> pl.DataFrame:
    """The frame, with the 1-based row number and the malformed message put first.

    In place, not by a query: a query, or a new frame, costs something for every column.
    """
    rows = pl.int_range(rows_before + 1, rows_before + 1 + frame.height, eager=True)
    frame.insert_column(0, malformed.alias(MALFORMED))
    return frame.insert_column(0, rows.cast(pl.Int64).alias(ROW))


def _delimited_slow(chunk: bytes, inp: InputFile, rows_before: int) -> pl.DataFrame:
    """Parse a chunk record by record with the csv module (bad bytes, stray quotes, newlines)."""
    text = chunk.decode("utf-8", errors="surrogateescape")
    utf8 = not _has_bad_bytes(text)  # then no value is checked or cleaned one by one
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=inp.delimiter)
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
        problems.append(_record_problem(record, expected, utf8))
        cells = (record + [""] * expected)[:expected]
        rows.append(cells if utf8 else [_clean(v) for v in cells])
    columns = [frame_column(c) for c in inp.columns]
    # Column by column: a frame built row by row costs many times more for a wide header.
    values = zip(*rows, strict=True) if rows else ([] for _ in columns)
    frame = pl.DataFrame([pl.Series(c, v, pl.String) for c, v in zip(columns, values, strict=True)])
    return _number(frame, pl.Series(MALFORMED, problems, dtype=pl.String), rows_before)


def _record_problem(record: list[str], expected: int, utf8: bool) -> str | None:
    """Why a parsed record cannot be used, or None."""
    if len(record) != expected:
        return f"expected {expected} fields, found {len(record)}"
    if not utf8 and any(_has_bad_bytes(v) for v in record):
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


def json_path(*keys: str) -> str | None:
    """A JSONPath that selects nested fields by name, or None when none can.

    Polars' JSONPath reads a quoted name up to the next quote of its kind (one single quote
    may be escaped), and finds no name with a backslash in it.
    """
    parts = []
    for key in keys:
        if "\\" in key:
            return None
        if '"' not in key:
            parts.append(f'["{key}"]')
        elif key.count("'") <= 1:
            parts.append("['" + key.replace("'", "\\'") + "']")
        else:
            return None
    return "$" + "".join(parts)


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
    paths = {c: json_path(c) for c in columns}
    if all(paths.values()):
        read = _jsonl_read_once(chunk, lines_before, paths)
        if read is not None:
            return read
    text, undecodable = _decode_lines(chunk)
    frame = _numbered(_lines(text), lines_before)
    frame = frame.filter(pl.col(LINE).str.strip_chars() != "")
    return _jsonl_slow(frame, [lines_before + 1 + i for i in undecodable], paths)


def _numbered(lines: pl.Series, lines_before: int) -> pl.DataFrame:
    """The lines as a LINE column beside their 1-based line numbers (ROW)."""
    rows = pl.int_range(lines_before + 1, lines_before + 1 + len(lines), eager=True)
    return pl.DataFrame([lines.alias(LINE), rows.cast(pl.Int64).alias(ROW)])


def _jsonl_slow(
    frame: pl.DataFrame, undecodable: list[int], paths: dict[str, str | None]
) -> pl.DataFrame:
    """The lines' fields by JSONPath, one parse per field, and by Python where it cannot.

    What this reads is what every faster reading must read alike, line by line: a line's
    fields and verdict depend on that line alone.
    """
    body = pl.col(LINE)
    frame = frame.with_columns(
        pl.when(pl.col(ROW).is_in(undecodable))
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
    frame = _read_in_python(frame, pl.col(MALFORMED) == NOT_JSON, list(paths))
    if unread:
        frame = _read_in_python(frame, pl.col(MALFORMED).is_null(), unread)
    return frame.select(ROW, MALFORMED, pl.all().exclude(ROW, MALFORMED, LINE), LINE)


def _jsonl_read_once(
    chunk: bytes, lines_before: int, paths: dict[str, str | None]
) -> pl.DataFrame | None:
    """The chunk's fields with each line parsed once, or None where the slow path must read.

    Polars' NDJSON reader parses every line once, where a JSONPath per field parses it once
    per field, and reads strings, booleans and nulls alike. It writes numbers and nested
    values its own way (1.0 as "1", objects with spaces), so cells that are one are read
    again by JSONPath; lines it may read otherwise (see _unsure_lines) are read by the slow
    path. A chunk it refuses (a line that is not a JSON object, or not JSON, or not UTF-8)
    goes all to the slow path, which says which line is wrong.
    """
    if not paths:  # the reader would check nothing: a malformed line would pass as a row
        return None
    lines = _jsonl_lines(chunk)
    if lines is None or lines.is_empty():
        return None
    try:
        read = pl.read_ndjson(chunk, schema={c: pl.String for c in paths})
    except pl.exceptions.PolarsError:
        return None
    frame = _numbered(lines, lines_before)
    if read.height != frame.height:  # the reader passes blank lines over: so do we, then
        frame = frame.filter(pl.col(LINE).str.strip_chars() != "")
        if read.height != frame.height:
            return None
    # Columns named by position: a Series method, or pl.col, reads ^a$ as a regex.
    values = [v.alias(f"value{i}") for i, v in enumerate(read.get_columns())]
    probe = pl.DataFrame([frame[LINE].alias("line"), *values])
    facts = _line_facts(probe, read.columns)
    slow = _unsure_lines(probe, facts, read.columns)
    agains = _not_strings(probe, facts, read.columns, slow)
    cells: list[pl.Series] = []
    for column, path, again in zip(paths, paths.values(), agains, strict=True):
        cell = probe.to_series(len(cells) + 1)
        if not again.is_empty():
            exact = probe["line"].gather(again).str.json_path_match(str(path))
            # JSONPath gives up where Python does not (nesting past 128 levels)
            slow = slow.scatter(again.filter(exact.is_null()), True)
            cell = cell.scatter(again, exact)
        cells.append(cell.alias(frame_column(column)))
    malformed = pl.repeat(None, frame.height, dtype=pl.String, eager=True).alias(MALFORMED)
    frame = pl.DataFrame([frame[ROW], malformed, *cells, frame[LINE]])
    rows = slow.arg_true()
    if rows.is_empty():
        return frame
    again_slowly = _jsonl_slow(frame.select(ROW, LINE)[rows], [], paths)
    return frame.with_columns(
        frame[name].scatter(rows, again_slowly[name]) for name in again_slowly.columns[1:-1]
    )


def _jsonl_lines(chunk: bytes) -> pl.Series | None:
    """A chunk's lines (without line ends), or None if they are not all UTF-8."""
    try:
        lines = _polars_lines(chunk)
        return _lines(chunk.decode("utf-8")) if lines is None else lines.alias(LINE)
    except (pl.exceptions.PolarsError, UnicodeDecodeError):
        return None


def _line_facts(probe: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """What the checks of a chunk's lines look at, found in one query (run in parallel).

    For each key (by position): how often the line writes it (``seen``), and whether the
    reader's value starts like a number, an array or an object (``maybe``); for the line:
    its brackets and braces, and whether it has an escape a key could be written with.
    """
    line = pl.col("line")
    escapes = line.str.contains("\\u", literal=True)
    if any("/" in k for k in keys):
        escapes = escapes | line.str.contains("\\/", literal=True)
    return probe.select(
        *[line.str.count_matches(_quoted_key(k)).alias(f"seen{i}") for i, k in enumerate(keys)],
        *[
            pl.col(f"value{i}").str.contains(MAYBE_NOT_STRING).fill_null(False).alias(f"maybe{i}")
            for i in range(len(keys))
        ],
        line.str.count_matches(r"[\[{]").alias("openers"),  # a line is nested no deeper
        escapes.alias("escapes"),
    )


def _unsure_lines(probe: pl.DataFrame, facts: pl.DataFrame, keys: list[str]) -> pl.Series:
    """Lines whose fields the NDJSON reader may read other than JSONPath does.

    A key given twice (the reader keeps the first value, JSONPath the last), or written
    with escapes (its pattern does not see it), or a lone surrogate escape (read as NUL,
    not refused), or nesting past JSONPath's 128 levels (read by Python, which may refuse
    it). A key is looked for as written, quotes and all: no string holds that pattern, as
    its quotes are escaped there; a string value that is a key's name only adds to a count.
    """
    seen = [(facts[f"seen{i}"], probe[f"value{i}"]) for i in range(len(keys))]
    unsure = pl.select(
        pl.any_horizontal(
            *[(n > 1) | ((n == 0) & value.is_not_null()) for n, value in seen],
            facts["openers"] > JSONPATH_DEPTH,
        )
    ).to_series()
    # Many lines have escapes in values; few have them in a key, or a surrogate escape.
    escaped = facts["escapes"].arg_true()
    worse = probe["line"].gather(escaped).str.contains(f"{ESCAPED_KEY}|{SURROGATE_ESCAPE}")
    return unsure.scatter(escaped.filter(worse), True)


def _not_strings(
    probe: pl.DataFrame, facts: pl.DataFrame, keys: list[str], slow: pl.Series
) -> list[pl.Series]:
    """For each key, the rows (not slow) where it holds a number, an array or an object.

    Only a value that starts like one may be one; it is a string after all where its key
    (given once and as written, or the line is slow: _unsure_lines) is followed by a quote.
    """
    maybe = [facts[f"maybe{i}"] & ~slow for i in range(len(keys))]
    some = [i for i, m in enumerate(maybe) if m.any()]
    # As most exports write it (no spaces): a plain search, far cheaper than a pattern.
    compact = probe.select(
        pl.col("line").str.contains(compact_json(keys[i]) + ':"', literal=True).alias(str(i))
        for i in some
    )
    again = [pl.Series(dtype=pl.UInt32)] * len(keys)
    for i, found in zip(some, compact.get_columns(), strict=True):
        rows = (maybe[i] & ~found).arg_true()
        spaced = probe["line"].gather(rows).str.contains(_key_pattern(keys[i]) + r'\s*"')
        again[i] = rows.filter(~spaced)
    return again


def _quoted_key(key: str) -> str:
    """A regex for a key as a JSON line writes it, quotes and all (not with escapes)."""
    return "".join(f"\\{c}" if c in REGEX_SPECIAL else c for c in compact_json(key))


def _key_pattern(key: str) -> str:
    """A regex for a key as a JSON line writes it (a key written with escapes is not found)."""
    return _quoted_key(key) + r"\s*:"


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
