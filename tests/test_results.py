"""The results file: SPEC.md's fields for every status, JSONL and CSV, private, one line a row."""

from __future__ import annotations

import csv
import errno
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import backfill.results
from backfill.cli import cli_message
from backfill.codes import SANDBOX_API_KEY, Status
from backfill.errors import ResultsFileError, ResultsWriteError
from backfill.results import FIELDS, Record, ResultsWriter, default_results_path
from tests.conftest import Loopback, Run, read_records, send_argv

SPEC_FIELDS = [
    "source",
    "row",
    "status",
    "http_status",
    "error",
    "message",
    "attempts",
    "entry_id",
    "payload",
]
NOT_FOUND = {"error": "ENTRY_NOT_FOUND", "message": "no user entry"}
INVALID_ROW = 5


@pytest.fixture(autouse=True)
def sandbox_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox's key in the environment, and no target settings from outside."""
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    monkeypatch.delenv("EMBEDDABLES_API_URL", raising=False)
    monkeypatch.delenv("EMBEDDABLES_PROJECT_ID", raising=False)


@pytest.fixture
def umask() -> Iterator[None]:
    """A umask that takes nothing away, so only the tool's own mode choice counts."""
    old = os.umask(0)
    yield
    os.umask(old)


async def one_of_each(request: web.Request, attempt: int) -> web.Response:
    """Row 1 is sent, 2 not found, 3 rejected, 4 fails (see events_csv: row i is user{i})."""
    event = json.loads(await request.read())
    row = int(json.loads(event["identifiers"][0]["value"])[4:].split("@")[0])
    if row == 1:
        return web.json_response({"entry_id": "entry_1", "id": "evt_1"})
    if row == 2:
        return web.json_response(NOT_FOUND, status=404)
    if row == 3:
        return web.json_response({"error": "VALIDATION_ERROR"}, status=422)
    return web.Response(status=503, text="down for maintenance")


def send_one_of_each(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], results: str
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Send five rows that end in the five statuses; the records and the bodies sent by row."""
    events_csv(5, invalid={INVALID_ROW})
    url, hits = loopback.serve(one_of_each)
    result = run(*send_argv(url, "--max-retries", "0", results=results))
    assert result.exit_code == 1, result.output
    bodies = {}
    for body in hits.bodies:
        email = json.loads(json.loads(body)["identifiers"][0]["value"])
        bodies[int(email[4:].split("@")[0])] = body.decode()
    return read_records(results), bodies


def expected(bodies: dict[int, str], invalid_message: str) -> dict[int, dict[str, Any]]:
    """The record of each row, exactly as SPEC.md describes it."""
    base = {"source": "events.csv", "attempts": 1, "entry_id": None, "error": None}
    return {
        1: {**base, "row": 1, "status": "sent", "http_status": 200, "message": None}
        | {"entry_id": "entry_1", "payload": bodies[1]},
        2: {**base, "row": 2, "status": "not_found", "http_status": 404}
        | {"error": "ENTRY_NOT_FOUND", "message": json.dumps(NOT_FOUND), "payload": bodies[2]},
        3: {**base, "row": 3, "status": "rejected", "http_status": 422}
        | {"error": "HTTP_422", "message": '{"error": "VALIDATION_ERROR"}', "payload": bodies[3]},
        4: {**base, "row": 4, "status": "failed", "http_status": 503}
        | {"error": "HTTP_503", "message": "down for maintenance", "payload": bodies[4]},
        5: {**base, "row": 5, "status": "invalid", "http_status": None, "attempts": 0}
        | {"error": "bad_event_name", "message": invalid_message, "payload": None},
    }


def test_jsonl_records_hold_exactly_the_spec_fields(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    records, bodies = send_one_of_each(run, loopback, events_csv, "results.jsonl")
    assert list(FIELDS) == SPEC_FIELDS
    assert [field.name for field in fields(Record)] == SPEC_FIELDS  # the writer relies on it
    for record in records:
        assert list(record) == SPEC_FIELDS
    by_row = {r["row"]: r for r in records}
    assert len(by_row) == len(records) == 5
    invalid_message = by_row[INVALID_ROW]["message"]
    assert isinstance(invalid_message, str) and "Not Snake" in invalid_message
    assert by_row == expected(bodies, invalid_message)


def test_csv_records_hold_the_same_as_text(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    records, bodies = send_one_of_each(run, loopback, events_csv, "results.csv")
    with open("results.csv", encoding="utf-8", newline="") as handle:
        assert next(csv.reader(handle)) == SPEC_FIELDS
    by_row = {int(r["row"]): r for r in records}
    assert len(by_row) == len(records) == 5
    invalid_message = by_row[INVALID_ROW]["message"]
    for row, want in expected(bodies, invalid_message).items():
        as_text = {k: "" if v is None else str(v) for k, v in want.items()}
        assert by_row[row] == as_text
    assert json.loads(by_row[1]["payload"])["custom_event_name"] == "signed_up"


@pytest.mark.parametrize("name", ["results.jsonl", "results.csv"])
def test_results_file_is_private(
    name: str, umask: None, run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    send_one_of_each(run, loopback, events_csv, name)
    assert stat.S_IMODE(os.stat(name).st_mode) == 0o600


def test_an_overwritten_results_file_is_private(
    umask: None, run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(1)
    Path("results.jsonl").write_text("old\n", encoding="utf-8")
    os.chmod("results.jsonl", 0o644)
    sandbox = loopback.sandbox()
    result = run(*send_argv(sandbox.url, "--overwrite"))
    assert result.exit_code == 0
    assert stat.S_IMODE(os.stat("results.jsonl").st_mode) == 0o600


# --- the writer on its own -------------------------------------------------------------------


def sent(row: int, **changes: Any) -> Record:
    """A sent record for row ``row``."""
    record = Record("in.csv", row, Status.SENT, 200, attempts=1, entry_id=f"entry_{row}")
    record.payload = json.dumps({"embeddable_id": "flow_1", "note": 'a "quoted", comma'})
    for name, value in changes.items():
        setattr(record, name, value)
    return record


@pytest.mark.parametrize("name", ["r.jsonl", "r.csv"])
def test_each_record_reaches_the_file_when_written(name: str, workdir: Path) -> None:
    with ResultsWriter(name) as writer:
        writer.write(sent(1))
        assert len(read_records(name)) == 1  # not held back in the process
        writer.write(sent(2))
        assert [int(r["row"]) for r in read_records(name)] == [1, 2]


def test_an_existing_results_file_is_never_written_over(workdir: Path) -> None:
    Path("r.jsonl").write_text("keep me\n", encoding="utf-8")
    with pytest.raises(ResultsFileError) as caught:
        ResultsWriter("r.jsonl")
    assert str(caught.value) == (
        "r.jsonl: results file exists; resume it to continue that run, or overwrite it to"
        " start again"
    )
    assert cli_message(caught.value) == (
        "r.jsonl: results file exists; use --resume to continue that run"
        " or --overwrite to start again"
    )
    assert Path("r.jsonl").read_text(encoding="utf-8") == "keep me\n"


def test_an_unwritable_results_path_is_named(workdir: Path) -> None:
    with pytest.raises(ResultsFileError) as caught:
        ResultsWriter("missing/r.jsonl")
    assert str(caught.value) == "missing/r.jsonl: cannot write: No such file or directory"


def test_overwrite_starts_again_and_append_continues(workdir: Path) -> None:
    with ResultsWriter("r.csv") as writer:
        writer.write(sent(1))
    with ResultsWriter("r.csv", append=True) as writer:
        writer.write(sent(2))
    lines = Path("r.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(SPEC_FIELDS)
    assert lines.count(lines[0]) == 1  # one header, however many sessions appended
    assert [int(r["row"]) for r in read_records("r.csv")] == [1, 2]
    with ResultsWriter("r.csv", overwrite=True) as writer:
        writer.write(sent(3))
    assert [int(r["row"]) for r in read_records("r.csv")] == [3]


@pytest.mark.parametrize("name", ["r.jsonl", "r.csv"])
def test_awkward_text_survives_the_round_trip(name: str, workdir: Path) -> None:
    message = 'HTML "page", café ✓; a,b'
    with ResultsWriter(name) as writer:
        writer.write(sent(1, status=Status.REJECTED, http_status=400, message=message))
        writer.write(sent(2, message="line one\nline two\r\nline three"))
    first, second = read_records(name)
    assert first["message"] == message
    assert first["payload"] == sent(1).payload
    assert second["message"] == "line one line two line three"  # one record, one line
    raw = Path(name).read_bytes()
    assert "café ✓".encode() in raw  # UTF-8 as is, not escaped
    assert raw.count(b"\n") == (3 if name.endswith(".csv") else 2)


@pytest.mark.parametrize(
    ("first_input", "path"),
    [
        ("events.csv", "events.results.jsonl"),
        ("exports/march/events.csv.gz", "events.results.jsonl"),
        ("events.ndjson", "events.results.jsonl"),
        ("events.tsv", "events.results.jsonl"),
        ("-", "stdin.results.jsonl"),
    ],
)
def test_default_results_path(first_input: str, path: str) -> None:
    assert default_results_path(first_input) == path


def test_the_results_file_is_synced_every_second_off_the_sending_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(backfill.results, "SYNC_EVERY_SECONDS", 0.05)
    monkeypatch.setattr(backfill.results.os, "fsync", fsync)
    with ResultsWriter(str(tmp_path / "r.jsonl")) as writer:
        writer.write(Record("events.csv", 1, Status.SENT, 200, attempts=1, payload="{}"))
        deadline = time.monotonic() + 5
        while not synced and time.monotonic() < deadline:
            time.sleep(0.01)
        assert synced and set(synced) == {"backfill-results-sync"}
    assert synced[-1] == threading.current_thread().name  # and once more at close


def test_a_disk_that_fails_to_sync_at_close_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    writer = ResultsWriter(str(tmp_path / "r.jsonl"))
    monkeypatch.setattr(backfill.results.os, "fsync", fsync)
    with pytest.raises(ResultsWriteError) as caught:  # exit 3: the run stopped mid-way
        writer.close()
    assert (
        str(caught.value)
        == f"{tmp_path / 'r.jsonl'}: cannot write to disk: {os.strerror(errno.EIO)}"
    )
