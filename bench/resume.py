"""Benchmark ``send --resume`` of a 1,000,000-row job that is 90% done, against a fast sink.

    python bench/resume.py [--rows 1000000] [--done 0.9]

Uses the nginx sink of bench/send.py. Measured in one run, each in its own child process
(wall time and peak RSS through bench/measure.py):

    (a) the full run: backfill send FILE ... --concurrency 64 -o full.jsonl --overwrite
    (b) resume of a job 90% done: the first 90% of (a)'s records (and its run record) copied
        to part.jsonl, then backfill send FILE ... -o part.jsonl --resume
    (c) resume of the finished job: backfill send FILE ... -o full.jsonl --resume, which
        skips every row and sends nothing: the whole cost of skipping, on its own

The time to skip the finished rows is (c) scaled to the 90% done, and also (b) less the time
(a) took for the rows (b) sends; both must be under 10% of (a). Peak RSS of (b) and (c) must
be no higher than (a)'s, within FLAT (10%, what peak RSS varies between runs of one command
here): memory stays flat whatever the results file holds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from measure import measure
from send import OUT, PROJECT_ID, Sink, backfill_program, bench_env, ensure_events, ensure_mapping

FLAT = 1.1


def command(events: Path, mapping: Path, sink: Sink, results: Path, *extra: str) -> list[str]:
    """The measured ``backfill send`` command line."""
    return [
        *backfill_program(), "send", str(events), "-m", str(mapping), "--base-url", sink.url,
        "--project-id", PROJECT_ID, "--concurrency", "64", "--no-progress", "-o", str(results),
        "--json", *extra,
    ]  # fmt: skip


def partly_done(full: Path, part: Path, share: float, rows: int) -> int:
    """Copy the first ``share`` of a results file (and its run record); the records kept."""
    keep = int(rows * share)
    with full.open("rb") as source, part.open("wb") as target:
        for _ in range(keep):
            target.write(source.readline())
    shutil.copyfile(f"{full}.run.json", f"{part}.run.json")
    return keep


def summary_of(results: Path) -> dict[str, Any]:
    """Counts of a results file by status (a quick check that every row has one record)."""
    counts: dict[str, int] = {}
    with results.open(encoding="utf-8") as lines:
        for line in lines:
            status = json.loads(line)["status"]
            counts[status] = counts.get(status, 0) + 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--done", type=float, default=0.9)
    args = parser.parse_args()
    events, mapping = ensure_events(args.rows), ensure_mapping()
    full, part = OUT / "resume_full.jsonl", OUT / "resume_part.jsonl"
    env = bench_env()
    with Sink() as sink:
        print(f"(a) full run of {args.rows:,} rows ...", flush=True)
        a = measure(command(events, mapping, sink, full, "--overwrite"), env=env)
        kept = partly_done(full, part, args.done, args.rows)
        print(f"(b) resume with {kept:,} rows done ...", flush=True)
        b = measure(command(events, mapping, sink, part, "--resume"), env=env)
        print("(c) resume of the finished run ...", flush=True)
        c = measure(command(events, mapping, sink, full, "--resume"), env=env)
    remaining = 1 - args.done
    skip_from_b = b.wall_s - a.wall_s * remaining
    skip_from_c = c.wall_s * args.done
    counts = summary_of(part)
    print(f"\n  {'run':<34} {'wall s':>8} {'peak RSS MiB':>13}")
    for label, m in (("(a) full run", a), ("(b) resume, 90% done", b), ("(c) resume, all done", c)):
        print(f"  {label:<34} {m.wall_s:>8.2f} {m.peak_rss_mib:>13.1f}")
    print(f"\n  records after (b): {sum(counts.values()):,} {counts}")
    target = 0.1 * a.wall_s
    for label, skip in (("(b) - sending its rows", skip_from_b), ("(c) x done share", skip_from_c)):
        verdict = "ok" if skip < target else "MISSED"
        print(f"  skip time, {label:<24} {skip:>7.2f} s = {skip / a.wall_s:6.1%} of (a)"
              f" (target < 10%) {verdict}")  # fmt: skip
    flat = max(b.peak_rss_mib, c.peak_rss_mib) / a.peak_rss_mib
    verdict = "ok" if flat <= FLAT else "MISSED"
    print(f"  peak RSS of resumes / full run    {flat:>7.2f} (target <= {FLAT}, flat) {verdict}")
    ok = sum(counts.values()) == args.rows and max(skip_from_b, skip_from_c) < target
    ok = ok and flat <= FLAT
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
