"""The results file: one record per input row, written as soon as the row is final.

JSONL by default, CSV when the path ends in ``.csv``. Each record goes to the operating
system with its own ``write`` (nothing is held back in the process), and the file is synced
to disk at least once a second and when it is closed, so a killed run loses at most the
requests that were in flight.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import cast

import polars as pl

from backfill.codes import Status
from backfill.errors import Hint, InputError, ResultsFileError, ResultsWriteError
from backfill.inputs import MALFORMED, ROW, batches, open_input
from backfill.redact import redact
from backfill.tables import is_csv

FIELDS = (
    "source",
    "row",
    "status",
    "http_status",
    "error",
    "message",
    "attempts",
    "entry_id",
    "payload",
)
SYNC_EVERY_SECONDS = 1.0
LOCK_SUFFIX = ".lock"
# One encoder for every record: json.dumps with options builds a new one on each call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(slots=True)
class Record:
    """The final outcome of one input row."""

    source: str
    row: int
    status: Status
    http_status: int | None = None
    error: str | None = None
    message: str | None = None
    attempts: int = 0
    entry_id: str | None = None
    payload: str | None = None


def default_results_path(first_input: str) -> str:
    """Where results go when -o is not given: beside the working directory, named for the input."""
    name = "stdin" if first_input == "-" else os.path.basename(first_input)
    for suffix in (".gz", ".csv", ".tsv", ".jsonl", ".ndjson"):
        name = name.removesuffix(suffix)
    return f"{name}.results.jsonl"


def exists_error(path: str) -> ResultsFileError:
    """The refusal to write over a results file."""
    return ResultsFileError(
        f"{path}: results file exists; resume it to continue that run, or overwrite it to"
        " start again",
        file=path,
        hint=Hint.RESUME_OR_OVERWRITE,
    )


class ResultsWriter:
    """Appends records to a results file created readable by its owner only.

    A write or sync that fails (disk full, I/O error) is kept as ``failure`` and raised by
    every later write: the run must stop, never go on without its results.
    """

    def __init__(self, path: str, *, overwrite: bool = False, append: bool = False) -> None:
        self.path = path
        self.csv = is_csv(path)
        self.failure: ResultsWriteError | None = None
        self.failure_raised = False  # once raised, the run knows: closing does not raise it again
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        if overwrite:
            flags |= os.O_TRUNC
        elif not append:
            flags |= os.O_EXCL  # never write over a results file by accident
        try:
            self.fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise exists_error(path) from None
        except OSError as exc:
            raise ResultsFileError(f"{path}: cannot write: {exc.strerror}", file=path) from None
        os.fchmod(self.fd, 0o600)  # also when --overwrite reuses a file made readable to others
        if self.csv and os.fstat(self.fd).st_size == 0:
            self._write(_csv_line(FIELDS))
        # fsync takes milliseconds, now and then hundreds: in the sending thread it would
        # hold up every request in flight, so it runs in a thread of its own.
        self.closing = threading.Event()
        self.syncer = threading.Thread(
            target=self._sync_every_second, name="backfill-results-sync", daemon=True
        )
        self.syncer.start()

    def write(self, record: Record) -> None:
        """Hand one record to the operating system now (the disk has it within a second)."""
        if self.failure is not None:
            self.failure_raised = True
            raise self.failure
        message = record.message
        if message and ("\n" in message or "\r" in message):
            message = " ".join(message.split())  # one record, one line
        # In FIELDS order; built by hand because dataclasses.asdict costs more than the rest.
        values = (
            record.source,
            record.row,
            record.status,
            record.http_status,
            record.error,
            message,
            record.attempts,
            record.entry_id,
            record.payload,
        )
        if self.csv:
            line = _csv_line(["" if v is None else str(v) for v in values])
        else:
            line = _encode(dict(zip(FIELDS, values, strict=True))) + "\n"
        self._write(redact(line))

    def _write(self, text: str) -> None:
        """Write all of a line, whatever os.write accepts at once; a failure stops the file."""
        view = memoryview(text.encode("utf-8"))
        written = 0
        try:
            while written < len(view):
                written += os.write(self.fd, view[written:])
        except OSError as exc:
            if written:  # a half line would read as a broken record: cut it off again
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, os.fstat(self.fd).st_size - written)
            self.failure = ResultsWriteError(
                f"{self.path}: cannot write: {exc.strerror}", file=self.path
            )
            self.failure_raised = True
            raise self.failure from None

    def _sync_every_second(self) -> None:
        """Force what was written to disk once a second, until the file is closed."""
        while not self.closing.wait(SYNC_EVERY_SECONDS):
            try:
                os.fsync(self.fd)
            except OSError as exc:
                # The next write raises it: the run stops rather than trust a failing disk.
                self.failure = ResultsWriteError(
                    f"{self.path}: cannot write to disk: {exc.strerror}", file=self.path
                )
                return

    def close(self) -> None:
        """Sync and close; raise what went wrong with the file, if anything did."""
        if self.fd < 0:
            return
        self.closing.set()
        self.syncer.join()
        fd, self.fd = self.fd, -1
        try:
            os.fsync(fd)
        except OSError as exc:
            self.failure = self.failure or ResultsWriteError(
                f"{self.path}: cannot write to disk: {exc.strerror}", file=self.path
            )
        finally:
            os.close(fd)
        if self.failure is not None and not self.failure_raised:
            raise self.failure

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
        else:  # the error on its way out says more than a failure to close would
            with contextlib.suppress(ResultsWriteError):
                self.close()


class ResultsLock:
    """An exclusive lock on a results file, held while a run writes it.

    The lock is the operating system's (flock) on ``RESULTS.lock``, so it goes away with the
    process, however it ends; the file holds the owner's process id, for the message.
    """

    def __init__(self, results_path: str) -> None:
        self.results_path = results_path
        self.path = results_path + LOCK_SUFFIX
        while True:
            try:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise ResultsFileError(
                    f"{results_path}: cannot write: {exc.strerror}", file=results_path
                ) from None
            if not _try_lock(self.fd):
                owner = _read_owner(self.fd)
                os.close(self.fd)
                raise ResultsFileError(
                    f"{results_path}: another run is writing this results file"
                    f"{f' (process {owner})' if owner else ''}; wait for it to end",
                    file=results_path,
                )
            if _same_file(self.fd, self.path):
                break
            os.close(self.fd)  # the owner removed the lock file as we opened it: again
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        """Remove the lock file and let go of the lock."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ResultsLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    """Take the lock without waiting; False when another process holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _read_owner(fd: int) -> str:
    """The process id the lock holder wrote, or empty."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def _same_file(fd: int, path: str) -> bool:
    """Whether an open file is still the one at path (not removed and made again)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _csv_line(values: object) -> str:
    """One CSV line, quoted as the csv module does."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)  # type: ignore[arg-type]
    return buffer.getvalue()


# Reading results files back: for --resume, retry and report. Streaming, batch by batch.

INT_FIELDS = ("row", "http_status", "attempts")
STATUSES = tuple(s.value for s in Status)
TAIL_BYTES = 1 << 20


RECORD_SCHEMA = {
    "source": pl.String,
    "row": pl.Int64,
    "status": pl.String,
    "http_status": pl.Int64,
    "error": pl.String,
    "message": pl.String,
    "attempts": pl.Int64,
    "entry_id": pl.String,
    "payload": pl.String,
}
READ_BLOCK_BYTES = 2 << 20


def read_results(path: str) -> Iterator[pl.DataFrame]:
    """The records of a results file as frames with the SPEC fields (row numbers as ints).

    A line that is not a record is a ResultsFileError naming it: a results file decides
    what gets sent again, so it is never guessed at. JSONL files this tool wrote are read by
    Polars' own JSON reader; anything it cannot read goes to the slower line-by-line reader,
    which names the first bad line.
    """
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return  # a run that stopped before its first record
    if is_csv(path) or not os.path.isfile(path):
        yield from _read_line_by_line(path)
        return
    try:
        for block in _line_blocks(path):
            frame = pl.read_ndjson(io.BytesIO(block), schema=RECORD_SCHEMA)
            yield _checked_records(path, frame.with_columns(pl.lit(None).alias(MALFORMED)))
    except (pl.exceptions.PolarsError, _NoLineNumbers):
        for _ in _read_line_by_line(path):  # raises, naming the line
            pass
        raise ResultsFileError(f"{path}: not a results file", file=path) from None


def _line_blocks(path: str) -> Iterator[bytes]:
    """The file in blocks of whole lines of about READ_BLOCK_BYTES; the last may be unfinished.

    Block by block, because Polars' own file scan holds most of a big file in memory: a
    resumed million-row run would need five times the memory of the run itself.
    """
    with open(path, "rb") as handle:
        rest = b""
        while block := handle.read(READ_BLOCK_BYTES):
            data = rest + block
            cut = data.rfind(b"\n") + 1
            if cut:
                yield data[:cut]
            rest = data[cut:]
        if rest:
            yield rest


def _read_line_by_line(path: str) -> Iterator[pl.DataFrame]:
    """Records read through the input reader, which keeps every line's number."""
    try:
        inp = open_input(path, "csv" if is_csv(path) else "jsonl")
    except InputError as exc:
        raise ResultsFileError(str(exc)) from None
    if inp.format == "csv":
        missing = [f for f in FIELDS if f not in inp.columns]
        if missing:
            inp.close()
            raise ResultsFileError(
                f"{path}: not a results file (no column {missing[0]})", file=path
            )
    try:
        for frame in batches(inp, FIELDS):
            yield _checked_records(path, frame)
    except InputError as exc:
        raise ResultsFileError(str(exc)) from None
    finally:
        inp.close()


class _NoLineNumbers(Exception):
    """A bad record found by the fast reader, which cannot say on which line."""


def _checked_records(path: str, frame: pl.DataFrame) -> pl.DataFrame:
    """A batch of records with typed fields, or an error naming the first bad line."""
    texts = [f for f in FIELDS if f not in INT_FIELDS]
    records = frame.with_columns(
        *[pl.col(f).cast(pl.String).cast(pl.Int64, strict=False).alias(f) for f in INT_FIELDS],
        *[pl.col(f).cast(pl.String).replace("", None).alias(f) for f in texts],  # CSV cells
    )
    bad = records.filter(
        pl.col(MALFORMED).is_not_null()
        | pl.col("source").is_null()
        | pl.col("row").is_null()
        | ~pl.col("status").is_in(STATUSES).fill_null(False)
    )
    if not bad.is_empty():
        if ROW not in bad.columns:
            raise _NoLineNumbers
        line = bad[ROW][0]
        line += 1 if is_csv(path) else 0  # CSV records are numbered after the header line
        why = bad[MALFORMED][0] or "missing source, row or status"
        raise ResultsFileError(
            f"{path}: line {line} is not a results record ({why})", file=path, row=line
        )
    return records.select(FIELDS)


def discard_broken_tail(path: str) -> bool:
    """Cut a last line that a killed run left unfinished or unreadable; True if one was cut.

    Records are written whole with one write each, so only the last line can be broken:
    its row has no final record and a resumed run sends it again.
    """
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - TAIL_BYTES))
        tail = handle.read()
        if not tail:
            return False
        complete = tail.endswith(b"\n") and _is_record(
            tail.rstrip(b"\n").rsplit(b"\n", 1)[-1], path
        )
        if complete:
            return False
        body = tail.rstrip(b"\n") if tail.endswith(b"\n") else tail
        cut = body.rfind(b"\n")
        if cut < 0 and size > len(tail):
            raise ResultsFileError(
                f"{path}: the last line is longer than {TAIL_BYTES} bytes", file=path
            )
        handle.truncate(size - len(tail) + cut + 1)
        return True


def _is_record(line: bytes, path: str) -> bool:
    """Whether one line of a results file is a whole record (or the CSV header)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if is_csv(path):
        fields = next(csv.reader([text]), [])
        return len(fields) == len(FIELDS)
    try:
        record = json.loads(text)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("status") in STATUSES


# The run record: what a results file was started with, kept beside it so that --resume can
# refuse other inputs or another mapping.

RUN_SUFFIX = ".run.json"


def run_record_path(results_path: str) -> str:
    """The run record's path beside a results file."""
    return results_path + RUN_SUFFIX


def write_run_record(results_path: str, record: dict[str, object]) -> None:
    """Write the run record (readable by its owner only), whole or not at all.

    It goes to a temporary file of its own that replaces the old one only once it is on
    disk, so a kill at any moment leaves either no record or a complete one; a failure
    leaves no temporary file behind.
    """
    path = run_record_path(results_path)
    folder, name = os.path.split(path)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder or ".")
    except OSError as exc:
        raise ResultsFileError(f"{path}: cannot write: {exc.strerror}", file=path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(record, out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ResultsFileError(f"{path}: cannot write: {exc.strerror}", file=path) from None


def read_run_record(results_path: str) -> dict[str, object] | None:
    """The run record beside a results file, or None when there is none."""
    path = run_record_path(results_path)
    try:
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ResultsFileError(f"{path}: unreadable run record ({exc})", file=path) from None
    if not isinstance(saved, dict):
        raise ResultsFileError(f"{path}: unreadable run record (not an object)", file=path)
    return saved


def check_run_record(results_path: str, record: dict[str, object]) -> None:
    """Refuse to resume a results file that was started with something else."""
    saved = read_run_record(results_path)
    if saved is None:
        raise ResultsFileError(
            f"{results_path}: cannot resume: its run record {run_record_path(results_path)} is"
            " missing, so the inputs and mapping it was started with are unknown",
            file=results_path,
        )
    for key, value in record.items():
        if saved.get(key) != value:
            raise ResultsFileError(
                f"{results_path}: cannot resume: {_difference(key, saved.get(key), value)}",
                file=results_path,
            )


def _difference(key: str, saved: object, now: object) -> str:
    """What differs between the run that wrote a results file and this one, in words."""
    if key == "inputs" and isinstance(saved, list) and isinstance(now, list):
        before = [i.get("path") for i in saved if isinstance(i, dict)]
        after = [i.get("path") for i in now if isinstance(i, dict)]
        if before != after:
            return f"it was started with inputs {before}, not {after}"
        changed = [n["path"] for s, n in zip(saved, now, strict=True) if s != n]
        return f"input {changed[0]} has changed since the run started"
    if key == "from" and isinstance(saved, dict):
        return f"{saved.get('path')} has changed since the retry started"
    words = {
        "mapping_sha256": "the mapping file has changed since the run started",
        "target": f"it was started against {saved}, not {now}",
        "input": f"it was started with the CSV dialect {saved}, not {now}",
    }
    return words.get(key, f"it was started with {key} {saved!r}, not {now!r}")


class RowSet:
    """Row numbers per source, kept as sorted integer Series (8 bytes a row, not a Python set)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[pl.Series]] = {}
        self.rows: dict[str, pl.Series] = {}
        self.repeated: tuple[str, int] | None = None  # a (source, row) added more than once

    def add(self, source: str, rows: pl.Series) -> None:
        """Add row numbers of a source."""
        self.parts.setdefault(source, []).append(rows.cast(pl.Int64))

    def finish(self) -> RowSet:
        """Sort what was added; call once, after the last add."""
        for source, parts in self.parts.items():
            added = pl.concat(parts)
            self.rows[source] = added.unique().sort()
            if self.repeated is None and len(self.rows[source]) < len(added):
                self.repeated = (source, int(cast(int, added.filter(added.is_duplicated()).min())))
        self.parts = {}
        return self

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

    def sources(self) -> list[str]:
        """The sources that have rows here."""
        return list(self.rows)

    def mask(self, source: str, rows: pl.Series) -> pl.Series:
        """Which of a batch's row numbers are in the set (only the batch's range is looked at)."""
        known = self.rows.get(source)
        if known is None or rows.is_empty():
            return pl.Series([False] * len(rows), dtype=pl.Boolean)
        low, high = cast(int, rows.min()), cast(int, rows.max())
        start = known.search_sorted(low, side="left")
        stop = known.search_sorted(high, side="right")
        return rows.is_in(known.slice(start, stop - start).implode())


def final_rows(path: str, records: Iterator[pl.DataFrame]) -> RowSet:
    """The (source, row) pairs of a results file's records, read batch by batch.

    A row with two records is refused, naming it and its lines: a results file decides
    what gets sent again, and a second record (a line copied by hand, two runs writing at
    once) would count the row twice or hide that it was sent twice.
    """
    rows = RowSet()
    for batch in records:
        for (source,), frame in batch.group_by("source"):
            rows.add(str(source), frame["row"])
    rows.finish()
    if rows.repeated is not None:
        source, row = rows.repeated
        lines = ", ".join(str(n) for n in _lines_of_row(path, source, row))
        raise ResultsFileError(
            f"{path}: row {row} of {source} has more than one record (lines {lines}); a"
            " results file holds one record per row: remove the extra line and check how"
            " it got there (an edit, or two runs writing the same file)",
            file=path,
        )
    return rows


def _lines_of_row(path: str, source: str, row: int) -> list[int]:
    """The line numbers of a results file that hold a record of (source, row)."""
    found = []
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        if is_csv(path):
            lines: Iterator[tuple[int, dict[str, object]]] = (
                (n + 1, record) for n, record in enumerate(csv.DictReader(handle), start=1)
            )
        else:
            lines = ((n, _loaded(text)) for n, text in enumerate(handle, start=1))
        for number, record in lines:
            if record.get("source") == source and str(record.get("row")) == str(row):
                found.append(number)
    return found


def _loaded(text: str) -> dict[str, object]:
    """A JSONL line as a dict, or an empty one."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
