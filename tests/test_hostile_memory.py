"""Memory stays bounded for hostile inputs: a huge record, a flood of blank lines, a wide header.

The reader's limits are patched smaller where that lets a few MB take the path a GB would.
The memory tests run ``backfill validate`` in a child process and read its peak RSS from
/proc (VmHWM, which starts afresh with the child's own program, unlike ru_maxrss).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import Result
from hypothesis import given, settings
from hypothesis import strategies as st

import backfill.inputs
from backfill import pipeline
from backfill.codes import Reason
from backfill.errors import InputError
from backfill.inputs import LINE, ROW, batches, open_input
from backfill.mapping import load_mapping
from backfill.payloads import REASON

Write = Callable[[str, str | bytes], str]
Run = Callable[..., Result]
Row = tuple[Any, ...]

MAPPING = """\
[fields]
embeddable_id     = "flow"
timestamp         = "ts"
custom_event_name = "ev"

[identifier]
key   = { value = "email" }
value = { column = "email" }
"""
HEADER = "flow,ts,ev,email"
LIMIT = 1 << 20  # MAX_PENDING_BYTES in the tests that patch it: "1 MiB" in messages
LONG = 3 * LIMIT  # a record that long is past the limit
TOO_LONG_CSV = "record longer than 1 MiB: not read"
TOO_LONG_JSONL = "line longer than 1 MiB: not read"


def cells(i: int) -> tuple[str, str, str, str]:
    """The values of a valid row."""
    return ("flow_1", "2024-03-01T12:00:00Z", "signed_up", f"u{i}@example.com")


def csv_line(i: int, eol: str = "\n") -> str:
    return ",".join(cells(i)) + eol


def json_line(i: int) -> str:
    return json.dumps(dict(zip(HEADER.split(","), cells(i), strict=True))) + "\n"


def read(name: str, columns: Sequence[str] = ()) -> list[Row]:
    """Every row of an input as (row, malformed, *values); JSONL reads ``columns``."""
    inp = open_input(name)
    try:
        frames = list(batches(inp, columns))
    finally:
        inp.close()
    return pl.concat(frames).drop(LINE, strict=False).rows()


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 MiB record limit and 64 KiB batches, so that a 3 MB record is past the limit."""
    monkeypatch.setattr(backfill.inputs, "MAX_PENDING_BYTES", LIMIT)
    monkeypatch.setattr(backfill.inputs, "BATCH_BYTES", 64 << 10)


# A record past the limit is one malformed row, and the rows after it are read.

LONG_RECORDS = {
    "plain-cell": ("flow_1,2024-03-01T12:00:00Z,signed_up," + "x" * LONG, "\n"),
    "quoted-cell": ('flow_1,2024-03-01T12:00:00Z,signed_up,"' + "x," * (LONG // 2) + '"', "\n"),
    "crlf": ("flow_1,2024-03-01T12:00:00Z,signed_up," + "x" * LONG, "\r\n"),
    "open-quote": ('flow_1,2024-03-01T12:00:00Z,signed_up,"' + "x" * LONG, "\n"),
}


@pytest.mark.usefixtures("small_limits")
@pytest.mark.parametrize("form", LONG_RECORDS)
def test_a_csv_record_past_the_limit_is_one_malformed_row(write: Write, form: str) -> None:
    record, eol = LONG_RECORDS[form]
    rows = [csv_line(i, eol) for i in (1, 2)] + [record + eol] + [csv_line(i, eol) for i in (4, 5)]
    write("long.csv", HEADER + eol + "".join(rows))
    assert read("long.csv") == [
        (1, None, *cells(1)),
        (2, None, *cells(2)),
        (3, TOO_LONG_CSV, None, None, None, None),
        (4, None, *cells(4)),
        (5, None, *cells(5)),
    ]


@pytest.mark.usefixtures("small_limits")
def test_a_csv_record_past_the_limit_at_the_end_of_the_file(write: Write) -> None:
    write("long.csv", HEADER + "\n" + csv_line(1) + "flow_1," + "x" * LONG)
    assert read("long.csv") == [(1, None, *cells(1)), (2, TOO_LONG_CSV, None, None, None, None)]


@pytest.mark.usefixtures("small_limits")
@pytest.mark.parametrize("end", ["\n", ""], ids=["newline", "end-of-file"])
def test_a_jsonl_line_past_the_limit_is_one_malformed_row(write: Write, end: str) -> None:
    # A valid object, only too long; blank lines count, as always in JSONL.
    long = json.dumps({"flow": "flow_1", "note": "x" * LONG})
    write("long.jsonl", json_line(1) + "\n" + long + "\n" + json_line(4) + long + end)
    assert read("long.jsonl", ["email"]) == [
        (1, None, "u1@example.com"),
        (3, TOO_LONG_JSONL, None),
        (4, None, "u4@example.com"),
        (5, TOO_LONG_JSONL, None),
    ]


@pytest.mark.usefixtures("small_limits")
def test_validate_reports_the_long_record_and_reads_on(write: Write, run: Run) -> None:
    record = "flow_1,2024-03-01T12:00:00Z,signed_up," + "x" * LONG + "\n"
    late = "flow_1,yesterday,signed_up,u4@example.com\n"
    write("long.csv", HEADER + "\n" + csv_line(1) + record + csv_line(3) + late)
    write("mapping.toml", MAPPING)
    result = run("validate", "long.csv", "-m", "mapping.toml", "--invalid-out", "bad.csv")
    assert result.exit_code == 1
    bad = pl.read_csv("bad.csv", infer_schema=False)
    assert bad.select("row", "reason").rows() == [
        ("2", Reason.MALFORMED_ROW),
        ("4", Reason.BAD_TIMESTAMP),
    ]
    assert bad["message"][0] == TOO_LONG_CSV
    assert "Rows read:  4" in result.output and "Valid:      2" in result.output


@pytest.mark.usefixtures("small_limits")
def test_a_header_past_the_limit_is_refused(write: Write) -> None:
    # A quote that never closes in the header would make the whole file its one record.
    write("h.csv", 'a,"b\n' + "1,2\n" * LIMIT)
    with pytest.raises(InputError, match=r"^h\.csv: the header row is longer than 1 MiB$"):
        open_input("h.csv")


# Blank and tiny lines: a chunk holds a bounded number of lines.


@pytest.mark.parametrize("name", ["tiny.csv", "tiny.jsonl"])
def test_a_chunk_of_tiny_lines_holds_a_bounded_number_of_rows(
    write: Write, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # raising=False: without the cap, the limit is set and ignored, and the frames are large.
    monkeypatch.setattr(backfill.inputs, "MAX_CHUNK_LINES", 64, raising=False)
    if name.endswith(".csv"):
        lines = ["a\n"] * 500 + ["\n"] * 5000 + ["a\n"] * 500
        write(name, "a\n" + "".join(lines))
        expected = list(range(1, 1001))  # blank lines are not records
    else:
        lines = ["{}\n"] * 500 + ["\n"] * 5000 + ["{}\n"] * 500
        write(name, "".join(lines))
        expected = [*range(1, 501), *range(5501, 6001)]  # a row is its line number
    inp = open_input(name)
    try:
        frames = list(batches(inp))
    finally:
        inp.close()
    assert max(frame.height for frame in frames) <= 64
    assert pl.concat(frames)[ROW].to_list() == expected


def rfc4180(cell: str) -> str:
    """A CSV field, quoted when it holds a separator, a quote or a line break."""
    if any(c in cell for c in ',"\r\n'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


CELL = st.text(alphabet=st.sampled_from(list('ab ,"\n\r')), max_size=8)


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(st.tuples(CELL, CELL), max_size=12),
    blank=st.lists(st.integers(0, 3), min_size=12, max_size=12),
    block=st.integers(min_value=1, max_value=48),
    cap=st.integers(min_value=1, max_value=4),
)
def test_any_csv_reads_alike_in_chunks_of_few_lines(
    records: list[tuple[str, str]], blank: list[int], block: int, cap: int
) -> None:
    # Records with quoted line breaks and blank lines between them, read in chunks of at most
    # ``cap`` lines (a record of more lines alone): the same rows, numbered in order.
    lines = [",".join(map(rfc4180, r)) + "\n" * (1 + blank[i]) for i, r in enumerate(records)]
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        path = Path(tmp) / "r.csv"
        path.write_bytes(("a,b\n" + "".join(lines)).encode())
        patch.setattr(backfill.inputs, "BATCH_BYTES", block)
        patch.setattr(backfill.inputs, "MAX_CHUNK_LINES", cap, raising=False)
        inp = open_input(str(path))
        try:
            frames = list(batches(inp))
        finally:
            inp.close()
    rows = pl.concat(frames).rows() if frames else []
    assert rows == [(i, None, *r) for i, r in enumerate(records, start=1)]
    assert all(f.height <= cap for f in frames)


# Memory, measured in a child process.

CHILD = """
import sys
import backfill.inputs
backfill.inputs.MAX_PENDING_BYTES = int(sys.argv[3])
from backfill.cli import cli
try:
    cli.main(["validate", sys.argv[1], "-m", sys.argv[2], "--json"], prog_name="backfill")
except SystemExit:
    pass
with open("/proc/self/status") as status:
    peak = next(line for line in status if line.startswith("VmHWM:"))
print(int(peak.split()[1]) // 1024, file=sys.stderr)
"""
MIB = 1 << 20

needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")


def validated_in_child(path: Path, limit: int = 64 * MIB) -> tuple[dict[str, Any], int]:
    """The JSON report of ``backfill validate`` run in a child, and its peak RSS in MiB."""
    mapping = path.with_name("mapping.toml")
    mapping.write_text(MAPPING, encoding="utf-8")
    argv = [sys.executable, "-c", CHILD, str(path), str(mapping), str(limit)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), int(done.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_peak(tmp_path_factory: pytest.TempPathFactory) -> int:
    """The peak RSS (MiB) of validating a two-row file: the floor of every figure here."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.csv"
    path.write_text(HEADER + "\n" + csv_line(1) + csv_line(2), encoding="utf-8")
    report, peak = validated_in_child(path)
    assert report["valid"] == 2
    return peak


def written(path: Path, blocks: Iterator[str]) -> Path:
    """A file written block by block, never whole in memory."""
    with path.open("w", encoding="utf-8") as out:
        out.writelines(blocks)
    return path


def long_cell(size: int) -> Iterator[str]:
    """A CSV file whose second record has a cell of ``size`` bytes (no newline in it)."""
    yield HEADER + "\n" + csv_line(1) + 'flow_1,2024-03-01T12:00:00Z,signed_up,"'
    yield from ("x" * MIB for _ in range(size // MIB))
    yield '"\n' + csv_line(3)


def long_line(size: int) -> Iterator[str]:
    """A JSONL file whose second line is an object of ``size`` bytes."""
    yield json_line(1) + '{"flow": "flow_1", "note": "'
    yield from ("x" * MIB for _ in range(size // MIB))
    yield '"}\n' + json_line(3)


@needs_proc
@pytest.mark.parametrize(("name", "content"), [("cell.csv", long_cell), ("line.jsonl", long_line)])
def test_a_200_mib_record_is_never_held_whole(
    tmp_path: Path, tiny_peak: int, name: str, content: Callable[[int], Iterator[str]]
) -> None:
    path = written(tmp_path / name, content(200 * MIB))
    report, peak = validated_in_child(path, limit=16 * MIB)
    assert (report["rows"], report["valid"]) == (3, 2)
    assert report["examples"]["malformed_row"] == [{"source": str(path), "row": 2}]
    assert peak - tiny_peak < 100, f"{peak} MiB against {tiny_peak} MiB for two rows"


@needs_proc
@pytest.mark.parametrize("name", ["blank.csv", "blank.jsonl"])
def test_10_mb_of_blank_lines_take_little_memory(tmp_path: Path, tiny_peak: int, name: str) -> None:
    first, last = (
        (csv_line(1), csv_line(2)) if name.endswith(".csv") else (json_line(1), json_line(2))
    )
    head = HEADER + "\n" if name.endswith(".csv") else ""
    path = written(tmp_path / name, iter([head, first, "\n" * 10_000_000, last]))
    report, peak = validated_in_child(path)
    assert (report["rows"], report["valid"]) == (2, 2)
    assert peak - tiny_peak < 100, f"{peak} MiB against {tiny_peak} MiB for two rows"


# Wide headers.


def wide_export(path: Path, width: int) -> list[str | None]:
    """A CSV of ``width`` columns (the mapped four first), and the reason expected of each row."""
    values = "," + ",".join(str(i % 100) for i in range(width - 4))  # the other columns'
    short = values[: values.rindex(",")]
    rows = [
        (csv_line(1, "") + values, None),
        (csv_line(2, "") + short, Reason.MALFORMED_ROW),  # one field short
        ('flow_1,2024-03-01T12:00:00Z,signed_up,"u3@example.com"' + values, None),
        ("flow_1,2024-03-01T12:00:00Z,Not Snake,u4@example.com" + values, Reason.BAD_EVENT_NAME),
        ('flow_1,2024-03-01T12:00:00Z,signed_up,"u5,x@example.com"' + values, None),
        (csv_line(6, "") + values, None),
    ]
    header = ",".join([HEADER, *(f"x{i}" for i in range(width - 4))])
    path.write_text(header + "\n" + "".join(line + "\n" for line, _ in rows), encoding="utf-8")
    (path.parent / "mapping.toml").write_text(MAPPING, encoding="utf-8")
    return [reason for _, reason in rows]


@pytest.mark.parametrize("width", [6_000, 50_000])
def test_a_wide_header_validates(tmp_path: Path, width: int) -> None:
    # 6,000 fields once made a pattern past the regex engine's size limit (ComputeError).
    expected = wide_export(tmp_path / "wide.csv", width)
    reasons: list[tuple[int, str | None]] = []

    def keep(batch: pipeline.CheckedBatch) -> None:
        reasons.extend(batch.checked.select(ROW, REASON).iter_rows())

    mapping = load_mapping(tmp_path / "mapping.toml")
    report = pipeline.validate([str(tmp_path / "wide.csv")], mapping, on_batch=keep)
    assert (report.rows, report.valid, report.invalid) == (6, 4, 2)
    assert +report.invalid_by_reason == {Reason.MALFORMED_ROW: 1, Reason.BAD_EVENT_NAME: 1}
    assert reasons == list(enumerate(expected, start=1))
