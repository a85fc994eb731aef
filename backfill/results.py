"""The results file: one record per input row, written as soon as the row is final.

JSONL by default, CSV when the path ends in ``.csv``. Each record goes to the operating
system with its own ``write`` (nothing is held back in the process), and the file is synced
to disk at least once a second and when it is closed, so a killed run loses at most the
requests that were in flight.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass
from types import TracebackType

from backfill.codes import Status
from backfill.errors import ResultsFileError
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


@dataclass
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


class ResultsWriter:
    """Appends records to a results file created readable by its owner only."""

    def __init__(self, path: str, *, overwrite: bool = False, append: bool = False) -> None:
        self.path = path
        self.csv = is_csv(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        if overwrite:
            flags |= os.O_TRUNC
        elif not append:
            flags |= os.O_EXCL  # never write over a results file by accident
        try:
            self.fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise ResultsFileError(
                f"{path}: results file exists; use --resume to continue that run"
                " or --overwrite to start again"
            ) from None
        except OSError as exc:
            raise ResultsFileError(f"{path}: cannot write: {exc.strerror}") from None
        self.last_sync = time.monotonic()
        if self.csv and os.fstat(self.fd).st_size == 0:
            self._write(_csv_line(FIELDS))

    def write(self, record: Record) -> None:
        """Hand one record to the operating system now; sync if a second has passed."""
        data = asdict(record)
        if self.csv:
            line = _csv_line(["" if data[f] is None else str(data[f]) for f in FIELDS])
        else:
            line = json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"
        self._write(line)
        now = time.monotonic()
        if now - self.last_sync >= SYNC_EVERY_SECONDS:
            self.sync()
            self.last_sync = now

    def _write(self, text: str) -> None:
        """Write all of a line, whatever os.write accepts at once."""
        view = memoryview(text.encode("utf-8"))
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def sync(self) -> None:
        """Force what was written to disk."""
        os.fsync(self.fd)

    def close(self) -> None:
        """Sync and close."""
        if self.fd >= 0:
            self.sync()
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _csv_line(values: object) -> str:
    """One CSV line, quoted as the csv module does."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)  # type: ignore[arg-type]
    return buffer.getvalue()
