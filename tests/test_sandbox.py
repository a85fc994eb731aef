"""The sandbox against a real aiohttp client on a loopback port."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.codes import ENTRY_NOT_FOUND, SANDBOX_API_KEY
from backfill.errors import InputError, UsageError
from backfill.sandbox import (
    MAX_REQUEST_TIMES,
    InvalidEvent,
    RateLimit,
    Registry,
    RunningSandbox,
    SandboxConfig,
    SandboxState,
    TokenBucket,
    derived_entry_id,
    load_users,
    loopback_host,
    parse_event,
    parse_schedule,
    serve,
)

T = TypeVar("T")
KEY = SANDBOX_API_KEY
EMAIL = "ada@example.com"
BODY: dict[str, Any] = {
    "embeddable_id": "flow_9f2c",
    "timestamp": "2024-03-01T12:34:56.000Z",
    "custom_event_name": "plan_upgraded",
    "custom_event_props": json.dumps({"payload_metrics": {"amount": 49.0}}),
    "identifiers": [{"key": "email", "value": json.dumps(EMAIL)}],
}
USERS_CSV = (
    "embeddable_id,key,value,entry_id\n"
    f"flow_9f2c,email,{EMAIL},entry_ada\n"
    "flow_9f2c,customer_id,123,\n"
)


def event(**changes: Any) -> dict[str, Any]:
    """The example body of API.md with some fields changed."""
    return {**BODY, **changes}


def identifier(value: str, key: str = "email") -> list[dict[str, str]]:
    """An identifiers array with one identifier."""
    return [{"key": key, "value": value}]


def without(name: str) -> dict[str, Any]:
    """The example body without one field."""
    return {field: value for field, value in BODY.items() if field != name}


@dataclass
class Reply:
    """What the client got back."""

    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.text)


Outcome = Reply | aiohttp.ClientError


async def post(
    session: aiohttp.ClientSession, url: str, body: object, key: str | None = KEY
) -> Outcome:
    """POST one event body (bytes as they are, anything else as JSON); errors are returned."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-Api-Key"] = key
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        async with session.post(f"{url}/projects/pr_test/events", data=data, headers=headers) as r:
            return Reply(r.status, dict(r.headers), await r.text())
    except aiohttp.ClientError as exc:
        return exc


def with_sandbox(
    config: SandboxConfig,
    scenario: Callable[[RunningSandbox, aiohttp.ClientSession], Awaitable[T]],
    limit: int = 100,
) -> T:
    """Run ``scenario`` against a fresh sandbox with a client capped at ``limit`` connections."""

    async def main() -> T:
        connector = aiohttp.TCPConnector(limit=limit)
        async with (
            RunningSandbox(config) as sandbox,
            aiohttp.ClientSession(connector=connector) as session,
        ):
            return await scenario(sandbox, session)

    return asyncio.run(main())


def exchange(
    config: SandboxConfig, *bodies: object, key: str | None = KEY, concurrent: bool = False
) -> tuple[list[Outcome], SandboxState]:
    """Send bodies one after the other (or all at once) and return the outcomes and state."""

    async def scenario(
        sandbox: RunningSandbox, session: aiohttp.ClientSession
    ) -> tuple[list[Outcome], SandboxState]:
        if concurrent:
            replies = await asyncio.gather(*(post(session, sandbox.url, b, key) for b in bodies))
            return list(replies), sandbox.state
        return [await post(session, sandbox.url, b, key) for b in bodies], sandbox.state

    return with_sandbox(config, scenario)


def reply(outcome: Outcome) -> Reply:
    """The outcome as a reply, failing the test on a connection error."""
    assert isinstance(outcome, Reply), outcome
    return outcome


@pytest.fixture
def users_csv(tmp_path: Path) -> Path:
    """A users CSV with Ada's email (named entry id) and customer 123 (derived entry id)."""
    path = tmp_path / "users.csv"
    path.write_text(USERS_CSV, encoding="utf-8")
    return path


# --- 200 and the received log -----------------------------------------------------------


def test_accepted_event_is_answered_and_logged(users_csv: Path, tmp_path: Path) -> None:
    received = tmp_path / "received.jsonl"
    config = SandboxConfig(users_path=users_csv, received_path=received)
    [outcome], state = exchange(config, BODY)
    answer = reply(outcome)
    assert answer.status == 200
    created = answer.json()
    assert created["entry_id"] == "entry_ada"
    assert created["event_type"] == "custom_event:triggered"
    assert created["project_id"] == "pr_test"
    assert created["id"].startswith("evt_")
    for name in ("embeddable_id", "timestamp", "custom_event_name", "custom_event_props"):
        assert created[name] == BODY[name]
    assert {"contact_id", "group_id"} <= set(created)
    [line] = received.read_text(encoding="utf-8").splitlines()
    logged = json.loads(line)
    assert {k: logged[k] for k in BODY} == BODY
    assert logged["entry_id"] == "entry_ada"
    assert logged["received_at"].endswith("Z")
    assert state.received == [logged]
    assert state.by_status == {200: 1}
    assert state.requests == 1 and state.in_flight == 0


def test_received_log_is_appended_across_runs(users_csv: Path, tmp_path: Path) -> None:
    received = tmp_path / "received.jsonl"
    config = SandboxConfig(users_path=users_csv, received_path=received)
    exchange(config, BODY, BODY)
    exchange(config, BODY)
    lines = received.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert len({json.loads(line)["event_id"] for line in lines}) == 3


def test_keep_received_off_still_writes_the_log(tmp_path: Path) -> None:
    received = tmp_path / "received.jsonl"
    config = SandboxConfig(received_path=received, keep_received=False)
    [outcome], state = exchange(config, BODY)
    assert reply(outcome).status == 200
    assert state.received == []
    assert len(received.read_text(encoding="utf-8").splitlines()) == 1


def test_without_users_file_everyone_exists_with_a_stable_entry_id() -> None:
    other = event(identifiers=identifier(json.dumps("bob@example.com")))
    outcomes, _ = exchange(SandboxConfig(), BODY, BODY, other)
    first, again, bob = (reply(outcome).json() for outcome in outcomes)
    assert first["entry_id"] == again["entry_id"] == derived_entry_id("flow_9f2c", "email", EMAIL)
    assert bob["entry_id"] != first["entry_id"]
    assert first["id"] != again["id"]


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-03-01T12:34:56Z",
        "2024-03-01T12:34:56.123456+05:30",
        "2024-03-01T12:34:56",
        "2024-03-01 12:34:56",
        "2024-03-01t12:34z",
    ],
)
def test_iso_timestamps_are_accepted(timestamp: str) -> None:
    [outcome], _ = exchange(SandboxConfig(), event(timestamp=timestamp))
    assert reply(outcome).status == 200


# --- 401 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        pytest.param(None, "missing", id="missing"),
        pytest.param("", "missing", id="empty"),
        pytest.param("sk_live_secret", "rk_", id="not-rk"),
        pytest.param("rk_someone_else", "unknown", id="unknown-rk"),
    ],
)
def test_bad_keys_are_401(key: str | None, fragment: str) -> None:
    config = SandboxConfig(fail_rate=1.0, drop_rate=1.0)  # the key is checked before faults
    [outcome], state = exchange(config, BODY, key=key)
    answer = reply(outcome)
    assert answer.status == 401
    assert answer.json()["error"] == "UNAUTHORIZED"
    assert fragment in answer.json()["message"]
    assert "secret" not in answer.text and "someone" not in answer.text
    assert state.received == []


def test_any_of_several_keys_is_accepted() -> None:
    config = SandboxConfig(api_keys=frozenset({"rk_one", "rk_two"}))
    outcomes, _ = exchange(config, BODY, key="rk_two")
    assert reply(outcomes[0]).status == 200


# --- 400 --------------------------------------------------------------------------------

BAD_BODIES = [
    pytest.param(b"{not json", "not valid JSON", id="not-json"),
    pytest.param(b"", "not valid JSON", id="empty"),
    pytest.param(b"\xff\xfe\x00", "not valid JSON", id="not-utf8"),
    pytest.param(b"[]", "JSON object", id="array"),
    pytest.param(b'"text"', "JSON object", id="string"),
    *(pytest.param(without(name), name, id=f"missing-{name}") for name in BODY),
    pytest.param(event(extra=1), "unknown field(s): extra", id="unknown-field"),
    pytest.param(event(embeddable_id=""), "embeddable_id", id="empty-embeddable-id"),
    pytest.param(event(embeddable_id=12), "embeddable_id", id="number-embeddable-id"),
    pytest.param(event(timestamp=1709296496), "timestamp must be a string", id="epoch"),
    pytest.param(event(timestamp="yesterday"), "ISO 8601", id="not-a-date"),
    pytest.param(event(timestamp="2024-03-01"), "no time part", id="date-only"),
    pytest.param(event(timestamp="2024-03-01x12:00"), "no time part", id="odd-separator"),
    pytest.param(event(timestamp="2024-02-30T12:00:00Z"), "ISO 8601", id="no-such-day"),
    pytest.param(event(timestamp=" 2024-03-01T12:00Z"), "ISO 8601", id="padded"),
    pytest.param(event(custom_event_name="Plan Upgraded"), "snake_case", id="spaces"),
    pytest.param(event(custom_event_name="planUpgraded"), "snake_case", id="camel"),
    pytest.param(event(custom_event_name="plan__upgraded"), "snake_case", id="double-underscore"),
    pytest.param(event(custom_event_name="_plan"), "snake_case", id="leading-underscore"),
    pytest.param(event(custom_event_name="plan_upgraded\n"), "snake_case", id="newline"),
    pytest.param(event(custom_event_name=["plan"]), "must be a string", id="name-list"),
    pytest.param(event(custom_event_props={}), "custom_event_props", id="props-object"),
    pytest.param(event(custom_event_props="[]"), "JSON object", id="props-array"),
    pytest.param(event(custom_event_props="{nope"), "not valid JSON", id="props-not-json"),
    pytest.param(event(custom_event_props='{"a": NaN}'), "not valid JSON", id="props-nan"),
    pytest.param(event(identifiers=[]), "exactly one", id="no-identifier"),
    pytest.param(event(identifiers=BODY["identifiers"] * 2), "exactly one", id="two"),
    pytest.param(event(identifiers=BODY["identifiers"][0]), "exactly one", id="not-array"),
    pytest.param(event(identifiers=["email"]), "exactly key and value", id="not-object"),
    pytest.param(
        event(identifiers=[{"key": "email", "value": '"a"', "type": "s"}]),
        "exactly key and value",
        id="extra-key",
    ),
    pytest.param(event(identifiers=[{"key": "email"}]), "exactly key and value", id="no-value"),
    pytest.param(event(identifiers=identifier('"a"', key="")), "key", id="empty-key"),
    pytest.param(event(identifiers=[{"key": 1, "value": '"a"'}]), "key", id="number-key"),
    pytest.param(event(identifiers=[{"key": "id", "value": 123}]), "string", id="number-value"),
    pytest.param(event(identifiers=identifier(EMAIL)), "not valid JSON", id="value-not-json"),
    pytest.param(event(identifiers=identifier("")), "not valid JSON", id="value-empty"),
]


@pytest.mark.parametrize(("body", "fragment"), BAD_BODIES)
def test_body_defects_are_400(body: object, fragment: str) -> None:
    [outcome], state = exchange(SandboxConfig(), body)
    answer = reply(outcome)
    assert answer.status == 400
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["error"] == "VALIDATION_ERROR"
    assert fragment in answer.json()["message"]
    assert state.received == []


# --- 404 and the user registry ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(event(identifiers=identifier(json.dumps("bob@example.com"))), id="no-user"),
        pytest.param(event(embeddable_id="flow_other"), id="other-embeddable"),
        pytest.param(event(identifiers=identifier(json.dumps(EMAIL), "user_email")), id="key"),
        pytest.param(event(identifiers=identifier(json.dumps(EMAIL.upper()))), id="case"),
    ],
)
def test_unknown_user_entry_is_404(users_csv: Path, body: dict[str, Any]) -> None:
    [outcome], state = exchange(SandboxConfig(users_path=users_csv), body)
    answer = reply(outcome)
    assert answer.status == 404
    assert answer.json()["error"] == ENTRY_NOT_FOUND
    assert state.received == []


def test_double_escaped_value_is_404(users_csv: Path) -> None:
    twice = json.dumps(json.dumps(EMAIL))
    assert twice == '"\\"ada@example.com\\""'
    [outcome], _ = exchange(
        SandboxConfig(users_path=users_csv), event(identifiers=identifier(twice))
    )
    answer = reply(outcome)
    assert answer.status == 404
    assert answer.json()["error"] == ENTRY_NOT_FOUND
    assert "double-escaped" in answer.json()["message"]


@pytest.mark.parametrize(
    ("value", "status"),
    [
        pytest.param("123", 200, id="number"),
        pytest.param('"123"', 200, id="string-of-digits"),
        pytest.param("123.0", 404, id="float-text-differs"),
        pytest.param("124", 404, id="other-number"),
    ],
)
def test_number_identifiers(users_csv: Path, value: str, status: int) -> None:
    body = event(identifiers=identifier(value, key="customer_id"))
    [outcome], _ = exchange(SandboxConfig(users_path=users_csv), body)
    answer = reply(outcome)
    assert answer.status == status
    if status == 200:
        assert answer.json()["entry_id"] == derived_entry_id("flow_9f2c", "customer_id", "123")


def test_users_from_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "users.jsonl"
    rows = [
        {"embeddable_id": "flow_9f2c", "key": "email", "value": EMAIL, "entry_id": "entry_ada"},
        {"embeddable_id": "flow_9f2c", "key": "customer_id", "value": 123},
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")
    by_number = event(identifiers=identifier("123", key="customer_id"))
    outcomes, _ = exchange(SandboxConfig(users_path=path), BODY, by_number)
    assert [reply(outcome).status for outcome in outcomes] == [200, 200]
    assert reply(outcomes[0]).json()["entry_id"] == "entry_ada"


def test_users_csv_with_bom_and_without_entry_ids(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text(f"\ufeffembeddable_id,key,value\nflow_9f2c,email,{EMAIL}\n", encoding="utf-8")
    assert load_users(path) == {
        ("flow_9f2c", "email", EMAIL): derived_entry_id("flow_9f2c", "email", EMAIL)
    }


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        pytest.param("users.csv", "embeddable_id,value\nf,a\n", "missing column(s) key", id="col"),
        pytest.param("users.csv", "embeddable_id,key,value\nf,,a\n", "line 2: key", id="empty"),
        pytest.param("users.jsonl", '{"embeddable_id": "f"\n', "line 1: not valid", id="json"),
        pytest.param("users.jsonl", "[1]\n", "line 1: not a JSON object", id="array"),
        pytest.param("users.jsonl", '{"embeddable_id": "f", "key": "k"}\n', "value", id="no-val"),
        pytest.param("users.txt", "", "expected .csv", id="extension"),
    ],
)
def test_bad_users_files_are_refused(tmp_path: Path, name: str, text: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="users file") as caught:
        RunningSandbox(SandboxConfig(users_path=path))
    assert fragment in str(caught.value)


def test_missing_users_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_users(tmp_path / "absent.csv")


# --- faults -----------------------------------------------------------------------------


def test_fail_fault_serves_500_and_503_in_several_shapes() -> None:
    outcomes, state = exchange(SandboxConfig(fail_rate=1.0), *[BODY] * 4)
    answers = [reply(outcome) for outcome in outcomes]
    assert [answer.status for answer in answers] == [500, 503, 500, 503]
    assert answers[0].json()["error"]
    assert answers[1].text.startswith("<!DOCTYPE html>")
    assert answers[1].headers["Content-Type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        answers[3].json()  # truncated on purpose
    assert state.received == []
    assert state.by_status == {500: 2, 503: 2}


def test_fault_dice_are_reproducible_with_a_seed() -> None:
    config = SandboxConfig(fail_rate=0.5, seed=7)
    runs = [exchange(config, *[BODY] * 20)[0] for _ in range(2)]
    statuses = [[reply(outcome).status for outcome in run] for run in runs]
    assert statuses[0] == statuses[1]
    assert {200, 500, 503} == set(statuses[0])


@pytest.mark.parametrize(("retry_after", "header"), [(1.0, "1"), (0.25, "0.25"), (30, "30")])
def test_throttle_fault_is_429_with_retry_after(retry_after: float, header: str) -> None:
    config = SandboxConfig(throttle_rate=1.0, retry_after=retry_after)
    [outcome], state = exchange(config, BODY)
    answer = reply(outcome)
    assert answer.status == 429
    assert answer.headers["Retry-After"] == header
    assert state.received == []


def test_drop_fault_closes_the_connection_unanswered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    [outcome], state = exchange(SandboxConfig(drop_rate=1.0), BODY)
    assert isinstance(outcome, aiohttp.ClientConnectionError)
    assert state.dropped == 1 and state.received == [] and not state.by_status
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


def test_drop_after_fault_records_the_event_but_never_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    received = tmp_path / "received.jsonl"
    config = SandboxConfig(drop_after_rate=1.0, received_path=received)
    [outcome], state = exchange(config, BODY)
    assert isinstance(outcome, aiohttp.ClientConnectionError)
    assert state.dropped_after == 1
    assert [{k: line[k] for k in BODY} for line in state.received] == [BODY]
    assert len(received.read_text(encoding="utf-8").splitlines()) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


def test_delay_slows_every_answer() -> None:
    async def scenario(sandbox: RunningSandbox, session: aiohttp.ClientSession) -> list[float]:
        took = []
        for body in (BODY, b"nonsense"):
            started = time.monotonic()
            await post(session, sandbox.url, body)
            took.append(time.monotonic() - started)
        return took

    assert min(with_sandbox(SandboxConfig(delay=0.3), scenario)) >= 0.3


def test_rate_limit_allows_a_burst_then_429s() -> None:
    config = SandboxConfig(rate_limit=2.0, retry_after=1.0)
    outcomes, state = exchange(config, *[BODY] * 6, concurrent=True)
    answers = [reply(outcome) for outcome in outcomes]
    statuses = sorted(answer.status for answer in answers)
    # Two tokens of burst; a third only if the run took longer than half a second.
    assert statuses.count(200) in (2, 3)
    assert statuses.count(429) == 6 - statuses.count(200)
    assert all(a.headers["Retry-After"] == "1" for a in answers if a.status == 429)
    assert len(state.request_times) == 6
    assert state.request_times.maxlen == MAX_REQUEST_TIMES


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(2.0)
    assert [bucket.take(10.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(10.4) is False  # 0.8 token
    assert bucket.take(10.5) is True  # 1.0 token
    assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]  # burst stays 2
    slow = TokenBucket(0.5)
    assert [slow.take(0.0), slow.take(1.0), slow.take(2.0)] == [True, False, True]


def test_a_rate_limit_schedule_halves_the_limit_and_brings_it_back() -> None:
    # Times count from the first request: a limit that changes mid-run, for any run.
    limit = RateLimit(10.0, ((1.0, 5.0), (2.0, 10.0)))

    def allowed(at: float, tries: int) -> int:
        return sum(limit.allows(500.0 + at) for _ in range(tries))

    assert allowed(0.0, 20) == 10  # the burst of 10/s
    assert allowed(1.0, 20) == 5  # halved: the burst shrinks with it
    assert allowed(1.5, 20) == 2  # refilled at 5/s
    assert allowed(2.5, 20) == 8  # half a token left, 2.5 more by 2.0 at 5/s, 5 by 2.5 at 10/s
    assert allowed(4.0, 20) == 10  # the whole burst of 10/s again


def test_a_rate_limit_schedule_reaches_the_client_as_429s() -> None:
    config = SandboxConfig(rate_limit=1000.0, rate_limit_schedule=((0.3, 1.0),), retry_after=0.5)

    async def scenario(sandbox: RunningSandbox, session: aiohttp.ClientSession) -> list[int]:
        first = [reply(await post(session, sandbox.url, BODY)).status for _ in range(3)]
        await asyncio.sleep(0.35)
        later = [reply(await post(session, sandbox.url, BODY)) for _ in range(3)]
        assert all(r.headers["Retry-After"] == "0.5" for r in later if r.status == 429)
        assert "rate limit of 1 requests/s" in later[-1].text
        return first + [r.status for r in later]

    assert with_sandbox(config, scenario) == [200, 200, 200, 200, 429, 429]


@pytest.mark.parametrize(
    ("text", "steps"),
    [("30:100", ((30.0, 100.0),)), (" 30:100, 60:200 ", ((30.0, 100.0), (60.0, 200.0)))],
)
def test_rate_limit_schedules_are_read(text: str, steps: tuple[tuple[float, float], ...]) -> None:
    assert parse_schedule(text) == steps


@pytest.mark.parametrize("text", ["30", "30:", "x:100", "30:100;60:50"])
def test_malformed_rate_limit_schedules_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="is not SECONDS:LIMIT"):
        parse_schedule(text)


def test_max_in_flight_shows_the_clients_concurrency_cap() -> None:
    async def scenario(sandbox: RunningSandbox, session: aiohttp.ClientSession) -> SandboxState:
        await asyncio.gather(*(post(session, sandbox.url, BODY) for _ in range(7)))
        return sandbox.state

    state = with_sandbox(SandboxConfig(delay=0.2), scenario, limit=3)
    assert state.max_in_flight == 3
    assert state.in_flight == 0
    assert state.requests == 7 and state.by_status == {200: 7}
    assert len(state.received) == 7


# --- configuration and binding ----------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"fail_rate": 1.5},
        {"drop_after_rate": -0.1},
        {"delay": -1.0},
        {"rate_limit": 0.0},
        {"rate_limit_schedule": ((30.0, 100.0),)},  # no rate limit to start from
        {"rate_limit": 10.0, "rate_limit_schedule": ((30.0, 100.0), (10.0, 5.0))},
        {"rate_limit": 10.0, "rate_limit_schedule": ((30.0, 0.0),)},
        {"api_keys": frozenset({"sk_live"})},
        {"api_keys": frozenset()},
    ],
)
def test_impossible_settings_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        SandboxConfig(**changes)


@pytest.mark.parametrize(
    ("host", "bound"),
    [("127.0.0.1", "127.0.0.1"), ("127.0.0.2", "127.0.0.2"), ("localhost", "127.0.0.1")],
)
def test_loopback_hosts_are_allowed(host: str, bound: str) -> None:
    assert loopback_host(host) == bound
    assert loopback_host("::1") == "::1"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "example.com", ""])
def test_other_hosts_are_refused(host: str) -> None:
    with pytest.raises(UsageError, match="loopback"):
        serve(SandboxConfig(), host=host, port=0)

    async def start() -> None:
        await RunningSandbox().start(host=host)

    with pytest.raises(UsageError, match="loopback"):
        asyncio.run(start())


def test_localhost_binds_one_ipv4_socket() -> None:
    async def main() -> str:
        sandbox = RunningSandbox()
        try:
            return await sandbox.start(host="localhost")
        finally:
            await sandbox.close()

    assert asyncio.run(main()).startswith("http://127.0.0.1:")


def test_unwritable_received_log_is_a_usage_error(tmp_path: Path) -> None:
    async def main() -> None:
        async with RunningSandbox(SandboxConfig(received_path=tmp_path)):
            pass

    with pytest.raises(UsageError, match="received log"):
        asyncio.run(main())


def test_busy_port_is_a_usage_error() -> None:
    async def main() -> None:
        async with RunningSandbox() as first:
            port = int(first.url.rsplit(":", 1)[1])
            await RunningSandbox().start(port=port)

    with pytest.raises(UsageError, match="cannot listen"):
        asyncio.run(main())


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        _ = RunningSandbox().url


def test_serve_runs_until_sigterm(tmp_path: Path) -> None:
    received = tmp_path / "received.jsonl"
    statuses: list[int] = []

    def client(url: str) -> None:
        request = urllib.request.Request(
            f"{url}/projects/pr_test/events",
            data=json.dumps(BODY).encode(),
            headers={"X-Api-Key": KEY, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            statuses.append(answer.status)
        os.kill(os.getpid(), signal.SIGTERM)

    def on_ready(url: str) -> None:
        threading.Thread(target=client, args=(url,), daemon=True).start()

    serve(SandboxConfig(received_path=received), port=0, on_ready=on_ready)
    assert statuses == [200]
    assert len(received.read_text(encoding="utf-8").splitlines()) == 1


# --- properties of the rules ------------------------------------------------------------


@given(st.text(min_size=1))
def test_a_value_matches_when_stringified_once_and_never_twice(value: str) -> None:
    registry = Registry({("flow_9f2c", "email", value): "entry_x"})
    assert registry.lookup("flow_9f2c", "email", json.dumps(value)) == "entry_x"
    assert registry.lookup("flow_9f2c", "email", json.dumps(json.dumps(value))) is None


@given(st.datetimes(timezones=st.timezones() | st.none()))
def test_any_isoformat_date_time_is_a_valid_timestamp(moment: Any) -> None:
    body = event(timestamp=moment.isoformat())
    assert parse_event(json.dumps(body).encode()) == body


@given(st.from_regex(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", fullmatch=True) | st.text())
def test_event_names_are_valid_exactly_when_snake_case(name: str) -> None:
    words = name.split("_")
    snake = all(w and w.isascii() and w.isalnum() and w == w.lower() for w in words)
    snake = snake and name[:1].isalpha()
    body = json.dumps(event(custom_event_name=name)).encode()
    if snake:
        parse_event(body)
    else:
        with pytest.raises(InvalidEvent):
            parse_event(body)
