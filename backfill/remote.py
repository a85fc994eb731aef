"""Objects in S3 (and S3-compatible servers) and Google Cloud Storage: listed, fingerprinted
and streamed with bounded memory.

S3 is spoken to through botocore alone (not s3fs: its aiobotocore and aiohttp cost 0.3 s of
imports before the first request). One listing gives each object's size and ETag (one HEAD
for a single key); a stream reads ranged GETs of BLOCK_SIZE, each with If-Match on the listed
ETag, so a rewrite mid-read fails rather than mixes, and fetches the next block in the
background while one is read. GCS goes through fsspec's gcsfs, which gives seekable files that
fetch ranged blocks as they are read. Both clients follow their cloud's own credential chain,
and are optional extras, imported only when a bucket is read.

- S3: botocore's chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
  ``AWS_PROFILE`` and ~/.aws, SSO, container and instance roles. botocore itself honours
  ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_S3``, or ``endpoint_url`` in ~/.aws/config), so
  any S3-compatible server is reached without passing an endpoint here.
- GCS: ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's application-default credentials, the
  metadata server. gcsfs honours ``STORAGE_EMULATOR_HOST``; an emulator is spoken to without
  credentials and through gcsfs's JSON-API class, since the default class asks a gRPC control
  API about every bucket it opens, which emulators do not serve (each open waits 60 s).

Parquet needs random access by row group, so Polars reads it through its own object store:
``parquet_source`` gives the options that reach the same object (for a server other than AWS,
botocore's endpoint and region, with no request; an AWS bucket's own region is asked once).
Polars resolves credentials
itself (boto3's chain when boto3 is installed, else its own reading of the environment,
~/.aws and the instance role; google-auth's chain for GCS). Behind ``STORAGE_EMULATOR_HOST``
object_store is pointed at the emulator through a service-account key's ``gcs_base_url``: it
reaches gcp-storage-emulator that way, but that emulator's object GET lacks the Last-Modified
header object_store requires, so GCS Parquet is not tested against it.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

from backfill.errors import InputError
from backfill.locate import hidden

S3 = "s3://"
GCS = "gs://"
BLOCK_SIZE = 4 * 2**20  # one ranged GET per 4 MiB read: few requests, a few MiB held
FIRST_BLOCK = 2**16  # the first GET: a header, a format sniff (Polars reads Parquet itself)
_EXTRAS = {S3: ("S3", "s3"), GCS: ("GCS", "gcs")}
# The settings that choose credentials and endpoints: a change makes a new client.
_SETTINGS = ("AWS_", "GOOGLE_", "CLOUDSDK_", "GCE_", "STORAGE_EMULATOR_HOST", "HOME")
_AWS_HOSTS = (".amazonaws.com", ".amazonaws.com.cn")
_CHANGED = "the object was replaced or deleted after it was listed; read it again"
_T = TypeVar("_T")


def is_remote(name: str) -> bool:
    """Whether an input names an object in a bucket ("s3://..." or "gs://...")."""
    return name.startswith((S3, GCS))


@dataclass(frozen=True)
class RemoteObject:
    """One object in a bucket; with size, version (ETag or generation) is what a resume compares."""

    url: str
    size: int
    version: str


class RemoteReadError(OSError):
    """A read from a bucket failed; the message says why, the reader names the object."""

    def __str__(self) -> str:
        return str(self.strerror)


def list_objects(url: str) -> list[RemoteObject]:
    """The object a URL names, or every object under a prefix URL (ending in /), in name order."""
    scheme, _, key = _split(url)
    prefix = url.endswith("/") or not key
    store = None
    try:
        store = _store(scheme, url)
        if scheme == S3:
            found = _s3_under(store, url) if prefix else [_s3_one(store, url)]
        else:
            found = _under(store, url) if prefix else [_one(store, url)]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{url}: {_cause(store, url, exc)}", file=url) from None
    if not found:
        raise InputError(f"{url}: no objects under this prefix", file=url)
    return found


def open_object(obj: RemoteObject) -> BinaryIO:
    """A seekable stream of the object's bytes, fetched in ranged blocks as it is read."""
    scheme, _, _ = _split(obj.url)
    store = None
    try:
        store = _store(scheme, obj.url)
        raw = _S3Stream(store, obj) if scheme == S3 else _open_gcs(store, obj)
    except InputError:
        raise
    except _BrokeOff as exc:
        raise InputError(f"{obj.url}: {exc}", file=obj.url) from None
    except Exception as exc:
        gone = _aws_code(exc) in (*_GONE, "PreconditionFailed")  # If-Match: not the listed ETag
        if gone or isinstance(exc, FileNotFoundError | _Replaced):
            raise InputError(f"{obj.url}: {_CHANGED}", file=obj.url) from None
        raise InputError(f"{obj.url}: {_cause(store, obj.url, exc)}", file=obj.url) from None
    return io.BufferedReader(raw, buffer_size=2**16)


def _open_gcs(fs: Any, obj: RemoteObject) -> io.RawIOBase:
    """A gcsfs file of the object; the read names the listed generation, so a rewrite mid-read
    fails rather than mixes."""
    path = obj.url[len(GCS) :]
    handle = fs.open(
        path, "rb", block_size=BLOCK_SIZE, cache_type="readahead", generation=obj.version
    )
    if _version(handle.details) != obj.version or handle.size != obj.size:
        handle.close()
        raise InputError(f"{obj.url}: {_CHANGED}", file=obj.url)
    return _Stream(handle, fs, obj.url)


def fingerprint(obj: RemoteObject) -> dict[str, object]:
    """What a resume compares to tell the object it started on from a replaced one."""
    return {"path": obj.url, "size": obj.size, "version": obj.version}


def parquet_source(obj: RemoteObject) -> tuple[str, dict[str, str]]:
    """The URL and storage_options with which polars.scan_parquet reads the object itself."""
    scheme, bucket, _ = _split(obj.url)
    if scheme == GCS:
        return obj.url, _gcs_storage_options()
    client = None
    try:
        client = _store(S3, obj.url)
        return obj.url, _s3_storage_options(client, bucket)
    except Exception as exc:
        raise InputError(f"{obj.url}: {_cause(client, obj.url, exc)}", file=obj.url) from None


def _split(url: str) -> tuple[str, str, str]:
    """A bucket URL's scheme, bucket and key (or prefix)."""
    scheme = S3 if url.startswith(S3) else GCS
    bucket, _, key = url[len(scheme) :].partition("/")
    if not bucket:
        raise InputError(
            f"{url}: names no bucket (write {scheme}BUCKET/KEY or {scheme}BUCKET/PREFIX/)", file=url
        )
    return scheme, bucket, key


def _under(fs: Any, url: str) -> list[RemoteObject]:
    """Every object under a prefix, recursively, in name order, markers and hidden ones left out."""
    scheme, _, _ = _split(url)
    root = url[len(scheme) :]  # "a//" is not "a/": keys under "a/x" must not be read
    root += "" if root.endswith("/") else "/"
    entries = fs.find(root, detail=True)
    return [
        RemoteObject(scheme + name, int(info["size"]), _version(info))
        for name, info in sorted(entries.items())
        if name.startswith(root) and not _skipped(name[len(root) :])
    ]


def _skipped(relative: str) -> bool:
    """Directory markers, and hidden or marker names (Spark's _SUCCESS, _temporary/, .crc files).

    Every segment below the prefix counts, as a local directory's hidden folders are not read.
    """
    return (
        not relative or relative.endswith("/") or any(hidden(part) for part in relative.split("/"))
    )


def _one(fs: Any, url: str) -> RemoteObject:
    """The one object a URL names (GCS)."""
    info = fs.info(url[len(GCS) :])
    if info.get("type") == "directory":
        raise InputError(
            f"{url}: is a prefix; end it with / to read the objects under it", file=url
        )
    return RemoteObject(url, int(info["size"]), _version(info))


def _version(info: dict[str, Any]) -> str:
    """An object's version: its S3 ETag (quotes dropped, W/ kept) or its GCS generation."""
    version = str(info.get("ETag") or info.get("generation") or "")
    if version.startswith("W/"):
        return "W/" + version.removeprefix("W/").strip('"')
    return version.strip('"')


def _same_version(listed: str, answered: str) -> bool:
    """Whether a GET's ETag is the listed one, by weak comparison (W/ ignored); a server that
    sends none, in the listing or the answer, is taken at its word."""
    if not listed or not answered:
        return True
    return answered.removeprefix("W/") == listed.removeprefix("W/")


def _s3_under(client: Any, url: str) -> list[RemoteObject]:
    """Every object under an S3 prefix, as _under; size and ETag come with the listing."""
    _, bucket, key = _split(url)
    root = key  # ends in "/" (or is the whole bucket's ""): "a//" is not "a/"
    found: list[RemoteObject] = []
    token: dict[str, str] = {}
    while True:
        page = client.list_objects_v2(Bucket=bucket, Prefix=root, **token)
        found += [
            RemoteObject(f"{S3}{bucket}/{item['Key']}", int(item["Size"]), _version(item))
            for item in page.get("Contents", [])
            if not _skipped(item["Key"][len(root) :])
        ]
        if not page.get("IsTruncated"):
            return sorted(found, key=lambda obj: obj.url)
        token = {"ContinuationToken": page["NextContinuationToken"]}


def _s3_one(client: Any, url: str) -> RemoteObject:
    """The one S3 object a URL names; a missing key that is a prefix says so."""
    _, bucket, key = _split(url)
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if _aws_code(exc) not in _GONE:
            raise
        # The listing tells a prefix from a missing key, and fails on a missing bucket.
        under = client.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
        if under.get("KeyCount") or under.get("Contents"):
            raise InputError(
                f"{url}: is a prefix; end it with / to read the objects under it", file=url
            ) from None
        raise
    return RemoteObject(url, int(head["ContentLength"]), _version(head))


def _store(scheme: str, url: str) -> Any:
    """S3's botocore client or GCS's gcsfs filesystem, made once per set of credential settings."""
    settings = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_SETTINGS)))
    try:
        return _make_store(scheme, settings)
    except ImportError:
        service, extra = _EXTRAS[scheme]
        raise InputError(
            f"{url}: reading {service} needs the {extra} extra: pip install 'backfill[{extra}]'",
            file=url,
        ) from None


@lru_cache(maxsize=4)
def _make_store(scheme: str, settings: tuple[tuple[str, str], ...]) -> Any:
    """A new botocore S3 client, or gcsfs filesystem (no listing cache: a rewrite is seen).

    S3 goes through botocore alone: s3fs would add aiobotocore and aiohttp, 0.3 s of imports
    before the first request, for nothing the blocks read here need.
    """
    if scheme == S3:
        import botocore.session  # type: ignore[import-untyped]

        return botocore.session.Session().create_client("s3")
    logging.getLogger("gcsfs").addHandler(logging.NullHandler())  # its give-up tracebacks
    import gcsfs  # type: ignore[import-untyped]
    import gcsfs.core  # type: ignore[import-untyped]

    options = {"skip_instance_cache": True, "use_listings_cache": False}
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return gcsfs.core.GCSFileSystem(token="anon", **options)
    return gcsfs.GCSFileSystem(**options)


class _S3Stream(io.RawIOBase):
    """An S3 object read in ranged GETs of BLOCK_SIZE, each naming the listed ETag (If-Match),
    so a rewrite mid-read fails rather than mixes.

    Opening fetches the first block (a small one: a Parquet object is only sniffed here), so
    an object changed since the listing is told at once. Once reading goes on from one block
    to the next, the block after is fetched in the background while this one is used: at most
    two blocks are held.
    """

    def __init__(self, client: Any, obj: RemoteObject) -> None:
        super().__init__()
        _, self._bucket, self._key = _split(obj.url)
        self._client, self._obj, self._pos = client, obj, 0
        self._start, self._block = 0, self._get(0, FIRST_BLOCK)
        self._ahead: tuple[int, Future[bytes]] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._obj.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._obj.size:
            return 0
        if not self._start <= self._pos < self._start + len(self._block):
            self._move_to(self._pos)
        at = self._pos - self._start
        count = min(len(buffer), len(self._block) - at)
        memoryview(buffer).cast("B")[:count] = memoryview(self._block)[at : at + count]
        self._pos += count
        return count

    def close(self) -> None:
        self._block, self._ahead = b"", None  # a fetch under way is left to finish, unread
        super().close()

    def _move_to(self, pos: int) -> None:
        """Make the block at pos the current one; on a sequential read, start the next."""
        sequential = pos == self._start + len(self._block)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == pos:
            block = self._fetched(ahead[1].result)
        else:
            block = self._fetched(lambda: self._get(pos, BLOCK_SIZE))
        self._start, self._block = pos, block
        after = pos + len(block)
        if sequential and after < self._obj.size:
            self._ahead = (after, _in_background(lambda: self._get(after, BLOCK_SIZE)))

    def _fetched(self, fetch: Callable[[], bytes]) -> bytes:
        """A block, fetched now or awaited; a failure is one RemoteReadError saying why."""
        try:
            return fetch()
        except _Replaced:
            raise RemoteReadError(errno.EIO, _AWS_CODES["PreconditionFailed"]) from None
        except _BrokeOff as exc:
            raise RemoteReadError(errno.EIO, str(exc)) from None
        except Exception as exc:
            cause = _cause(self._client, self._obj.url, exc, probe=False)
            raise RemoteReadError(errno.EIO, cause) from None

    def _get(self, start: int, size: int) -> bytes:
        """The object's bytes from start, at most size of them, from the listed version."""
        end = min(start + size, self._obj.size) - 1
        options = {"Range": f"bytes={start}-{end}"} if end >= start else {}  # none: empty
        version = self._obj.version
        # If-Match compares strongly, so a weak ETag would fail every GET: those are
        # compared here, on the answer, instead.
        if version and not version.startswith("W/"):
            options["IfMatch"] = f'"{version}"'
        for attempt in range(_BODY_ATTEMPTS):
            answer = self._client.get_object(Bucket=self._bucket, Key=self._key, **options)
            if not _same_version(version, _version(answer)):
                answer["Body"].close()
                raise _Replaced()
            try:
                return bytes(answer["Body"].read())
            except Exception as exc:  # the body broke off: botocore retries requests only
                answer["Body"].close()  # its connection is spoilt: not back to the pool
                if not _unreachable(exc):
                    raise
                if attempt + 1 == _BODY_ATTEMPTS:
                    raise _BrokeOff(exc) from exc
        raise AssertionError("unreachable")


_BODY_ATTEMPTS = 3


class _Replaced(Exception):
    """A GET answered with another version of the object than the one listed."""


class _BrokeOff(Exception):
    """An object's body broke off mid-transfer on every attempt (the server was reached)."""

    def __str__(self) -> str:
        cause = self.args[0]
        return f"the transfer broke off {_BODY_ATTEMPTS} times ({_first_line(cause)}); try again"


def _in_background(fetch: Callable[[], bytes]) -> Future[bytes]:
    """fetch() in a daemon thread: a read that hangs must not hold up the process's exit,
    as a pool's threads would (they are joined when Python exits)."""
    future: Future[bytes] = Future()

    def run() -> None:
        try:
            future.set_result(fetch())
        except BaseException as exc:  # handed to whoever waits for the block
            future.set_exception(exc)

    threading.Thread(target=run, name="backfill-s3", daemon=True).start()
    return future


class _Stream(io.RawIOBase):
    """An fsspec file whose failures surface as RemoteReadError (an OSError) saying why."""

    def __init__(self, handle: Any, fs: Any, url: str) -> None:
        super().__init__()
        self._handle, self._fs, self._url = handle, fs, url

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return int(self._call(self._handle.readinto, buffer))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._call(self._handle.seek, offset, whence))

    def tell(self) -> int:
        return int(self._handle.tell())

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
        super().close()

    def _call(self, method: Callable[..., _T], *args: Any) -> _T:
        """Call the file; any failure becomes one OSError that says why."""
        try:
            return method(*args)
        except Exception as exc:
            cause = _cause(self._fs, self._url, exc, probe=False)
            raise RemoteReadError(errno.EIO, cause) from None


def _cause(fs: Any, url: str, exc: BaseException, *, probe: bool = True) -> str:
    """Why a request about an object failed, in words a user can act on.

    ``fs`` is the S3 client or GCS filesystem, or None when making it failed.
    """
    if _unreachable(exc):
        underlying = getattr(exc, "kwargs", {}).get("error")  # botocore's wrapped network error
        return f"cannot reach {_endpoint(fs, url)} ({_first_line(underlying or exc)})"
    if url.startswith(S3):
        return _s3_cause(fs, url, exc, probe)
    return _gcs_cause(fs, url, exc, probe)


def _s3_cause(client: Any, url: str, exc: BaseException, probe: bool) -> str:
    """Why an S3 request failed, by botocore's exception class and S3's error code."""
    from botocore import exceptions as aws

    code = _aws_code(exc)
    if isinstance(exc, aws.NoCredentialsError | aws.PartialCredentialsError):
        return (
            "no AWS credentials found"
            " (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws or a role)"
        )
    if isinstance(exc, aws.ProfileNotFound):
        return f"no such AWS profile ({_first_line(exc)})"
    if code == "NoSuchBucket":
        return "no such bucket"
    if code in _GONE:
        return "no such object"
    if code == "403" and probe:  # HEAD answers carry no error code: a one-byte GET tells which
        code = _aws_code(_failure(lambda: _probe_s3(client, url))) or code
    return _AWS_CODES.get(code) or _first_line(exc)


_AWS_CODES = {
    "InvalidAccessKeyId": "the AWS access key id was not recognised (InvalidAccessKeyId)",
    "SignatureDoesNotMatch": "the AWS secret access key was rejected (SignatureDoesNotMatch)",
    "ExpiredToken": "the AWS session token has expired (ExpiredToken)",
    "TokenRefreshRequired": "the AWS session token has expired (TokenRefreshRequired)",
    "InvalidToken": "the AWS session token is not valid (InvalidToken)",
    "AccessDenied": "access denied (AccessDenied)",
    "AllAccessDisabled": "access denied (AllAccessDisabled)",
    "403": "access denied",
    "PreconditionFailed": "the object was replaced while it was being read; read it again",
}


_GONE = ("NoSuchKey", "404", "NotFound")  # a GET's code for a missing key, and a HEAD's


def _probe_s3(client: Any, url: str) -> None:
    """Ask for the first byte of an object, to learn the error code a HEAD request hides."""
    _, bucket, key = _split(url)
    client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")


def _aws_code(exc: BaseException | None) -> str:
    """S3's error code in a botocore ClientError that caused the exception, or ""."""
    for link in _chain(exc):
        response = getattr(link, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return ""


def _gcs_cause(fs: Any, url: str, exc: BaseException, probe: bool) -> str:
    """Why a GCS request failed, by gcsfs's exception and the HTTP status."""
    code = getattr(exc, "code", None)
    if isinstance(exc, FileNotFoundError):
        bucket = _split(url)[1]
        missing = probe and _failure(lambda: fs.ls(bucket, detail=False)) is not None
        return "no such bucket" if missing else "no such object"
    if code == 401:
        return (
            "the Google credentials are missing or were rejected (GOOGLE_APPLICATION_CREDENTIALS,"
            " or gcloud auth application-default login)"
        )
    if isinstance(exc, OSError) and str(exc).startswith("Forbidden"):
        return "access denied"
    if type(exc).__module__.startswith("google.auth"):
        return f"no usable Google credentials ({_first_line(exc)})"
    return _first_line(exc)


def _unreachable(exc: BaseException) -> bool:
    """Whether a failure is a connection that could not be made or was lost."""
    names = {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"}
    names |= {"ReadTimeoutError", "ResponseStreamingError", "IncompleteReadError"}
    names |= {"ClientConnectorError", "ServerDisconnectedError", "FSTimeoutError"}
    return any(
        isinstance(link, ConnectionError | TimeoutError) or type(link).__name__ in names
        for link in _chain(exc)
    )


def _endpoint(fs: Any, url: str) -> str:
    """The server a client or filesystem talks to, for a message."""
    if url.startswith(GCS):
        return f"the GCS endpoint {fs._location}"
    try:
        return f"the S3 endpoint {fs.meta.endpoint_url}"
    except Exception:
        return "the S3 endpoint"


def _s3_storage_options(client: Any, bucket: str) -> dict[str, str]:
    """Polars object_store options for the endpoint and region botocore uses; credentials are
    Polars'. A server other than AWS is not asked anything.

    "allow_http" (not "aws_allow_http", which Polars takes for a credential key and then skips
    its boto3 credential provider) lets object_store speak plain HTTP to a local server.
    """
    meta = client.meta
    endpoint = str(meta.endpoint_url)
    if (urlsplit(endpoint).hostname or "").endswith(_AWS_HOSTS):
        return {"aws_region": _bucket_region(client, bucket) or meta.region_name or "us-east-1"}
    options = {"aws_endpoint_url": endpoint, "aws_region": meta.region_name or "us-east-1"}
    if endpoint.startswith("http://"):
        options["allow_http"] = "true"
    return options


@lru_cache(maxsize=64)
def _bucket_region(client: Any, bucket: str) -> str | None:
    """An AWS bucket's own region (object_store, unlike botocore, does not follow redirects);
    asked once per bucket and client, not once per object under a prefix."""
    try:
        head = client.head_bucket(Bucket=bucket)
    except Exception:
        return None
    headers = head.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    region = head.get("BucketRegion") or headers.get("x-amz-bucket-region")
    return str(region) if region else None


def _gcs_storage_options() -> dict[str, str]:
    """Polars object_store options for GCS: none (google-auth's chain), or the emulator's."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if not emulator:
        return {}
    if "://" not in emulator:
        emulator = f"http://{emulator}"
    key = {
        "type": "service_account",
        "client_email": "emulator@localhost",
        "private_key_id": "",
        "private_key": "",
        "gcs_base_url": emulator.rstrip("/"),
        "disable_oauth": True,
    }
    options = {"google_service_account_key": json.dumps(key)}
    if emulator.startswith("http://"):
        options["allow_http"] = "true"
    return options


def _failure(action: Callable[[], object]) -> BaseException | None:
    """The exception an action raises, or None."""
    try:
        action()
    except Exception as exc:
        return exc
    return None


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """An exception and the ones it was raised from or while handling."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _first_line(exc: BaseException) -> str:
    """An exception's message on one line, or its class name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__
