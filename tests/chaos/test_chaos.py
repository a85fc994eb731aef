"""A whole send under every fault the sandbox injects, and the invariants that must survive it.

The sandbox (an in-process ``RunningSandbox`` on a real loopback port, served from its own
thread) answers a share of requests with 500/503 pages, 429 with a short ``Retry-After``,
closes a share of connections before processing them and a share after processing them (the
event exists, the client hears nothing), and delays every answer. On top, a middleware of
this harness stalls a share of requests past the client's ``timeout``, either before the
sandbox looks at them (the server processes a request the client gave up on) or after (it
processed it and answers too late): both are the ambiguous timeouts of API.md.

Every export row carries its (source, row) in its props, so each event the server accepted
can be traced to the row it came from. The row count is ``BACKFILL_CHAOS_ROWS`` (3,000 by
default, a few seconds); ``bench/chaos.py`` runs the same helpers over 100,000 rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from backfill.api import retry, send
from backfill.cli import exit_code
from backfill.codes import LAST_UNANSWERED, SANDBOX_API_KEY, Status
from backfill.errors import ExitCode
from backfill.mapping import load_mapping
from backfill.plans import RetryPlan, SendOptions, SendPlan, Target
from backfill.sandbox import RunningSandbox, SandboxConfig, SandboxState
from backfill.summary import ResultsSummary
from tests.conftest import SEND_MAPPING

ROWS = int(os.environ.get("BACKFILL_CHAOS_ROWS", "3000"))
SEED = int(os.environ.get("BACKFILL_CHAOS_SEED", "20240301"))
PROJECT = "pr_chaos"
INVALID_EVERY = 97  # these rows have an unreadable timestamp: final without a request
MISSING_EVERY = 89  # these rows' users are not in the users file: 404 not_found
EVENT_EXTRAS = ("entry_id", "event_id", "received_at")  # what the sandbox adds to a body

MAPPING = (
    SEND_MAPPING
    + """
[props]
columns = ["export_source", "export_row"]
"""
)

pytestmark = pytest.mark.chaos


@dataclass(frozen=True)
class Faults:
    """The fault mix: the sandbox's own faults, plus stalls past the client's timeout."""

    fail_rate: float = 0.08
    throttle_rate: float = 0.08
    drop_rate: float = 0.04
    drop_after_rate: float = 0.04
    delay: float = 0.002  # every answer is this slow
    retry_after: float = 0.01
    stall_before: float = 0.015  # share held before the sandbox processes it
    stall_after: float = 0.015  # share held after the sandbox processed it
    stall: float = 0.4  # how long a stalled request is held: twice the client's timeout

    def sandbox(self, users: Path) -> SandboxConfig:
        """The sandbox configuration for this mix (received events kept in memory)."""
        return SandboxConfig(
            users_path=users,
            fail_rate=self.fail_rate,
            throttle_rate=self.throttle_rate,
            drop_rate=self.drop_rate,
            drop_after_rate=self.drop_after_rate,
            delay=self.delay,
            retry_after=self.retry_after,
            seed=SEED,
            keep_received=True,
        )


FAULTS = Faults()
# Retries high enough that no row ends failed by chance: 0.3 ** 60 is nothing.
OPTIONS = SendOptions(
    concurrency=16,
    max_retries=60,
    timeout=0.2,
    backoff_base=0.005,
    backoff_cap=0.05,
    max_consecutive_failures=1_000_000,
)


@dataclass
class Stalls:
    """Holds a share of requests past the client's timeout, before or after processing."""

    faults: Faults
    rng: random.Random = field(default_factory=lambda: random.Random(SEED + 1))
    before: int = 0
    after: int = 0

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """An aiohttp middleware that rolls the stall dice for each request."""

        @web.middleware
        async def stall(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            roll = self.rng.random()
            if roll < self.faults.stall_before:
                self.before += 1
                # The whole request is in before the stall (aiohttp keeps the body for the
                # handler): the server goes on to process what the client has given up on.
                await request.read()
                await asyncio.sleep(self.faults.stall)
            response = await handler(request)
            if (
                self.faults.stall_before
                <= roll
                < self.faults.stall_before + self.faults.stall_after
            ):
                self.after += 1
                await asyncio.sleep(self.faults.stall)
            return response

        return stall


@contextlib.contextmanager
def serving(sandbox: RunningSandbox) -> Iterator[str]:
    """Serve a sandbox from its own event loop thread; yield its URL.

    Closing it waits for requests still held by the server, so its state is final after.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="chaos-sandbox", daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(sandbox.start(), loop).result()
    finally:
        asyncio.run_coroutine_threadsafe(sandbox.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


@dataclass
class ChaosRun:
    """What one chaos run left behind: the results records and what the server saw."""

    rows: int
    source: str
    records: list[dict[str, Any]]
    received: list[dict[str, Any]]
    summary: ResultsSummary
    code: ExitCode
    state: SandboxState
    stalls: Stalls
    elapsed: float

    def by_row(self) -> dict[tuple[str, int], dict[str, Any]]:
        """The final record of each (source, row)."""
        return {(r["source"], r["row"]): r for r in self.records}

    def received_rows(self) -> Counter[tuple[str, int]]:
        """How many times the server accepted each (source, row)'s event."""
        return Counter(event_key(event) for event in self.received)


def event_key(event: dict[str, Any]) -> tuple[str, int]:
    """The (source, row) an accepted event came from, as its props carry them."""
    props = json.loads(event["custom_event_props"])
    return props["export_source"], int(props["export_row"])


def event_body(event: dict[str, Any]) -> dict[str, Any]:
    """An accepted event as the body the client sent, without what the sandbox added."""
    return {k: v for k, v in event.items() if k not in EVENT_EXTRAS}


def write_export(directory: Path, rows: int) -> tuple[Path, Path, Path]:
    """Write the export CSV, its mapping and a users file; return their paths."""
    csv_path = directory / "events.csv"
    with csv_path.open("w", encoding="utf-8") as out:
        out.write("flow_id,occurred_at,event,email,export_source,export_row\n")
        for row in range(1, rows + 1):
            when = "yesterday" if row % INVALID_EVERY == 0 else "2024-03-01T12:00:00Z"
            out.write(f"flow_{row % 3},{when},signed_up,u{row}@example.com,{csv_path},{row}\n")
    users = directory / "users.csv"
    with users.open("w", encoding="utf-8") as out:
        out.write("embeddable_id,key,value\n")
        for row in range(1, rows + 1):
            if row % MISSING_EVERY:
                out.write(f"flow_{row % 3},email,u{row}@example.com\n")
    mapping = directory / "mapping.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    return csv_path, mapping, users


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL results file."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def run_chaos(
    directory: Path, rows: int, faults: Faults = FAULTS, options: SendOptions = OPTIONS
) -> ChaosRun:
    """Send a generated export of ``rows`` rows through the fault mix; return what happened."""
    csv_path, mapping_path, users = write_export(directory, rows)
    results = directory / "results.jsonl"
    sandbox = RunningSandbox(faults.sandbox(users))
    stalls = Stalls(faults)
    sandbox.app.middlewares.append(stalls.middleware())
    started = time.monotonic()
    with serving(sandbox) as url:
        plan = SendPlan(
            inputs=(str(csv_path),),
            mapping=load_mapping(mapping_path),
            results=str(results),
            destination=Target(url, PROJECT, SANDBOX_API_KEY),
            options=options,
        )
        outcome = send(plan)
        summary, code = outcome.summary, exit_code(outcome)
    elapsed = time.monotonic() - started
    state = sandbox.state
    records = read_records(results)
    return ChaosRun(
        rows, str(csv_path), records, state.received, summary, code, state, stalls, elapsed
    )


# --- the invariants, as lists of offending (source, row) keys (empty when they hold) -------


def rows_without_one_record(run: ChaosRun) -> list[tuple[str, int]]:
    """Rows with no final record or more than one, and records of rows that do not exist."""
    counts = Counter((r["source"], r["row"]) for r in run.records)
    expected = {(run.source, row) for row in range(1, run.rows + 1)}
    wrong = [key for key, n in counts.items() if n != 1 or key not in expected]
    return sorted(wrong + sorted(expected - set(counts)))


def accepted_but_not_sent(run: ChaosRun) -> list[tuple[str, int]]:
    """Rows the server accepted an event for whose record is not ``sent`` with that body."""
    records = run.by_row()
    wrong = set()
    for event in run.received:
        record = records.get(event_key(event)) or {"status": None}
        sent = record["status"] == Status.SENT
        if not sent or json.loads(record["payload"]) != event_body(event):
            wrong.add(event_key(event))
    return sorted(wrong)


def sent_but_never_accepted(run: ChaosRun) -> list[tuple[str, int]]:
    """Rows recorded ``sent`` whose event the server never accepted."""
    accepted = run.received_rows()
    return sorted(
        key for key, r in run.by_row().items() if r["status"] == Status.SENT and key not in accepted
    )


def server_duplicates(run: ChaosRun) -> int:
    """Events the server accepted more than once for the same row (extra copies)."""
    return sum(n - 1 for n in run.received_rows().values())


def duplicates_beyond_ambiguity(run: ChaosRun) -> list[tuple[str, int]]:
    """Rows with more server copies than the ambiguous retries their record owns up to."""
    records = run.by_row()
    wrong = []
    for key, copies in run.received_rows().items():
        note = (records.get(key) or {}).get("message") or ""
        owned = int(note.split("retried ", 1)[1].split("x", 1)[0]) if "retried " in note else 0
        if copies - 1 > owned:
            wrong.append(key)
    return sorted(wrong)


def sent_and_failed(run: ChaosRun) -> list[tuple[str, int]]:
    """Rows with both a ``sent`` and a ``failed`` record."""
    statuses: dict[tuple[str, int], set[str]] = {}
    for r in run.records:
        statuses.setdefault((r["source"], r["row"]), set()).add(r["status"])
    return sorted(k for k, s in statuses.items() if {Status.SENT, Status.FAILED} <= s)


def figures(run: ChaosRun) -> dict[str, float | int]:
    """The run's figures, for the benchmark and for a failing test's message."""
    s = run.summary
    return {
        "rows": run.rows,
        "requests": s.requests,
        "server_requests": run.state.requests,
        "retries": s.retries,
        "ambiguous_retries": s.ambiguous_retries,
        "server_duplicates": server_duplicates(run),
        "sent": s.by_status[Status.SENT],
        "not_found": s.by_status[Status.NOT_FOUND],
        "invalid": s.by_status[Status.INVALID],
        "failed_rows": s.by_status[Status.FAILED],
        "answered_429": run.state.by_status[429],
        "answered_5xx": sum(n for code, n in run.state.by_status.items() if code >= 500),
        "dropped_before": run.state.dropped,
        "dropped_after": run.state.dropped_after,
        "stalled_before": run.stalls.before,
        "stalled_after": run.stalls.after,
        "elapsed_s": round(run.elapsed, 2),
        "send_elapsed_s": round(s.elapsed, 2),
        "requests_per_s": round(s.requests / s.elapsed) if s.elapsed else 0,
    }


def violations(run: ChaosRun) -> dict[str, list[tuple[str, int]]]:
    """Every invariant's offending rows (first few), by invariant."""
    return {
        "rows without exactly one final record": rows_without_one_record(run)[:10],
        "accepted by the server but not sent": accepted_but_not_sent(run)[:10],
        "sent but never accepted": sent_but_never_accepted(run)[:10],
        "duplicates beyond the ambiguous retries": duplicates_beyond_ambiguity(run)[:10],
        "both sent and failed": sent_and_failed(run)[:10],
    }


# --- the short run, checked -------------------------------------------------------------


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> ChaosRun:
    """One chaos run over ROWS rows, shared by the checks below."""
    return run_chaos(tmp_path_factory.mktemp("chaos"), ROWS)


def test_the_run_finishes_having_met_every_fault(chaos: ChaosRun) -> None:
    numbers = figures(chaos)
    assert chaos.summary.stopped is None, numbers
    assert chaos.code == ExitCode.PROBLEMS, numbers  # the invalid and not_found rows
    for name in (
        "answered_429",
        "answered_5xx",
        "dropped_before",
        "dropped_after",
        "stalled_before",
        "stalled_after",
        "ambiguous_retries",
        "server_duplicates",
    ):
        assert numbers[name] > 0, (name, numbers)


def test_every_row_ends_with_exactly_one_final_record(chaos: ChaosRun) -> None:
    assert rows_without_one_record(chaos) == []
    assert chaos.summary.rows == chaos.rows


def test_every_event_the_server_accepted_is_a_sent_row_with_that_body(chaos: ChaosRun) -> None:
    assert accepted_but_not_sent(chaos) == []


def test_every_sent_row_reached_the_server(chaos: ChaosRun) -> None:
    assert sent_but_never_accepted(chaos) == []


def test_server_duplicates_are_no_more_than_the_ambiguous_retries(chaos: ChaosRun) -> None:
    assert server_duplicates(chaos) <= chaos.summary.ambiguous_retries
    assert duplicates_beyond_ambiguity(chaos) == []


def test_no_row_is_both_sent_and_failed_and_none_failed(chaos: ChaosRun) -> None:
    assert sent_and_failed(chaos) == []
    assert chaos.summary.by_status[Status.FAILED] == 0, figures(chaos)


def test_rows_that_were_never_sent_never_reached_the_server(chaos: ChaosRun) -> None:
    accepted = chaos.received_rows()
    records = chaos.by_row()
    expected = {
        Status.INVALID: {r for r in range(1, chaos.rows + 1) if r % INVALID_EVERY == 0},
        Status.NOT_FOUND: {
            r for r in range(1, chaos.rows + 1) if r % MISSING_EVERY == 0 and r % INVALID_EVERY
        },
    }
    for status, rows in expected.items():
        assert {row for (_, row), r in records.items() if r["status"] == status} == rows
        assert [row for row in rows if (chaos.source, row) in accepted] == []


def test_summary_counts_match_the_results_file(chaos: ChaosRun) -> None:
    statuses = Counter(r["status"] for r in chaos.records)
    assert statuses == +chaos.summary.by_status
    assert sum(r["attempts"] for r in chaos.records) == chaos.summary.requests
    # A request the client gave up on before the server read it never reaches the handler.
    assert chaos.state.requests <= chaos.summary.requests


# --- rows that end failed after an unanswered attempt, then retried ---------------------


def test_duplicates_across_a_send_and_its_retry_are_counted(tmp_path: Path) -> None:
    """A row whose last attempt went unanswered may exist; resending it is an ambiguous retry."""
    csv_path, mapping_path, users = write_export(tmp_path, 40)
    faults = Faults(
        fail_rate=0.0,
        throttle_rate=0.0,
        drop_rate=0.0,
        drop_after_rate=0.5,
        delay=0.0,
        stall_before=0.0,
        stall_after=0.0,
    )
    sandbox = RunningSandbox(faults.sandbox(users))
    with serving(sandbox) as url:
        first = SendPlan(
            inputs=(str(csv_path),),
            mapping=load_mapping(mapping_path),
            results=str(tmp_path / "first.jsonl"),
            destination=Target(url, PROJECT, SANDBOX_API_KEY),
            options=SendOptions(concurrency=4, max_retries=0, backoff_base=0.001),
        )
        sent = send(first).summary
        again = RetryPlan(
            from_results=first.results,
            results=str(tmp_path / "retry.jsonl"),
            destination=first.destination,
            options=OPTIONS,
        )
        retried = retry(again).summary
    copies = Counter(event_key(event) for event in sandbox.state.received)
    duplicates = sum(n - 1 for n in copies.values())
    assert sent.by_status[Status.FAILED] > 0  # the premise: some rows failed unanswered
    assert duplicates <= sent.ambiguous_retries + retried.ambiguous_retries
    failed = [r for r in read_records(tmp_path / "first.jsonl") if r["status"] == "failed"]
    assert all(r["message"].endswith("; " + LAST_UNANSWERED) for r in failed)
    assert retried.ambiguous_retries >= len(failed)  # each resend of one may duplicate it
