"""Chaos rehearsal: the chaos suite's fault mix over 100,000 rows, with its figures.

    .venv/bin/python bench/chaos.py [--rows 100000] [--json]

Runs the very helpers of tests/chaos/test_chaos.py (``run_chaos``, then every invariant it
checks) on a generated export in a scratch directory: the sandbox in-process on loopback
with 500/503, 429 (Retry-After 0.01 s), connections dropped before and after processing, a
2 ms delay on every answer and a share of requests stalled past the 0.2 s client timeout.
Prints the figures and the invariants; exits 1 if any invariant broke.

The same run under pytest: BACKFILL_CHAOS_ROWS=100000 .venv/bin/pytest -m chaos tests/chaos
--timeout 0
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # ahead of bench/, whose chaos.py is this file

from chaos.test_chaos import FAULTS, OPTIONS, figures, run_chaos, violations  # noqa: E402


def main() -> int:
    """Run, print, and exit 1 if an invariant broke."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="backfill-chaos-") as scratch:
        run = run_chaos(Path(scratch), args.rows)
    numbers = figures(run)
    broken = {name: rows for name, rows in violations(run).items() if rows}
    if args.json:
        print(json.dumps({"figures": numbers, "violations": broken}, indent=2))
    else:
        print(f"chaos run, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
        print(f"faults: {FAULTS}")
        print(
            f"options: concurrency {OPTIONS.concurrency}, timeout {OPTIONS.timeout} s,"
            f" max_retries {OPTIONS.max_retries}"
        )
        for name, value in numbers.items():
            print(f"  {name:<18} {value:>12,}")
        for name, rows in violations(run).items():
            print(f"  {'BROKEN' if rows else 'ok':<6} {name}{': ' + str(rows) if rows else ''}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
