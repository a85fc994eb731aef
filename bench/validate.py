"""Benchmark ``backfill validate`` against a bare Polars read and a pure-Python reference.

    python bench/validate.py [--rows 1000000] [--skip-5m] [--repeat N]

Generates bench/out/events_<N>.csv (N = --rows) and a five times larger file if missing,
copies sample_data/mapping.toml beside them, then measures, each in its own child process
(bench/measure.py):

    (a) backfill validate FILE -m MAPPING   on N rows, and on 5N rows (unless --skip-5m)
    (d) backfill validate FILE_PROPS -m MAPPING_PROPS   on the same N events, right after (a)
    (b) polars.read_csv(FILE), all strings  on N rows: the floor of any Polars pipeline
    (c) bench/reference_validate.py          on N rows: the hand-written baseline

FILE_PROPS (bench/out/events_<N>_props.csv) is FILE with its timestamp, event, email and
amount in one JSON-text column, ``properties`` (``{"time": 1712913786, "event": ...}``), and
MAPPING_PROPS the sample mapping reading them by path (``properties.time``, ...): (d) against
(a) is what paths into JSON text cost over pre-flattened columns.

It prints wall time, peak RSS and the ratios the project targets: validate/polars time <= 3,
reference/validate time >= 10, validate RSS at 5N / at N <= 1.3 (memory must stay bounded),
JSON-text paths / flat columns time <= 3. The validate and reference reports are checked
against the rows the generator planted.

The commands import backfill as the ``backfill`` entry point would (``python -P``: not from
the current directory), so ``PYTHONPATH=/tmp/snap`` measures an exported commit; see
bench/send.py, ``backfill_source``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gen_events import expected_path, generated, generated_properties_copy, size_label
from measure import CommandFailed, Measurement, best_of
from send import backfill_source

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
SAMPLE_MAPPING = ROOT / "sample_data" / "mapping.toml"
BIG_FACTOR = 5
POLARS_READ = "import sys, polars as pl; pl.read_csv(sys.argv[1], infer_schema=False)"
# The sample mapping with the four columns inside ``properties`` read by path (gen_events.py,
# PROPERTIES_KEYS); the metric's props key is the path's last segment, renamed as before.
PROPS_MAPPING = """\
[fields]
embeddable_id     = "flow_id"
timestamp         = { column = "properties.time", timezone = "Europe/Berlin" }
custom_event_name = { column = "properties.event", snake_case = "convert" }

[identifier]
key   = { value = "email" }
value = { column = "properties.email", type = "string", normalize = "lowercase" }

[props]
metrics     = ["properties.amount"]
dimensions  = ["plan", "country"]
columns     = ["coupon"]
json_column = "extra"
rename      = { "properties.amount" = "order_amount" }
"""


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


def ensure_props(events: Path) -> tuple[Path, Path]:
    """The JSON-text copy of ``events`` and the mapping that reads it, written if missing."""
    props = generated_properties_copy(events, events.with_name(f"{events.stem}_props.csv"))
    mapping = OUT / "mapping_props.toml"
    mapping.write_text(PROPS_MAPPING, encoding="utf-8")
    return props, mapping


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
        "-P",  # backfill from sys.path as the entry point sees it, not from the cwd
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


def run_validate_props(events: Path, mapping: Path, rows: int, repeat: int) -> Result:
    report = OUT / f"validate_report_{size_label(rows)}_props.json"
    command = validate_command(events, mapping, report)
    label = f"(d) validate, JSON-text paths, {size_label(rows)}"
    return run_checked(label, command, repeat=repeat, events=events, report=report)


def run_all(rows: int, skip_big: bool, skip_validate: bool, repeat: int) -> dict[str, Result]:
    """Every measurement, keyed by what the ratios refer to; files are generated first."""
    mapping = ensure_mapping()
    small = ensure_events(rows)
    big = None if skip_big or skip_validate else ensure_events(rows * BIG_FACTOR)
    props, props_mapping = (None, None) if skip_validate else ensure_props(small)
    n = size_label(rows)
    results = {}
    warm_cache(small)
    if not skip_validate:
        results["validate"] = run_validate(small, mapping, rows, repeat)
    if props is not None and props_mapping is not None:
        warm_cache(props)
        results["validate_props"] = run_validate_props(props, props_mapping, rows, repeat)
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
    Ratio("JSON-text paths / flat columns, time", "validate_props", "validate", "wall_s", True, 3),
]


def print_table(results: dict[str, Result]) -> None:
    print()
    print(f"  {'command':<36} {'wall s':>8} {'peak RSS MiB':>13}")
    for result in results.values():
        if result.measurement is None:
            print(f"  {result.label:<36} {'failed':>8}  {result.error}")
            continue
        wall, rss = result.measurement
        print(f"  {result.label:<36} {wall:8.2f} {rss:13.1f}  {result.note}")
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
    if not args.skip_validate:
        print(f"backfill: {backfill_source(dict(os.environ))}", flush=True)
    results = run_all(args.rows, args.skip_5m, args.skip_validate, args.repeat)
    print_table(results)
    return 0 if all(result.measurement is not None for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
