"""The hand-written baseline of the send benchmark: ``requests`` in a thread pool.

    python bench/send_requests_threads.py BODIES URL [--threads 64] [--json-out PATH]

What users write when they script a backfill themselves: a ``ThreadPoolExecutor`` mapping a
``post`` function over the bodies, with one ``requests.Session`` per thread (so connections
are kept alive). BODIES holds one JSON body per line, read before the clock starts. Prints (or
writes to --json-out) the counts by HTTP status and the requests per second of the sending
phase.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

HEADERS = {
    "X-Api-Key": "rk_bench",
    "Content-Type": "application/json",
    "User-Agent": "bench-requests-threads",
}


def load_bodies(path: Path) -> list[bytes]:
    """Every line of the file as the bytes of one body."""
    with path.open("rb") as stream:
        return [line.rstrip(b"\n") for line in stream if line.strip()]


def send_all(bodies: list[bytes], url: str, threads: int) -> tuple[Counter[int], float]:
    """POST every body from a pool of threads; the statuses answered and the seconds it took."""
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()

    def post(body: bytes) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            with lock:
                sessions.append(session)
        response = session.post(url, data=body, headers=HEADERS, timeout=30)
        return response.status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        statuses = Counter(pool.map(post, bodies))
    elapsed = time.perf_counter() - started
    for session in sessions:
        session.close()
    return statuses, elapsed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bodies", type=Path, help="one JSON body per line")
    parser.add_argument("url", help="the events URL to POST to")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--json-out", type=Path, help="write the outcome here, not to stdout")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bodies = load_bodies(args.bodies)
    statuses, elapsed = send_all(bodies, args.url, args.threads)
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
