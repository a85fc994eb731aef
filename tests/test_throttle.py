"""``--concurrency auto``'s decisions on a fake clock, against a simulated rate-limited server.

The simulation is event by event: requests start whenever the controller lets them, the
server decides each one on arrival with a token bucket (a second's burst, as the sandbox's),
and answers a round trip later. A minute of simulated sending takes a fraction of a second.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from backfill.sandbox import RateLimit
from backfill.throttle import START, Answer, AutoControl

CLIENT_COST = 0.0004  # seconds of client CPU per request start: about 2,500 requests/s


@dataclass
class Simulated:
    """What a simulated run came to."""

    control: AutoControl
    accepted: list[float] = field(default_factory=list)  # answer times
    throttled: int = 0

    def share_throttled(self) -> float:
        return self.throttled / (len(self.accepted) + self.throttled)

    def rate(self, since: float, until: float) -> float:
        """Accepted answers per second between two times."""
        return sum(since <= t < until for t in self.accepted) / (until - since)


def simulate(
    limit: float | None,
    rtt: float,
    seconds: float,
    schedule: tuple[tuple[float, float], ...] = (),
    retry_after: float | None = 1.0,
    latency: Callable[[int], float] | None = None,
) -> Simulated:
    """Send for ``seconds`` against a server with ``limit`` requests/s and a round trip."""
    control = AutoControl(1024, 0.0)
    server = None if limit is None else RateLimit(limit, schedule)
    run = Simulated(control)
    answers: list[tuple[float, int, float, bool]] = []
    now, free_at, count = 0.0, 0.0, 0
    while now < seconds:
        delay = 0.0
        while control.in_flight < control.allowed() and now >= free_at:
            delay = control.wait(now)
            if delay > 0:
                break
            control.start(now)
            free_at = now + CLIENT_COST
            ok = server is None or server.allows(now)
            took = latency(control.in_flight) if latency else rtt
            count += 1
            heapq.heappush(answers, (now + took, count, now, ok))
        next_times = [answers[0][0]] if answers else []
        if control.in_flight < control.allowed():
            next_times.append(max(free_at, now + delay))
        now = max(min(next_times, default=now + 0.01), now + 1e-6)
        while answers and answers[0][0] <= now:
            answered, _, started, ok = heapq.heappop(answers)
            if ok:
                run.accepted.append(answered)
                control.finish(answered, started, Answer.OK)
            else:
                run.throttled += 1
                control.finish(answered, started, Answer.THROTTLED, retry_after)
    return run


@pytest.mark.parametrize(
    ("limit", "rtt"),
    [(200, 0.001), (50, 0.05), (500, 0.2), (20, 0.25), (1000, 0.05)],
    ids=["0ms-200", "50ms-50", "200ms-500", "250ms-20", "50ms-1000"],
)
def test_auto_takes_most_of_a_rate_limit_with_few_429s(limit: float, rtt: float) -> None:
    run = simulate(limit, rtt, 60.0)
    assert run.rate(0, 60) >= 0.9 * limit
    assert run.share_throttled() < 0.02
    assert run.control.rate is not None  # paced: no number in flight holds these limits


def test_a_fast_server_is_paced_at_its_limit_even_one_request_at_a_time() -> None:
    run = simulate(200, 0.0005, 30.0)
    assert run.control.allowed() <= 2 * START
    assert run.control.rate is not None and 180 <= run.control.rate <= 260
    assert run.rate(10, 30) >= 190


def test_auto_follows_a_limit_down_and_back_up() -> None:
    run = simulate(200, 0.1, 70.0, schedule=((20.0, 100.0), (40.0, 200.0)))
    assert run.rate(5, 20) >= 0.9 * 200
    assert 0.9 * 100 <= run.rate(25, 40) <= 1.05 * 100
    assert run.rate(55, 70) >= 0.9 * 200
    assert run.share_throttled() < 0.02


def test_without_a_limit_the_limit_in_flight_grows_to_the_ceiling() -> None:
    run = simulate(None, 0.25, 15.0)
    assert run.control.allowed() == 1024  # 2,000/s at 250 ms takes 500 in flight
    assert run.control.rate is None
    assert run.rate(12, 15) >= 2000


def test_a_queue_at_the_server_shrinks_the_limit_in_flight() -> None:
    # A server that serves 1,000 requests/s: beyond 200 in flight, requests wait in its queue.
    run = simulate(None, 0.2, 40.0, latency=lambda in_flight: max(0.2, in_flight / 1000))
    assert run.control.allowed() < 600  # not the ceiling: latency says it is not needed
    assert run.rate(20, 40) >= 0.9 * 1000
    assert run.control.rate is None


def test_a_429_with_retry_after_pauses_every_start_and_counts_overlaps_once() -> None:
    control = AutoControl(64, 0.0)
    for _ in range(3):
        control.start(0.0)
    control.finish(1.0, 0.0, Answer.THROTTLED, retry_after=2.0)
    assert control.wait(1.5) == pytest.approx(1.5)
    control.finish(2.0, 0.0, Answer.THROTTLED, retry_after=2.0)  # overlaps: until 4.0
    assert control.wait(3.9) == pytest.approx(0.1)
    assert (control.paused_seconds, control.pauses) == (pytest.approx(3.0), 1)
    assert control.wait(4.0) == 0.0
    control.finish(5.0, 0.0, Answer.THROTTLED, retry_after=1.0)
    assert (control.paused_seconds, control.pauses) == (pytest.approx(4.0), 2)


def test_one_burst_of_429s_lowers_the_rate_once() -> None:
    control = AutoControl(64, 0.0)
    control.rate = 100.0
    for started in (1.0, 1.01, 1.02):
        control.start(started)
    control.finish(1.1, 1.0, Answer.THROTTLED)
    lowered = control.rate
    assert lowered is not None and lowered <= 90.0
    control.finish(1.11, 1.01, Answer.THROTTLED)  # started before the decision: old news
    control.finish(1.12, 1.02, Answer.THROTTLED)
    assert control.rate == lowered


def test_the_limit_in_flight_grows_only_while_it_is_used() -> None:
    control = AutoControl(64, 0.0)
    control.start(0.0)
    for second in range(1, 10):  # one request at a time: the input, not the limit, holds it
        control.finish(float(second), second - 0.01, Answer.OK)
        control.start(float(second))
    assert control.allowed() == START


def test_timeouts_and_503s_shrink_the_limit_in_flight() -> None:
    control = AutoControl(64, 0.0, start=40)
    for _ in range(40):
        control.start(0.0)
    control.finish(0.5, 0.0, Answer.OVERLOADED)
    assert control.allowed() == 30
    control.finish(0.6, 0.0, Answer.OVERLOADED)  # the same window
    assert control.allowed() == 30
    assert math.isinf(control.pause_until) and control.rate is None
