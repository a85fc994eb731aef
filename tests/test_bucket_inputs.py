"""Exports read from buckets, end to end: validate, send, resume and retry on s3:// and gs://
inputs, against moto's S3 server and the GCS emulator on 127.0.0.1 (tests/remote_servers.py)."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from typing import Any

import polars as pl

from tests.conftest import Run, Write, read_records
from tests.remote_servers import (  # noqa: F401 - pytest finds the fixtures by these names
    GCS,
    S3,
    gcs_endpoint_fixture,
    gcs_fixture,
    moto_endpoint_fixture,
    s3_fixture,
)
from tests.test_formats import MAPPING, jsonl, rows


def csv_of(records: list[dict[str, Any]]) -> bytes:
    """CSV of the records."""
    lines = ["event,time,email"] + [f"{r['event']},{r['time']},{r['email']}" for r in records]
    return ("\n".join(lines) + "\n").encode()


def parquet_of(records: list[dict[str, Any]]) -> bytes:
    """Parquet of the records."""
    buffer = io.BytesIO()
    pl.DataFrame(records).write_parquet(buffer)
    return buffer.getvalue()


def test_every_form_under_an_s3_prefix(s3: S3, write: Write, run: Run) -> None:
    s3.put("segment/2024/a.csv", csv_of(rows(2)))
    s3.put("segment/2024/b.csv.gz", gzip.compress(csv_of(rows(1, start=3))))
    s3.put("segment/2024/c", gzip.compress(jsonl(rows(1, start=4))))  # a bare archive name
    s3.put("segment/2024/d.parquet", parquet_of(rows(2, start=5)))
    s3.put("segment/2024/_SUCCESS", b"")
    write("m.toml", MAPPING)

    result = run("send", "s3://exports/segment/", "-m", "m.toml", "--sandbox", "-o", "r.jsonl")

    assert result.exit_code == 0, result.output
    records = sorted(read_records("r.jsonl"), key=lambda r: (r["source"], r["row"]))
    assert [(r["source"], r["row"], r["status"]) for r in records] == [
        ("s3://exports/segment/2024/a.csv", 1, "sent"),
        ("s3://exports/segment/2024/a.csv", 2, "sent"),
        ("s3://exports/segment/2024/b.csv.gz", 1, "sent"),
        ("s3://exports/segment/2024/c", 1, "sent"),
        ("s3://exports/segment/2024/d.parquet", 1, "sent"),
        ("s3://exports/segment/2024/d.parquet", 2, "sent"),
    ]
    events = [json.loads(r["payload"])["custom_event_name"] for r in records]
    assert events == ["e1", "e2", "e3", "e4", "e5", "e6"]


def test_resume_and_retry_from_a_bucket(s3: S3, write: Write, run: Run) -> None:
    s3.put("exports/a.jsonl", jsonl(rows(4)))
    write("m.toml", MAPPING)
    send = ("send", "s3://exports/exports/", "-m", "m.toml", "--sandbox", "-o", "r.jsonl")
    assert run(*send, "--limit", "2").exit_code == 0
    assert run(*send, "--resume").exit_code == 0
    assert sorted(r["row"] for r in read_records("r.jsonl")) == [1, 2, 3, 4]
    retry = ("retry", "r.jsonl", "s3://exports/exports/", "-m", "m.toml", "-o", "again.jsonl")
    again = run(*retry, "--status", "sent", "--sandbox")
    assert again.exit_code == 0, again.output
    assert len(read_records("again.jsonl")) == 4
    s3.put("exports/a.jsonl", jsonl(rows(4, start=2)))  # a new version (ETag) of the object
    refused = run(*send, "--resume")
    assert refused.exit_code == 2
    assert "has changed since the run started" in refused.output


def test_an_empty_prefix_and_a_missing_bucket_are_one_line_errors(
    s3: S3, write: Write, run: Run
) -> None:
    write("m.toml", MAPPING)
    empty = run("validate", "s3://exports/nothing/", "-m", "m.toml")
    assert (empty.exit_code, empty.output.count("\n")) == (2, 1)
    assert empty.output.startswith("error: s3://exports/nothing/: ")
    missing = run("validate", "s3://no-such-bucket/a.csv", "-m", "m.toml")
    assert (missing.exit_code, missing.output.count("\n")) == (2, 1)
    assert missing.output.startswith("error: s3://no-such-bucket/a.csv: ")


def test_an_object_in_gcs(gcs: GCS, write: Write) -> None:
    # A process of its own: the emulator, in this process, prints tracebacks of connections
    # its clients drop, which would land in a CliRunner's captured output.
    url = gcs.put("ga4/events_20240301.json", jsonl(rows(3)))
    write("m.toml", MAPPING)
    command = [sys.executable, "-m", "backfill", "validate", url, "-m", "m.toml", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")
    report = json.loads(done.stdout)
    assert (report["rows"], report["valid"], report["sources"]) == (3, 3, [url])
