"""How fast to send: a fixed rate cap, and an adaptive concurrency limit for unknown limits.

The adaptive limit is additive-increase, multiplicative-decrease on the number of requests
in flight. Until the first sign of congestion it grows by a quarter a second (finding the
neighbourhood fast); after that by 2% (at least one request) a second, so it settles just
under the limit: a rate limiter's burst allowance hides an overshoot for a while, and a
slow climb keeps that overshoot small. On a 429, a 503, a timeout, or latency well above
the best seen it shrinks by a quarter, at most once per round trip, so one burst of 429s
counts once. Growth is by the clock, not per answer, so it does not speed up with the rate.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

DECREASE = 0.75
PROBE_GROWTH = 0.25  # per second, before the first congestion signal
STEADY_GROWTH = 0.02  # per second (at least one request), after it
SLOW_LATENCY_FACTOR = 3.0  # average latency this many times the best seen is congestion
SLOW_LATENCY_FLOOR = 0.1  # ...and at least this many seconds above it (loopback noise)
SMOOTHING = 0.1  # weight of the newest answer in the latency average
RATE_WINDOW = 5.0  # seconds of answers the reported rate is measured over


class RateLimiter:
    """Spaces request starts at least 1/rate seconds apart across all workers."""

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


class AdaptiveConcurrency:
    """An in-flight limit between 1 and ``ceiling`` that follows what the server takes."""

    def __init__(self, ceiling: int, start: int = 4) -> None:
        self.ceiling = ceiling
        self.limit = float(min(start, ceiling))
        self.in_flight = 0
        self.best_latency: float | None = None
        self.smooth_latency: float | None = None
        self.last_decrease = 0.0
        self.last_growth = time.monotonic()
        self.probing = True
        self.answers: deque[float] = deque()
        self.changed = asyncio.Condition()

    async def acquire(self) -> float:
        """Wait for a slot under the current limit; returns the start time."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1
        return time.monotonic()

    async def release(self, started: float, congested: bool) -> None:
        """Free a slot and learn from the answer (congested: a 429 or an overload answer)."""
        now = time.monotonic()
        latency = now - started
        self._note_answer(now)
        slow = self._slow(latency)
        if congested or slow:
            # One decrease per round trip: the answers of one burst all carry the same news.
            if now - self.last_decrease > max(latency, 0.01):
                self.limit = max(1.0, self.limit * DECREASE)
                self.last_decrease = now
                self.probing = False
            self.last_growth = now
        else:
            step = (
                self.limit * PROBE_GROWTH if self.probing else max(1.0, self.limit * STEADY_GROWTH)
            )
            self.limit = min(float(self.ceiling), self.limit + step * (now - self.last_growth))
            self.last_growth = now
        async with self.changed:
            self.in_flight -= 1
            self.changed.notify_all()

    def _slow(self, latency: float) -> bool:
        """Whether latency rose well above the best seen (a queue building at the server).

        A moving average, not single answers: one slow answer is noise, a rising average is
        a queue.
        """
        if self.smooth_latency is None or self.best_latency is None:
            self.smooth_latency = self.best_latency = latency
            return False
        self.best_latency = min(self.best_latency, latency)
        self.smooth_latency += SMOOTHING * (latency - self.smooth_latency)
        best = self.best_latency
        limit = max(best * SLOW_LATENCY_FACTOR, best + SLOW_LATENCY_FLOOR)
        return self.smooth_latency > limit

    def _note_answer(self, now: float) -> None:
        """Remember when answers came, for the rate shown to the user."""
        self.answers.append(now)
        while self.answers and self.answers[0] < now - RATE_WINDOW:
            self.answers.popleft()

    def rate(self) -> float:
        """Answers per second over the last few seconds."""
        if len(self.answers) < 2:
            return 0.0
        span = self.answers[-1] - self.answers[0]
        return (len(self.answers) - 1) / span if span > 0 else 0.0
