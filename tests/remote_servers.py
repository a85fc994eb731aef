"""Object-storage servers on loopback for tests/test_remote.py: moto's S3 server and
gcp-storage-emulator, each started in-process on a free 127.0.0.1 port.

The environment each test sees is set with monkeypatch: S3 gets dummy keys, a region, and
``AWS_ENDPOINT_URL`` (botocore and Polars both honour it), with ~/.aws and the instance
metadata service shut out, so nothing is asked of the developer's own AWS setup or any address
off this machine; GCS gets ``STORAGE_EMULATOR_HOST`` (gcsfs and google-cloud-storage both
honour it; gcsfs is then anonymous) and no Google credentials. Objects are uploaded with the
clouds' own clients (boto3, google-cloud-storage), not with the code under test.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

S3_BUCKET = "exports"
GCS_BUCKET = "exports"
REGION = "us-east-1"


def call(url: str, data: bytes | None = None) -> None:
    """A request to a server's own control API (reset, wipe, authentication)."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session", name="moto_endpoint")
def moto_endpoint_fixture() -> Iterator[str]:
    """moto's S3 (and IAM) server on a loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@dataclass
class S3:
    """The S3 server a test talks to, and boto3 to put objects there."""

    endpoint: str
    client: Any
    bucket: str = S3_BUCKET

    def put(self, key: str, body: bytes, bucket: str | None = None) -> str:
        """Upload an object; its s3:// URL."""
        self.client.put_object(Bucket=bucket or self.bucket, Key=key, Body=body)
        return f"s3://{bucket or self.bucket}/{key}"

    def require_auth(self) -> None:
        """From now on moto checks every request's signature and IAM policy."""
        call(f"{self.endpoint}/moto-api/reset-auth", b"0")


@pytest.fixture(name="s3")
def s3_fixture(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[S3]:
    """An empty moto with one bucket, and the environment pointing at it with dummy keys."""
    import boto3

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role probe off loopback
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    call(f"{moto_endpoint}/moto-api/reset", b"")
    client = boto3.client("s3")
    client.create_bucket(Bucket=S3_BUCKET)
    server = S3(moto_endpoint, client)
    try:
        yield server
    finally:
        call(f"{moto_endpoint}/moto-api/reset-auth", b"inf")
        client.close()


@pytest.fixture(scope="session", name="gcs_endpoint")
def gcs_endpoint_fixture() -> Iterator[str]:
    """gcp-storage-emulator, in memory, on a loopback port, for the whole session."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@dataclass
class GCS:
    """The GCS emulator a test talks to, and google-cloud-storage to put objects there."""

    endpoint: str
    client: Any
    bucket: str = GCS_BUCKET

    def put(self, key: str, body: bytes) -> str:
        """Upload an object; its gs:// URL."""
        self.client.bucket(self.bucket).blob(key).upload_from_string(body)
        return f"gs://{self.bucket}/{key}"


@pytest.fixture(name="gcs")
def gcs_fixture(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> GCS:
    """An emptied emulator with one bucket, and the environment pointing at it."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # no metadata-server probe off loopback
    call(f"{gcs_endpoint}/wipe")
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    client.create_bucket(GCS_BUCKET)
    return GCS(gcs_endpoint, client)
