"""Peak RSS of ``backfill validate`` on hostile inputs, against the 1M-row export's.

    python bench/hostile_memory.py [--cell-mib 1024] [--rows 1000000]

Writes into a temporary directory (removed afterwards), streaming, in bounded memory:

    cell.csv     100 generated rows, and as row 51 one whose ``extra`` cell is 1 GiB long
                 (quoted, and the quote closes after it)
    line.jsonl   the same rows as JSONL, and as line 51 one line of 1 GiB
    blank.csv    the 100 rows with 10 MB of blank lines after row 50
    blank.jsonl  the same in JSONL (where the blank lines are numbered lines)
    wide_N.csv   a header of 50,000 columns (the export's and x1, x2, ...), N = 200 and
                 1,000 rows
    events.csv   the 1,000,000-row export bench/validate.py measures (gen_events.py)

and runs ``backfill validate FILE -m sample_data/mapping.toml --report R`` on each in its
own child process (bench/measure.py). It prints wall time and peak RSS side by side, the
RSS as a share of the 1M-row run's (the baseline), and checks each report's counts: the
long record is one malformed row (row 51), every other row is read. Exits 1 if a hostile
input peaks above the baseline or a count is off.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gen_events import COLUMNS, generated, write_events
from measure import CommandFailed, Measurement, measure
from validate import SAMPLE_MAPPING, load_report, validate_command

ROWS = 100  # generated rows around each hostile record
WIDE_COLUMNS = 50_000
WIDE_ROWS = (200, 1_000)  # two sizes: the peak must not grow with the rows
BLANK_BYTES = 10_000_000
BLOCK = b"x" * (1 << 20)


@dataclass
class Case:
    label: str
    path: Path
    rows: int  # rows the report must count
    malformed_row: int | None = None  # the one malformed row it must name
    planted: Path | None = None  # or the counts the generator planted, for the baseline
    measurement: Measurement | None = None
    note: str = ""


def sample_rows(directory: Path) -> list[list[str]]:
    """ROWS valid generated rows (no planted problems), as lists of cells."""
    path = directory / "sample.csv"
    write_events(path, ROWS, invalid_rate=0)
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))[1:]


def csv_line(cells: Sequence[str]) -> bytes:
    """One CSV record, quoted where needed, with its line end."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(cells)
    return text.getvalue().encode()


def json_line(cells: Sequence[str]) -> bytes:
    """One JSONL record of a row (empty cells left out, as a JSON export leaves them)."""
    record = {name: cell for name, cell in zip(COLUMNS, cells, strict=True) if cell}
    return (json.dumps(record, ensure_ascii=False) + "\n").encode()


def write_around(path: Path, head: bytes, rows: list[bytes], middle: Iterator[bytes]) -> None:
    """The header, half the rows, the middle (streamed), the other half."""
    with path.open("wb") as out:
        out.write(head)
        out.writelines(rows[: len(rows) // 2])
        for block in middle:
            out.write(block)
        out.writelines(rows[len(rows) // 2 :])


def long_cell(rows: list[list[str]], mib: int) -> Iterator[bytes]:
    """A record whose last cell, quoted, is ``mib`` MiB of x."""
    yield csv_line(rows[0][:-1])[:-1] + b',"'
    yield from (BLOCK for _ in range(mib))
    yield b'"\n'


def long_line(rows: list[list[str]], mib: int) -> Iterator[bytes]:
    """A JSONL line whose ``extra`` string is ``mib`` MiB of x."""
    yield json_line(rows[0])[:-2] + b', "extra": "'
    yield from (BLOCK for _ in range(mib))
    yield b'"}\n'


def blank_lines() -> Iterator[bytes]:
    yield b"\n" * BLANK_BYTES


def write_wide(path: Path, rows: list[list[str]], count: int) -> None:
    """A header of WIDE_COLUMNS names, and ``count`` rows with a short value in each."""
    extra = WIDE_COLUMNS - len(COLUMNS)
    tail = b"," + ",".join(str(i % 1000) for i in range(extra)).encode()
    with path.open("wb") as out:
        out.write(csv_line([*COLUMNS, *(f"x{i}" for i in range(1, extra + 1))]))
        for i in range(count):
            out.write(csv_line(rows[i % len(rows)])[:-1] + tail + b"\n")


def write_cases(directory: Path, cell_mib: int, rows: int) -> list[Case]:
    """Every input, written now; the 1M-row export first (it is the baseline)."""
    sample = sample_rows(directory)
    head = csv_line(COLUMNS)
    as_csv, as_jsonl = [csv_line(r) for r in sample], [json_line(r) for r in sample]
    events = generated(directory / "events.csv", rows, invalid_rate=0.01)
    planted = events.with_name(events.name + ".expected.json")
    cases = [Case(f"{rows:,}-row export (baseline)", events, rows, planted=planted)]
    print(f"writing the hostile inputs to {directory} ...", flush=True)
    cell, line = directory / "cell.csv", directory / "line.jsonl"
    write_around(cell, head, as_csv, long_cell(sample, cell_mib))
    write_around(line, b"", as_jsonl, long_line(sample, cell_mib))
    cases += [
        Case(f"CSV, one cell of {cell_mib:,} MiB", cell, ROWS + 1, ROWS // 2 + 1),
        Case(f"JSONL, one line of {cell_mib:,} MiB", line, ROWS + 1, ROWS // 2 + 1),
    ]
    for name, first, lines in (("blank.csv", head, as_csv), ("blank.jsonl", b"", as_jsonl)):
        write_around(directory / name, first, lines, blank_lines())
        kind = name.rsplit(".", 1)[1].upper()
        label = f"{kind}, {BLANK_BYTES / 1e6:g} MB of blank lines"
        cases.append(Case(label, directory / name, ROWS))
    for count in WIDE_ROWS:
        wide = directory / f"wide_{count}.csv"
        write_wide(wide, sample, count)
        cases.append(Case(f"CSV, {WIDE_COLUMNS:,} columns, {count:,} rows", wide, count))
    return cases


def checked(case: Case, report: dict[str, Any]) -> str:
    """A short note: did the report count what the input holds?"""
    if case.planted is not None:
        expected = load_report(case.planted)
        ok = all(report[k] == expected[k] for k in ("rows", "valid", "invalid"))
        return f"counts {'match' if ok else 'DIFFER'} ({report['valid']:,} valid)"
    examples = report.get("examples", {}).get("malformed_row", [])
    malformed = [example["row"] for example in examples]
    wanted = [] if case.malformed_row is None else [case.malformed_row]
    ok = report["rows"] == case.rows and report["valid"] == case.rows - len(wanted)
    ok = ok and malformed == wanted
    return f"counts {'match' if ok else 'DIFFER'} ({report['rows']} rows, malformed {malformed})"


def run(case: Case, mapping: Path, directory: Path) -> None:
    """Measure ``backfill validate`` on one input and check its report."""
    report = directory / "report.json"
    report.unlink(missing_ok=True)
    print(f"measuring {case.label} ...", flush=True)
    try:
        case.measurement = measure(validate_command(case.path, mapping, report), ok_codes=(0, 1))
    except CommandFailed as failure:
        case.note = f"FAILED: {failure}"[:200]
        return
    case.note = checked(case, load_report(report))


def print_table(cases: list[Case]) -> bool:
    """The figures side by side; whether every input stayed within the baseline's RSS."""
    base = cases[0].measurement
    print(f"\n  {'input':<34} {'size MiB':>9} {'wall s':>7} {'peak RSS MiB':>13} {'of base':>8}")
    kept = base is not None
    for case in cases:
        size = case.path.stat().st_size / 2**20
        if case.measurement is None or base is None:
            print(f"  {case.label:<34} {size:9.1f} {'-':>7} {'-':>13} {'-':>8}  {case.note}")
            kept = False
            continue
        share = case.measurement.peak_rss_mib / base.peak_rss_mib
        kept = kept and share <= 1 and "DIFFER" not in case.note
        wall, rss = case.measurement
        print(f"  {case.label:<34} {size:9.1f} {wall:7.2f} {rss:13.1f} {share:8.2f}  {case.note}")
    print(f"\n  every hostile input within the baseline's peak RSS: {'yes' if kept else 'NO'}")
    return kept


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell-mib", type=int, default=1024, help="size of the long record")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the baseline")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hostile-memory-") as tmp:
        directory = Path(tmp)
        mapping = directory / "mapping.toml"
        shutil.copyfile(SAMPLE_MAPPING, mapping)
        cases = write_cases(directory, args.cell_mib, args.rows)
        for case in cases:
            run(case, mapping, directory)
        return 0 if print_table(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
