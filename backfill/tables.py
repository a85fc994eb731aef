"""Write rows to a CSV or JSONL file chosen by the file's extension, batch by batch."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import IO

import polars as pl
import polars.selectors as cs

from backfill.errors import BackfillError


def is_csv(path: str) -> bool:
    """CSV when the name ends in .csv, JSONL otherwise."""
    return path.lower().endswith(".csv")


def open_private(path: str, mode: str, error: type[BackfillError]) -> IO[str]:
    """Open a file for writing that only its owner can read (it may hold personal data)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise error(f"{path}: cannot write: {exc.strerror}") from None
    return os.fdopen(fd, mode, encoding="utf-8", newline="")


@contextmanager
def writing(path: str, error: type[BackfillError]) -> Iterator[None]:
    """Make a failure to write ``path`` (a full disk, a closed pipe) ``error``, naming it."""
    try:
        yield
    except OSError as exc:
        # Polars' errors carry no strerror: "No space left on device (os error 28)".
        reason = exc.strerror or re.sub(r" \(os error \d+\)$", "", str(exc).strip())
        raise error(f"{path}: cannot write: {reason}", file=path) from None


class TableWriter:
    """Appends frames with a fixed column list; missing columns are written empty."""

    def __init__(self, path: str, columns: Sequence[str], error: type[BackfillError]) -> None:
        self.path, self.error = path, error
        self.columns = list(columns)
        self.csv = is_csv(path)
        self.out = open_private(path, "w", error)
        self.header_written = False

    def write(self, frame: pl.DataFrame) -> None:
        """Append a frame's rows."""
        missing = [pl.lit(None, pl.String).alias(c) for c in self.columns if c not in frame.columns]
        # By exact name: select would read a column named "*" or "^...$" as a pattern.
        frame = frame.with_columns(missing).select(cs.by_name(*self.columns, require_all=True))
        with writing(self.path, self.error):
            if self.csv:
                frame.write_csv(self.out, include_header=not self.header_written)
                self.header_written = True
            else:
                frame.write_ndjson(self.out)

    def close(self) -> None:
        """Flush and close the file."""
        with writing(self.path, self.error):
            try:
                if self.csv and not self.header_written:
                    pl.DataFrame(schema={c: pl.String for c in self.columns}).write_csv(self.out)
            finally:
                self.out.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
