"""How fast to send: a fixed rate cap, and ``--concurrency auto`` for unknown server limits.

``--concurrency auto`` runs two loops over one record of answers, and a pause.

**Requests in flight** (:class:`AutoControl`'s ``limit``). It starts at 4 and, until the first
sign of trouble, doubles every five round trips (every 0.25 s at most, every second at
least); after that it grows by 5% a second (at least one request). It grows only while the
run uses at least half of it (Netflix concurrency-limits, ``Gradient2Limit``: "don't grow
the limit if we are app limited"). It shrinks when answers slow down: latency is compared
with the no-load round trip (the fastest answer seen, let to drift up over about two
minutes, as Gradient2's long window does, but by the clock: at thousands of answers a
second a window of answers would follow the very queue it is there to show), and an average
over the
last 50 ms (200 answers at least) more than twice that (and 5 ms more) shrinks the limit by
the ratio of the two, by at most half (Gradient2's gradient, clamped to 0.5..1; TCP Vegas
reads queueing from the same ratio), but never below 64 (Gradient2's ``minLimit``, for the
same reason: on a busy client its own event-loop stalls look like a queue, and fewer
requests in flight cost more CPU each). A 503 or a timeout shrinks it by a quarter. Only a
successful answer is a latency sample (Vector's adaptive request concurrency,
``controller.rs``: only the attempt the service processed is a valid measurement).

**The request rate** (``rate``), for limits that a number in flight cannot hold: with a fast
server, even one request in flight is above a limit of 200/s, and at 50 ms a limit of 50/s
sits between 2 and 3 in flight. The first 429 engages a pacer that spaces request starts
1/rate apart; each 429 after it lowers the rate by at least 10% (Vector's
``decrease_ratio``). Quiet time raises it: by 2% a second up to the limit last read from the
server, past it by 1% a second, doubling every 5 s without a 429 (capped at 25% a second),
so a limit that rises again is found within seconds, not minutes. The rate grows only while
the pacer, not the limit in flight or the input, holds requests back.

Why the rate is set from the server's answers and not only cut by 10%: a token bucket lets a
second's worth of requests through at once, so the first 429 comes long after the run went
past the limit. When the server starts rejecting, the requests it still accepts come at its
limit exactly, so the first 429's rate is the accepted answers of the requests started after
the first rejected one, over the time those starts span; with too few of them to count on,
80% of the accepted answers of the last second (which the bucket's burst inflates). Each
429 after that reads the limit exactly: between two 429s the bucket went from empty to
empty, so what it accepted in between, over the time between, is its rate.

Growth is by the clock, not per answer (as TCP grows per round trip): a rate limiter refills
by the second, so growth per answer would race ahead of it on a fast server and overshoot a
slow one by many round trips' worth of requests before the first 429 comes back.

**One decision per window**: a 429, a 503 or a slow answer counts only if its request started
after the last decrease; the answers of requests already in flight then carry the same news
(Vector adjusts once per round trip for the same reason; TCP NewReno's recovery point).

**The pause**: a 429 with ``Retry-After`` pauses every request start of the run until then,
not only the row that got it; overlapping pauses are counted once in ``paused_seconds``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from enum import Enum

START = 4
PROBE_DOUBLING = (0.25, 1.0)  # seconds to double in, before the first sign of trouble...
PROBE_DOUBLING_RTTS = 5  # ...this many round trips, within those bounds
STEADY_GROWTH = 0.05  # share per second (at least one request), after it
OVERLOAD_DECREASE = 0.75  # on a 503 or a timeout
LATENCY_MIN_LIMIT = 64  # latency alone never takes the limit in flight below this
LATENCY_TOLERANCE = 2.0  # short-term latency this many times the no-load one is a queue
LATENCY_FLOOR = 0.005  # ...and at least this many seconds above it (loopback noise)
SHORT_SMOOTHING = 0.1  # weight of the newest answer in the short-term latency, at most
SHORT_WINDOW = 0.05  # seconds the short-term latency spans, at least
SHORT_SMOOTHING_MIN = 0.005  # ...but no fewer than about 200 answers
NOLOAD_DRIFT = 120.0  # seconds over which the no-load latency follows a slower path
RATE_DECREASE = 0.9
RATE_GROWTH = 0.02  # share per second, below the limit last read from the server
RATE_PROBE = 0.01  # share per second above it, right after a 429
RATE_GROWTH_DOUBLING = 5.0  # seconds without a 429 that double the growth
RATE_GROWTH_CAP = 0.25
MIN_RATE = 0.5  # requests per second: a pacer never stops a run
ESTIMATE_ACCEPTED = 6  # accepted answers needed to read a limit from one burst of 429s
ESTIMATE_SPAN = 0.02  # seconds of starts needed for the same
ESTIMATE_WINDOW = 1.0  # seconds of accepted answers when one burst does not tell
ESTIMATE_SHARE = 0.8  # ...of which this share: a token bucket's burst inflates them
PACING_SLACK = 0.02  # seconds a paced start may fall behind and catch up without a sleep
RECENT = 3.0  # seconds of answers kept, for the estimates after a 429
RATE_SHOWN_OVER = 5.0  # seconds the rate reported is measured over
IN_FLIGHT_SMOOTHING = 0.01
PACED_RECENTLY = 1.0  # seconds since the pacer last held a start back, to let the rate grow


class Answer(Enum):
    """What an answer says about the load, for the controller."""

    OK = "ok"  # any answer the server processed (2xx, 4xx but 429)
    THROTTLED = "throttled"  # 429
    OVERLOADED = "overloaded"  # 503, a timeout
    OTHER = "other"  # a connection error or a 5xx: no news about the load


class RateLimiter:
    """Spaces request starts at least 1/rate seconds apart across all workers (``--rate``)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_start = time.monotonic()

    async def wait(self) -> None:
        """Take the next start slot, sleeping until it comes."""
        if not self.interval:
            return
        now = time.monotonic()
        start = max(now, self.next_start)
        self.next_start = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class AutoControl:
    """The decisions of ``--concurrency auto``, on times given by the caller (testable)."""

    def __init__(self, ceiling: int, now: float, start: int = START) -> None:
        self.ceiling = ceiling
        self.limit = float(min(start, ceiling))
        self.rate: float | None = None  # None until a 429: no pacing
        self.in_flight = 0
        self.mean_in_flight = 0.0
        self.probing = True
        self.first_start: float | None = None
        self.last_growth = now
        self.last_decrease = -math.inf  # answers to requests started before it are old news
        self.last_throttle = now
        self.pending: tuple[float, float, float] | None = None  # (first 429's start, ref, est.)
        self.server_rate: float | None = None  # the server's limit, as last read from it
        self.accepted = 0  # accepted answers so far
        self.accepted_at_throttle = 0
        self.pause_until = -math.inf
        self.paused_seconds = 0.0
        self.pauses = 0
        self.next_slot = now
        self.paced_at = -math.inf
        self.noload: float | None = None
        self.short: float | None = None
        self.last_sample = now
        self.recent: deque[tuple[float, float, bool]] = deque()  # (answered, started, accepted)
        self.marks: deque[tuple[float, int]] = deque([(now, 0)])  # (time, accepted by then)

    def allowed(self) -> int:
        """Requests in flight allowed now."""
        return int(self.limit)

    def wait(self, now: float) -> float:
        """Seconds until a request may start (the pause, the pacer); 0 when it may now."""
        if now < self.pause_until:
            return self.pause_until - now
        if self.pending is not None:
            self._set_rate(now)
        if self.rate is None:
            return 0.0
        slot = max(self.next_slot, now - PACING_SLACK)  # past the pause: returned above
        if slot > now:
            self.paced_at = now
            return slot - now
        return 0.0

    def start(self, now: float) -> None:
        """A request starts now (after ``wait`` said it may)."""
        self.in_flight += 1
        self.mean_in_flight += IN_FLIGHT_SMOOTHING * (self.in_flight - self.mean_in_flight)
        if self.first_start is None:
            self.first_start = now
        if self.rate is not None:
            self.next_slot = max(self.next_slot, now - PACING_SLACK) + 1.0 / self.rate

    def finish(
        self, now: float, started: float, answer: Answer, retry_after: float | None = None
    ) -> None:
        """Learn from the answer to a request started at ``started``."""
        used = self.in_flight
        self.in_flight -= 1
        ok = answer is Answer.OK
        self.accepted += ok
        recent = self.recent
        recent.append((now, started, ok))
        oldest = now - RECENT
        while recent[0][0] < oldest:
            recent.popleft()
        fresh = started >= self.last_decrease
        if answer is Answer.THROTTLED:
            if retry_after is not None:
                self._pause(now, retry_after)
            if fresh:
                self._throttled(now, started, retry_after is not None)
        elif answer is Answer.OVERLOADED:
            if fresh:
                self._decrease(now, OVERLOAD_DECREASE)
        elif answer is Answer.OK:
            if not self._queueing(now, now - started):
                self._grow(now, used)
            elif fresh and self.limit > LATENCY_MIN_LIMIT:
                assert self.noload is not None and self.short is not None
                gradient = LATENCY_TOLERANCE * self.noload / self.short
                self._decrease(now, min(1.0, max(0.5, gradient)), LATENCY_MIN_LIMIT)

    def _queueing(self, now: float, latency: float) -> bool:
        """Whether answers have slowed well past the no-load latency (a queue builds)."""
        elapsed, self.last_sample = now - self.last_sample, now
        if self.noload is None or self.short is None:
            self.noload = self.short = latency
            return False
        if latency < self.noload:
            self.noload = latency
        else:
            # By the clock: at thousands of answers a second a drift per answer would follow
            # the very queue it is there to show.
            self.noload += (latency - self.noload) * min(1.0, elapsed / NOLOAD_DRIFT)
        weight = min(SHORT_SMOOTHING, max(SHORT_SMOOTHING_MIN, elapsed / SHORT_WINDOW))
        self.short += weight * (latency - self.short)
        bound = max(self.noload * LATENCY_TOLERANCE, self.noload + LATENCY_FLOOR)
        return self.short > bound

    def _grow(self, now: float, used: int) -> None:
        """Raise the limit in flight (if it is used) and the rate (if it holds starts back)."""
        elapsed = now - self.last_growth
        self.last_growth = now
        if used * 2 >= self.limit:
            if self.probing:
                grown = self.limit * 2 ** (elapsed / self._doubling())
            else:
                grown = self.limit + max(1.0, self.limit * STEADY_GROWTH) * elapsed
            self.limit = min(float(self.ceiling), grown)
        if self.rate is not None and now - self.paced_at < PACED_RECENTLY:
            self.rate += self.rate * self._rate_growth(now) * elapsed

    def _rate_growth(self, now: float) -> float:
        """Share of the rate to add per second: back up to the server's limit fast, past it
        slowly at first and faster the longer no 429 comes (it may have been raised)."""
        if self.server_rate is not None and self.rate is not None and self.rate < self.server_rate:
            return RATE_GROWTH
        quiet = now - self.last_throttle
        return min(RATE_GROWTH_CAP, RATE_PROBE * 2 ** (quiet / RATE_GROWTH_DOUBLING))

    def _doubling(self) -> float:
        """Seconds the limit takes to double while probing: fast for a near server, and
        never faster than a second for a far one, whose 429s come back late."""
        shortest, longest = PROBE_DOUBLING
        rtt = self.noload if self.noload is not None else longest
        return min(longest, max(shortest, rtt * PROBE_DOUBLING_RTTS))

    def _decrease(self, now: float, factor: float, floor: float = 1.0) -> None:
        """Shrink the limit in flight, once per window."""
        self.limit = max(floor, self.limit * factor)
        self.last_decrease = now
        self.last_growth = now
        self.probing = False

    def _throttled(self, now: float, started: float, pausing: bool) -> None:
        """A 429: engage or lower the pacer, now or once the pause has let the burst answer.

        Between two 429s a token bucket went from empty to empty: what it accepted in
        between, over the time between, is its rate, whatever its burst allowance.
        """
        if self.rate is None:
            ref = self._start_rate(now)
            estimate = self._accepted_rate(now) * ESTIMATE_SHARE
        else:
            ref = self.rate
            estimate = (self.accepted - self.accepted_at_throttle) / (now - self.last_throttle)
        self.last_decrease = self.last_throttle = self.last_growth = now
        self.accepted_at_throttle = self.accepted
        self.probing = False
        self.pending = (started, ref, estimate)
        if not pausing:
            self._set_rate(now)

    def _set_rate(self, now: float) -> None:
        """The rate after a 429: below the one before, and at most what the server accepted."""
        assert self.pending is not None
        first, ref, estimate = self.pending
        self.pending = None
        estimate = max(MIN_RATE, min(estimate, self._burst_rate(first)))
        self.server_rate = estimate
        self.rate = min(ref * RATE_DECREASE, estimate)
        self.next_slot = max(self.next_slot, now)

    def _burst_rate(self, first: float) -> float:
        """Accepted answers per second of the starts since ``first`` (a rejected start).

        From the first rejection on, a rate limiter accepts requests at its limit exactly;
        inf when too few answers say so.
        """
        accepted, last = 0, first
        for _answered, started, ok in reversed(self.recent):
            if started < first:
                continue
            accepted += ok
            last = max(last, started)
        span = last - first
        if accepted < ESTIMATE_ACCEPTED or span < ESTIMATE_SPAN:
            return math.inf
        return accepted / span

    def _accepted_rate(self, now: float) -> float:
        """Accepted answers per second over the last ESTIMATE_WINDOW seconds (or since the
        first start, if that is sooner)."""
        begun = self.first_start if self.first_start is not None else now
        window = min(ESTIMATE_WINDOW, max(now - begun, 1e-3))
        since = now - window
        count = sum(1 for answered, _, ok in reversed(self.recent) if ok and answered >= since)
        return count / window

    def _start_rate(self, now: float) -> float:
        """Requests per second being started: by Little's law from the requests in flight,
        or from the answers of the last second, whichever is more."""
        since = now - ESTIMATE_WINDOW
        answered = sum(1 for answer in reversed(self.recent) if answer[0] >= since)
        in_flight = (self.in_flight + 1) / self.short if self.short else 0.0
        return max(answered / ESTIMATE_WINDOW, in_flight)

    def _pause(self, now: float, seconds: float) -> None:
        """Hold every start until ``now + seconds``; overlapping pauses count once."""
        until = now + seconds
        if until <= self.pause_until:
            return
        if now >= self.pause_until:
            self.pauses += 1
            self.paused_seconds += seconds
        else:
            self.paused_seconds += until - self.pause_until
        self.pause_until = until

    def settled(self, now: float) -> tuple[float, float]:
        """(requests in flight, requests/s) it runs at: the pacer's rate when it paces."""
        # Counts at marks a second or more apart: a sum over every recent answer, a few times
        # a second, would cost the fast path a few percent of its CPU.
        marks = self.marks
        if now - marks[-1][0] >= 1.0:
            marks.append((now, self.accepted))
        while len(marks) > 2 and now - marks[1][0] >= RATE_SHOWN_OVER:
            marks.popleft()
        if self.rate is not None:
            return self.mean_in_flight, self.rate
        since, accepted = marks[0]
        return self.limit, (self.accepted - accepted) / (now - since) if now > since else 0.0


class AutoGate:
    """``--concurrency auto`` for asyncio workers: waits for room, the pause and the pacer.

    One worker at a time sleeps toward the next start slot; the others wait their turn in
    line, woken one by one, so a thousand idle workers cost nothing per request. A worker
    whose request ends gets the first claim on its slot (the line is woken a moment later):
    it comes back for it with its next row without ever yielding the event loop, where
    handing the slot to a waiting worker would cost a task switch per request.
    """

    def __init__(self, ceiling: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.control = AutoControl(ceiling, clock())
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.sleeping = False
        self.closed = False
        self.wake_soon = False

    async def acquire(self) -> float | None:
        """Wait for a start; its time, or None once the gate is closed (the run stops)."""
        control = self.control
        while not self.closed:
            if not self.sleeping and control.in_flight < control.allowed():
                now = self.clock()
                delay = control.wait(now)
                if delay <= 0:
                    control.start(now)
                    self._wake()
                    return now
                self.sleeping = True
                try:
                    await asyncio.sleep(min(delay, 0.5))  # a stop is noticed within 0.5 s
                finally:
                    self.sleeping = False
                    self._wake()
                continue
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
                raise
        return None

    def release(self, started: float, answer: Answer, retry_after: float | None = None) -> None:
        """A request ended; learn from its answer and let the next one in."""
        self.control.finish(self.clock(), started, answer, retry_after)
        if self.waiters and not self.wake_soon:
            self.wake_soon = True
            asyncio.get_running_loop().call_soon(self._wake_later)

    def _wake_later(self) -> None:
        """The slot of an ended request, if its worker did not come back for it."""
        self.wake_soon = False
        self._wake()

    def close(self) -> None:
        """Stop: every waiting worker returns None."""
        self.closed = True
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _wake(self) -> None:
        """Let the first worker in line try again, when there is room for it.

        Not while a worker sleeps toward the next start: it wakes the next one itself.
        """
        control = self.control
        while not self.sleeping and self.waiters and control.in_flight < control.allowed():
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
