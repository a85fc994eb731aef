"""Where ``backfill validate``'s CPU goes, and what the "3x a bare read" target leaves for it.

    python bench/rules_cost.py [--rows 1000000] [--skip-5m] [--repeat N]

For the Parquet form of bench/inputs.py's events (N rows and 5N; generated if missing), side
by side in one run:

    wall (child processes, bench/measure.py, best of --repeat):
      validate       backfill validate FILE -m MAPPING --report R (the sample mapping)
      bare read      polars.read_parquet(FILE)
      startup        backfill validate on the 300-row sample: imports, mapping, report
    CPU seconds (this process, each part alone on one Python thread, best of --repeat):
      read           backfill's batches of the file, as validate reads them
      rules          build_payloads on each batch, as validate calls it (no JSON bodies)
      report         ValidationReport.add on each checked batch
      per batch      build_payloads on 1,000 rows of a batch: the cost of a batch whatever
                     its size; per row: the rest of a full batch's cost, per row

It then works out the CPU the 3x target leaves: (3 x bare read - startup) x the cores, less
read and report, is what the rules may spend; against what they spend now, the cut the
target needs; and the rules' per-row part alone (their cost were batches free), to tell
whether fewer, larger batches could ever be enough. The cores are os.cpu_count(), all of
them kept busy: a bound no run reaches, so the cut shown is the least the target needs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from gen_events import generated, generated_forms, size_label
from measure import Measurement, measure

from backfill import pipeline, sources
from backfill.inputs import batches
from backfill.mapping import load_mapping
from backfill.payloads import build_payloads
from backfill.report import ValidationReport

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
MAPPING = ROOT / "sample_data" / "mapping.toml"
SAMPLE = ROOT / "sample_data" / "events.csv"
TARGET = 3.0
SMALL_BATCH = 1_000


BARE_READ = "import sys, polars as pl; pl.read_parquet(sys.argv[1])"


def best_wall(command: list[str], repeat: int, ok: tuple[int, ...] = (0,)) -> Measurement:
    """The fastest of ``repeat`` runs of a command (and the smallest peak RSS)."""
    runs = [measure(command, ok_codes=ok, cwd=ROOT) for _ in range(repeat)]
    return Measurement(min(r.wall_s for r in runs), min(r.peak_rss_mib for r in runs))


def validate_command(source: Path) -> list[str]:
    report = OUT / "rules_cost_report.json"
    command = ["validate", str(source), "-m", str(MAPPING), "--report", str(report)]
    return [sys.executable, "-P", "-m", "backfill", *command]


def cpu_of(work: Callable[[], object], repeat: int) -> float:
    """The least CPU time (this process's, every thread) of ``repeat`` runs of work()."""
    spent = []
    for _ in range(repeat):
        started = time.process_time()
        work()
        spent.append(time.process_time() - started)
    return min(spent)


def batches_of(source: Path) -> tuple[list[pl.DataFrame], Callable[[], Iterator[pl.DataFrame]]]:
    """The batches validate reads from a file (read once and kept), and a way to read again."""
    mapping = load_mapping(MAPPING)
    inputs = pipeline.open_inputs([str(source)], mapping)
    _, plans = sources.resolve(mapping, inputs)
    plan = plans[inputs[0].name]

    def read() -> Iterator[pl.DataFrame]:
        again = pipeline.open_inputs([str(source)], mapping)[0]
        try:
            yield from (sources.add_sources(b, plan) for b in batches(again, plan.reads))
        finally:
            again.close()

    kept = list(read())
    inputs[0].close()
    return kept, read


def measure_source(source: Path, rows: int, startup: float, repeat: int) -> None:
    mapping = load_mapping(MAPPING)
    resolved, _ = sources.resolve(mapping, pipeline.open_inputs([str(source)], mapping))
    now = datetime.now(UTC)
    validate = best_wall(validate_command(source), repeat, ok=(0, 1))
    bare = best_wall([sys.executable, "-c", BARE_READ, str(source)], repeat)
    kept, read = batches_of(source)
    read_cpu = cpu_of(lambda: sum(b.height for b in read()), repeat)
    checked: list[pl.DataFrame] = []

    def rules() -> None:
        checked[:] = [build_payloads(b, resolved, now, bodies=False) for b in kept]

    rules_cpu = cpu_of(rules, repeat)

    def report() -> None:
        counted = ValidationReport(sources=[str(source)])
        for frame in checked:
            counted.add(str(source), frame)

    report_cpu = cpu_of(report, repeat)
    full = max(kept, key=lambda b: b.height)
    small = full.head(SMALL_BATCH)
    per_batch = cpu_of(lambda: build_payloads(small, resolved, now, bodies=False), repeat * 3)
    whole = cpu_of(lambda: build_payloads(full, resolved, now, bodies=False), repeat * 3)
    per_row_us = (whole - per_batch) / (full.height - SMALL_BATCH) * 1e6
    cores = os.cpu_count() or 1
    allowed = (TARGET * bare.wall_s - startup) * cores
    rules_allowed = allowed - read_cpu - report_cpu
    print(f"\n{source.name} ({rows:,} rows, {len(kept)} batches of up to {full.height:,})")
    print(f"  wall: validate {validate.wall_s:.2f} s, bare read {bare.wall_s:.2f} s", end="")
    print(f" ({validate.wall_s / bare.wall_s:.2f}x), startup {startup:.2f} s")
    print(f"  CPU: read {read_cpu:.2f} s, rules {rules_cpu:.2f} s, report {report_cpu:.2f} s")
    print(
        f"  rules per batch {per_batch * 1e3:.1f} ms + {per_row_us:.2f} us per row:"
        f" {per_batch * len(kept) / rules_cpu:.0%} of the rules' CPU is per batch"
    )
    print(
        f"  {TARGET:g}x leaves {allowed:.2f} CPU s on {cores} cores; less read and report,"
        f" {rules_allowed:.2f} s for the rules"
    )
    per_rows = per_row_us * 1e-6 * rows
    print(f"  the rules' per-row part alone, with no per-batch cost at all: {per_rows:.2f} s")
    if rules_allowed <= 0:
        print("  the target leaves the rules nothing")
    elif rules_allowed >= rules_cpu:
        print(f"  rules now {rules_cpu:.2f} s: within it, were every core kept busy")
    else:
        cut = 1 - rules_allowed / rules_cpu
        print(f"  rules now {rules_cpu:.2f} s: a cut of at least {cut:.0%}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-5m", action="store_true", help="only N rows, not 5N")
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    OUT.mkdir(exist_ok=True)
    sizes = [args.rows] if args.skip_5m else [args.rows, 5 * args.rows]
    startup = best_wall(validate_command(SAMPLE), args.repeat, ok=(0, 1)).wall_s
    for rows in sizes:
        csv = generated(OUT / f"events_{size_label(rows)}.csv", rows, invalid_rate=0.01)
        measure_source(generated_forms(csv)["Parquet"], rows, startup, args.repeat)


if __name__ == "__main__":
    main()
