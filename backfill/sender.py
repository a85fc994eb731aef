"""Send payloads with one aiohttp session: a concurrency cap, a rate cap, retries, run control.

Rows flow from the validation batches through a bounded queue to ``concurrency`` workers.
Each row ends in exactly one final record, handed to the results writer the moment it is
final; a row whose outcome is not final when the run stops gets no record, so a resumed run
sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from backfill import __version__
from backfill.codes import ANSWER_CUT_OFF, CONNECTION_ERROR, LAST_UNANSWERED, TIMEOUT, Status
from backfill.errors import ResultsWriteError
from backfill.inputs import ROW
from backfill.payloads import (
    EMBEDDABLE_ID,
    IDENTIFIER_KEY,
    MESSAGE,
    PAYLOAD,
    REASON,
    SKIP,
    SKIP_MESSAGE,
)
from backfill.pipeline import CheckedBatch
from backfill.plans import SendOptions, Target, is_loopback
from backfill.redact import redact
from backfill.results import Record, ResultsWriter
from backfill.summary import ResultsSummary
from backfill.throttle import Answer, AutoGate, RateLimiter

RETRYABLE = frozenset({408, 429}) | frozenset(range(500, 600))
MAX_RESPONSE_BYTES = 64 * 1024  # a response is read this far at most: a sink cannot flood us
MESSAGE_CHARS = 300
MAX_RETRY_AFTER = 300.0
PROGRESS_EVERY = 0.2
ENTRY_ID_PATTERN = re.compile(rb'"entry_id"\s*:\s*"([^"\\]*)"')
logger = logging.getLogger("backfill.send")


@dataclass(slots=True)
class Job:
    """One valid row waiting to be sent."""

    source: str
    row: int
    payload: str
    embeddable_id: str
    identifier_key: str
    maybe_delivered: bool = False  # an earlier run's last attempt at it went unanswered


Item = Job | Record  # what a run is fed: rows to send, and records already final (invalid rows)


def items_of(batch: CheckedBatch) -> list[Item]:
    """A validated batch as jobs for its valid rows and records for its invalid ones."""
    columns = batch.checked.select(
        ROW, REASON, MESSAGE, PAYLOAD, EMBEDDABLE_ID, IDENTIFIER_KEY, SKIP, SKIP_MESSAGE
    )
    items: list[Item] = []
    for row, reason, message, payload, emb, key, skip, why in columns.iter_rows():
        if skip is not None:
            items.append(Record(batch.source, row, Status.SKIPPED, None, skip, why))
        elif reason is None:
            items.append(Job(batch.source, row, payload, emb, key))
        else:
            items.append(Record(batch.source, row, Status.INVALID, None, reason, message))
    return items


@dataclass(slots=True)
class Attempt:
    """What one HTTP attempt came to."""

    http_status: int | None
    body: bytes = b""
    retry_after: float | None = None
    error: str | None = None  # TIMEOUT or CONNECTION_ERROR when there was no answer
    detail: str = ""
    ambiguous: bool = False  # no answer, but the request may have reached the server
    cut_off: bool = False  # the status came, but the body broke off on its way
    location: str | None = None  # where a 3xx pointed
    event: dict[str, object] | None = None  # a 200's body, read as the event object
    fatal: str | None = None  # no use going on: every row would end the same (TLS)


class Sender:
    """Runs the worker pool for one send; stop() ends it cleanly from a signal or an abort."""

    def __init__(
        self,
        target: Target,
        options: SendOptions,
        writer: ResultsWriter,
        summary: ResultsSummary,
        on_progress: Callable[[ResultsSummary], None] | None = None,
    ) -> None:
        self.target = target
        self.options = options
        self.writer = writer
        self.summary = summary
        self.on_progress = on_progress
        self.limiter = RateLimiter(options.rate)
        self.gate = AutoGate(options.workers) if options.adaptive else None
        self.stopping = asyncio.Event()
        self.aborted: str | None = None
        self.interrupted = False
        self.consecutive_failures = 0
        self.last_progress = 0.0
        self.url = target.events_url
        self.debug = logger.isEnabledFor(logging.DEBUG)  # checked once: the hot path is per row
        self.headers = {
            "X-Api-Key": target.api_key,
            "Content-Type": "application/json",
            "User-Agent": f"backfill/{__version__}",
        }

    def stop(self, reason: str | None = None, interrupted: bool = False) -> None:
        """Stop taking rows; requests in flight finish or time out."""
        if reason and not self.aborted:
            self.aborted = reason
        self.interrupted = self.interrupted or interrupted
        self.stopping.set()
        if self.gate is not None:
            self.gate.close()  # workers waiting for a start (a pause, the pacer) give up now

    async def run(self, batches: Iterator[Sequence[Item]], ssl_context: ssl.SSLContext) -> None:
        """Send every valid row of the batches and record every row."""
        self._progress(force=True)  # before any record: the counts a resumed run starts from
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=self.options.workers * 4)
        connector = aiohttp.TCPConnector(limit=self.options.workers, ssl=ssl_context)
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, trust_env=not _is_local(self.url)
        ) as session:
            workers = [
                asyncio.create_task(self._work(session, queue)) for _ in range(self.options.workers)
            ]
            cancelled = False
            try:
                await self._produce(batches, queue)
            except asyncio.CancelledError:
                cancelled = True
                raise
            finally:
                await self._end(workers, queue, cancelled)
        self._progress(force=True)

    async def _end(
        self, workers: list[asyncio.Task[None]], queue: asyncio.Queue[Job | None], cancelled: bool
    ) -> None:
        """Let the workers finish the requests in flight; cancelled (a second Ctrl-C), at once.

        The end markers wait for room in the queue, behind requests that may hang for the
        whole timeout: a second Ctrl-C there must still end the run now.
        """
        if not cancelled:
            try:
                for _ in workers:
                    await queue.put(None)
                await asyncio.gather(*workers)
                return
            except asyncio.CancelledError:
                pass
        for worker in workers:
            worker.cancel()  # the requests in flight get no record: a resume sends them
        await asyncio.wait(workers)
        raise asyncio.CancelledError

    async def _produce(
        self, batches: Iterator[Sequence[Item]], queue: asyncio.Queue[Job | None]
    ) -> None:
        """Feed jobs to the workers and write ready records, until done or stopped."""
        taken = 0
        limit = self.options.limit
        while not self.stopping.is_set():
            # The next batch is read and validated in a thread, off the event loop.
            batch = await asyncio.to_thread(next, batches, None)
            if batch is None:
                return
            for item in batch:
                if self.stopping.is_set() or (limit is not None and taken >= limit):
                    return
                taken += 1
                if isinstance(item, Record):
                    self._record(item, None, None)
                else:
                    await queue.put(item)

    async def _work(self, session: aiohttp.ClientSession, queue: asyncio.Queue[Job | None]) -> None:
        """Take jobs until the end marker; after a stop, drain without sending."""
        while (job := await queue.get()) is not None:
            if self.stopping.is_set():
                continue  # not sent, not recorded: a resumed run sends it
            try:
                record = await self._deliver(session, job)
                if record is not None:
                    self._record(record, job.embeddable_id, job.identifier_key)
            except Exception as exc:  # a bug: stop cleanly rather than hang the queue
                self.stop(redact(f"unexpected {type(exc).__name__}: {exc}"))

    async def _deliver(self, session: aiohttp.ClientSession, job: Job) -> Record | None:
        """Send one row, retrying what may pass later; None when the run stopped first."""
        attempts = 0
        ambiguous = 0
        while True:
            await self.limiter.wait()
            if self.stopping.is_set():
                return None  # stopped while waiting for a start slot: not sent now
            attempts += 1
            if attempts == 1 and job.maybe_delivered:
                ambiguous += 1  # sending again what may have arrived before
                self.summary.ambiguous_retries += 1
            attempt = await self._attempt(session, job.payload)
            if attempt is None:
                return None  # stopped while waiting for the gate: not sent now
            self.summary.requests += 1
            if self.debug:
                _log_attempt(job, attempts, attempt)
            status = attempt.http_status
            stop = _stopping_answer(attempt, self.target.base_url)
            if stop is not None:
                self.stop(stop)
                return None  # no record: a resumed run sends it once the cause is fixed
            retryable = attempt.error is not None or status in RETRYABLE
            if not retryable or attempts > self.options.max_retries:
                return _final(job, attempt, attempts, ambiguous)
            if self.stopping.is_set():
                return None
            self.summary.retries += 1
            if attempt.ambiguous:
                ambiguous += 1
                self.summary.ambiguous_retries += 1
            if self.gate is not None and status == 429 and attempt.retry_after is not None:
                continue  # the gate holds every start until then, this row's too
            await self._pause(self._backoff(attempts, attempt.retry_after))

    async def _pause(self, seconds: float) -> None:
        """Sleep before a retry, cut short by a stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    async def _attempt(self, session: aiohttp.ClientSession, payload: str) -> Attempt | None:
        """One POST, through the gate of --concurrency auto when there is one; None if the
        run stopped before it could start."""
        if self.gate is None:
            return await self._post(session, payload)
        started = await self.gate.acquire()
        if started is None:
            return None
        attempt = Attempt(None)
        try:
            attempt = await self._post(session, payload)
        finally:
            self.gate.release(started, _load_signal(attempt), attempt.retry_after)
        return attempt

    async def _post(self, session: aiohttp.ClientSession, payload: str) -> Attempt:
        """One POST; every way it can go wrong becomes an Attempt, never an exception."""
        try:
            async with session.post(
                self.url, data=payload.encode(), headers=self.headers, allow_redirects=False
            ) as response:
                return await _answer(response)
        except TimeoutError:
            return Attempt(None, error=TIMEOUT, detail="no answer in time", ambiguous=True)
        except aiohttp.ClientSSLError as exc:
            detail = redact(str(exc))
            return Attempt(None, error=CONNECTION_ERROR, detail=detail, fatal=_tls_message(detail))
        except aiohttp.ClientProxyConnectionError as exc:
            detail = redact(f"cannot connect to the proxy set in the environment: {exc}")
            return Attempt(None, error=CONNECTION_ERROR, detail=detail)
        except aiohttp.ClientConnectorError as exc:
            return Attempt(None, error=CONNECTION_ERROR, detail=redact(str(exc)))
        except aiohttp.ClientError as exc:
            # The connection broke after the request went out: the server may have it.
            detail = redact(f"{type(exc).__name__}: {exc}")
            return Attempt(None, error=CONNECTION_ERROR, detail=detail, ambiguous=True)

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter, or the server's Retry-After when it gave one."""
        if retry_after is not None:
            return retry_after + random.uniform(0, 0.1 * retry_after)
        ceiling = min(self.options.backoff_cap, self.options.backoff_base * 2 ** (attempts - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _record(self, record: Record, embeddable_id: str | None, key: str | None) -> None:
        """Write a final record, count it, and watch for a run of failures.

        A record the results file does not take stops the run: its row has no record, so a
        resumed run sends it again once the disk is fixed.
        """
        try:
            self.writer.write(record)
        except ResultsWriteError as exc:
            self.stop(str(exc))
            return
        self.summary.add(record.status, record.error, embeddable_id or "", key or "")
        if record.status == Status.FAILED:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.options.max_consecutive_failures:
                self.stop(
                    f"{self.consecutive_failures} rows in a row failed after all retries:"
                    " the service looks down"
                )
        elif record.status not in (Status.INVALID, Status.SKIPPED):  # those were never sent
            self.consecutive_failures = 0
        self._progress()

    def _settled(self, now: float) -> None:
        """What --concurrency auto runs at, and how long Retry-After paused the run."""
        assert self.gate is not None
        control = self.gate.control
        self.summary.settled = control.settled(now)
        self.summary.rate_paced = control.rate is not None
        self.summary.paused_seconds = control.paused_seconds
        self.summary.pauses = control.pauses

    def _progress(self, force: bool = False) -> None:
        """Tell the caller how far we are, a few times a second."""
        now = time.monotonic()
        if force or now - self.last_progress >= PROGRESS_EVERY:
            self.last_progress = now
            if self.gate is not None:
                self._settled(now)
            if self.on_progress is not None:
                self.on_progress(self.summary)


def _load_signal(attempt: Attempt) -> Answer:
    """What an attempt tells --concurrency auto about the server's load."""
    status = attempt.http_status
    if status == 429:
        return Answer.THROTTLED
    if status == 503 or attempt.error == TIMEOUT:
        return Answer.OVERLOADED
    if status is None or status >= 500:
        return Answer.OTHER
    return Answer.OK


def _is_local(url: str) -> bool:
    """Whether a URL points at this machine (no proxy applies)."""
    return is_loopback(urlsplit(url).hostname or "")


def _key_message(status: int) -> str:
    """Why a 401/403 stopped the run, with its likely cause."""
    return (
        f"the API answered {status}: the key was rejected. Check that EMBEDDABLES_API_KEY (or"
        " the API key file) holds a current rk_ key of this project, and that the project id"
        " and the base URL are right"
    )


async def _answer(response: aiohttp.ClientResponse) -> Attempt:
    """An answer as an Attempt: its status, body (capped), and what a 200's body holds.

    A body that breaks off after the status line still carries the status: a 200 cut off
    means the event exists, and sending it again would make it twice.
    """
    body, cut_off = await _read_capped(response)
    attempt = Attempt(response.status, body, _retry_after(response.headers), cut_off=cut_off)
    if 300 <= response.status < 400:
        attempt.location = response.headers.get("Location")
    elif response.status == 200 and not cut_off:
        attempt.event = _event_object(body)
    return attempt


async def _read_capped(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The body of an answer to its end or MAX_RESPONSE_BYTES; True if it broke off first."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size < MAX_RESPONSE_BYTES:
            chunk = await response.content.read(MAX_RESPONSE_BYTES - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (aiohttp.ClientError, TimeoutError):
        return b"".join(chunks), True
    return b"".join(chunks), False


def _event_object(body: bytes) -> dict[str, object] | None:
    """A 200's body as the event object it must be, or None when it is not a JSON object.

    A body longer than we read is judged by its start, and its entry_id found by pattern.
    """
    if len(body) >= MAX_RESPONSE_BYTES:
        if not body.lstrip().startswith(b"{"):
            return None
        found = ENTRY_ID_PATTERN.search(body)
        return {"entry_id": found.group(1).decode("utf-8", "replace")} if found else {}
    try:
        event = json.loads(body)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _stopping_answer(attempt: Attempt, base_url: str) -> str | None:
    """Why an answer stops the run (a rejected key, an untrusted or wrong server), or None.

    Such an answer would be the same for every row: the run stops rather than record them.
    """
    status = attempt.http_status
    if status in (401, 403):
        return _key_message(status)
    if attempt.fatal is not None:
        return attempt.fatal
    if status is not None and 300 <= status < 400:
        where = redact(attempt.location) if attempt.location else "no Location"
        return (
            f"the server answered {status} (a redirect to {where}), which the events API never"
            f" does: check the base URL ({base_url}); redirects are never followed"
        )
    if status == 200 and not attempt.cut_off and attempt.event is None:
        return (
            f"the server answered 200 with {_body_kind(attempt.body)}, not the event object of"
            f" the events API: check the base URL ({base_url})"
        )
    return None


def _body_kind(body: bytes) -> str:
    """What a body that is not a JSON object looks like, in words."""
    text = body.strip()
    if not text:
        return "an empty body"
    if text[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    return f"a body that is not a JSON object ('{_snippet(text)[:60]}')"


def _tls_message(detail: str) -> str:
    """Why a TLS failure stops the run, and what to check."""
    return (
        f"TLS: the server's certificate could not be verified ({detail}). If a corporate"
        " proxy or a private certificate authority signs it, give that authority's"
        " certificate as the CA bundle; otherwise check the base URL"
    )


def _log_attempt(job: Job, attempts: int, attempt: Attempt) -> None:
    """One debug line per HTTP attempt (the handler masks the key)."""
    outcome = attempt.http_status or f"{attempt.error} ({attempt.detail})"
    logger.debug("POST %s row %d attempt %d: %s", job.source, job.row, attempts, outcome)


def _retry_after(headers: object) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date), capped."""
    value = getattr(headers, "get", lambda _: None)("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _final(job: Job, attempt: Attempt, attempts: int, ambiguous: int) -> Record:
    """The final record of a row from its last attempt."""
    record = Record(job.source, job.row, Status.SENT, attempt.http_status, attempts=attempts)
    record.payload = job.payload
    status = attempt.http_status
    notes = []
    if attempt.error is not None:
        record.status, record.error, record.message = Status.FAILED, attempt.error, attempt.detail
        if attempt.ambiguous:
            notes.append(LAST_UNANSWERED)
    elif status == 200:
        entry_id = attempt.event.get("entry_id") if attempt.event else None
        record.entry_id = None if entry_id is None else str(entry_id)
        if attempt.cut_off:
            notes.append(ANSWER_CUT_OFF)
    elif status == 404:
        record.status = Status.NOT_FOUND
        record.error = _api_error(attempt.body) or f"HTTP_{status}"
        record.message = _snippet(attempt.body)
    else:
        record.status = Status.FAILED if status in RETRYABLE else Status.REJECTED
        record.error = f"HTTP_{status}"
        record.message = _snippet(attempt.body)
    if ambiguous:
        notes.insert(0, f"retried {ambiguous}x after no answer: the event may exist twice")
    if notes:
        record.message = "; ".join([record.message, *notes] if record.message else notes)
    return record


def _api_error(body: bytes) -> str | None:
    """The API's error code from a JSON error body (ENTRY_NOT_FOUND and the like)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    code = data.get("error") if isinstance(data, dict) else None
    return code if isinstance(code, str) and code else None


def _snippet(body: bytes) -> str:
    """The start of a response body, as one line."""
    text = body.decode("utf-8", errors="replace")
    text = redact(" ".join(text.split()))  # a server may echo what it was sent
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


def send(
    batches: Iterator[Sequence[Item]],
    target: Target,
    options: SendOptions,
    writer: ResultsWriter,
    summary: ResultsSummary,
    on_progress: Callable[[ResultsSummary], None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    serve: Callable[[], contextlib.AbstractAsyncContextManager[str]] | None = None,
    handle_signals: bool = False,
) -> None:
    """Run a send to the end (or an abort or a signal); the summary says how it ended.

    ``serve`` starts a server in the same event loop for the run (the built-in sandbox) and
    gives the URL to send to instead of the target's. ``handle_signals``: SIGINT/SIGTERM stop
    the run cleanly (a second one cancels the requests in flight); otherwise they are the
    caller's to handle.
    """
    run = _main(
        batches, target, options, writer, summary, on_progress, ssl_context, serve, handle_signals
    )
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        try:
            runner.run(run)
        except asyncio.CancelledError:
            # A second Ctrl-C cancelled the requests in flight: their rows get no record.
            summary.stopped = "interrupted"


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (Linux, macOS), else asyncio's own.

    The event loop is where a send spends most of its CPU: uvloop does the same work in C
    and raises the requests a core can push by about a third.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _main(
    batches: Iterator[Sequence[Item]],
    target: Target,
    options: SendOptions,
    writer: ResultsWriter,
    summary: ResultsSummary,
    on_progress: Callable[[ResultsSummary], None] | None,
    ssl_context: ssl.SSLContext | None,
    serve: Callable[[], contextlib.AbstractAsyncContextManager[str]] | None,
    handle_signals: bool,
) -> Sender:
    """The send inside an event loop, with SIGINT/SIGTERM wired to a clean stop if asked."""
    async with contextlib.AsyncExitStack() as stack:
        if serve is not None:
            url = await stack.enter_async_context(serve())
            target = Target(url, target.project_id, target.api_key)
        sender = Sender(target, options, writer, summary, on_progress)
        started = time.monotonic()
        with _signals_stop(sender) if handle_signals else contextlib.nullcontext():
            try:
                await sender.run(batches, ssl_context or ssl.create_default_context())
            finally:
                summary.elapsed = time.monotonic() - started
                summary.stopped = "interrupted" if sender.interrupted else sender.aborted
    return sender


@contextlib.contextmanager
def _signals_stop(sender: Sender) -> Iterator[None]:
    """SIGINT/SIGTERM stop the run cleanly; a second one cancels what is still in flight."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread; a library caller handles them itself
        return
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal() -> None:
        if sender.stopping.is_set() and main is not None:
            main.cancel()
        sender.stop(None, interrupted=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
