"""backfill.remote against real object-storage servers on loopback: moto's S3 server and
gcp-storage-emulator (tests/remote_servers.py starts them).

Not covered here, for want of a server that does it: Polars reading gs:// Parquet (the
emulator's object GET lacks the Last-Modified header object_store requires), a GCS object
rewritten mid-read (the emulator ignores the generation a read names), GCS credentials (the
emulator checks none) and real AWS region lookup (moto answers for every region).
"""

from __future__ import annotations

import http.server
import io
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import polars as pl
import pytest

from backfill.errors import InputError
from backfill.remote import (
    BLOCK_SIZE,
    RemoteObject,
    fingerprint,
    is_remote,
    list_objects,
    open_object,
    parquet_source,
)
from tests.remote_servers import (  # noqa: F401 (the *_fixture names are the fixtures)
    GCS,
    S3,
    free_port,
    gcs_endpoint_fixture,
    gcs_fixture,
    moto_endpoint_fixture,
    s3_fixture,
)

LAYOUT = {  # a Spark-style export: what a prefix listing reads, and what it leaves out
    "daily/2024/b.csv": b"id\n2\n",
    "daily/2024/a.csv": b"id\n1\n",
    "daily/2024/": b"",
    "daily/2024/_SUCCESS": b"",
    "daily/2024/.a.csv.crc": b"crc",
    "daily/2024/nested/c.jsonl": b'{"id": 3}\n',
    "daily/2024/_temporary/0/part-0.csv": b"id\n9\n",
    "daily/2024-extra.csv": b"id\n8\n",
}
CHANGED = "the object was replaced or deleted after it was listed; read it again"
LISTED = ["daily/2024/a.csv", "daily/2024/b.csv", "daily/2024/nested/c.jsonl"]


def test_is_remote() -> None:
    assert is_remote("s3://b/k") and is_remote("gs://b/k")
    assert not is_remote("exports/s3.csv") and not is_remote("https://b/k")


def test_one_key(s3: S3) -> None:
    url = s3.put("events/2024.csv", b"id\n1\n2\n")
    [obj] = list_objects(url)
    assert obj.url == url and obj.size == 7 and obj.version
    assert fingerprint(obj) == {"path": url, "size": 7, "version": obj.version}


def test_prefix_in_name_order_without_markers(s3: S3) -> None:
    for key, body in LAYOUT.items():
        s3.put(key, body)
    objects = list_objects("s3://exports/daily/2024/")
    assert [o.url for o in objects] == [f"s3://exports/{k}" for k in LISTED]
    assert [o.size for o in objects] == [len(LAYOUT[k]) for k in LISTED]


def test_whole_bucket(s3: S3) -> None:
    s3.put("b.csv", b"x")
    s3.put("a/c.csv", b"y")
    assert [o.url for o in list_objects("s3://exports/")] == [
        "s3://exports/a/c.csv",
        "s3://exports/b.csv",
    ]


def test_a_prefix_is_taken_as_written(s3: S3) -> None:
    s3.put("a/x.csv", b"x")
    s3.put("a//y.csv", b"y")
    assert [o.url for o in list_objects("s3://exports/a//")] == ["s3://exports/a//y.csv"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param(
            "s3://exports/none/", "s3://exports/none/: no objects under this prefix", id="empty"
        ),
        pytest.param("s3://nobucket/x.csv", "s3://nobucket/x.csv: no such bucket", id="bucket"),
        pytest.param("s3://nobucket/p/", "s3://nobucket/p/: no such bucket", id="bucket-prefix"),
        pytest.param("s3://exports/x.csv", "s3://exports/x.csv: no such object", id="key"),
        pytest.param(
            "s3://exports/daily",
            "s3://exports/daily: is a prefix; end it with / to read the objects under it",
            id="prefix-without-slash",
        ),
        pytest.param(
            "s3:///x.csv",
            "s3:///x.csv: names no bucket (write s3://BUCKET/KEY or s3://BUCKET/PREFIX/)",
            id="no-bucket",
        ),
    ],
)
def test_missing(s3: S3, url: str, message: str) -> None:
    s3.put("daily/a.csv", b"x")
    s3.put("daily/_SUCCESS", b"")
    with pytest.raises(InputError) as caught:
        list_objects(url)
    assert str(caught.value) == message


@pytest.fixture
def reader(s3: S3) -> dict[str, str]:
    """An IAM user allowed to read the exports bucket only, with moto checking every request."""
    import boto3

    s3.client.create_bucket(Bucket="private")
    s3.put("secret.csv", b"x", bucket="private")
    s3.put("ok.csv", b"x")
    iam = boto3.client("iam")
    iam.create_user(UserName="reader")
    resources = ["arn:aws:s3:::exports", "arn:aws:s3:::exports/*"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": resources}],
    }
    iam.put_user_policy(UserName="reader", PolicyName="exports", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    s3.require_auth()
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


@pytest.mark.parametrize(
    ("url", "environment", "cause"),
    [
        pytest.param("s3://exports/ok.csv", {}, None, id="allowed"),
        pytest.param(
            "s3://private/secret.csv", {}, "access denied (AccessDenied)", id="denied-key"
        ),
        pytest.param("s3://private/", {}, "access denied (AccessDenied)", id="denied-prefix"),
        pytest.param(
            "s3://exports/ok.csv",
            {"AWS_ACCESS_KEY_ID": "AKIAUNKNOWNUNKNOWN00"},
            "the AWS access key id was not recognised (InvalidAccessKeyId)",
            id="unknown-key-id",
        ),
        pytest.param(
            "s3://exports/",
            {"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
            "the AWS secret access key was rejected (SignatureDoesNotMatch)",
            id="wrong-secret",
        ),
    ],
)
def test_credentials(
    reader: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    environment: dict[str, str],
    cause: str | None,
) -> None:
    for name, value in {**reader, **environment}.items():
        monkeypatch.setenv(name, value)
    if cause is None:
        assert [o.url for o in list_objects(url)] == [url]
        return
    with pytest.raises(InputError) as caught:
        list_objects(url)
    assert str(caught.value) == f"{url}: {cause}"


def test_no_credentials(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(InputError) as caught:
        list_objects("s3://exports/a.csv")
    assert str(caught.value) == (
        "s3://exports/a.csv: no AWS credentials found"
        " (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws or a role)"
    )


def test_unreachable_endpoint(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries, only to keep the test short
    with pytest.raises(InputError) as caught:
        list_objects("s3://exports/a.csv")
    message = str(caught.value)
    assert message.startswith(f"s3://exports/a.csv: cannot reach the S3 endpoint {closed} (")
    assert "\n" not in message


def test_profile_and_endpoint_from_config_files(
    s3: S3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config, credentials = tmp_path / "config", tmp_path / "credentials"
    config.write_text(f"[profile exports]\nregion = eu-west-1\nendpoint_url = {s3.endpoint}\n")
    credentials.write_text("[exports]\naws_access_key_id = a\naws_secret_access_key = b\n")
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "exports")
    url = s3.put("a.csv", b"id\n1\n")
    [obj] = list_objects(url)
    with open_object(obj) as stream:
        assert stream.read() == b"id\n1\n"


def test_stream_reads_and_seeks(s3: S3) -> None:
    body = bytes(range(256)) * 40_000  # 10 MB: more than two blocks
    [obj] = list_objects(s3.put("big.bin", body))
    with open_object(obj) as stream:
        assert stream.seekable()
        assert stream.read(10) == body[:10]
        stream.seek(9_000_000)
        assert stream.read(5) == body[9_000_000:9_000_005]
        stream.seek(0)
        assert stream.read() == body


def test_stream_in_odd_reads_across_blocks(s3: S3) -> None:
    # Reads that straddle the first block, the blocks fetched ahead, and a seek back.
    body = bytes(range(251)) * (3 * BLOCK_SIZE // 251)
    [obj] = list_objects(s3.put("odd.bin", body))
    with open_object(obj) as stream:
        chunks = []
        while chunk := stream.read(1_000_003):
            chunks.append(chunk)
        assert b"".join(chunks) == body
        stream.seek(BLOCK_SIZE - 3)
        assert stream.read(10) == body[BLOCK_SIZE - 3 : BLOCK_SIZE + 7]


def test_empty_object(s3: S3) -> None:
    [obj] = list_objects(s3.put("empty.csv", b""))
    assert obj.size == 0
    with open_object(obj) as stream:
        assert stream.read() == b""
    s3.put("empty.csv", b"id\n")
    with pytest.raises(InputError) as caught:
        open_object(obj)
    assert str(caught.value) == f"{obj.url}: {CHANGED}"


def test_s3_reads_without_s3fs(s3: S3) -> None:
    # s3fs would cost 0.3 s of imports (aiobotocore, aiohttp) before the first request.
    url = s3.put("a.csv", b"id\n1\n")
    script = textwrap.dedent(
        f"""
        import sys
        from backfill.remote import list_objects, open_object, parquet_source
        [obj] = list_objects({url!r})
        assert open_object(obj).read() == b"id\\n1\\n"
        parquet_source(obj)
        print(sorted({{"s3fs", "fsspec", "aiobotocore", "aiohttp"}} & set(sys.modules)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_streaming_50_mb_holds_a_few_mib(s3: S3) -> None:
    size = 50 * 2**20
    url = s3.put("huge.csv", (b"0123456789abcdef" * (2**16 // 16)) * (size // 2**16))
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would be pytest's own peak.
    script = textwrap.dedent(
        f"""
        import json
        from backfill.remote import list_objects, open_object
        def peak():
            status = open("/proc/self/status").read().split("VmHWM:")[1]
            return int(status.split()[0]) * 1024
        [obj] = list_objects({url!r})
        with open_object(obj) as stream:
            total = len(stream.read(2**20))
            before = peak()
            while chunk := stream.read(2**20):
                total += len(chunk)
        print(json.dumps({{"total": total, "before": before, "peak": peak()}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["total"] == size
    # Measured 8-13 MiB: the 4 MiB readahead block, the response being joined, the 1 MiB read.
    assert figures["peak"] - figures["before"] < 20 * 2**20, figures


def test_fingerprint_changes_when_overwritten(s3: S3) -> None:
    url = s3.put("a.csv", b"id\n1\n")
    [first] = list_objects(url)
    s3.put("a.csv", b"id\n2\n")  # same size, other bytes
    [second] = list_objects(url)
    assert second.size == first.size and fingerprint(second) != fingerprint(first)


@pytest.mark.parametrize("change", ["replace", "delete"])
def test_object_changed_after_listing(s3: S3, change: str) -> None:
    url = s3.put("a.csv", b"id\n1\n")
    [obj] = list_objects(url)
    if change == "replace":
        s3.put("a.csv", b"id\n1\n2\n")
    else:
        s3.client.delete_object(Bucket="exports", Key="a.csv")
    with pytest.raises(InputError) as caught:
        open_object(obj)
    assert str(caught.value) == f"{url}: {CHANGED}"


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        pytest.param("replace", "the object was replaced while it was being read; read it again"),
        pytest.param("delete", "no such object"),
    ],
)
def test_read_error_is_an_os_error(s3: S3, change: str, cause: str) -> None:
    body = b"x" * (3 * BLOCK_SIZE)
    [obj] = list_objects(s3.put("a.csv", body))
    with open_object(obj) as stream:
        assert stream.read(10) == body[:10]
        if change == "replace":
            s3.put("a.csv", body.replace(b"x", b"y"))
        else:
            s3.client.delete_object(Bucket="exports", Key="a.csv")
        with pytest.raises(OSError) as caught:
            stream.read()
    assert str(caught.value) == cause


class _OddS3(http.server.BaseHTTPRequestHandler):
    """One object, served as S3-compatible servers may: with a weak ETag on every answer, a
    GET's ETag unlike the listed one, or every body cut off halfway."""

    body = b""
    etag = 'W/"v1"'
    cut = False
    if_match: ClassVar[list[str | None]] = []  # each GET's If-Match header; per fixture

    def do_GET(self) -> None:
        self.if_match.append(self.headers.get("If-Match"))
        first, last = self.headers["Range"].removeprefix("bytes=").split("-")
        part = self.body[int(first) : int(last) + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {first}-{last}/{len(self.body)}")
        self.send_header("Content-Length", str(len(part)))
        self.send_header("ETag", self.etag)
        self.end_headers()
        self.wfile.write(part[: len(part) // 2] if self.cut else part)
        self.close_connection = self.cut

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(name="odd_s3")
def odd_s3_fixture(s3: S3, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_OddS3]]:
    """_OddS3 on a loopback port, as the S3 endpoint (with the s3 fixture's dummy keys)."""
    handler = type("Handler", (_OddS3,), {"if_match": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda request, address: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def test_weak_etag_is_compared_on_the_answer(odd_s3: type[_OddS3]) -> None:
    odd_s3.body = bytes(range(256)) * (BLOCK_SIZE // 64)  # four blocks
    obj = RemoteObject("s3://exports/a.csv", len(odd_s3.body), "W/v1")  # as listed
    with open_object(obj) as stream:
        assert stream.read() == odd_s3.body
    assert odd_s3.if_match and set(odd_s3.if_match) == {None}  # If-Match would fail: strong


def test_weak_etag_of_another_version_is_a_replaced_object(odd_s3: type[_OddS3]) -> None:
    odd_s3.body = b"x" * (3 * BLOCK_SIZE)
    obj = RemoteObject("s3://exports/a.csv", len(odd_s3.body), "W/v1")  # as listed
    with open_object(obj) as stream:
        assert stream.read(10) == b"x" * 10
        odd_s3.etag = 'W/"v2"'
        with pytest.raises(OSError) as caught:
            stream.read()
    assert str(caught.value) == "the object was replaced while it was being read; read it again"
    with pytest.raises(InputError) as refused:
        open_object(obj)
    assert str(refused.value) == f"s3://exports/a.csv: {CHANGED}"


def test_an_object_listed_without_an_etag_is_read(odd_s3: type[_OddS3]) -> None:
    # ETag is optional in a listing: without one there is nothing to compare answers with.
    odd_s3.body, odd_s3.etag = b"id\n1\n", '"v1"'
    with open_object(RemoteObject("s3://exports/a.csv", 5, "")) as stream:
        assert stream.read() == b"id\n1\n"
    assert odd_s3.if_match == [None]


def test_a_body_that_breaks_off_every_time(odd_s3: type[_OddS3]) -> None:
    odd_s3.body, odd_s3.cut = b"x" * 1000, True
    obj = RemoteObject("s3://exports/a.csv", 1000, "W/v1")
    with pytest.raises(InputError) as caught:
        open_object(obj)
    message = str(caught.value)
    assert message.startswith("s3://exports/a.csv: the transfer broke off 3 times (")
    assert message.endswith("); try again") and "cannot reach" not in message
    assert len(odd_s3.if_match) == 3


def _parquet(rows: int) -> tuple[pl.DataFrame, bytes]:
    frame = pl.DataFrame({"id": range(rows), "event": [f"e{i % 7}" for i in range(rows)]})
    out = io.BytesIO()
    frame.write_parquet(out, row_group_size=1_000)
    return frame, out.getvalue()


def test_parquet_through_polars(s3: S3) -> None:
    frame, body = _parquet(5_000)
    [obj] = list_objects(s3.put("events.parquet", body))
    url, options = parquet_source(obj)
    assert (url, options) == (
        obj.url,
        {"aws_endpoint_url": s3.endpoint, "aws_region": "us-east-1", "allow_http": "true"},
    )
    batches = list(pl.scan_parquet(url, storage_options=options).collect_batches())
    assert pl.concat(batches).equals(frame)


def test_without_the_extras() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["botocore"] = sys.modules["gcsfs"] = None  # as if not installed
        import backfill.remote as remote
        loaded = {name for name, module in sys.modules.items() if module is not None}
        assert not {"fsspec", "s3fs", "gcsfs", "botocore"} & loaded
        for url in ("s3://b/k.csv", "gs://b/k.csv"):
            try:
                remote.list_objects(url)
            except remote.InputError as exc:
                print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "s3://b/k.csv: reading S3 needs the s3 extra: pip install 'backfill[s3]'",
        "gs://b/k.csv: reading GCS needs the gcs extra: pip install 'backfill[gcs]'",
    ]


# --- Google Cloud Storage, through gcp-storage-emulator ------------------------------------


def test_gcs_one_key_and_read(gcs: GCS) -> None:
    url = gcs.put("events/2024.csv", b"id\n1\n2\n")
    [obj] = list_objects(url)
    assert obj == RemoteObject(url, 7, obj.version) and obj.version.isdigit()
    with open_object(obj) as stream:
        assert stream.read() == b"id\n1\n2\n"


def test_gcs_prefix_in_name_order_without_markers(gcs: GCS) -> None:
    for key, body in LAYOUT.items():
        gcs.put(key, body)
    objects = list_objects("gs://exports/daily/2024/")
    assert [o.url for o in objects] == [f"gs://exports/{k}" for k in LISTED]


def test_gcs_a_prefix_is_taken_as_written(gcs: GCS) -> None:
    gcs.put("a/x.csv", b"x")
    gcs.put("a//y.csv", b"y")
    assert [o.url for o in list_objects("gs://exports/a//")] == ["gs://exports/a//y.csv"]
    assert [o.url for o in list_objects("gs://exports/a/")] == [
        "gs://exports/a//y.csv",
        "gs://exports/a/x.csv",
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param(
            "gs://exports/none/", "gs://exports/none/: no objects under this prefix", id="empty"
        ),
        pytest.param("gs://nobucket/x.csv", "gs://nobucket/x.csv: no such bucket", id="bucket"),
        pytest.param("gs://exports/x.csv", "gs://exports/x.csv: no such object", id="key"),
    ],
)
def test_gcs_missing(gcs: GCS, url: str, message: str) -> None:
    gcs.put("daily/a.csv", b"x")
    with pytest.raises(InputError) as caught:
        list_objects(url)
    assert str(caught.value) == message


def test_gcs_fingerprint_changes_when_overwritten(gcs: GCS) -> None:
    url = gcs.put("a.csv", b"id\n1\n")
    [first] = list_objects(url)
    gcs.put("a.csv", b"id\n2\n")
    [second] = list_objects(url)
    assert second.size == first.size and fingerprint(second) != fingerprint(first)


def test_gcs_parquet_source_points_at_the_emulator(gcs: GCS) -> None:
    [obj] = list_objects(gcs.put("events.parquet", _parquet(10)[1]))
    url, options = parquet_source(obj)
    key = json.loads(options["google_service_account_key"])
    assert url == obj.url and options["allow_http"] == "true"
    assert key["gcs_base_url"] == gcs.endpoint and key["disable_oauth"] is True


def test_gcs_object_replaced_after_listing(gcs: GCS) -> None:
    url = gcs.put("a.csv", b"id\n1\n")
    [obj] = list_objects(url)
    gcs.put("a.csv", b"id\n2\n")
    with pytest.raises(InputError) as caught:
        open_object(obj)
    assert str(caught.value) == f"{url}: {CHANGED}"
