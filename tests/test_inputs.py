"""Reading exports: every format, messy CSV and JSONL, bounded batches that read like one."""

from __future__ import annotations

import csv
import gc
import gzip
import json
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
from backfill.cli import cli_message
from backfill.errors import InputError
from backfill.inputs import LINE, MALFORMED, batches, format_of_name, open_input

Write = Callable[[str, str | bytes], str]
Run = Callable[..., Result]
Row = tuple[Any, ...]

CSV = "id,name,note\n1,Ada,first\n2,Grace,\n"
CSV_ROWS = [(1, None, "1", "Ada", "first"), (2, None, "2", "Grace", "")]
JSONL = '{"id": 1, "name": "Ada", "note": "first"}\n{"id": 2, "name": "Grace"}\n'
JSONL_ROWS = [(1, None, "1", "Ada", "first"), (2, None, "2", "Grace", None)]


@pytest.fixture(autouse=True)
def collect_leaks() -> Iterator[None]:
    """Report a file left open by the test that left it (see the run fixture)."""
    yield
    gc.collect()


def read(name: str, columns: Sequence[str] = (), fmt: str | None = None) -> list[Row]:
    """Every row of an input as (row, malformed, *values); JSONL reads ``columns``."""
    inp = open_input(name, fmt)
    try:
        frames = list(batches(inp, columns))
    finally:
        inp.close()
    if not frames:
        return []
    frame = pl.concat(frames)
    return frame.drop(LINE, strict=False).rows()


def columns(name: str) -> list[str]:
    """The columns an input is found to have."""
    inp = open_input(name)
    inp.close()
    return inp.columns


def read_error(name: str, columns: Sequence[str] = (), fmt: str | None = None) -> str:
    """The message of the InputError that reading an input raises."""
    with pytest.raises(InputError) as caught:
        read(name, columns, fmt)
    return str(caught.value)


def gz(text: str | bytes) -> bytes:
    """Gzip bytes of a text, reproducible (stored blocks, no time stamp)."""
    raw = text.encode() if isinstance(text, str) else text
    return gzip.compress(raw, compresslevel=0, mtime=0)


# Formats and how inputs are named.


@pytest.mark.parametrize(
    ("name", "content", "rows"),
    [
        pytest.param("in.csv", CSV, CSV_ROWS, id="csv"),
        pytest.param("in.tsv", CSV.replace(",", "\t"), CSV_ROWS, id="tsv"),
        pytest.param("in.jsonl", JSONL, JSONL_ROWS, id="jsonl"),
        pytest.param("in.ndjson", JSONL, JSONL_ROWS, id="ndjson"),
        pytest.param("in.csv.gz", gz(CSV), CSV_ROWS, id="csv.gz"),
        pytest.param("in.tsv.gz", gz(CSV.replace(",", "\t")), CSV_ROWS, id="tsv.gz"),
        pytest.param("in.jsonl.gz", gz(JSONL), JSONL_ROWS, id="jsonl.gz"),
        pytest.param("in.ndjson.gz", gz(JSONL), JSONL_ROWS, id="ndjson.gz"),
        pytest.param("IN.CSV.GZ", gz(CSV), CSV_ROWS, id="upper-case-name"),
    ],
)
def test_every_format(write: Write, name: str, content: str | bytes, rows: list[Row]) -> None:
    write(name, content)
    assert read(name, ["id", "name", "note"]) == rows


@pytest.mark.parametrize(
    ("name", "override", "expected"),
    [
        pytest.param("a.csv", None, "csv", id="csv"),
        pytest.param("a.tsv", None, "tsv", id="tsv"),
        pytest.param("a.jsonl", None, "jsonl", id="jsonl"),
        pytest.param("a.ndjson", None, "jsonl", id="ndjson"),
        pytest.param("a.ndjson.gz", None, "jsonl", id="ndjson.gz"),
        pytest.param("a.json", None, "json", id="json"),
        pytest.param("a.parquet", None, "parquet", id="parquet"),
        pytest.param("dir.v2/a.Csv.Gz", None, "csv", id="mixed-case"),
        pytest.param("-", "jsonl", "jsonl", id="stdin"),
        pytest.param("export.txt", "tsv", "tsv", id="override-unknown-name"),
        pytest.param("export.csv", "jsonl", "jsonl", id="override-extension"),
        pytest.param("export.txt.gz", "csv", "csv", id="override-of-a-gz"),
        pytest.param("events.gz", None, None, id="gz-alone-is-sniffed"),
        pytest.param("events", None, None, id="no-extension-is-sniffed"),
    ],
)
def test_format_of_name(name: str, override: str | None, expected: str | None) -> None:
    assert format_of_name(name, override) == expected


def test_format_option_reads_any_name(write: Write) -> None:
    write("export.txt", CSV)
    assert read("export.txt", fmt="csv") == CSV_ROWS


UNKNOWN = (
    ": unknown input format (expected .csv, .tsv, .jsonl, .ndjson, .json or .parquet,"
    " optionally .gz; or give --format)"
)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param("events.txt", CSV.encode(), "events.txt" + UNKNOWN, id="unknown-extension"),
        pytest.param("events.gz", gzip.compress(CSV.encode()), "events.gz" + UNKNOWN, id="gz-csv"),
    ],
)
def test_format_cannot_be_told(write: Write, name: str, content: bytes, message: str) -> None:
    write(name, content)
    with pytest.raises(InputError) as caught:
        open_input(name)
    assert cli_message(caught.value) == message  # the core's own words name no flag:
    assert str(caught.value) == message.replace("give --format", "name its format")


def test_stdin_needs_a_format() -> None:
    with pytest.raises(InputError) as caught:
        format_of_name("-", None)
    assert (
        str(caught.value) == "-: reading stdin needs its format: csv, tsv, jsonl, json or parquet"
    )
    assert (
        cli_message(caught.value)
        == "-: reading stdin needs --format csv, tsv, jsonl, json or parquet"
    )


# Standard input, through the command line as a user gives it.


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_stdin(data: Path, run: Run, fmt: str) -> None:
    with open("valid.csv", encoding="utf-8", newline="") as f:
        records = list(csv.DictReader(f))
    content = (
        Path("valid.csv").read_text()
        if fmt == "csv"
        else "".join(json.dumps(record) + "\n" for record in records)
    )
    result = run("validate", "-", "--format", fmt, "-m", "mapping.toml", "--json", input=content)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["sources"], report["rows"], report["valid"]) == (["-"], 3, 3)


def test_stdin_needs_format(data: Path, run: Run) -> None:
    result = run("validate", "-", "-m", "mapping.toml", input=CSV)
    assert result.exit_code == 2
    assert (
        result.stderr == "error: -: reading stdin needs --format csv, tsv, jsonl, json or parquet\n"
    )


# Encodings and line ends.


@pytest.mark.parametrize(
    ("name", "content", "rows"),
    [
        pytest.param("bom.csv", "\ufeff" + CSV, CSV_ROWS, id="csv-bom"),
        pytest.param("bom.jsonl", "\ufeff" + JSONL, JSONL_ROWS, id="jsonl-bom"),
        pytest.param("bom.csv.gz", gz("\ufeff" + CSV), CSV_ROWS, id="csv.gz-bom"),
        pytest.param("crlf.csv", CSV.replace("\n", "\r\n"), CSV_ROWS, id="csv-crlf"),
        pytest.param("crlf.jsonl", JSONL.replace("\n", "\r\n"), JSONL_ROWS, id="jsonl-crlf"),
        pytest.param(
            "both.csv", "\ufeff" + CSV.replace("\n", "\r\n"), CSV_ROWS, id="csv-bom-and-crlf"
        ),
        pytest.param("no-final-newline.csv", CSV.rstrip("\n"), CSV_ROWS, id="csv-no-final-eol"),
        pytest.param("no-final.jsonl", JSONL.rstrip("\n"), JSONL_ROWS, id="jsonl-no-final-eol"),
    ],
)
def test_bom_and_line_ends(write: Write, name: str, content: str | bytes, rows: list[Row]) -> None:
    write(name, content)
    assert columns(name)[0] == "id"  # the mark is not part of the first column's name
    assert read(name, ["id", "name", "note"]) == rows


@pytest.mark.parametrize("block", [1, 8 << 20], ids=["a-record-a-chunk", "one-chunk"])
def test_a_byte_order_mark_after_the_header_is_data(
    write: Write, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    # Only the file's own mark is skipped: one that starts a chunk is a character of a cell.
    write("b.csv", "id,name,note\n\ufeff1,x,y\n2,\ufeffp,q\n")
    monkeypatch.setattr(backfill.inputs, "BATCH_BYTES", block)
    assert read("b.csv") == [(1, None, "\ufeff1", "x", "y"), (2, None, "2", "\ufeffp", "q")]


# CSV cells and quoting.


def test_csv_cells_are_text(write: Write) -> None:
    write("t.csv", "id,amount,flag,when\n00123,1e5,true,  2024-03-01 \n")
    assert read("t.csv") == [(1, None, "00123", "1e5", "true", "  2024-03-01 ")]


QUOTED = (
    "id,note,tail\n"
    '1,"a, b",x\n'
    '2,"she said ""hi""",y\n'
    '3,"two\nlines",z\n'
    '4,"three\r\nlines\nhere",w\n'
    "5,plain,v\n"
)
QUOTED_ROWS = [
    (1, None, "1", "a, b", "x"),
    (2, None, "2", 'she said "hi"', "y"),
    (3, None, "3", "two\nlines", "z"),
    (4, None, "4", "three\r\nlines\nhere", "w"),
    (5, None, "5", "plain", "v"),
]


def test_quoted_fields(write: Write) -> None:
    write("q.csv", QUOTED)
    assert read("q.csv") == QUOTED_ROWS


def test_quoted_header(write: Write) -> None:
    write("h.csv", '"a, b"," padded ","multi\nline"\n1,2,3\n')
    assert columns("h.csv") == ["a, b", "padded", "multi\nline"]


RAGGED = "a,b,c\n1,2,3,4\n5\n6,7,8\n9,10\n11,12,13\n"
RAGGED_ROWS = [
    (1, "expected 3 fields, found 4", "1", "2", "3"),
    (2, "expected 3 fields, found 1", "5", "", ""),
    (3, None, "6", "7", "8"),
    (4, "expected 3 fields, found 2", "9", "10", ""),
    (5, None, "11", "12", "13"),
]


def test_ragged_rows_are_malformed_and_the_rest_is_read(write: Write) -> None:
    write("r.csv", RAGGED)
    assert read("r.csv") == RAGGED_ROWS


def test_ragged_rows_beside_a_multi_line_record(write: Write) -> None:
    # A record spanning lines makes the reader take its record-by-record path; same answers.
    write("r.csv", RAGGED + '14,"x\ny",15\n')
    assert read("r.csv") == [*RAGGED_ROWS, (6, None, "14", "x\ny", "15")]


def test_ragged_row_with_quoted_separators(write: Write) -> None:
    write("r.csv", 'a,b\n1,2,"x,y"\n"p,q"\n3,4\n')
    assert read("r.csv") == [
        (1, "expected 2 fields, found 3", "1", "2"),
        (2, "expected 2 fields, found 1", "p,q", ""),
        (3, None, "3", "4"),
    ]


@pytest.mark.parametrize(
    "tail", [pytest.param("", id="alone"), pytest.param('4,"x\ny"\n', id="beside-multi-line")]
)
def test_stray_quote_in_unquoted_field_is_kept(write: Write, tail: str) -> None:
    write("s.csv", 'id,size\n1,5" screen\n2,ab"c\n3,ok\n' + tail)
    assert read("s.csv")[:3] == [
        (1, None, "1", '5" screen'),
        (2, None, "2", 'ab"c'),
        (3, None, "3", "ok"),
    ]


def test_unterminated_quote_costs_one_row(write: Write) -> None:
    # Nothing closes the quote: its row is malformed and the lines after it are read again.
    write("u.csv", 'a,b,c\n1,"open,x\n2,y,z\n3,y,z\n')
    assert read("u.csv") == [
        (1, "a quote opened in this row is never closed", "1", "open,x", ""),
        (2, None, "2", "y", "z"),
        (3, None, "3", "y", "z"),
    ]


def test_unterminated_quote_is_never_a_valid_row(write: Write) -> None:
    write("u.csv", 'a,b\n1,"open\n2,y\n3,z\n')
    rows = read("u.csv")
    assert rows[0][1] is not None


def test_a_row_reads_the_same_whatever_its_neighbours(write: Write) -> None:
    row = '1,"a" "b,c"\n'
    write("alone.csv", "id,note\n" + row)
    write("beside.csv", "id,note\n" + row + '2,"x\ny"\n')
    assert read("alone.csv")[0] == read("beside.csv")[0]


@pytest.mark.parametrize(
    "tail", [pytest.param("", id="alone"), pytest.param('4,"x\ny"\n', id="beside-multi-line")]
)
def test_bad_bytes_make_only_their_row_malformed(write: Write, tail: str) -> None:
    write("l.csv", b"id,name\n1,Ada\n2,Ren\xe9e\n3,Grace\n" + tail.encode())
    assert read("l.csv")[:3] == [
        (1, None, "1", "Ada"),
        (2, "not valid UTF-8", "2", "Ren\ufffde"),
        (3, None, "3", "Grace"),
    ]


def test_blank_lines_are_not_records(write: Write) -> None:
    write("b.csv", "id,name\n\n1,Ada\n\r\n\n2,Grace\n\n")
    assert read("b.csv") == [(1, None, "1", "Ada"), (2, None, "2", "Grace")]


def test_a_line_of_spaces_or_separators_is_a_record(write: Write) -> None:
    write("b.csv", "id,name\n   \n,\n")
    assert read("b.csv") == [(1, "expected 2 fields, found 1", "   ", ""), (2, None, "", "")]


def test_header_only(write: Write) -> None:
    write("h.csv", "id,name\n")
    assert read("h.csv") == []


# Header problems.


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"", "x.csv: file is empty (no header or rows)", id="empty"),
        pytest.param(b"\n1,2\n", "x.csv: the header row is empty", id="blank-header"),
        pytest.param(b"\xef\xbb\xbf", "x.csv: the header row is empty", id="only-a-bom"),
        pytest.param(
            b"id,name,id\n1,2,3\n",
            "x.csv: column 'id' appears twice in the header row",
            id="duplicate",
        ),
        pytest.param(
            b"id, id \n1,2\n", "x.csv: column 'id' appears twice in the header row", id="padded"
        ),
        pytest.param(
            b"na\xefve,b\n1,2\n", "x.csv: the header row is not valid UTF-8", id="not-utf8"
        ),
        pytest.param(
            "id,name\n".encode("utf-16"), "x.csv: the header row is not valid UTF-8", id="utf16"
        ),
    ],
)
def test_bad_header(write: Write, content: bytes, message: str) -> None:
    write("x.csv", content)
    assert read_error("x.csv") == message


def test_blank_header_names_are_numbered(write: Write) -> None:
    write("x.csv", "id,,name,\n1,2,3,4\n")
    assert columns("x.csv") == ["id", "column_2", "name", "column_4"]


@pytest.mark.parametrize("name", ["__row", "__malformed", "__line", "*", "^id$", "^.*$"])
def test_any_header_name_is_a_column_of_its_own(write: Write, name: str) -> None:
    write("x.csv", f"id,{name}\n1,x\n")
    inp = open_input("x.csv")
    frame = next(batches(inp))
    inp.close()
    assert frame.columns[:2] == ["__row", "__malformed"]
    assert frame.row(0) == (1, None, "1", "x")
    assert frame[backfill.inputs.frame_column(name)].to_list() == ["x"]
    assert backfill.inputs.export_columns(frame).to_dict(as_series=False) == {
        "id": ["1"],
        name: ["x"],
    }


@pytest.mark.parametrize("name", ["__row", "__malformed", "__line", "*", "^id$"])
def test_any_jsonl_key_is_a_column_of_its_own(write: Write, name: str) -> None:
    write("j.jsonl", json.dumps({"id": 1, name: "x"}) + "\n")
    inp = open_input("j.jsonl")
    frame = next(batches(inp, ["id", name]))
    inp.close()
    assert frame.drop(LINE).row(0) == (1, None, "1", "x")
    assert frame[backfill.inputs.frame_column(name)].to_list() == ["x"]
    assert frame[LINE].to_list() == [json.dumps({"id": 1, name: "x"})]


def test_a_blank_column_cannot_be_asked_for(write: Write) -> None:
    write("j.jsonl", '{" ": 1}\n')
    with pytest.raises(ValueError, match="blank"):
        read("j.jsonl", [" "])


# JSONL.


def test_jsonl_values_as_text(write: Write) -> None:
    lines = [
        {"id": 1, "v": 1.50},
        {"id": 2, "v": "00123"},
        {"id": 3, "v": {"k": [1, 2]}},
        {"id": 4, "v": None},
        {"id": 5},
        {"id": 6, "v": True},
        {"id": 7, "v": 'say "hi" \u00e9'},
        {"id": 8, "v": 12345678901234567890},
    ]
    write("j.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    assert [(row, value) for row, _, _, value in read("j.jsonl", ["id", "v"])] == [
        (1, "1.5"),
        (2, "00123"),
        (3, '{"k":[1,2]}'),
        (4, None),
        (5, None),
        (6, "true"),
        (7, 'say "hi" \u00e9'),
        (8, "12345678901234567890"),
    ]


JSONL_VALUES = ["1", "1.50", "-0", "12345678901234567890123", '"00123"', '{"k": [1, 2.5e-7]}']
JSONL_VALUES += ["null", "true", '"\\u00e9"']


@pytest.mark.parametrize("key", ["a\\b", "ends\\", "it's 'x'", 'it\'s "x"', 'a"b', "a'b"])
def test_jsonl_fields_read_alike_whatever_their_names(write: Write, key: str) -> None:
    lines = [f'{{"id": 1, "v": {v}, {json.dumps(key)}: {v}}}' for v in JSONL_VALUES]
    write("j.jsonl", "\n".join([*lines, '{"id": 2}']) + "\n")
    rows = read("j.jsonl", ["v", key])
    assert [by_name for _, _, _, by_name in rows] == [plain for _, _, plain, _ in rows]
    assert [plain for _, _, plain, _ in rows][:3] == ["1", "1.5", "-0.0"]


@pytest.mark.parametrize("depth", [128, 500])
def test_jsonl_lines_nested_past_polars_parser_are_read(write: Write, depth: int) -> None:
    deep = '{"a":' * depth + "1.50" + "}" * depth
    write("j.jsonl", f'{{"id": 1, "v": -0, "deep": {deep}}}\n{{"id": 2, "deep": {{}}}}\n')
    rows = read("j.jsonl", ["id", "v", "deep"])
    assert rows[0][:4] == (1, None, "1", "-0.0")
    assert json.loads(rows[0][4]) == json.loads(deep)
    assert rows[1] == (2, None, "2", None, "{}")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        pytest.param('{"a": ' * 200 + "NaN" + "}" * 200, "not valid JSON", id="nan"),
        pytest.param('{"a": ' * 200 + "1e400" + "}" * 200, "not valid JSON", id="out-of-range"),
        pytest.param('{"a": ' * 200 + '"\\udc00"' + "}" * 200, "not valid JSON", id="surrogate"),
        pytest.param('{"a": ' * 200 + "1" + "}" * 199, "not valid JSON", id="unclosed"),
        pytest.param('{"a": ' * 9000 + "1" + "}" * 9000, "nested too deeply to read", id="deep"),
    ],
)
def test_jsonl_deep_lines_polars_cannot_read_are_refused_as_json_refuses_them(
    write: Write, line: str, problem: str
) -> None:
    write("j.jsonl", line + "\n")
    assert read("j.jsonl", ["a"]) == [(1, problem, None)]


def test_jsonl_broken_lines_and_line_numbers(write: Write) -> None:
    write(
        "j.jsonl",
        '{"id": 1}\n\n{bad\n  \n[1, 2]\n"just a string"\n{"id": 2} trailing\n  {"id": 3}  \n',
    )
    assert read("j.jsonl", ["id"]) == [
        (1, None, "1"),
        (3, "not valid JSON", None),
        (5, "not a JSON object", None),
        (6, "not a JSON object", None),
        (7, "not valid JSON", None),
        (8, None, "3"),
    ]


def test_jsonl_keeps_the_line(write: Write) -> None:
    write("j.jsonl", '{"id": 1}\n[2]\n')
    inp = open_input("j.jsonl")
    frame = pl.concat(list(batches(inp, ["id"])))
    inp.close()
    assert frame[LINE].to_list() == ['{"id": 1}', "[2]"]


def test_jsonl_bad_bytes_make_only_their_line_malformed(write: Write) -> None:
    write("j.jsonl", b'{"id": 1}\n{"id": "\xff"}\n{"id": 3}\n')
    assert read("j.jsonl", ["id"]) == [
        (1, None, "1"),
        (2, "not valid UTF-8", None),
        (3, None, "3"),
    ]


def test_jsonl_columns_are_learned_from_the_first_lines(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill.inputs, "JSONL_SAMPLE_LINES", 3)
    write(
        "j.jsonl",
        '{"a": 1}\nnot json\n{"b": 2, "a": 3}\n{"late": 4}\n',
    )
    assert columns("j.jsonl") == ["a", "b"]


def test_jsonl_with_only_blank_lines_has_no_rows(write: Write) -> None:
    write("j.jsonl", "\n\n")
    assert read("j.jsonl", ["id"]) == []


# Compressed inputs.


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            gz(CSV)[:-12],
            "x.csv.gz: compressed data is corrupt or truncated after row 0"
            " (Compressed file ended before the end-of-stream marker was reached)",
            id="truncated",
        ),
        pytest.param(
            gz(CSV)[:-8] + b"\0\0\0\0" + gz(CSV)[-4:],
            "x.csv.gz: compressed data is corrupt or truncated after row 0"
            " (CRC check failed 0x0 != 0x3cb11b64)",
            id="bad-checksum",
        ),
    ],
)
def test_broken_gzip(write: Write, content: bytes, message: str) -> None:
    write("x.csv.gz", content)
    assert read_error("x.csv.gz") == message


def test_gzip_is_told_by_its_bytes_not_its_name(write: Write) -> None:
    write("plain.csv.gz", CSV)  # named .gz, but plain text
    write("packed.csv", gz(CSV))  # named .csv, but gzip
    assert read("plain.csv.gz") == read("packed.csv") == CSV_ROWS


def test_truncated_gzip_names_the_last_row_read(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill.inputs, "BATCH_BYTES", 64)
    text = "id,note\n" + "".join(f"{i},row number {i}\n" for i in range(1, 41))
    write("x.csv.gz", gz(text)[:300])
    assert read_error("x.csv.gz") == (
        "x.csv.gz: compressed data is corrupt or truncated after row 14"
        " (Compressed file ended before the end-of-stream marker was reached)"
    )


def test_closing_a_gzip_input_closes_it(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    write("x.csv.gz", gz(CSV))
    opened: list[Any] = []
    real = backfill.inputs.open_file
    monkeypatch.setattr(
        backfill.inputs, "open_file", lambda name: opened.append(real(name)) or opened[-1]
    )
    inp = open_input("x.csv.gz")
    try:
        inp.close()
        assert [f.closed for f in opened] == [True]
    finally:
        for f in opened:
            f.close()


# Paths that are not readable inputs.


def test_missing_file(workdir: Path) -> None:
    assert read_error("nope.csv") == "nope.csv: no such file"


def test_directory(workdir: Path) -> None:
    (workdir / "exports.csv").mkdir()
    assert read_error("exports.csv") == "exports.csv: is a directory, not an input file"


def test_empty_jsonl(write: Write) -> None:
    write("x.jsonl", "")
    assert read_error("x.jsonl") == "x.jsonl: file is empty (no header or rows)"


# Bounded batches read exactly like one.


MESSY_CSV = (
    "id,note,tail\n"
    + "".join(f"{i},plain {i},t\n" for i in range(1, 6))
    + '6,"multi\nline, with ""quotes""\nand more",t\n'
    + "\n"
    + "7,too,many,fields\n"
    + '8,"x\r\ny",t\r\n'
    + "9,short\n"
    + '10,"'
    + "long " * 30
    + '",t\n'
    + "".join(f"{i},plain {i},t\n" for i in range(11, 20))
)
MESSY_JSONL = (
    "".join(f'{{"id": {i}, "note": "plain {i}"}}\n' for i in range(1, 6))
    + "\n\n"
    + "{broken\n"
    + '{"id": 6, "note": {"nested": "object with \\n escapes"}}\n'
    + "[1]\n"
    + '{"id": 7, "note": "'
    + "long " * 30
    + '"}\n'
    + "".join(f'{{"id": {i}, "note": null}}\n' for i in range(8, 20))
)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("m.csv", MESSY_CSV, id="csv"),
        pytest.param("m.csv.gz", gz(MESSY_CSV), id="csv.gz"),
        pytest.param("m.jsonl", MESSY_JSONL, id="jsonl"),
        pytest.param("m.jsonl.gz", gz(MESSY_JSONL), id="jsonl.gz"),
    ],
)
def test_small_batches_read_like_one(
    write: Write, monkeypatch: pytest.MonkeyPatch, name: str, content: str | bytes
) -> None:
    write(name, content)
    whole = read(name, ["id", "note"])
    monkeypatch.setattr(backfill.inputs, "BATCH_BYTES", 64)
    inp = open_input(name)
    frames = list(batches(inp, ["id", "note"]))
    inp.close()
    assert len(frames) > 3
    assert pl.concat(frames).drop(LINE, strict=False).rows() == whole
    assert len(whole) == 19 + (0 if "csv" in name else 2)


def test_messy_csv_rows(write: Write) -> None:
    write("m.csv", MESSY_CSV)
    rows = read("m.csv")
    assert rows[5:10] == [
        (6, None, "6", 'multi\nline, with "quotes"\nand more', "t"),
        (7, "expected 3 fields, found 4", "7", "too", "many"),
        (8, None, "8", "x\r\ny", "t"),
        (9, "expected 3 fields, found 2", "9", "short", ""),
        (10, None, "10", "long " * 30, "t"),
    ]
    assert rows[-1] == (19, None, "19", "plain 19", "t")


def test_messy_jsonl_rows(write: Write) -> None:
    write("m.jsonl", MESSY_JSONL)
    rows = read("m.jsonl", ["id", "note"])
    assert rows[4:9] == [
        (5, None, "5", "plain 5"),
        (8, "not valid JSON", None, None),
        (9, None, "6", '{"nested":"object with \\n escapes"}'),
        (10, "not a JSON object", None, None),
        (11, None, "7", "long " * 30),
    ]
    assert rows[-1] == (23, None, "19", None)


def test_jsonl_columns_do_not_depend_on_the_block_size(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    write("m.jsonl", '{"id": 1, "note": "' + "long " * 30 + '"}\n{"id": 2, "note": null}\n')
    whole = columns("m.jsonl")
    monkeypatch.setattr(backfill.inputs, "BATCH_BYTES", 64)
    assert columns("m.jsonl") == whole


def rfc4180(cell: str) -> str:
    """A CSV field, quoted when it holds a separator, a quote or a line break."""
    if any(c in cell for c in ',"\r\n'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


CELL = st.text(
    alphabet=st.sampled_from(list('ab ,"\n\r\t\u00e9\ufeff\x1f\x1e\x1d\x1c\x07')), max_size=12
)


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(st.tuples(CELL, CELL, CELL), max_size=12),
    eol=st.sampled_from(["\n", "\r\n"]),
    block=st.integers(min_value=1, max_value=96),
)
def test_csv_round_trip_in_any_block_size(
    records: list[tuple[str, str, str]], eol: str, block: int
) -> None:
    # Any RFC 4180 file comes back as written, rows numbered in order, in any block size.
    text = "".join(",".join(map(rfc4180, record)) + eol for record in [("a", "b", "c"), *records])
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        path = Path(tmp) / "r.csv"
        path.write_bytes(text.encode())
        patch.setattr(backfill.inputs, "BATCH_BYTES", block)
        rows = read(str(path))
    assert rows == [(i, None, *record) for i, record in enumerate(records, start=1)]


# JSONL read once per line against JSONPath per field.

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
JSONL_KEYS = ["a", "b", "c.d", "e f"]


def _jsonl_both_ways(
    chunk: bytes, columns: Sequence[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[pl.DataFrame, pl.DataFrame]:
    fast = backfill.inputs._jsonl_frame(chunk, 0, columns)
    with monkeypatch.context() as patch:
        patch.setattr(backfill.inputs, "_jsonl_read_once", lambda *_: None)
        slow = backfill.inputs._jsonl_frame(chunk, 0, columns)
    return fast, slow


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from(JSONL_KEYS), JSON_VALUES, max_size=4),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
)
def test_jsonl_read_once_reads_what_jsonpath_per_field_reads(
    records: list[dict[str, Any]], ascii_only: bool
) -> None:
    chunk = "\n".join(json.dumps(r, ensure_ascii=ascii_only) for r in records).encode()
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast, slow = _jsonl_both_ways(chunk, JSONL_KEYS, monkeypatch)
    assert fast.to_dicts() == slow.to_dicts()


def _written(pairs: list[tuple[str, Any]], spelling: list[tuple[bool, str, str]]) -> str:
    """An object line with its keys in order, given twice or not, spelled as drawn."""
    parts = []
    for (key, value), (escaped, before, after) in zip(pairs, spelling, strict=False):
        name = "".join(f"\\u{ord(c):04x}" for c in key) if escaped else json.dumps(key)[1:-1]
        parts.append(f'"{name}"{before}:{after}{json.dumps(value)}')
    return "{" + ",".join(parts) + "}"


JSONL_LINE_VALUES = JSON_VALUES | st.sampled_from(
    # Strings that look like numbers or hold keys, quotes and backslashes, and numbers
    # the reader writes otherwise than JSONPath.
    ["1.0", "-0", '{"a": 1}', '"a":', '\\"a\\":', "\\u0061", "a", "c.d", 1.0, -0.0, 1e2, 2**65]
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from([*JSONL_KEYS, "z", "x/y"]), JSONL_LINE_VALUES),
            max_size=6,
        ),
        min_size=1,
        max_size=6,
    ),
    st.lists(
        st.tuples(
            st.sampled_from([False, False, False, True]),  # a key written with escapes
            st.sampled_from(["", " "]),
            st.sampled_from(["", " "]),
        )
    ),
    st.lists(st.sampled_from(["", "  ", "\r"]), max_size=6),
)
def test_jsonl_read_once_reads_keys_given_twice_or_escaped_alike(
    lines: list[list[tuple[str, Any]]], spelling: list[tuple[bool, str, str]], ends: list[str]
) -> None:
    # Keys given twice (the last one wins), written with escapes, with spaces around the
    # colon, in any position; values that look like what they are not; blank lines.
    # Each line takes the spellings from its own place on, so lines differ.
    written = [_written(pairs, spelling[i:] + spelling[:i]) for i, pairs in enumerate(lines)]
    ends += [""] * len(written)
    text = "".join(line + end + "\n" for line, end in zip(written, ends, strict=False))
    keys = [*JSONL_KEYS, "x/y"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast, slow = _jsonl_both_ways(text.encode(), keys, monkeypatch)
    assert fast.to_dicts() == slow.to_dicts()


@pytest.mark.parametrize(
    "chunk",
    [
        b'{"a": "x", "a": "y"}',
        b'{"a": 1, "a": 2.5}',
        b'{"a": null, "a": "x", "b": "1", "\\u0063.d": 5}',
        b'{"c.d": "x", "c.d" : "y", "e f": "1", "e f": "2", "b": {"b": 1}}',
        b'{"a": "\\ud800"}\n{"a": "\\ud83d\\ude00"}',
        b'{"a": ' + b"[" * 200 + b"]" * 200 + b"}",
        b'{"a": 1e400}',
        b'{"a": 1.0, "b": -0, "c.d": 1E2}\n\n  \n{"a": [1, {"x": 2.50}]}\r\n',
        b'[1]\n{"a": 1}',
        b'{"a": 1} trailing',
        # A key given once as written and once with escapes, either way round: the last wins.
        b'{"a": "x", "\\u0061": "y"}',
        b'{"\\u0061": "x", "a": "y"}',
        b'{"a": "x", "b": "y", "a": null}',
        b'{"a": null, "b": "y", "a": "x"}',
        b'{"a" : "x", "a":"y"}',
        # A string value that holds a key, its quotes escaped; a value that is a key's name.
        b'{"b": "\\"a\\": 1", "a": "1.5"}\n{"b": "a", "a": "b"}',
        # A lone surrogate beside lines the reader reads alike; \/ in a key with a slash.
        b'{"a": "x"}\n{"a": "\\udc00"}\n{"a": 1.0}',
        b'{"x\\/y": 1.0, "a": "\\/"}',
        # Nested past JSONPath's depth in a field not asked for, and past Python's.
        b'{"a": "x", "z": ' + b"[" * 200 + b"]" * 200 + b"}",
        b'{"a": "x", "z": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        # Blank lines and line ends of every kind between lines read alike.
        b'\n  \n{"a": "1"}\r\n\r\n{"a": 2}\n\n',
        # Only the line end goes: a \r before it stays part of the line (as written out).
        b'{"a":"x"}\r\r\n{"a":"y"}\r\r\r\n',
        b'{"a":"x"}\r\r',
    ],
)
def test_jsonl_read_once_edge_cases(chunk: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, slow = _jsonl_both_ways(chunk, [*JSONL_KEYS, "x/y"], monkeypatch)
    assert fast.to_dicts() == slow.to_dicts()


def test_jsonl_lines_are_checked_when_no_column_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # An input that has none of the mapping's columns still has its broken lines named.
    chunk = b'{"x":1}\n{"x":1,}\n[1]\nnull\n{"x":tru}\n'
    fast, slow = _jsonl_both_ways(chunk, [], monkeypatch)
    assert fast.to_dicts() == slow.to_dicts()
    assert fast[MALFORMED].to_list() == [
        None,
        "not valid JSON",
        "not a JSON object",
        "not a JSON object",
        "not valid JSON",
    ]
