"""The sender against real loopback servers: the sandbox, and small aiohttp apps per test.

Statuses, retries, the concurrency and rate caps, run control (401, outages, signals) and
fault-injection runs where every row must be accounted for exactly once.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from backfill.codes import SANDBOX_API_KEY, Status
from backfill.plans import SendOptions, Target
from backfill.results import Record, ResultsWriter
from backfill.sandbox import RunningSandbox, SandboxConfig
from backfill.sender import Item, Job, _retry_after, send
from backfill.summary import ResultsSummary
from tests.conftest import (
    PROJECT,
    Loopback,
    Run,
    closed_port,
    read_records,
    row_email,
    row_flow,
    send_argv,
)

KEY_MESSAGE = (
    "the key was rejected. Check that EMBEDDABLES_API_KEY (or --api-key-file) holds a current"
    " rk_ key of this project, and that --project-id and --base-url are right"
)
CHAOS_ROWS = int(os.environ.get("BACKFILL_CHAOS_ROWS", "1000"))  # 2,000+ for a longer run


@pytest.fixture(autouse=True)
def sandbox_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox's key in the environment, and no target settings from outside."""
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    monkeypatch.delenv("EMBEDDABLES_API_URL", raising=False)
    monkeypatch.delenv("EMBEDDABLES_PROJECT_ID", raising=False)


def send_cli(run: Run, url: str, *extra: str, results: str = "results.jsonl") -> Any:
    """``backfill send events.csv`` to ``url``, results to ``results``."""
    return run(*send_argv(url, *extra, results=results, project=PROJECT))


def body_of(row: int) -> str:
    """A valid event body for row ``row`` (user{row}), as the sender core is given it."""
    event = {
        "embeddable_id": row_flow(row),
        "timestamp": "2024-03-01T12:00:00.000Z",
        "custom_event_name": "signed_up",
        "custom_event_props": "{}",
        "identifiers": [{"key": "email", "value": json.dumps(row_email(row))}],
    }
    return json.dumps(event, separators=(",", ":"))


def row_of(event: dict[str, Any]) -> int:
    """The export row an event body (or a received event) belongs to."""
    email = json.loads(event["identifiers"][0]["value"])
    return int(email.removeprefix("user").removesuffix("@example.com"))


def send_core(
    url: str, rows: int, results: Path, invalid: frozenset[int] = frozenset(), **options: Any
) -> ResultsSummary:
    """Send rows 1..rows through the sender core (invalid ones as ready records)."""
    items: list[Item] = [
        Record("core", row, Status.INVALID, None, "bad_event_name", "not snake_case")
        if row in invalid
        else Job("core", row, body_of(row), row_flow(row), "email")
        for row in range(1, rows + 1)
    ]
    batches = iter([items[i : i + 500] for i in range(0, len(items), 500)])
    summary = ResultsSummary(str(results))
    with ResultsWriter(str(results)) as writer:
        send(
            batches, Target(url, PROJECT, SANDBOX_API_KEY), SendOptions(**options), writer, summary
        )
    return summary


def json_answer(status: int, data: object, **headers: str) -> web.Response:
    """A JSON answer."""
    return web.json_response(data, status=status, headers=headers)


def statuses(records: list[dict[str, Any]]) -> Counter[str]:
    """Records counted by status."""
    return Counter(r["status"] for r in records)


def assert_one_record_per_row(records: list[dict[str, Any]], rows: int) -> None:
    """Every row 1..rows has exactly one record."""
    keys = [(r["source"], int(r["row"])) for r in records]
    assert len(keys) == len(set(keys)) == rows
    assert {row for _, row in keys} == set(range(1, rows + 1))


def test_a_send_runs_on_uvloop(loopback: Loopback, tmp_path: Path) -> None:
    # uvloop is a dependency wherever it exists (not on Windows): the event loop is where a
    # send spends most of its CPU, and uvloop's is in C.
    loops: set[str] = set()
    sandbox = loopback.sandbox()
    jobs: list[Item] = [Job("core", r, body_of(r), row_flow(r), "email") for r in range(1, 4)]
    summary = ResultsSummary(str(tmp_path / "r.jsonl"))
    with ResultsWriter(str(tmp_path / "r.jsonl")) as writer:
        send(
            iter([jobs]),
            Target(sandbox.url, PROJECT, SANDBOX_API_KEY),
            SendOptions(),
            writer,
            summary,
            on_progress=lambda _: loops.add(type(asyncio.get_running_loop()).__module__),
        )
    assert summary.by_status[Status.SENT] == 3
    assert loops == {"uvloop"}


# --- every status --------------------------------------------------------------------------


def test_sent_rows_keep_the_entry_id_of_the_answer(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], write: Callable[..., str]
) -> None:
    events_csv(4)
    users = "embeddable_id,key,value,entry_id\n" + "".join(
        f"{row_flow(r)},email,{row_email(r)},entry_{r}\n" for r in range(1, 5)
    )
    sandbox = loopback.sandbox(users_path=Path(write("users.csv", users)))
    result = send_cli(run, sandbox.url)
    assert result.exit_code == 0, result.output
    assert "  sent                4" in result.stdout.splitlines()
    records = read_records("results.jsonl")
    assert_one_record_per_row(records, 4)
    received = {row_of(e): e for e in sandbox.state.received}
    for record in records:
        row = record["row"]
        assert record["status"] == "sent"
        assert (record["http_status"], record["attempts"]) == (200, 1)
        assert record["error"] is None
        assert record["entry_id"] == f"entry_{row}" == received[row]["entry_id"]
        sent = json.loads(record["payload"])
        assert sent == {k: received[row][k] for k in sent}


def test_unknown_users_are_not_found_and_never_retried(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], write: Callable[..., str]
) -> None:
    events_csv(6)
    users = "embeddable_id,key,value\n" + "".join(
        f"{row_flow(r)},email,{row_email(r)}\n" for r in (1, 2)
    )
    sandbox = loopback.sandbox(users_path=Path(write("users.csv", users)))
    result = send_cli(run, sandbox.url)
    assert result.exit_code == 1
    records = read_records("results.jsonl")
    assert statuses(records) == {"sent": 2, "not_found": 4}
    for record in [r for r in records if r["row"] > 2]:
        assert record["status"] == "not_found"
        assert (record["http_status"], record["error"], record["attempts"]) == (
            404,
            "ENTRY_NOT_FOUND",
            1,
        )
        assert "no user entry for embeddable_id" in record["message"]
        assert record["entry_id"] is None and record["payload"]
    assert sandbox.state.requests == 6  # one request a row: a 404 is not retried
    assert sandbox.state.by_status == {200: 2, 404: 4}


@pytest.mark.parametrize("status", [400, 409, 422])
def test_other_4xx_are_rejected_after_one_request(
    status: int, run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(3)
    answer = {"error": "VALIDATION_ERROR", "message": "custom_event_props is not valid"}
    url, hits = loopback.serve(lambda request, attempt: json_answer(status, answer))
    result = send_cli(run, url)
    assert result.exit_code == 1
    records = read_records("results.jsonl")
    assert_one_record_per_row(records, 3)
    for record in records:
        assert record["status"] == "rejected"
        assert (record["http_status"], record["error"], record["attempts"]) == (
            status,
            f"HTTP_{status}",
            1,
        )
        assert json.loads(record["message"]) == answer
    assert len(hits.bodies) == 3


def test_long_reject_bodies_are_kept_as_one_truncated_line(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(1)
    text = "bad request\n\n" + "detail " * 200
    url, _hits = loopback.serve(lambda request, attempt: web.Response(status=400, text=text))
    send_cli(run, url)
    [record] = read_records("results.jsonl")
    assert record["message"] == " ".join(text.split())[:297] + "..."


@pytest.mark.parametrize(
    ("status", "content_type", "body", "outcome", "error", "message"),
    [
        pytest.param(
            500,
            "text/html",
            "<!DOCTYPE html>\n<html><body>Application Error</body></html>",
            "failed",
            "HTTP_500",
            "<!DOCTYPE html> <html><body>Application Error</body></html>",
            id="html-500",
        ),
        pytest.param(503, "text/plain", "", "failed", "HTTP_503", "", id="empty-503"),
        pytest.param(
            404,
            "application/json",
            '{"error": "ENTRY_NOT',
            "not_found",
            "HTTP_404",
            '{"error": "ENTRY_NOT',
            id="truncated-404",
        ),
        pytest.param(
            404,
            "application/json",
            '{"error": "PROJECT_NOT_FOUND"}',
            "not_found",
            "PROJECT_NOT_FOUND",
            '{"error": "PROJECT_NOT_FOUND"}',
            id="other-404-code",
        ),
        pytest.param(
            400, "text/plain", b"\xff\xfe not utf-8", "rejected", "HTTP_400", None, id="bytes-400"
        ),
    ],
)
def test_any_answer_body_is_recorded(
    status: int,
    content_type: str,
    body: str | bytes,
    outcome: str,
    error: str,
    message: str | None,
    run: Run,
    loopback: Loopback,
    events_csv: Callable[..., str],
) -> None:
    events_csv(1)
    raw = body.encode() if isinstance(body, str) else body
    url, _hits = loopback.serve(
        lambda request, attempt: web.Response(status=status, body=raw, content_type=content_type)
    )
    result = send_cli(run, url, "--max-retries", "0")
    assert result.exit_code == 1
    [record] = read_records("results.jsonl")
    assert (record["status"], record["http_status"], record["error"]) == (outcome, status, error)
    if message is not None:
        assert record["message"] == message
    else:
        assert record["message"] == "\ufffd\ufffd not utf-8"


@pytest.mark.parametrize(
    ("body", "entry_id"),
    [
        pytest.param(b'{"id": "evt_1"}', None, id="no-entry-id"),
        pytest.param(b'{"entry_id": 123}', "123", id="number"),
    ],
)
def test_any_200_event_object_is_sent(
    body: bytes, entry_id: str | None, run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(1)
    url, _hits = loopback.serve(lambda request, attempt: web.Response(status=200, body=body))
    assert send_cli(run, url).exit_code == 0
    [record] = read_records("results.jsonl")
    assert (record["status"], record["entry_id"]) == ("sent", entry_id)


def test_entry_id_of_an_answer_in_chunks_is_kept(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(1)
    answer = json.dumps({"entry_id": "entry_chunked", "id": "evt_1", "pad": "x" * 200}).encode()

    async def chunked(request: web.Request, attempt: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(answer[:20])
        await asyncio.sleep(0.02)  # the second chunk comes later, as through a proxy
        try:
            await response.write(answer[20:])
            await response.write_eof()
        except ConnectionError:
            pass  # the client hung up after the first chunk
        return response

    url, _hits = loopback.serve(chunked)
    assert send_cli(run, url).exit_code == 0
    [record] = read_records("results.jsonl")
    assert record["entry_id"] == "entry_chunked"


def test_slow_answers_time_out_and_fail_after_retries(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(2)
    sandbox = loopback.sandbox(delay=0.5)
    result = send_cli(run, sandbox.url, "--timeout", "0.1", "--max-retries", "1")
    assert result.exit_code == 1
    records = read_records("results.jsonl")
    assert_one_record_per_row(records, 2)
    for record in records:
        assert (record["status"], record["error"], record["attempts"]) == ("failed", "TIMEOUT", 2)
        assert record["http_status"] is None
        assert record["message"] == (
            "no answer in time; retried 1x after no answer: the event may exist twice;"
            " no answer to the last attempt: the event may exist"
        )
    assert "ambiguous retries: 2" in result.stdout
    assert sandbox.state.requests <= 4


def test_dropped_connections_fail_as_connection_errors(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(2)
    sandbox = loopback.sandbox(drop_rate=1.0)
    result = send_cli(run, sandbox.url, "--max-retries", "1")
    assert result.exit_code == 1
    records = read_records("results.jsonl")
    assert statuses(records) == {"failed": 2}
    for record in records:
        assert (record["error"], record["attempts"], record["http_status"]) == (
            "CONNECTION_ERROR",
            2,
            None,
        )
        assert "may exist twice" in record["message"]  # the request went out: ambiguous
    assert sandbox.state.dropped == 4
    assert sandbox.state.received == []


def test_refused_connections_fail_without_ambiguity(
    run: Run, events_csv: Callable[..., str]
) -> None:
    events_csv(2)
    port = closed_port()
    result = send_cli(run, f"http://127.0.0.1:{port}", "--max-retries", "0")
    assert result.exit_code == 1
    records = read_records("results.jsonl")
    for record in records:
        assert (record["status"], record["error"], record["attempts"]) == (
            "failed",
            "CONNECTION_ERROR",
            1,
        )
        assert f"127.0.0.1:{port}" in record["message"]
        assert "may exist" not in record["message"]  # refused: never reached the server
    assert "ambiguous retries: 0" in result.stdout


def test_invalid_rows_are_recorded_with_their_reason_and_never_sent(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(5, invalid={2, 4})
    sandbox = loopback.sandbox()
    result = send_cli(run, sandbox.url)
    assert result.exit_code == 1
    records = {r["row"]: r for r in read_records("results.jsonl")}
    assert sorted(records) == [1, 2, 3, 4, 5]
    for row in (2, 4):
        record = records[row]
        assert (record["status"], record["error"], record["attempts"]) == (
            "invalid",
            "bad_event_name",
            0,
        )
        assert record["message"] and "Not Snake" in record["message"]
        assert record["http_status"] is None and record["payload"] is None
    assert sandbox.state.requests == 3
    assert {row_of(e) for e in sandbox.state.received} == {1, 3, 5}


# --- retries -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(
    status: int, run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(1)

    def once_then_ok(request: web.Request, attempt: int) -> web.Response:
        if attempt == 1:
            return json_answer(status, {"error": "SLOW_DOWN"}, **{"Retry-After": "0.5"})
        return json_answer(200, {"entry_id": "entry_1"})

    url, hits = loopback.serve(once_then_ok)
    assert send_cli(run, url).exit_code == 0
    [record] = read_records("results.jsonl")
    assert (record["status"], record["attempts"], record["entry_id"]) == ("sent", 2, "entry_1")
    first, second = hits.times
    assert second - first >= 0.5


@pytest.mark.parametrize("value", ["-5", "soon", "", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_unusable_retry_after_values_still_retry_promptly(
    value: str, loopback: Loopback, tmp_path: Path
) -> None:
    def once_then_ok(request: web.Request, attempt: int) -> web.Response:
        if attempt == 1:
            return json_answer(429, {"error": "RATE_LIMITED"}, **{"Retry-After": value})
        return json_answer(200, {"entry_id": "entry_1"})

    url, hits = loopback.serve(once_then_ok)
    summary = send_core(url, 1, tmp_path / "r.jsonl", backoff_base=0.01)
    assert summary.by_status == {"sent": 1}
    assert hits.times[1] - hits.times[0] < 1.0


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan"])
def test_a_nan_retry_after_is_not_a_delay(value: str) -> None:
    # Checked at the parser: a sender stalled by it cannot be bounded from inside the run.
    seconds = _retry_after({"Retry-After": value})
    assert seconds is None or math.isfinite(seconds)


def test_backoff_grows_exponentially_up_to_max_retries(loopback: Loopback, tmp_path: Path) -> None:
    url, hits = loopback.serve(lambda request, attempt: web.Response(status=503, text="down"))
    summary = send_core(url, 1, tmp_path / "r.jsonl", max_retries=4, backoff_base=0.04)
    [record] = read_records(tmp_path / "r.jsonl")
    assert (record["status"], record["error"], record["attempts"]) == ("failed", "HTTP_503", 5)
    assert len(hits.times) == 5
    assert summary.retries == 4
    gaps = [b - a for a, b in zip(hits.times, hits.times[1:], strict=False)]
    for n, gap in enumerate(gaps, start=1):
        ceiling = 0.04 * 2 ** (n - 1)
        assert ceiling / 2 <= gap <= ceiling + 0.3, (n, gaps)  # loose above: a busy machine
    assert gaps[-1] > gaps[0]


def test_max_retries_from_the_command_line(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(2)
    url, hits = loopback.serve(lambda request, attempt: web.Response(status=500, text="oops"))
    result = send_cli(run, url, "--max-retries", "1")
    assert result.exit_code == 1
    for record in read_records("results.jsonl"):
        assert (record["status"], record["error"], record["attempts"]) == ("failed", "HTTP_500", 2)
    assert len(hits.bodies) == 4
    assert "retries: 2;" in result.stdout


# --- the concurrency and rate caps -----------------------------------------------------------


@pytest.mark.parametrize(("concurrency", "rows"), [(1, 5), (4, 24)])
def test_requests_in_flight_reach_but_never_exceed_the_concurrency(
    concurrency: int, rows: int, run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(rows)
    sandbox = loopback.sandbox(delay=0.1)
    result = send_cli(run, sandbox.url, "--concurrency", str(concurrency))
    assert result.exit_code == 0
    assert sandbox.state.max_in_flight == concurrency
    assert sandbox.state.requests == rows


def test_rate_spaces_request_starts(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(40)
    sandbox = loopback.sandbox()
    started = time.monotonic()
    result = send_cli(run, sandbox.url, "--rate", "20")
    assert result.exit_code == 0
    assert time.monotonic() - started >= 1.9
    times = sorted(sandbox.state.request_times)
    assert len(times) == 40
    assert times[-1] - times[0] >= 39 / 20 - 0.1
    for i in range(len(times) - 20):
        # 20 intervals of 1/20 s; slack only for a request that reached the server late.
        assert times[i + 20] - times[i] >= 0.8


# --- run control: a rejected key, an outage ----------------------------------------------------


def test_a_rejected_key_stops_the_run_at_once(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(60, invalid={1, 2})
    sandbox = loopback.sandbox(api_keys=frozenset({"rk_another_key"}))
    result = send_cli(run, sandbox.url, "--concurrency", "4")
    assert result.exit_code == 3
    assert f"Stopped early: the API answered 401: {KEY_MESSAGE}" in result.stdout.splitlines()
    assert 1 <= sandbox.state.requests <= 4
    records = read_records("results.jsonl")
    assert {r["status"] for r in records} <= {"invalid"}
    assert {r["row"] for r in records} <= {1, 2}


@pytest.mark.parametrize("status", [401, 403])
def test_a_key_revoked_mid_run_keeps_what_was_final(
    status: int, run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(30)

    def revoked_after_ten(request: web.Request, attempt: int) -> web.Response:
        if len(hits.bodies) <= 10:
            return json_answer(200, {"entry_id": f"entry_{len(hits.bodies)}"})
        return web.Response(status=status, text="<html>Forbidden</html>", content_type="text/html")

    url, hits = loopback.serve(revoked_after_ten)
    result = send_cli(run, url, "--concurrency", "1")
    assert result.exit_code == 3
    assert f"Stopped early: the API answered {status}: {KEY_MESSAGE}" in result.stdout
    records = read_records("results.jsonl")
    assert [r["row"] for r in records] == list(range(1, 11))
    assert statuses(records) == {"sent": 10}
    assert len(hits.bodies) == 11


def test_a_rejected_key_sends_nothing_more_under_a_rate_cap(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(20)
    sandbox = loopback.sandbox(api_keys=frozenset({"rk_another_key"}))
    result = send_cli(run, sandbox.url, "--concurrency", "4", "--rate", "2")
    assert result.exit_code == 3
    assert sandbox.state.requests == 1


def test_consecutive_failures_stop_the_run(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(40)
    url, hits = loopback.serve(lambda request, attempt: web.Response(status=503, text="down"))
    result = send_cli(
        run, url, "--max-consecutive-failures", "5", "--max-retries", "0", "--concurrency", "2"
    )
    assert result.exit_code == 3
    lines = result.stdout.splitlines()
    assert (
        "Stopped early: 5 rows in a row failed after all retries: the service looks down" in lines
    )
    records = read_records("results.jsonl")
    assert statuses(records) == {"failed": len(records)}
    assert 5 <= len(records) < 40
    assert len(hits.bodies) == len(records)  # no request without its record


# --- fault injection: every row accounted for exactly once ------------------------------------


def chaos_run(
    loopback: Loopback, tmp_path: Path, **faults: Any
) -> tuple[ResultsSummary, list[dict[str, Any]], list[dict[str, Any]]]:
    """CHAOS_ROWS rows (every 50th invalid) through a faulty sandbox; summary, records, received."""
    sandbox = loopback.sandbox(retry_after=0.01, seed=7, **faults)
    invalid = frozenset(range(50, CHAOS_ROWS + 1, 50))
    summary = send_core(
        sandbox.url,
        CHAOS_ROWS,
        tmp_path / "chaos.jsonl",
        invalid,
        concurrency=16,
        max_retries=10,
        backoff_base=0.001,
        backoff_cap=0.02,
        timeout=10,
    )
    records = read_records(tmp_path / "chaos.jsonl")
    assert_one_record_per_row(records, CHAOS_ROWS)
    by_row = {r["row"]: r for r in records}
    assert {row for row, r in by_row.items() if r["status"] == "invalid"} == invalid
    assert summary.rows == CHAOS_ROWS
    return summary, records, sandbox.state.received


@pytest.mark.chaos
def test_faults_lose_nothing_and_send_nothing_twice(loopback: Loopback, tmp_path: Path) -> None:
    summary, records, received = chaos_run(
        loopback, tmp_path, fail_rate=0.10, throttle_rate=0.05, drop_rate=0.03
    )
    sent = {r["row"]: r for r in records if r["status"] == "sent"}
    arrived = Counter(row_of(e) for e in received)
    assert max(arrived.values()) == 1  # dropped before processing: a retry is safe
    assert set(arrived) == set(sent)
    for event in received:
        record = sent[row_of(event)]
        assert record["entry_id"] == event["entry_id"]
        assert json.loads(record["payload"])["identifiers"] == event["identifiers"]
    assert summary.retries > 0.1 * CHAOS_ROWS  # the faults really happened
    assert {r["status"] for r in records} <= {"sent", "invalid", "failed"}


@pytest.mark.chaos
def test_ambiguous_retries_bound_the_duplicates(loopback: Loopback, tmp_path: Path) -> None:
    summary, records, received = chaos_run(
        loopback, tmp_path, fail_rate=0.10, throttle_rate=0.05, drop_after_rate=0.05
    )
    by_row = {r["row"]: r for r in records}
    arrived = Counter(row_of(e) for e in received)
    duplicates = sum(count - 1 for count in arrived.values())
    assert duplicates > 0  # the fault happened
    assert duplicates <= summary.ambiguous_retries
    for row, count in arrived.items():
        record = by_row[row]
        assert record["status"] in ("sent", "failed")
        if count > 1:
            assert "may exist twice" in record["message"]
    assert {row for row, r in by_row.items() if r["status"] == "sent"} <= set(arrived)


def test_the_core_runs_outside_the_main_thread(loopback: Loopback, tmp_path: Path) -> None:
    sandbox = loopback.sandbox()
    outcome: list[BaseException | ResultsSummary] = []

    def in_thread() -> None:
        try:
            outcome.append(send_core(sandbox.url, 3, tmp_path / "r.jsonl"))
        except BaseException as exc:  # reported below, on the test's thread
            outcome.append(exc)

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join(timeout=30)
    [result] = outcome
    assert isinstance(result, ResultsSummary), repr(result)
    assert result.by_status == {"sent": 3}


# --- signals -------------------------------------------------------------------------------


def start_send(url: str, *extra: str, rows_file: str = "events.csv") -> subprocess.Popen[str]:
    """``backfill send`` as a subprocess of its own, as a user runs it."""
    env = {**os.environ, "EMBEDDABLES_API_KEY": SANDBOX_API_KEY}
    command = [sys.executable, "-m", "backfill", "send", rows_file, "-m", "send_mapping.toml"]
    command += ["--base-url", url, "--project-id", PROJECT, "--no-progress", "-o", "results.jsonl"]
    return subprocess.Popen(
        [*command, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stop(process: subprocess.Popen[str]) -> None:
    """Kill a subprocess that is still running and reap it."""
    if process.poll() is None:
        process.kill()
        process.communicate()


def wait_for_records(path: str, deadline: float) -> None:
    """Return once the results file holds a complete record (the run writes as it goes)."""
    while time.monotonic() < deadline:
        if Path(path).exists() and b"\n" in Path(path).read_bytes():
            return
        time.sleep(0.01)
    raise AssertionError(f"no record in {path} in time")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_run_with_complete_results(
    signum: signal.Signals, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    rows = 400
    events_csv(rows)
    sandbox = RunningSandbox(SandboxConfig(delay=0.05))
    answered = threading.Event()

    async def count_answers(request: web.Request, response: web.StreamResponse) -> None:
        if sandbox.state.by_status[200] >= 20:
            answered.set()

    sandbox.app.on_response_prepare.append(count_answers)
    loopback.start(sandbox)
    process = start_send(sandbox.url, "--concurrency", "4")
    try:
        assert answered.wait(timeout=30)
        wait_for_records("results.jsonl", time.monotonic() + 10)
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        stop(process)
    assert process.returncode == 130, err
    lines = Path("results.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]  # every line a whole record
    keys = [(r["source"], r["row"]) for r in records]
    assert len(keys) == len(set(keys))
    assert 0 < len(records) < rows
    assert {r["status"] for r in records} == {"sent"}
    # In-flight requests finished and were recorded: the sandbox has no event without a record.
    assert sorted(row_of(e) for e in sandbox.state.received) == sorted(r["row"] for r in records)
    assert f"Rows with a final record: {len(records):,}" in out
    assert "Stopped early: interrupted" in out
    assert "Traceback" not in err


def test_a_signal_during_a_long_retry_after_stops_promptly(
    loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(40)
    others = threading.Event()  # set once the client has surely read row 1's 429 and slept

    async def row_one_throttled(request: web.Request, attempt: int) -> web.Response:
        if row_of(json.loads(await request.read())) == 1:
            return json_answer(429, {"error": "RATE_LIMITED"}, **{"Retry-After": "30"})
        if len(hits.bodies) >= 12:  # 10 and more answers to the other worker since then
            others.set()
        return json_answer(200, {"entry_id": "e"})

    url, hits = loopback.serve(row_one_throttled)
    process = start_send(url, "--concurrency", "2")
    try:
        assert others.wait(timeout=30)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=3)
    finally:
        stop(process)
    assert process.returncode == 130
    assert sum(row_of(json.loads(body)) == 1 for body in hits.bodies) == 1  # no retry after


def test_an_unexpected_worker_error_ends_the_run_instead_of_hanging(
    loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(20)  # more rows than the queue (4 x concurrency) holds
    url, hits = loopback.serve(lambda request, attempt: json_answer(200, {"entry_id": "e"}))
    env = {**os.environ, "EMBEDDABLES_API_KEY": SANDBOX_API_KEY + "\nX-Injected: 1"}
    command = [sys.executable, "-m", "backfill", "send", "events.csv", "-m", "send_mapping.toml"]
    command += ["--base-url", url, "--project-id", PROJECT, "--no-progress", "--concurrency", "1"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        _out, err = process.communicate(timeout=8)
    finally:
        stop(process)
    assert process.returncode == 2
    assert err.startswith("error: ")
    assert hits.bodies == []
