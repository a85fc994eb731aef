"""Benchmark ``backfill validate`` against a bare Polars read and a pure-Python reference.

    python bench/validate.py [--rows 1000000] [--skip-5m] [--repeat N]

Generates bench/out/events_<N>.csv (N = --rows) and a five times larger file if missing,
copies sample_data/mapping.toml beside them, then measures, each in its own child process
(bench/measure.py):

    (a) backfill validate FILE -m MAPPING   on N rows, and on 5N rows (unless --skip-5m)
    (b) polars.read_csv(FILE), all strings  on N rows: the floor of any Polars pipeline
    (c) bench/reference_validate.py          on N rows: the hand-written baseline

and prints wall time, peak RSS and the ratios the project targets: validate/polars time <= 3,
reference/validate time >= 10, validate RSS at 5N / at N <= 1.3 (memory must stay bounded).
The validate and reference reports are checked against the rows the generator planted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gen_events import expected_path, generated, size_label
from measure import CommandFailed, Measurement, best_of

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
SAMPLE_MAPPING = ROOT / "sample_data" / "mapping.toml"
BIG_FACTOR = 5
POLARS_READ = "import sys, polars as pl; pl.read_csv(sys.argv[1], infer_schema=False)"


@dataclass
class Result:
    label: str
    measurement: Measurement | None = None
    error: str | None = None
    note: str = ""


def ensure_events(rows: int) -> Path:
    """The generated CSV for ``rows`` rows (1% invalid), written now if missing."""
    return generated(OUT / f"events_{size_label(rows)}.csv", rows, invalid_rate=0.01)


def ensure_mapping() -> Path:
    """The sample mapping, copied so that the benchmark inputs are self-contained."""
    path = OUT / "mapping.toml"
    shutil.copyfile(SAMPLE_MAPPING, path)
    return path


def warm_cache(path: Path) -> None:
    """Read the file once so that no measured run pays for the cold disk read alone."""
    with path.open("rb") as stream:
        while stream.read(1 << 24):
            pass


def load_report(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def compare_counts(report: dict[str, Any], expected: dict[str, Any]) -> str:
    """A short note: do the report's counts match what the generator planted?"""
    # A report may list every reason code, zeros included; the generator lists planted ones.
    by_reason = report.get("invalid_by_reason") or {}
    report = {**report, "invalid_by_reason": {k: v for k, v in by_reason.items() if v}}
    mismatches = [
        key
        for key in ("rows", "valid", "invalid", "invalid_by_reason")
        if report.get(key) != expected[key]
    ]
    if not mismatches:
        return f"counts match ({report['valid']:,} valid, {report['invalid']:,} invalid)"
    shown = {key: report.get(key) for key in mismatches}
    return f"COUNTS DIFFER from planted {', '.join(mismatches)}: {shown}"


def run_checked(
    label: str, command: Sequence[str], *, repeat: int, events: Path, report: Path | None = None
) -> Result:
    """Measure a command; when it writes a report, check the counts in it."""
    if report is not None:
        report.unlink(missing_ok=True)
    # A validator exits 1 for "some rows are invalid", which the generated files always have;
    # anything else (the Polars read) must exit 0.
    ok_codes = (0,) if report is None else (0, 1)
    print(f"measuring {label} ...", flush=True)
    try:
        measurement = best_of(repeat, command, ok_codes=ok_codes, cwd=ROOT)
    except CommandFailed as failure:
        return Result(label, error=f"exit {failure.returncode}: {last_line(failure.stderr_tail)}")
    if report is None:
        return Result(label, measurement)
    if not report.exists():
        # Exit 1 is also what an import error gives: only the report proves that it ran.
        return Result(
            label, error="exited 0 or 1 without writing --report: run it by hand to see why"
        )
    expected = load_report(expected_path(events))
    return Result(label, measurement, note=compare_counts(load_report(report), expected))


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no stderr)"


def validate_command(events: Path, mapping: Path, report: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "backfill",
        "validate",
        str(events),
        "-m",
        str(mapping),
        "--report",
        str(report),
    ]


def reference_command(events: Path, mapping: Path, report: Path) -> list[str]:
    script = BENCH / "reference_validate.py"
    return [sys.executable, str(script), str(events), "-m", str(mapping), "--report", str(report)]


def run_validate(events: Path, mapping: Path, rows: int, repeat: int) -> Result:
    report = OUT / f"validate_report_{size_label(rows)}.json"
    command = validate_command(events, mapping, report)
    label = f"(a) backfill validate, {size_label(rows)}"
    return run_checked(label, command, repeat=repeat, events=events, report=report)


def run_all(rows: int, skip_big: bool, skip_validate: bool, repeat: int) -> dict[str, Result]:
    """Every measurement, keyed by what the ratios refer to; files are generated first."""
    mapping = ensure_mapping()
    small = ensure_events(rows)
    big = None if skip_big or skip_validate else ensure_events(rows * BIG_FACTOR)
    n = size_label(rows)
    results = {}
    warm_cache(small)
    if not skip_validate:
        results["validate"] = run_validate(small, mapping, rows, repeat)
    polars_read = [sys.executable, "-c", POLARS_READ, str(small)]
    results["polars"] = run_checked(
        f"(b) polars.read_csv, {n}", polars_read, repeat=repeat, events=small
    )
    report = OUT / f"reference_report_{n}.json"
    results["reference"] = run_checked(
        f"(c) reference, {n}",
        reference_command(small, mapping, report),
        repeat=repeat,
        events=small,
        report=report,
    )
    if big is not None:
        warm_cache(big)
        results["validate_big"] = run_validate(big, mapping, rows * BIG_FACTOR, repeat)
    return results


@dataclass(frozen=True)
class Ratio:
    """A target: numerator / denominator of one figure, with the bound it must keep."""

    name: str
    numerator: str
    denominator: str
    figure: str  # a Measurement field
    at_most: bool
    bound: float

    def line(self, results: dict[str, Result]) -> str:
        top, bottom = results.get(self.numerator), results.get(self.denominator)
        target = f"{'<=' if self.at_most else '>='} {self.bound:g}"
        if top is None or bottom is None:
            return f"  {self.name:<36} skipped"
        if top.measurement is None or bottom.measurement is None:
            return f"  {self.name:<36}    n/a (target {target})"
        value = getattr(top.measurement, self.figure) / getattr(bottom.measurement, self.figure)
        kept = value <= self.bound if self.at_most else value >= self.bound
        return f"  {self.name:<36} {value:6.2f} (target {target}) {'ok' if kept else 'MISSED'}"


RATIOS = [
    Ratio("validate / polars, time", "validate", "polars", "wall_s", True, 3),
    Ratio("reference / validate, time", "reference", "validate", "wall_s", False, 10),
    Ratio("validate 5x rows / 1x rows, RSS", "validate_big", "validate", "peak_rss_mib", True, 1.3),
]


def print_table(results: dict[str, Result]) -> None:
    print()
    print(f"  {'command':<30} {'wall s':>8} {'peak RSS MiB':>13}")
    for result in results.values():
        if result.measurement is None:
            print(f"  {result.label:<30} {'failed':>8}  {result.error}")
            continue
        wall, rss = result.measurement
        print(f"  {result.label:<30} {wall:8.2f} {rss:13.1f}  {result.note}")
    print()
    for ratio in RATIOS:
        print(ratio.line(results))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the main file")
    parser.add_argument("--skip-5m", action="store_true", help="skip the 5x larger file")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs of each")
    parser.add_argument(
        "--skip-validate", action="store_true", help="measure only (b) and (c), no backfill"
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    results = run_all(args.rows, args.skip_5m, args.skip_validate, args.repeat)
    print_table(results)
    return 0 if all(result.measurement is not None for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
