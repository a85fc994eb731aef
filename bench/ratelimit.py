"""Benchmark ``--concurrency auto`` against a server with an unknown rate limit.

    python bench/ratelimit.py [--seconds 60] [--limit 200] [--delay 0.05]

Starts ``backfill sandbox --rate-limit LIMIT --delay DELAY`` in its own process (a token
bucket: 429 with Retry-After above LIMIT requests per second; DELAY makes every answer take
that long, so that the number of requests in flight decides the rate). Then runs, one after
the other against the same sandbox, ``backfill send`` for SECONDS each with:

    --concurrency auto   (must reach >= 90% of LIMIT with < 2% of requests answered 429)
    --concurrency 64     (far above the limit: throttled)
    --concurrency 4      (4 / DELAY requests per second: under-uses the limit)

Each run is stopped with SIGINT after SECONDS (a clean stop, exit 130) and its --json summary
gives requests, retries (here every retry follows a 429: the sandbox injects no other fault)
and elapsed time. Accepted requests per second = (requests - retries) / elapsed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gen_events import write_events

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
ROOT = BENCH.parent
MAPPING = ROOT / "sample_data" / "mapping.toml"
ROWS = 40_000


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until something listens on the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def start_sandbox(port: int, limit: float, delay: float) -> subprocess.Popen[bytes]:
    """The rate-limited sandbox, in its own process."""
    command = [sys.executable, "-m", "backfill", "sandbox", "--port", str(port)]
    command += ["--rate-limit", str(limit), "--delay", str(delay), "--retry-after", "1"]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return process


def run_send(events: Path, port: int, concurrency: str, seconds: float) -> dict[str, Any]:
    """One send for ``seconds``, stopped with SIGINT; its --json summary."""
    results = OUT / f"ratelimit_{concurrency}.jsonl"
    command = [sys.executable, "-m", "backfill", "send", str(events), "-m", str(MAPPING)]
    command += ["--base-url", f"http://127.0.0.1:{port}", "--project-id", "pr_bench"]
    command += ["--concurrency", concurrency, "--max-concurrency", "64", "--max-retries", "100"]
    command += ["--no-progress", "--overwrite", "-o", str(results), "--json"]
    env = {**os.environ, "EMBEDDABLES_API_KEY": "rk_sandbox"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    summary: dict[str, Any] = json.loads(out)
    return summary


def row(label: str, summary: dict[str, Any], limit: float) -> tuple[str, float, float]:
    """A table line and the two figures the targets are about."""
    requests, retries = summary["requests"], summary["retries"]
    elapsed = summary["elapsed_seconds"]
    accepted = (requests - retries) / elapsed if elapsed else 0.0
    throttled = retries / requests if requests else 0.0
    settled = summary.get("settled_concurrency")
    note = f"settled on {settled} in flight" if settled else ""
    line = (
        f"  {label:<18} {elapsed:>7.1f} {requests:>9,} {accepted:>10.1f}"
        f" {accepted / limit:>8.1%} {throttled:>8.2%}  {note}"
    )
    return line, accepted, throttled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--limit", type=float, default=200.0)
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    events = OUT / f"ratelimit_{ROWS}.csv"
    if not events.exists():
        write_events(events, ROWS, seed=7, invalid_rate=0.0)
    port = free_port()
    sandbox = start_sandbox(port, args.limit, args.delay)
    lines, figures = [], {}
    try:
        for concurrency in ("auto", "64", "4"):
            print(f"running --concurrency {concurrency} for {args.seconds:.0f} s ...", flush=True)
            summary = run_send(events, port, concurrency, args.seconds)
            line, accepted, throttled = row(f"--concurrency {concurrency}", summary, args.limit)
            lines.append(line)
            figures[concurrency] = (accepted, throttled)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    print(f"\nsandbox --rate-limit {args.limit:.0f} --delay {args.delay}")
    header = ("run", "secs", "requests", "accepted/s", "of limit", "429s")
    print("  {:<18} {:>7} {:>9} {:>10} {:>8} {:>8}".format(*header))
    print("\n".join(lines))
    accepted, throttled = figures["auto"]
    ok = accepted >= 0.9 * args.limit and throttled < 0.02
    print(
        f"\nauto: {accepted / args.limit:.1%} of the limit (target >= 90%),"
        f" {throttled:.2%} answered 429 (target < 2%): {'ok' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
