"""A local Embeddables-compatible events API, strict where the real one is (see API.md).

One endpoint, ``POST /projects/{project_id}/events``, checked in the order the real service
sits behind its layers: the key, then injected faults (dropped connections, 429s, 5xx
pages), then the rate limit, then the body, then the user entry lookup. Accepted events are
kept in :class:`SandboxState` and, optionally, appended to a JSONL log, so tests can check
that every event arrived exactly once.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import ipaddress
import json
import random
import re
import signal
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from aiohttp import web

from backfill.codes import ENTRY_NOT_FOUND, SANDBOX_API_KEY, SANDBOX_HOST, SANDBOX_PORT
from backfill.errors import InputError, UsageError
from backfill.plans import LOOPBACK_NAMES, is_loopback

EVENTS_ROUTE = "/projects/{project_id}/events"
EVENT_TYPE = "custom_event:triggered"
UNAUTHORIZED = "UNAUTHORIZED"
VALIDATION_ERROR = "VALIDATION_ERROR"
RATE_LIMITED = "RATE_LIMITED"
FIELDS = ("embeddable_id", "timestamp", "custom_event_name", "custom_event_props", "identifiers")
USER_COLUMNS = ("embeddable_id", "key", "value")
# Request timestamps kept for rate checks: enough for any test, bounded for long rehearsals.
MAX_REQUEST_TIMES = 100_000

_SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
# fromisoformat takes any character between date and time; ISO 8601 wants T (RFC 3339: space).
_TIME_PART = re.compile(r"\d[Tt ]\d")

_HEROKU_PAGE = """<!DOCTYPE html>
<html>
  <head>
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <meta charset="utf-8">
    <title>Application Error</title>
  </head>
  <body>
    <iframe src="//www.herokucdn.com/error-pages/application-error.html"></iframe>
  </body>
</html>
"""
# (status, content type, body) answers of the fail fault, served in turn: every shape a
# client must survive, including HTML and a truncated JSON body.
FAILURE_ANSWERS: tuple[tuple[int, str, str], ...] = (
    (500, "application/json", '{"error": "INTERNAL_ERROR", "message": "Internal server error"}'),
    (503, "text/html", _HEROKU_PAGE),
    (500, "text/plain", "Internal Server Error"),
    (503, "application/json", '{"error": "SERVICE_UNAVAIL'),
)


@dataclass(frozen=True)
class SandboxConfig:
    """What the sandbox accepts, who exists, where it logs and which faults it injects."""

    api_keys: frozenset[str] = frozenset({SANDBOX_API_KEY})
    users_path: Path | None = None  # None: every identifier belongs to a user entry
    received_path: Path | None = None
    fail_rate: float = 0.0
    throttle_rate: float = 0.0
    drop_rate: float = 0.0
    drop_after_rate: float = 0.0  # processed and recorded, then closed unanswered
    delay: float = 0.0
    rate_limit: float | None = None
    # (seconds after the first request, limit from then on): a limit that changes mid-run
    rate_limit_schedule: tuple[tuple[float, float], ...] = ()
    retry_after: float = 1.0
    seed: int | None = None
    keep_received: bool = True  # False keeps memory flat on long rehearsals

    def __post_init__(self) -> None:
        """Refuse settings the sandbox cannot honour, naming the setting."""
        for name in ("fail_rate", "throttle_rate", "drop_rate", "drop_after_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise UsageError(f"{name} must be between 0 and 1, got {rate}")
        if self.delay < 0 or self.retry_after < 0:
            raise UsageError("delay and retry_after must not be negative")
        if self.rate_limit is not None and not self.rate_limit > 0:
            raise UsageError(f"rate_limit must be above 0, got {self.rate_limit}")
        if self.rate_limit_schedule:
            if self.rate_limit is None:
                raise UsageError("a rate limit schedule needs a rate limit to start from")
            after = [step[0] for step in self.rate_limit_schedule]
            if after != sorted(after) or not all(
                seconds > 0 and limit > 0 for seconds, limit in self.rate_limit_schedule
            ):
                raise UsageError(
                    "rate limit schedule steps must be positive seconds in order, each with a"
                    " limit above 0"
                )
        if not self.api_keys or not all(key.startswith("rk_") for key in self.api_keys):
            raise UsageError("the sandbox needs at least one API key, each starting with rk_")


@dataclass
class SandboxState:
    """Counters and received events, read by tests; mutated only on the server's loop."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    dropped: int = 0  # closed unanswered before processing
    dropped_after: int = 0  # processed and recorded, then closed unanswered
    by_status: Counter[int] = field(default_factory=Counter)
    request_times: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_REQUEST_TIMES))
    received: list[dict[str, Any]] = field(default_factory=list)

    def begin(self) -> None:
        """Count a request as it arrives."""
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.request_times.append(time.monotonic())

    def end(self) -> None:
        """Count a request as answered (or dropped)."""
        self.in_flight -= 1


class InvalidEvent(ValueError):
    """A request body the API would refuse with 400; the message says what is wrong."""


def parse_schedule(text: str) -> tuple[tuple[float, float], ...]:
    """``"30:100,60:200"`` (after 30 s the limit is 100/s, after 60 s 200/s) as steps."""
    steps = []
    for part in text.split(","):
        seconds, _, limit = part.strip().partition(":")
        try:
            steps.append((float(seconds), float(limit)))
        except ValueError:
            raise UsageError(
                f"{part.strip()!r} is not SECONDS:LIMIT (e.g. 30:100, the limit after 30 s)"
            ) from None
    return tuple(steps)


class TokenBucket:
    """Requests per second with a burst of max(1, rate) tokens."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp: float | None = None

    def set_rate(self, rate: float, now: float) -> None:
        """A new limit from ``now`` on; its burst allowance shrinks (or grows) with it."""
        self.refill(now)
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = min(self.tokens, self.capacity)

    def take(self, now: float) -> bool:
        """Spend a token at monotonic time ``now``; False when the bucket is empty."""
        self.refill(now)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last call."""
        if self.stamp is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now


class RateLimit:
    """A token bucket whose rate follows a schedule, timed from the first request."""

    def __init__(self, rate: float, schedule: tuple[tuple[float, float], ...] = ()) -> None:
        self.bucket = TokenBucket(rate)
        self.schedule = list(schedule)
        self.first_request: float | None = None

    def allows(self, now: float) -> bool:
        """Whether the limit in force at monotonic time ``now`` lets a request through."""
        if self.first_request is None:
            self.first_request = now
        while self.schedule and now - self.first_request >= self.schedule[0][0]:
            after, rate = self.schedule.pop(0)
            self.bucket.set_rate(rate, self.first_request + after)
        return self.bucket.take(now)


# --- the request body -------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    """Refuse NaN and Infinity, which Python's json reads but JSON (and the API) does not."""
    raise ValueError(f"{name} is not valid JSON")


def _load_json(text: str | bytes, what: str) -> Any:
    """Parse strict JSON text, or raise InvalidEvent naming ``what``."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent(f"{what} is not valid JSON text") from exc


def parse_event(raw: bytes) -> dict[str, Any]:
    """Parse and check a request body as the API would; raise InvalidEvent on a defect."""
    body = _load_json(raw, "the request body")
    if not isinstance(body, dict):
        raise InvalidEvent("the request body must be a JSON object")
    return check_event(body)


def check_event(body: dict[str, Any]) -> dict[str, Any]:
    """Check an event object's fields, first defect first; return it unchanged when valid."""
    missing = [name for name in FIELDS if name not in body]
    if missing:
        raise InvalidEvent(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidEvent(f"unknown field(s): {', '.join(unknown)}")
    _check_embeddable_id(body["embeddable_id"])
    _check_timestamp(body["timestamp"])
    _check_event_name(body["custom_event_name"])
    _check_props(body["custom_event_props"])
    _check_identifiers(body["identifiers"])
    return body


def _check_embeddable_id(value: object) -> None:
    """embeddable_id: a non-empty string."""
    if not isinstance(value, str) or not value:
        raise InvalidEvent("embeddable_id must be a non-empty string")


def _check_timestamp(value: object) -> None:
    """timestamp: an ISO 8601 date-time string (a date alone is not enough)."""
    if not isinstance(value, str):
        raise InvalidEvent("timestamp must be a string")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidEvent(f"timestamp is not an ISO 8601 date-time: {value[:64]!r}") from exc
    if not _TIME_PART.search(text):
        raise InvalidEvent(f"timestamp has no time part: {value[:64]!r}")


def _check_event_name(value: object) -> None:
    """custom_event_name: a snake_case string."""
    if not isinstance(value, str):
        raise InvalidEvent("custom_event_name must be a string")
    if not _SNAKE_CASE.fullmatch(value):
        raise InvalidEvent(f"custom_event_name must be snake_case: {value[:64]!r}")


def _check_props(value: object) -> None:
    """custom_event_props: a string holding the JSON text of an object."""
    if not isinstance(value, str):
        raise InvalidEvent("custom_event_props must be a string holding a JSON object")
    if not isinstance(_load_json(value, "custom_event_props"), dict):
        raise InvalidEvent("custom_event_props must hold a JSON object")


def _check_identifiers(value: object) -> None:
    """identifiers: exactly one {key, value} object, value being JSON text."""
    if not isinstance(value, list) or len(value) != 1:
        raise InvalidEvent("identifiers must be an array of exactly one object")
    identifier = value[0]
    if not isinstance(identifier, dict) or set(identifier) != {"key", "value"}:
        raise InvalidEvent("identifiers[0] must be an object with exactly key and value")
    if not isinstance(identifier["key"], str) or not identifier["key"]:
        raise InvalidEvent("identifiers[0].key must be a non-empty string")
    if not isinstance(identifier["value"], str):
        raise InvalidEvent("identifiers[0].value must be a string holding JSON text")
    _load_json(identifier["value"], "identifiers[0].value")


def identifier_text(value: str) -> str:
    """The text a user entry is matched on: a decoded string as is, anything else as JSON."""
    decoded = json.loads(value)
    return decoded if isinstance(decoded, str) else json.dumps(decoded)


# --- user entries -----------------------------------------------------------------------


def derived_entry_id(embeddable_id: str, key: str, value: str) -> str:
    """A stable entry id for a user entry the users file does not name."""
    text = json.dumps([embeddable_id, key, value])
    return "entry_" + hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]


class Registry:
    """User entries by (embeddable_id, key, value text); without a users file, everyone."""

    def __init__(self, entries: dict[tuple[str, str, str], str] | None = None) -> None:
        self.entries = entries

    @classmethod
    def load(cls, path: Path | None) -> Registry:
        """Read a users file (CSV or JSONL by extension); None means everyone exists."""
        return cls(None if path is None else load_users(path))

    def lookup(self, embeddable_id: str, key: str, value: str) -> str | None:
        """The entry id for an identifier whose body value is ``value``, or None."""
        text = identifier_text(value)
        if self.entries is None:
            return derived_entry_id(embeddable_id, key, text)
        return self.entries.get((embeddable_id, key, text))


def load_users(path: Path) -> dict[tuple[str, str, str], str]:
    """Read user entries from CSV or JSONL with embeddable_id, key, value [, entry_id]."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise InputError(f"users file {path}: expected .csv, .jsonl or .ndjson")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = _csv_rows(path, handle) if suffix == ".csv" else _jsonl_rows(path, handle)
            return dict(_user_entry(path, line, row) for line, row in rows)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"users file {path}: cannot read it: {exc}") from exc


def _csv_rows(path: Path, handle: TextIO) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a users CSV with their line numbers, after checking the header."""
    reader = csv.DictReader(handle)
    missing = [name for name in USER_COLUMNS if name not in (reader.fieldnames or ())]
    if missing:
        raise InputError(f"users file {path}: missing column(s) {', '.join(missing)}")
    for row in reader:
        yield reader.line_num, row


def _jsonl_rows(path: Path, handle: TextIO) -> Iterator[tuple[int, dict[str, Any]]]:
    """Objects of a users JSONL with their line numbers, skipping blank lines."""
    for line, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError as exc:
            raise InputError(f"users file {path}, line {line}: not valid JSON") from exc
        if not isinstance(row, dict):
            raise InputError(f"users file {path}, line {line}: not a JSON object")
        yield line, row


def _user_cell(path: Path, line: int, row: dict[str, Any], name: str) -> str:
    """One required cell of a users file; a non-string JSONL value counts as its JSON text."""
    cell = row.get(name)
    if cell is not None and not isinstance(cell, str) and name == "value":
        cell = json.dumps(cell)
    if not isinstance(cell, str) or not cell:
        raise InputError(f"users file {path}, line {line}: {name} must be a non-empty text")
    return cell


def _user_entry(path: Path, line: int, row: dict[str, Any]) -> tuple[tuple[str, str, str], str]:
    """One registry item: the identifier it answers to and its entry id."""
    embeddable_id, key, value = (_user_cell(path, line, row, name) for name in USER_COLUMNS)
    entry_id = row.get("entry_id")
    if not isinstance(entry_id, str) or not entry_id:
        entry_id = derived_entry_id(embeddable_id, key, value)
    return (embeddable_id, key, value), entry_id


# --- the server -------------------------------------------------------------------------


class _Server:
    """Everything a request needs: config, registry, state, fault dice, bucket and log."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.registry = Registry.load(config.users_path)
        self.state = SandboxState()
        self.rng = random.Random(config.seed)
        self.limit = (
            None
            if config.rate_limit is None
            else RateLimit(config.rate_limit, config.rate_limit_schedule)
        )
        self.failures = 0
        self.log: TextIO | None = None

    def roll(self, rate: float) -> bool:
        """True for a share ``rate`` of calls; rates of 0 leave the dice alone."""
        return rate > 0 and self.rng.random() < rate

    def record(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        """Keep an accepted event and append it to the log, flushed so tests can read it."""
        line = {**body, "entry_id": event["entry_id"], "event_id": event["id"]}
        line["received_at"] = event["created_at"]
        if self.config.keep_received:
            self.state.received.append(line)
        if self.log is not None:
            self.log.write(json.dumps(line) + "\n")
            self.log.flush()


_SERVER: web.AppKey[_Server] = web.AppKey("backfill_sandbox", _Server)


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    """A JSON error answer in the API's shape."""
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def _too_many(server: _Server, message: str) -> web.Response:
    """A 429 with Retry-After (whole seconds when whole, as HTTP wants)."""
    seconds = server.config.retry_after
    text = str(int(seconds)) if seconds == int(seconds) else str(seconds)
    return _error(429, RATE_LIMITED, message, **{"Retry-After": text})


def _failure(server: _Server) -> web.Response:
    """The next 5xx answer of the fail fault, in turn."""
    status, content_type, body = FAILURE_ANSWERS[server.failures % len(FAILURE_ANSWERS)]
    server.failures += 1
    return web.Response(status=status, text=body, content_type=content_type)


def _key_problem(key: str | None, keys: frozenset[str]) -> str | None:
    """Why an X-Api-Key header is refused, or None; never echoes the key."""
    if not key:
        return "missing X-Api-Key header"
    if not key.startswith("rk_"):
        return "API keys are restricted keys starting with rk_"
    if key not in keys:
        return "unknown API key"
    return None


def _now_iso() -> str:
    """The current UTC time as the API writes it, with milliseconds and Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_object(body: dict[str, Any], entry_id: str, project_id: str) -> dict[str, Any]:
    """The created event, as a 200 answer carries it."""
    digest = hashlib.sha1(entry_id.encode(), usedforsecurity=False).hexdigest()[:16]
    group = hashlib.sha1(body["embeddable_id"].encode(), usedforsecurity=False).hexdigest()
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "entry_id": entry_id,
        "contact_id": f"contact_{digest}",
        "project_id": project_id,
        "group_id": f"group_{group[:12]}",
        "embeddable_id": body["embeddable_id"],
        "timestamp": body["timestamp"],
        "event_type": EVENT_TYPE,
        "custom_event_name": body["custom_event_name"],
        "custom_event_props": body["custom_event_props"],
        "created_at": _now_iso(),
    }


def _not_found(body: dict[str, Any]) -> web.Response:
    """404 ENTRY_NOT_FOUND, with a hint when the value looks double-escaped."""
    identifier = body["identifiers"][0]
    message = (
        f"no user entry for embeddable_id {body['embeddable_id']!r} "
        f"and identifier key {identifier['key']!r}"
    )
    if identifier_text(identifier["value"]).startswith('"'):
        message += " (the value decodes to a quoted string: is it double-escaped?)"
    return _error(404, ENTRY_NOT_FOUND, message)


def _accept(request: web.Request, raw: bytes, server: _Server) -> web.Response:
    """Validate, look up the user entry and record the event: 400, 404 or 200."""
    try:
        body = parse_event(raw)
    except InvalidEvent as exc:
        return _error(400, VALIDATION_ERROR, str(exc))
    identifier = body["identifiers"][0]
    entry_id = server.registry.lookup(body["embeddable_id"], identifier["key"], identifier["value"])
    if entry_id is None:
        return _not_found(body)
    event = _event_object(body, entry_id, request.match_info["project_id"])
    server.record(body, event)
    return web.json_response(event)


def _decide(request: web.Request, raw: bytes, server: _Server) -> web.Response | None:
    """The answer to one request, or None to close the connection without one."""
    config, state = server.config, server.state
    problem = _key_problem(request.headers.get("X-Api-Key"), config.api_keys)
    if problem is not None:
        return _error(401, UNAUTHORIZED, problem)
    if server.roll(config.drop_rate):
        state.dropped += 1
        return None
    if server.roll(config.throttle_rate):
        return _too_many(server, "too many requests (injected throttle)")
    if server.roll(config.fail_rate):
        return _failure(server)
    if server.limit is not None and not server.limit.allows(time.monotonic()):
        rate = server.limit.bucket.rate
        return _too_many(server, f"rate limit of {rate:g} requests/s exceeded")
    response = _accept(request, raw, server)
    if server.roll(config.drop_after_rate):
        state.dropped_after += 1
        return None
    return response


def _hang_up(request: web.Request) -> web.Response:
    """Close the connection unanswered; aiohttp then fails to write this reply quietly."""
    if request.transport is not None:
        request.transport.close()
    # Never written: the closed transport makes aiohttp treat it as a client disconnect.
    return web.Response(status=444)


async def _handle_events(request: web.Request) -> web.StreamResponse:
    """POST /projects/{project_id}/events: count, decide, wait the delay, answer."""
    server = request.app[_SERVER]
    server.state.begin()
    try:
        # Read the whole body first, so a dropped request is one the server fully received.
        raw = await request.read()
        response = _decide(request, raw, server)
        if server.config.delay > 0:
            await asyncio.sleep(server.config.delay)
        if response is None:
            return _hang_up(request)
        server.state.by_status[response.status] += 1
        return response
    except web.HTTPException as exc:
        server.state.by_status[exc.status] += 1
        raise
    finally:
        server.state.end()


async def _received_log(app: web.Application) -> AsyncIterator[None]:
    """Keep the received log open while the app runs."""
    server = app[_SERVER]
    path = server.config.received_path
    if path is None:
        yield
        return
    try:
        handle = path.open("a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot open the received log {path}: {exc.strerror}") from exc
    with handle:
        server.log = handle
        yield
        server.log = None


def create_app(config: SandboxConfig) -> web.Application:
    """The sandbox as an aiohttp application; reads the users file now."""
    server = _Server(config)
    app = web.Application()
    app[_SERVER] = server
    app.router.add_post(EVENTS_ROUTE, _handle_events)
    app.cleanup_ctx.append(_received_log)
    return app


def get_state(app: web.Application) -> SandboxState:
    """The counters and received events of a sandbox app."""
    return app[_SERVER].state


# --- running it -------------------------------------------------------------------------


def loopback_host(host: str) -> str:
    """The address to bind for ``host``; refuses anything but loopback."""
    if host.lower() in LOOPBACK_NAMES:
        # One address, so a port 0 binds one socket and the URL names it.
        return SANDBOX_HOST
    if not is_loopback(host):
        raise UsageError(f"the sandbox only listens on loopback (127.0.0.1, ::1), not {host!r}")
    return str(ipaddress.ip_address(host.strip("[]")))


def _url(host: str, port: int) -> str:
    """The base URL of a server on ``host``:``port``."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class RunningSandbox:
    """The sandbox served on a loopback port; ``async with`` starts it on a free port."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.app = create_app(self.config)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    async def start(self, host: str = SANDBOX_HOST, port: int = 0) -> str:
        """Listen on ``host``:``port`` (0: a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("the sandbox is already running")
        bind = loopback_host(host)
        # Handlers only ever wait the configured delay, so shutdown need not wait long.
        runner = web.AppRunner(self.app, shutdown_timeout=self.config.delay + 2.0)
        try:
            await runner.setup()
            await web.TCPSite(runner, bind, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise UsageError(f"cannot listen on {_url(bind, port)}: {exc.strerror}") from exc
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._url = _url(bind, runner.addresses[0][1])
        return self._url

    @property
    def url(self) -> str:
        """The base URL, such as http://127.0.0.1:54321."""
        if self._url is None:
            raise RuntimeError("the sandbox is not running")
        return self._url

    @property
    def state(self) -> SandboxState:
        """Counters and received events."""
        return get_state(self.app)

    async def close(self) -> None:
        """Stop listening and close the received log; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> RunningSandbox:
        """Start on the default loopback host and a free port, unless started already."""
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        await self.close()


async def _serve_until_signal(
    config: SandboxConfig, host: str, port: int, on_ready: Callable[[str], None] | None
) -> None:
    """Serve until SIGINT or SIGTERM."""
    sandbox = RunningSandbox(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        url = await sandbox.start(host, port)
        if on_ready is not None:
            on_ready(url)
        await stop.wait()
    finally:
        await sandbox.close()
        for signum in signals:
            loop.remove_signal_handler(signum)


def serve(
    config: SandboxConfig,
    host: str = SANDBOX_HOST,
    port: int = SANDBOX_PORT,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the sandbox on loopback until SIGINT/SIGTERM; ``on_ready`` gets the URL."""
    loopback_host(host)
    asyncio.run(_serve_until_signal(config, host, port, on_ready))
