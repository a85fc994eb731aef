"""The ceiling of the send benchmark: prebuilt bodies POSTed by a bare aiohttp worker pool.

    python bench/send_bare_aiohttp.py BODIES URL [--concurrency 64] [--loop uvloop]
                                      [--json-out PATH]

BODIES holds one JSON body per line (bench/send.py builds them with backfill's own pipeline).
They are read and encoded before the clock starts; then ``--concurrency`` workers share one
``ClientSession`` over ``TCPConnector(limit=concurrency)`` and POST them, reading each answer,
and do nothing else: no validation, no results file, no retries. Whatever backfill adds on top
of this is its overhead. ``--loop uvloop`` runs it on uvloop's event loop, as backfill runs
where uvloop is installed: the ceiling on the same loop. Prints (or writes to --json-out) the
counts by HTTP status and the requests per second of the sending phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiohttp

HEADERS = {
    "X-Api-Key": "rk_bench",
    "Content-Type": "application/json",
    "User-Agent": "bench-bare-aiohttp",
}


def load_bodies(path: Path) -> list[bytes]:
    """Every line of the file as the bytes of one body."""
    with path.open("rb") as stream:
        return [line.rstrip(b"\n") for line in stream if line.strip()]


async def send_all(bodies: list[bytes], url: str, concurrency: int) -> tuple[Counter[int], float]:
    """POST every body; the statuses answered and the seconds it took."""
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # One iterator shared by the workers: the event loop runs one next() at a time.
        shared: Iterator[bytes] = iter(bodies)

        async def worker() -> None:
            for body in shared:
                async with session.post(url, data=body, headers=HEADERS) as response:
                    await response.read()
                    statuses[response.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return statuses, elapsed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bodies", type=Path, help="one JSON body per line")
    parser.add_argument("url", help="the events URL to POST to")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--json-out", type=Path, help="write the outcome here, not to stdout")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bodies = load_bodies(args.bodies)
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        statuses, elapsed = runner.run(send_all(bodies, args.url, args.concurrency))
    outcome = {
        "requests": len(bodies),
        "by_http_status": {str(k): v for k, v in sorted(statuses.items())},
        "elapsed_seconds": round(elapsed, 3),
        "requests_per_second": round(len(bodies) / elapsed, 1),
    }
    text = json.dumps(outcome)
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0 if statuses[200] == len(bodies) else 1


if __name__ == "__main__":
    sys.exit(main())
