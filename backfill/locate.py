"""What an INPUT argument names: a file, the files under a directory, the members of a zip
archive, or objects in a bucket. Each is read as its own source, with its own row numbers.

A directory is read recursively and a zip archive member by member, both in name order;
names that start with "." or "_" are left out there (hidden files, Spark's ``_SUCCESS``
markers and ``.crc`` files), as directory entries of an archive are.
"""

from __future__ import annotations

import hashlib
import os
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from backfill.errors import InputError, ResultsFileError

ZIP_SEPARATOR = "!"  # archive.zip!member.json.gz, as the source of a member's rows


@dataclass(frozen=True)
class Located:
    """One input to read: its source name, how to open its raw bytes, and where it lives."""

    name: str
    opener: Callable[[], BinaryIO]
    size: int | None = None
    path: str | None = None  # a local file's own path (Parquet is read by path)
    remote: Any = None  # the object in a bucket (backfill.remote.RemoteObject)


def locate(argument: str) -> list[Located]:
    """The inputs an argument names, in the order they are read."""
    if argument == "-":
        return [Located("-", lambda: sys.stdin.buffer)]
    if is_remote(argument):
        from backfill import remote  # here: it needs fsspec and a cloud client

        return [
            Located(obj.url, partial(remote.open_object, obj), obj.size, remote=obj)
            for obj in remote.list_objects(argument)
        ]
    path = Path(argument)
    if path.is_dir():
        found = [f for file in _files_under(path) for f in _file(str(file))]
        if not found:
            raise InputError(f"{argument}: no files under this directory", file=argument)
        return found
    return _file(argument)


def is_remote(name: str) -> bool:
    """Whether an input names an object in a bucket."""
    return name.startswith(("s3://", "gs://"))


def _files_under(folder: Path) -> list[Path]:
    """The files under a folder, recursively, in name order, hidden and marker files left out."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not hidden(d)]
        files += [Path(root, n) for n in names if not hidden(n)]
    return sorted(files, key=lambda f: f.relative_to(folder).as_posix())


def hidden(name: str) -> bool:
    """Whether a name is a hidden or marker file, not an export."""
    return name.startswith((".", "_"))


def _file(name: str) -> list[Located]:
    """A local file, or the members of a zip archive."""
    if name.lower().endswith(".zip") and Path(name).is_file():
        return _members(name)
    return [Located(name, lambda: open_file(name), _size(name), path=name)]


def open_file(name: str) -> BinaryIO:
    """A local file's bytes, or a one-line error."""
    try:
        return open(name, "rb")
    except FileNotFoundError:
        raise InputError(f"{name}: no such file", file=name) from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, not an input file", file=name) from None
    except PermissionError:
        raise InputError(f"{name}: permission denied", file=name) from None
    except OSError as exc:
        raise InputError(f"{name}: cannot open: {exc.strerror}", file=name) from None


def _size(name: str) -> int | None:
    """A local file's size, or None when it cannot be told."""
    try:
        return os.path.getsize(name)
    except OSError:
        return None


def _members(archive: str) -> list[Located]:
    """The members of a zip archive in name order, directory entries and markers left out."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            infos = [i for i in zipped.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{archive}: not a readable zip archive ({exc})", file=archive) from None
    infos = [i for i in infos if not hidden(i.filename.rsplit("/", 1)[-1])]
    if not infos:
        raise InputError(f"{archive}: the zip archive holds no files", file=archive)
    return [
        Located(
            f"{archive}{ZIP_SEPARATOR}{info.filename}",
            partial(_open_member, archive, info.filename),
            info.file_size,
        )
        for info in sorted(infos, key=lambda i: i.filename)
    ]


class _Member:
    """A zip member's stream that closes its archive with it."""

    def __init__(self, archive: zipfile.ZipFile, stream: IO[bytes]) -> None:
        self.archive = archive
        self.stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def close(self) -> None:
        """Close the member and the archive."""
        self.stream.close()
        self.archive.close()


def _open_member(archive: str, member: str) -> BinaryIO:
    """A zip member's decompressed bytes, streamed."""
    try:
        zipped = zipfile.ZipFile(archive)
        return cast(BinaryIO, _Member(zipped, zipped.open(member)))
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise InputError(f"{archive}{ZIP_SEPARATOR}{member}: cannot open ({exc})") from None


# --- fingerprints: what a resumed run compares ---------------------------------------------


def fingerprint(path: str) -> dict[str, object]:
    """A local file as the run saw it: its size and a hash of its whole content.

    The whole content, not samples of it: two rows swapped in the middle of an export would
    make one event go twice and another never. Hashing runs at disk speed (about 1 GB/s),
    a small price next to sending the same rows over a network.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            digest = hashlib.file_digest(handle, "sha256")
    except OSError as exc:
        raise ResultsFileError(f"{path}: cannot read: {exc.strerror}", file=path) from None
    return {"path": path, "size": size, "sha256": digest.hexdigest()}


def fingerprint_argument(argument: str) -> dict[str, object]:
    """An INPUT argument as the run saw it: a file's hash, or each file or object it names.

    A remote object counts by its size and ETag (or generation): hashing it would mean
    downloading it twice.
    """
    if argument == "-":
        return {"path": "-"}
    if not is_remote(argument) and not Path(argument).is_dir():
        return fingerprint(argument)
    if not is_remote(argument):
        return {
            "path": argument,
            "parts": [fingerprint(str(f)) for f in _files_under(Path(argument))],
        }
    from backfill import remote

    parts = [remote.fingerprint(obj) for obj in remote.list_objects(argument)]
    return {"path": argument, "parts": parts}
