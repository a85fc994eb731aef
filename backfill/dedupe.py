"""The dedupe keys seen so far in a run, kept on disk so memory stays bounded.

``SeenKeys`` answers, for each row of a batch, where its key was first seen (source and
row), and remembers the new keys. The keys live in a scratch SQLite file in a temporary
directory, removed on close: a table keyed on a 128-bit hash of the key, with a bounded page
cache, so a run of any length holds a few tens of MiB for it; the rest of the table is on disk
(and in the operating system's file cache, which is not the process's memory).

The hash is BLAKE2b cut to 16 bytes: a collision would silently drop a real event, so it must
be out of the question. Polars' own hash is 64-bit XXH3, and two seeds of it do not make a
128-bit hash: a fixed pair of 32-240-byte messages collides for about 2^-27 of all seeds
(xxHash issue #1127). Hashing is the one per-key Python step (about 0.4 us a key, on the
keys that are distinct within a batch, a tenth of the store's time); the rest is Polars on
the batch and SQL on the table.

Batches must come in input order, one call at a time: the first row seen with a key wins.
Null keys are never duplicates and are not stored.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from types import TracebackType

import polars as pl

from backfill.errors import RunAborted

DIGEST_BYTES = 16
# Pages of the table kept in memory (negative: KiB). The table takes about 30 bytes a key
# (4,500,000 keys: 124 MiB on disk); pages past the cache are read from the OS file cache.
CACHE_KIB = 32 * 1024
PRAGMAS = (
    # Scratch data: no rollback journal, no fsync; a crash loses nothing a new run needs.
    "PRAGMA journal_mode = OFF",
    "PRAGMA synchronous = OFF",
    f"PRAGMA cache_size = -{CACHE_KIB}",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA locking_mode = EXCLUSIVE",
)
SCHEMA = (
    "CREATE TABLE sources (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE seen (hash BLOB PRIMARY KEY, source INTEGER NOT NULL, row INTEGER NOT NULL)"
    " WITHOUT ROWID",
    # One batch's distinct keys with their first row, to look up and insert with one statement each.
    "CREATE TEMP TABLE batch (hash BLOB NOT NULL, row INTEGER NOT NULL)",
)
FOUND = (
    "SELECT batch.hash, sources.name, seen.row FROM batch"
    " JOIN seen ON seen.hash = batch.hash JOIN sources ON sources.id = seen.source"
)
# Sorted by hash, the inserts walk the table's pages in order rather than at random.
INSERT_NEW = (
    "INSERT OR IGNORE INTO seen SELECT hash, ?, row FROM batch ORDER BY hash RETURNING hash"
)
FOUND_SCHEMA = {"hash": pl.Binary, "found_source": pl.String, "found_row": pl.Int64}


@dataclass(frozen=True)
class FirstSeen:
    """Per row of a batch, where its key was first seen; both null for a row seen first."""

    source: pl.Series  # String: the source of the earlier row with the same key
    row: pl.Series  # Int64: that earlier row's number


class SeenKeys:
    """The dedupe keys seen so far in a run, in a scratch SQLite file removed on close."""

    def __init__(self, directory: str | None = None) -> None:
        """Create an empty store in a new temporary directory under ``directory``."""
        try:
            self.directory = Path(tempfile.mkdtemp(prefix="backfill-dedupe-", dir=directory))
        except OSError as error:
            raise RunAborted(f"cannot create the dedupe store in {directory}: {error}") from error
        try:
            self._db = _open(self.directory / "seen.sqlite")
        except sqlite3.Error as error:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise _failed(self.directory, error) from error
        # A store dropped without close still takes its file with it, at the latest on exit.
        self._discard = weakref.finalize(self, _discard, self._db, self.directory)
        # The pipeline calls from worker threads, one at a time; the lock keeps that true.
        self._lock = threading.Lock()
        self._source_ids: dict[str, int] = {}
        self._count = 0

    def first_seen(self, source: str, rows: pl.Series, keys: pl.Series) -> FirstSeen:
        """For each row, where its key was first seen (null if here); remember the new keys."""
        batch = _batch(rows, keys)
        firsts = _firsts(batch)
        found = self._exchange(source, firsts, ask=True)
        return _answer(source, batch, firsts, found)

    def remember(self, source: str, rows: pl.Series, keys: pl.Series) -> None:
        """Register keys as seen at these rows, unless seen before (to seed a resumed run)."""
        self._exchange(source, _firsts(_batch(rows, keys)), ask=False)

    def __len__(self) -> int:
        """The number of distinct keys stored."""
        return self._count

    def close(self) -> None:
        """Close the database and remove its directory (again: nothing happens)."""
        self._discard()

    def __enter__(self) -> SeenKeys:
        """The store itself, closed on leaving the block."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the store."""
        self.close()

    def _exchange(self, source: str, firsts: pl.DataFrame, *, ask: bool) -> pl.DataFrame:
        """Store the batch's new keys; when asked, fetch where its known ones were seen."""
        with self._lock:
            if not self._discard.alive:
                raise ValueError("the dedupe store is closed")
            try:
                return self._store(source, firsts, ask=ask)
            except sqlite3.Error as error:
                # A failed statement may have rolled back the one transaction, keys and all:
                # going on would send duplicates, so the store is gone.
                self.close()
                raise _failed(self.directory, error) from error

    def _store(self, source: str, firsts: pl.DataFrame, *, ask: bool) -> pl.DataFrame:
        """Insert the batch's keys not stored yet; when asked, fetch where the others were seen."""
        self._fill(firsts)
        new = self._db.execute(INSERT_NEW, (self._source_id(source),)).fetchall()
        self._count += len(new)
        if not ask or len(new) == len(firsts):
            return pl.DataFrame(schema=FOUND_SCHEMA)
        # Looked up after the insert, and only for the keys it skipped: one walk down the
        # table per new key rather than two.
        inserted = pl.DataFrame(new, schema={"hash": pl.Binary}, orient="row")
        self._fill(firsts.join(inserted, on="hash", how="anti"))
        found = self._db.execute(FOUND).fetchall()
        return pl.DataFrame(found, schema=FOUND_SCHEMA, orient="row")

    def _fill(self, firsts: pl.DataFrame) -> None:
        """Put these (hash, row) pairs in the batch table, in place of the last batch's."""
        self._db.execute("DELETE FROM batch")
        self._db.executemany("INSERT INTO batch VALUES (?, ?)", _pairs(firsts))

    def _source_id(self, source: str) -> int:
        """The number that stands for a source name in the table."""
        if source not in self._source_ids:
            cursor = self._db.execute("INSERT INTO sources (name) VALUES (?)", (source,))
            assert cursor.lastrowid is not None
            self._source_ids[source] = cursor.lastrowid
        return self._source_ids[source]


def _open(path: Path) -> sqlite3.Connection:
    """A new scratch database at ``path``, with its pragmas and tables."""
    # Not tied to the creating thread: the pipeline checks batches in a thread pool.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for statement in (*PRAGMAS, *SCHEMA):
            db.execute(statement)
        # One transaction for the whole run, never committed: a commit per batch would write
        # every page the batch touched, where the cache only writes a page out to make room.
        db.execute("BEGIN")
    except BaseException:
        db.close()
        raise
    return db


def _failed(directory: Path, error: sqlite3.Error) -> RunAborted:
    """The error that stops a run whose dedupe store failed (a full disk, most likely)."""
    return RunAborted(f"the dedupe store in {directory} failed: {error}")


def _discard(db: sqlite3.Connection, directory: Path) -> None:
    """Close the database and remove its directory."""
    db.close()
    shutil.rmtree(directory, ignore_errors=True)


def _batch(rows: pl.Series, keys: pl.Series) -> pl.DataFrame:
    """The batch as a frame of position, row number and key text."""
    if len(rows) != len(keys):
        raise ValueError(f"{len(rows)} row numbers for {len(keys)} keys")
    return pl.DataFrame(
        {"row": rows.cast(pl.Int64, strict=True), "key": keys.cast(pl.String, strict=True)}
    ).with_row_index("pos")


def _firsts(batch: pl.DataFrame) -> pl.DataFrame:
    """Each distinct non-null key of the batch with its first position, row and hash."""
    firsts = batch.drop_nulls("key").unique("key", keep="first", maintain_order=True)
    return firsts.with_columns(hash=_hashes(firsts["key"]))


def _hashes(keys: pl.Series) -> pl.Series:
    """The 128-bit BLAKE2b digest of each key's UTF-8 text."""
    texts: Iterable[bytes] = keys.cast(pl.Binary).to_list()
    digests = [blake2b(text, digest_size=DIGEST_BYTES).digest() for text in texts]
    return pl.Series("hash", digests, dtype=pl.Binary)


def _pairs(firsts: pl.DataFrame) -> Iterable[tuple[bytes, int]]:
    """The (hash, row) parameters of the batch table."""
    return zip(firsts["hash"].to_list(), firsts["row"].to_list(), strict=True)


def _answer(
    source: str, batch: pl.DataFrame, firsts: pl.DataFrame, found: pl.DataFrame
) -> FirstSeen:
    """Per row: the stored first sighting, else this batch's first row with the key if not it."""
    known = firsts.join(found, on="hash", how="left").select(
        "key", first_pos="pos", first_row="row", found_source="found_source", found_row="found_row"
    )
    later = pl.col("pos") != pl.col("first_pos")
    answer = batch.join(known, on="key", how="left", maintain_order="left").select(
        source=pl.when(pl.col("found_row").is_not_null())
        .then(pl.col("found_source"))
        .when(later)
        .then(pl.lit(source)),
        row=pl.coalesce("found_row", pl.when(later).then(pl.col("first_row"))),
    )
    return FirstSeen(source=answer["source"], row=answer["row"])
