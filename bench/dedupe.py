"""Benchmark ``[filter] dedupe``: ``backfill validate`` with it and without it, on one file.

    python bench/dedupe.py [--rows 5000000] [--duplicate-rate 0.1] [--repeat N]

Generates bench/out/events_dedupe_<N>.csv (gen_events.py: the usual columns, 1% broken rows,
and exactly ``--duplicate-rate`` of the rows repeating the ``event_id`` of an earlier valid
row, half of them within the last 2,000 rows, half anywhere before), writes two mappings
beside it, the sample mapping and the same with

    [filter]
    dedupe = "event_id"

and measures, each in its own child process (bench/measure.py), side by side in every round:

    (a) backfill validate FILE -m mapping.toml --json          the baseline
    (b) backfill validate FILE -m mapping_dedupe.toml --json   the same with dedupe

It prints wall time and peak RSS of each (best of the rounds), the ratios (target: peak RSS
of (b) within 1.3x of (a)), and the duplicates (b) skipped against the planted count. Both
reports are checked against the planted counts; the script exits 1 if any differ, or if a
command failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gen_events import expected_path, generated_with_duplicates, size_label
from measure import CommandFailed, Measurement, measure
from send import backfill_source

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
SAMPLE_MAPPING = ROOT / "sample_data" / "mapping.toml"
DEDUPE_KEY = "event_id"
RSS_BOUND = 1.3
# The entry point of the venv running this script; PYTHONPATH=/tmp/snap makes it import an
# exported commit instead of the working tree (see bench/send.py, backfill_source).
BACKFILL = Path(sys.executable).parent / "backfill"
# Runs the command with its stdout in a file: sh replaces itself with the command (exec), so
# the measured process, and its peak RSS, is backfill's own.
TO_FILE = 'out=$1; shift; exec "$@" > "$out"'


@dataclass
class Run:
    label: str
    mapping: Path
    report: Path
    rounds: list[Measurement] = field(default_factory=list)
    error: str | None = None

    @property
    def best(self) -> Measurement | None:
        if not self.rounds:
            return None
        return Measurement(
            min(m.wall_s for m in self.rounds), min(m.peak_rss_mib for m in self.rounds)
        )


def write_mappings() -> tuple[Path, Path]:
    """The sample mapping, and the same with a [filter] table deduplicating on the id."""
    plain = OUT / "mapping.toml"
    shutil.copyfile(SAMPLE_MAPPING, plain)
    deduped = OUT / "mapping_dedupe.toml"
    text = SAMPLE_MAPPING.read_text(encoding="utf-8")
    deduped.write_text(f'{text.rstrip()}\n\n[filter]\ndedupe = "{DEDUPE_KEY}"\n', "utf-8")
    return plain, deduped


def warm_cache(path: Path) -> None:
    """Read the file once so that no measured run pays for the cold disk read alone."""
    with path.open("rb") as stream:
        while stream.read(1 << 24):
            pass


def command(events: Path, run: Run) -> list[str]:
    validate = [str(BACKFILL), "validate", str(events), "-m", str(run.mapping), "--json"]
    return ["/bin/sh", "-c", TO_FILE, "sh", str(run.report), *validate]


def measure_round(events: Path, run: Run) -> None:
    """One measured run; a failure is kept in ``run.error`` and ends its rounds."""
    if run.error is not None:
        return
    run.report.unlink(missing_ok=True)
    print(f"measuring {run.label} ...", flush=True)
    try:
        # validate exits 1 for "some rows are invalid", which the generated file always has.
        run.rounds.append(measure(command(events, run), ok_codes=(0, 1), cwd=ROOT))
    except CommandFailed as failure:
        lines = [line for line in failure.stderr_tail.splitlines() if line.strip()]
        run.error = f"exit {failure.returncode}: {lines[-1] if lines else '(no stderr)'}"


def load(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def check(report: dict[str, Any] | None, expected: dict[str, Any], dedupe: bool) -> list[str]:
    """What differs between a report and the planted counts (nothing: an empty list)."""
    if report is None:
        return ["no JSON report on stdout"]
    duplicates = expected["duplicates"] if dedupe else 0
    by_reason = {k: v for k, v in (report.get("invalid_by_reason") or {}).items() if v}
    skipped_by_rule = {k: v for k, v in (report.get("skipped_by_rule") or {}).items() if v}
    wanted = {
        "rows": expected["rows"],
        "valid": expected["valid"] - duplicates,
        "invalid": expected["invalid"],
        "invalid_by_reason": expected["invalid_by_reason"],
        "skipped": duplicates,
        "skipped_by_rule": {"dedupe": duplicates} if duplicates else {},
    }
    got = {
        **{key: report.get(key) for key in wanted},
        "invalid_by_reason": by_reason,
        "skipped_by_rule": skipped_by_rule,
    }
    return [
        f"{key}: {got[key]} (planted: {value})"
        for key, value in wanted.items()
        if got[key] != value
    ]


def ratio_line(name: str, top: float, bottom: float, bound: float | None) -> str:
    value = top / bottom
    if bound is None:
        return f"  {name:<34} {value:6.2f}"
    verdict = "ok" if value <= bound else "MISSED"
    return f"  {name:<34} {value:6.2f} (target <= {bound:g}) {verdict}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--duplicate-rate", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the best of each is shown")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1 or not 0 < args.duplicate_rate < 0.5:
        parser.error("--rows and --repeat must be positive, --duplicate-rate in (0, 0.5)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    n = size_label(args.rows)
    suffix = "" if args.duplicate_rate == 0.1 else f"_{args.duplicate_rate:g}"
    events = generated_with_duplicates(
        OUT / f"events_dedupe_{n}{suffix}.csv", args.rows, duplicate_rate=args.duplicate_rate
    )
    expected = json.loads(expected_path(events).read_text(encoding="utf-8"))
    plain, deduped = write_mappings()
    runs = [
        Run(f"(a) validate, no dedupe, {n}", plain, OUT / f"dedupe_report_plain_{n}.json"),
        Run(f"(b) validate, dedupe, {n}", deduped, OUT / f"dedupe_report_dedupe_{n}.json"),
    ]
    print(f"backfill: {backfill_source(dict(os.environ))}")
    print(
        f"input: {events.name}, {events.stat().st_size / 2**20:,.0f} MiB; planted duplicates "
        f"{expected['duplicates']:,} ({expected['duplicates_far']:,} of them "
        f">= 100,000 rows after their original, the farthest "
        f"{expected['duplicate_max_distance']:,}), broken rows {expected['invalid']:,}"
    )
    warm_cache(events)
    for _ in range(args.repeat):
        for run in runs:
            measure_round(events, run)

    print()
    print(f"  {'command':<32} {'wall s':>8} {'peak RSS MiB':>13}  rounds")
    problems = []
    for run in runs:
        best = run.best
        if best is None:
            print(f"  {run.label:<32} {'failed':>8}  {run.error}")
            problems.append(f"{run.label} failed")
            continue
        shown = ", ".join(f"{m.wall_s:.2f} s/{m.peak_rss_mib:.0f} MiB" for m in run.rounds)
        print(f"  {run.label:<32} {best.wall_s:8.2f} {best.peak_rss_mib:13.1f}  {shown}")
    print()
    base, dedupe = runs[0].best, runs[1].best
    if base is not None and dedupe is not None:
        print(
            ratio_line(
                "dedupe / no dedupe, peak RSS", dedupe.peak_rss_mib, base.peak_rss_mib, RSS_BOUND
            )
        )
        print(ratio_line("dedupe / no dedupe, time", dedupe.wall_s, base.wall_s, None))
    for run, with_dedupe in zip(runs, (False, True), strict=True):
        report = load(run.report) if run.best is not None else None
        if run.best is None:
            continue
        if with_dedupe and report is not None:
            skipped = (report.get("skipped_by_rule") or {}).get("dedupe")
            verdict = "exact" if skipped == expected["duplicates"] else "DIFFERS"
            shown = f"{skipped:,}" if isinstance(skipped, int) else str(skipped)
            print(
                f"  duplicates skipped by dedupe       {shown:>9} "
                f"(planted {expected['duplicates']:,}) {verdict}"
            )
        for difference in check(report, expected, with_dedupe):
            problems.append(f"{run.label}: {difference}")
    if problems:
        print()
        for problem in problems:
            print(f"  PROBLEM {problem}")
        return 1
    print("  both reports match the planted counts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
