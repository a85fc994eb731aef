"""``--concurrency auto`` end to end, against real loopback servers with delays and limits.

The controller's decisions are tested on a fake clock in test_throttle.py; here a short send
checks what a user sees: few 429s, one pause of the whole run for a ``Retry-After``, a stop
that does not wait for the pause, and the summary's figures.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from backfill.codes import SANDBOX_API_KEY
from backfill.summary import ResultsSummary
from backfill.text import summary_text
from tests.conftest import Loopback, Run, read_records
from tests.test_sender import (
    assert_one_record_per_row,
    json_answer,
    row_of,
    send_cli,
    send_core,
    start_send,
    stop,
)

AUTO: dict[str, object] = {}  # SendOptions() is what send's defaults come to


@pytest.fixture(autouse=True)
def sandbox_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox's key in the environment, and no target settings from outside."""
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    monkeypatch.delenv("EMBEDDABLES_API_URL", raising=False)
    monkeypatch.delenv("EMBEDDABLES_PROJECT_ID", raising=False)


def test_auto_keeps_429s_rare_against_a_delayed_rate_limited_server(
    loopback: Loopback, tmp_path: Path
) -> None:
    sandbox = loopback.sandbox(delay=0.02, rate_limit=100.0, retry_after=0.2)
    summary = send_core(sandbox.url, 300, tmp_path / "r.jsonl", **AUTO)
    assert_one_record_per_row(read_records(tmp_path / "r.jsonl"), 300)
    assert summary.by_status == {"sent": 300}
    throttled = sandbox.state.by_status[429]
    assert throttled == summary.retries
    # The first burst, and little more: 8% leaves room for a busy machine's timing (it was
    # 16 of 316 once, under a full test run beside it); a fixed 64 gets a fifth or more.
    assert throttled < 0.08 * sandbox.state.requests
    assert summary.rate_paced and summary.settled is not None
    assert 50 <= summary.settled[1] <= 150  # paced near the limit of 100/s


def test_a_retry_after_pauses_every_worker_not_only_its_row(
    loopback: Loopback, tmp_path: Path
) -> None:
    answered: list[float] = []

    async def tenth_throttled(request: web.Request, attempt: int) -> web.Response:
        tenth = len(hits.times) == 10
        await asyncio.sleep(0.01)
        if tenth:
            answered.append(time.monotonic())
            return json_answer(429, {"error": "RATE_LIMITED"}, **{"Retry-After": "1"})
        return json_answer(200, {"entry_id": "e"})

    url, hits = loopback.serve(tenth_throttled)
    summary = send_core(url, 60, tmp_path / "r.jsonl", **AUTO)
    assert summary.by_status == {"sent": 60}
    [throttled_at] = answered
    # Requests already on their way when the 429 came back may arrive; then none for 1 s.
    during = [t for t in hits.times if throttled_at + 0.1 < t < throttled_at + 0.95]
    assert during == []
    assert any(t >= throttled_at + 0.95 for t in hits.times)
    assert summary.pauses == 1
    assert 0.99 <= summary.paused_seconds <= 1.01


def test_a_stop_during_a_long_pause_ends_the_run_at_once(
    loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(40)

    async def row_five_throttled(request: web.Request, attempt: int) -> web.Response:
        if row_of(json.loads(await request.read())) == 5:
            return json_answer(429, {"error": "RATE_LIMITED"}, **{"Retry-After": "30"})
        return json_answer(200, {"entry_id": "e"})

    url, hits = loopback.serve(row_five_throttled)
    process = start_send(url)  # the defaults: --concurrency auto
    try:
        deadline = time.monotonic() + 20
        while not any(row_of(json.loads(body)) == 5 for body in hits.bodies):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # the 429 is back: every worker waits on the pause
        arrived = len(hits.bodies)
        process.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        out, err = process.communicate(timeout=5)
    finally:
        stop(process)
    assert process.returncode == 130, err
    assert time.monotonic() - stopped < 2.0
    assert len(hits.bodies) == arrived  # nothing sent after the 429: the whole run paused
    assert "Paused 30.0 s in all by Retry-After (1 pause of the whole run)" in out


def test_the_summary_shows_the_rate_concurrency_and_pauses_auto_settled_on(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(150)
    sandbox = loopback.sandbox(delay=0.01, rate_limit=60.0, retry_after=0.1)
    result = send_cli(run, sandbox.url, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rate_paced"] is True
    assert data["pauses"] >= 1 and data["paused_seconds"] >= 0.1
    assert 30 <= data["settled_rate"] <= 120
    assert data["settled_concurrency"] > 0
    text = summary_text(summary_of(data)).splitlines()
    settled = [line for line in text if line.startswith("Concurrency auto settled on ")]
    assert len(settled) == 1 and "(paced: the server answered 429)" in settled[0]
    assert any(line.startswith("Paused ") and "by Retry-After" in line for line in text)


def test_a_fixed_concurrency_reports_no_auto_figures(
    run: Run, loopback: Loopback, events_csv: Callable[..., str]
) -> None:
    events_csv(5)
    sandbox = loopback.sandbox()
    result = send_cli(run, sandbox.url, "--concurrency", "8", "--json")
    data = json.loads(result.stdout)
    assert (data["settled_rate"], data["rate_paced"], data["paused_seconds"]) == (None,) * 3
    assert "Concurrency auto" not in summary_text(summary_of(data))


def summary_of(data: dict[str, Any]) -> ResultsSummary:
    """The parts of a run's summary its JSON gives that the text shows about auto."""
    summary = ResultsSummary(data["results"])
    if data["settled_concurrency"] is not None:
        summary.settled = (data["settled_concurrency"], data["settled_rate"])
        summary.rate_paced = data["rate_paced"]
        summary.paused_seconds, summary.pauses = data["paused_seconds"], data["pauses"]
    return summary
