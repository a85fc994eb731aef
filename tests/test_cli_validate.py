"""``backfill validate``: the report a user reads, the files it writes, and its exit codes."""

from __future__ import annotations

import csv
import fcntl
import gc
import json
import os
import select
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

import backfill.inputs
from backfill.codes import Reason, Repair

Write = Callable[[str, str | bytes], str]
Run = Callable[..., Result]

# Two known leaks (a .gz input's file, see test_inputs.py; the inputs when --invalid-out cannot
# be written, see test_unwritable_invalid_out_closes_the_inputs) are tolerated where a test
# meets them, so the rest of what it checks still counts.
LEAKS_A_FILE = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*FileIO:pytest.PytestUnraisableExceptionWarning"
)

ONE_OF_EACH_REPORT = """\
Rows read:  13  (one_of_each.csv)
Valid:      2
Invalid:    11

Invalid rows by reason:
  malformed_row                      1  e.g. one_of_each.csv:3
  missing_embeddable_id              1  e.g. one_of_each.csv:4
  missing_timestamp                  1  e.g. one_of_each.csv:5
  missing_custom_event_name          1  e.g. one_of_each.csv:6
  missing_identifier_key             1  e.g. one_of_each.csv:7
  missing_identifier_value           1  e.g. one_of_each.csv:8
  bad_timestamp                      1  e.g. one_of_each.csv:9
  future_timestamp                   1  e.g. one_of_each.csv:10
  bad_event_name                     1  e.g. one_of_each.csv:11
  bad_metric                         1  e.g. one_of_each.csv:12
  bad_props                          1  e.g. one_of_each.csv:13

Repairs made:
          1  event names converted to snake_case
          1  identifier values unwrapped (already JSON-stringified)
          1  timestamps without offset read in the mapping's time zone

Event names (1 distinct, valid rows):
  signed_up          2

Embeddable ids (1 distinct, valid rows):
  flow_1          2

Timestamps: 2024-03-01T11:00:00.000Z .. 2024-03-01T12:00:00.000Z (UTC)
"""

ONE_OF_EACH_INVALID = [
    ("3", "malformed_row", "expected 8 fields, found 4"),
    ("4", "missing_embeddable_id", "column 'flow_id' is empty"),
    ("5", "missing_timestamp", "column 'occurred_at' is empty"),
    ("6", "missing_custom_event_name", "column 'event' is empty"),
    ("7", "missing_identifier_key", "column 'key' is empty"),
    ("8", "missing_identifier_value", "column 'email' is empty"),
    ("9", "bad_timestamp", "column 'occurred_at': cannot read 'yesterday' as a timestamp"),
    ("10", "future_timestamp", "column 'occurred_at': '2999-01-01T00:00:00Z' is in the future"),
    ("11", "bad_event_name", "column 'event': 'Café!' cannot be made snake_case"),
    ("12", "bad_metric", "column 'amount': 'lots' is not a number"),
    ("13", "bad_props", "column 'extra': '[1]' is not a JSON object"),
]
COLUMNS = ["flow_id", "occurred_at", "event", "key", "email", "amount", "plan", "extra"]


def identifier_mapping(type_: str) -> str:
    """A mapping whose identifier value is column 'id' of the given type."""
    return (
        '[fields]\nembeddable_id = "flow_id"\ntimestamp = "occurred_at"\n'
        'custom_event_name = "event"\n'
        f'[identifier]\nkey = {{ value = "customer_id" }}\n'
        f'value = {{ column = "id", type = "{type_}" }}\n'
    )


def identifier_csv(*cells: str) -> str:
    """An export whose rows differ only in their identifier value."""
    rows = "".join(f'flow_1,2024-03-01T12:00:00Z,signed_up,"{c}"\n' for c in cells)
    return "flow_id,occurred_at,event,id\n" + rows


def report_of(result: Result) -> dict[str, Any]:
    """The JSON report printed with --json."""
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# The text report and exit codes.


def test_one_row_of_each_reason(data: Path, run: Run) -> None:
    result = run("validate", "one_of_each.csv", "-m", "mapping.toml")
    assert result.exit_code == 1
    assert result.stdout == ONE_OF_EACH_REPORT
    assert result.stderr == ""


def test_all_valid(data: Path, run: Run) -> None:
    result = run("validate", "valid.csv", "-m", "mapping.toml")
    assert result.exit_code == 0
    assert result.stdout == (
        "Rows read:  3  (valid.csv)\n"
        "Valid:      3\n"
        "Invalid:    0\n"
        "\n"
        "Repairs made:\n"
        "          1  event names converted to snake_case\n"
        "          1  identifier values unwrapped (already JSON-stringified)\n"
        "\n"
        "Event names (2 distinct, valid rows):\n"
        "  signed_up                   2\n"
        "  checkout_completed          1\n"
        "\n"
        "Embeddable ids (2 distinct, valid rows):\n"
        "  flow_1          2\n"
        "  flow_2          1\n"
        "\n"
        "Timestamps: 2024-03-01T12:00:00.000Z .. 2024-03-02T07:30:00.250Z (UTC)\n"
    )


@pytest.mark.parametrize(
    ("type_", "cells", "invalid"),
    [
        pytest.param("number", ["123", "-1.5e3", '""42""'], [], id="number-valid"),
        pytest.param(
            "number",
            ["123", "12a", "1,5", "0x1F"],
            [
                ("2", "column 'id': '12a' is not valid number"),
                ("3", "column 'id': '1,5' is not valid number"),
                ("4", "column 'id': '0x1F' is not valid number"),
            ],
            id="number-invalid",
        ),
        pytest.param("json", ['{""a"": 1}', "[1, 2]", "7", '""x""'], [], id="json-valid"),
        pytest.param(
            "json",
            ["{bad", "x"],
            [
                ("1", "column 'id': '{bad' is not valid json"),
                ("2", "column 'id': 'x' is not valid json"),
            ],
            id="json-invalid",
        ),
        pytest.param("string", ["12a", "{bad", "x y"], [], id="string-anything-goes"),
    ],
)
def test_identifier_types(
    write: Write, run: Run, type_: str, cells: list[str], invalid: list[tuple[str, str]]
) -> None:
    write("m.toml", identifier_mapping(type_))
    write("ids.csv", identifier_csv(*cells))
    result = run("validate", "ids.csv", "-m", "m.toml", "--invalid-out", "bad.csv")
    assert result.exit_code == (1 if invalid else 0)
    with open("bad.csv", encoding="utf-8", newline="") as f:
        rows = [(r["row"], r["message"]) for r in csv.DictReader(f)]
    assert rows == invalid
    if invalid:
        assert report_of(run("validate", "ids.csv", "-m", "m.toml", "--json"))[
            "invalid_by_reason"
        ] == {Reason.BAD_IDENTIFIER_VALUE.value: len(invalid)}


def test_every_reason_and_repair_is_exercised(data: Path, write: Write, run: Run) -> None:
    # The reports above between them show every reason code and every repair kind.
    write("m.toml", identifier_mapping("number"))
    write("ids.csv", identifier_csv("12a"))
    reports = [
        report_of(run("validate", "one_of_each.csv", "-m", "mapping.toml", "--json")),
        report_of(run("validate", "ids.csv", "-m", "m.toml", "--json")),
    ]
    reasons = {code for report in reports for code in report["invalid_by_reason"]}
    repairs = {kind for report in reports for kind, n in report["repairs"].items() if n}
    assert reasons == {r.value for r in Reason}
    assert repairs == {r.value for r in Repair}


@pytest.mark.parametrize(
    ("args", "files", "message"),
    [
        pytest.param(
            ["valid.csv", "-m", "nope.toml"], {}, "nope.toml: no such mapping file", id="no-mapping"
        ),
        pytest.param(
            ["valid.csv", "-m", "m.toml"],
            {"m.toml": "[fields]\nembedable_id = 'flow_id'\n"},
            "m.toml: [fields] unknown key 'embedable_id' (did you mean 'embeddable_id'?);"
            " expected one of: embeddable_id, timestamp, custom_event_name",
            id="bad-mapping",
        ),
        pytest.param(
            ["valid.csv", "-m", "m.toml"],
            {"m.toml": "[fields\n"},
            "m.toml: not valid TOML: Expected ']' at the end of a table declaration"
            " (at line 1, column 8)",
            id="not-toml",
        ),
        pytest.param(
            ["other.csv", "-m", "mapping.toml"],
            {"other.csv": "flow_id,occured_at,event,key,email,amount,plan,extra\n"},
            "mapping.toml: fields.timestamp: column 'occurred_at' is not in other.csv"
            " (did you mean 'occured_at'?)",
            id="column-not-in-input",
        ),
        pytest.param(
            ["other.csv", "more.csv", "-m", "mapping.toml"],
            {"other.csv": "a,b\n1,2\n", "more.csv": "a,c\n1,2\n"},
            "mapping.toml: fields.embeddable_id: column 'flow_id' is not in other.csv;"
            " its columns are: a, b",
            id="column-in-no-input",
        ),
        pytest.param(
            ["valid.csv", "nope.csv", "-m", "mapping.toml"],
            {},
            "nope.csv: no such file",
            id="second-input-missing",
        ),
        pytest.param(
            ["valid.csv", "-m", "mapping.toml", "--invalid-out", "no/such/dir/bad.csv"],
            {},
            "no/such/dir/bad.csv: cannot write: No such file or directory",
            id="invalid-out-unwritable",
            marks=LEAKS_A_FILE,
        ),
    ],
)
def test_nothing_read_exits_2(
    data: Path, write: Write, run: Run, args: list[str], files: dict[str, str], message: str
) -> None:
    for name, content in files.items():
        write(name, content)
    result = run("validate", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {message}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["valid.csv"], "Missing option '-m' / '--mapping'.", id="no-mapping-option"),
        pytest.param(["-m", "mapping.toml"], "Missing argument 'INPUTS...'.", id="no-input"),
        pytest.param(
            ["valid.csv", "-m", "mapping.toml", "--format", "xml"],
            "Invalid value for '--format': 'xml' is not one of"
            " 'csv', 'tsv', 'jsonl', 'json', 'parquet'.",
            id="bad-format",
        ),
    ],
)
def test_usage_errors_exit_2(data: Path, run: Run, args: list[str], message: str) -> None:
    result = run("validate", *args)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == f"Error: {message}"


# --report, --json and --invalid-out.


def test_report_file(data: Path, run: Run) -> None:
    result = run("validate", "one_of_each.csv", "-m", "mapping.toml", "--report", "r.json")
    assert result.exit_code == 1
    assert result.stdout == ONE_OF_EACH_REPORT
    report = json.loads(Path("r.json").read_text())
    assert (report["rows"], report["valid"], report["invalid"]) == (13, 2, 11)
    # Counted by reason in the order the rules are checked.
    assert list(report["invalid_by_reason"].items()) == [
        (reason, 1) for _, reason, _ in ONE_OF_EACH_INVALID
    ]
    assert report["repairs"] == {r.value: 1 for r in Repair}
    assert report["examples"] == {
        reason: [{"source": "one_of_each.csv", "row": int(row)}]
        for row, reason, _ in ONE_OF_EACH_INVALID
    }
    assert report["sources"] == ["one_of_each.csv"]


def test_json_prints_the_report_file(data: Path, run: Run) -> None:
    result = run(
        "validate", "one_of_each.csv", "-m", "mapping.toml", "--json", "--report", "r.json"
    )
    assert result.exit_code == 1
    assert report_of(result) == json.loads(Path("r.json").read_text())


def test_examples_are_capped(write: Write, data: Path, run: Run) -> None:
    rows = "".join("flow_1,yesterday,e,email,a@b.c,,,\n" for _ in range(7))
    write("many.csv", ",".join(COLUMNS) + "\n" + rows)
    report = report_of(run("validate", "many.csv", "-m", "mapping.toml", "--json"))
    assert report["invalid_by_reason"] == {"bad_timestamp": 7}
    assert report["examples"]["bad_timestamp"] == [
        {"source": "many.csv", "row": n} for n in range(1, 6)
    ]


def test_invalid_out_csv(data: Path, run: Run) -> None:
    result = run("validate", "one_of_each.csv", "-m", "mapping.toml", "--invalid-out", "bad.csv")
    assert result.exit_code == 1
    with open("bad.csv", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["source", "row", "reason", "message", *COLUMNS]
    assert [(r["source"], r["row"], r["reason"], r["message"]) for r in rows] == [
        ("one_of_each.csv", *row) for row in ONE_OF_EACH_INVALID
    ]
    assert rows[6] == {
        "source": "one_of_each.csv",
        "row": "9",
        "reason": "bad_timestamp",
        "message": "column 'occurred_at': cannot read 'yesterday' as a timestamp",
        "flow_id": "flow_1",
        "occurred_at": "yesterday",
        "event": "signed_up",
        "key": "email",
        "email": "ada@example.com",
        "amount": "",
        "plan": "",
        "extra": "",
    }


def test_invalid_out_jsonl(data: Path, run: Run) -> None:
    result = run("validate", "one_of_each.csv", "-m", "mapping.toml", "--invalid-out", "bad.jsonl")
    assert result.exit_code == 1
    records = [json.loads(line) for line in Path("bad.jsonl").read_text().splitlines()]
    assert [(r["source"], r["row"], r["reason"], r["message"]) for r in records] == [
        ("one_of_each.csv", int(row), reason, message)
        for row, reason, message in ONE_OF_EACH_INVALID
    ]
    assert list(records[-1]) == ["source", "row", "reason", "message", *COLUMNS]
    assert records[-1]["extra"] == "[1]"


def test_invalid_out_of_a_jsonl_input_keeps_the_line(data: Path, run: Run) -> None:
    result = run("validate", "events.jsonl", "-m", "mapping.toml", "--invalid-out", "bad.jsonl")
    assert result.exit_code == 1
    records = [json.loads(line) for line in Path("bad.jsonl").read_text().splitlines()]
    assert records == [
        {
            "source": "events.jsonl",
            "row": 4,
            "reason": "malformed_row",
            "message": "not a JSON object",
            "line": "[1, 2]",
        },
        {
            "source": "events.jsonl",
            "row": 5,
            "reason": "bad_timestamp",
            "message": "column 'occurred_at': cannot read 'soon' as a timestamp",
            "line": '{"flow_id": "flow_2", "occurred_at": "soon", "event": "signed_up",'
            ' "key": "email", "email": "b@example.com"}',
        },
    ]


def test_invalid_out_with_no_invalid_rows_has_a_header(data: Path, run: Run) -> None:
    result = run("validate", "valid.csv", "-m", "mapping.toml", "--invalid-out", "bad.csv")
    assert result.exit_code == 0
    assert (
        Path("bad.csv").read_text()
        == ",".join(["source", "row", "reason", "message", *COLUMNS]) + "\n"
    )


# Several inputs in one run.


def test_csv_and_jsonl_in_one_run(data: Path, run: Run) -> None:
    result = run(
        "validate",
        "one_of_each.csv",
        "events.jsonl",
        "-m",
        "mapping.toml",
        "--invalid-out",
        "bad.csv",
        "--report",
        "r.json",
    )
    assert result.exit_code == 1
    assert result.stdout.splitlines()[:7] == [
        "Rows read:  17  (one_of_each.csv, events.jsonl)",
        "Valid:      4",
        "Invalid:    13",
        "",
        "Invalid rows by reason:",
        "  malformed_row                      2  e.g. one_of_each.csv:3, events.jsonl:4",
        "  missing_embeddable_id              1  e.g. one_of_each.csv:4",
    ]
    report = json.loads(Path("r.json").read_text())
    assert report["examples"]["bad_timestamp"] == [
        {"source": "one_of_each.csv", "row": 9},
        {"source": "events.jsonl", "row": 5},
    ]
    assert report["repairs"] == {
        "event_name_converted": 2,
        "identifier_unwrapped": 2,
        "timezone_assumed": 1,
    }
    with open("bad.csv", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = [(r["source"], r["row"], r["reason"], r["line"]) for r in reader]
    assert reader.fieldnames == ["source", "row", "reason", "message", *COLUMNS, "line"]
    assert rows[-2:] == [
        ("events.jsonl", "4", "malformed_row", "[1, 2]"),
        ("events.jsonl", "5", "bad_timestamp", rows[-1][3]),
    ]
    assert rows[0] == ("one_of_each.csv", "3", "malformed_row", "")


def test_jsonl_columns_come_from_the_first_lines(
    write: Write, data: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A field first seen after the sampled lines (1000; 2 here) is taken for a mapping typo.
    monkeypatch.setattr(backfill.inputs, "JSONL_SAMPLE_LINES", 2)
    first = {c: "x" for c in COLUMNS if c != "amount"}
    lines = [first, first, {**first, "amount": 3}]
    write("late.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    result = run("validate", "late.jsonl", "-m", "mapping.toml")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: mapping.toml: props.metrics: column 'amount' is not in late.jsonl;"
        " its columns are: flow_id, occurred_at, event, key, email, plan, extra\n"
    )


def test_same_file_twice_is_refused(data: Path, run: Run) -> None:
    # validate and send share the check: sending a file twice would send every row twice.
    result = run("validate", "valid.csv", "./valid.csv", "-m", "mapping.toml", "--json")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: ./valid.csv: given twice (as valid.csv); every row would be sent twice\n"
    )


# A corpus of broken inputs: a one-line error or invalid rows, never a traceback.


@pytest.mark.parametrize(
    ("path", "code", "stderr", "invalid"),
    [
        pytest.param(
            "broken/empty.csv",
            2,
            "error: broken/empty.csv: file is empty (no header or rows)\n",
            None,
            id="empty",
        ),
        pytest.param("broken/header_only.csv", 0, "", {}, id="header-only"),
        pytest.param("broken/latin1.csv", 1, "", {"malformed_row": 1}, id="non-utf8-row"),
        pytest.param(
            "broken/utf16_header.csv",
            2,
            "error: broken/utf16_header.csv: the header row is not valid UTF-8\n",
            None,
            id="utf16",
        ),
        pytest.param(
            "broken/unterminated_quote.csv",
            1,
            "",
            {"malformed_row": 1},
            id="unterminated-quote",
        ),
        pytest.param("broken/array_line.jsonl", 1, "", {"malformed_row": 1}, id="jsonl-array-line"),
        pytest.param(
            "broken/not_gzip.csv.gz",
            2,
            "error: mapping.toml: fields.embeddable_id: column 'flow_id' is not in"
            " broken/not_gzip.csv.gz; its columns are: this is not gzip\n",
            None,
            id="not-gzip",
        ),
        pytest.param(
            "broken/truncated.csv.gz",
            2,
            "error: broken/truncated.csv.gz: compressed data is corrupt or truncated after"
            " row 0 (Compressed file ended before the end-of-stream marker was reached)\n",
            None,
            id="truncated-gzip",
            marks=LEAKS_A_FILE,
        ),
        pytest.param(
            "broken",
            2,
            "error: broken/empty.csv: file is empty (no header or rows)\n",  # the first, by name
            None,
            id="directory",
        ),
        pytest.param(
            "dir.csv",
            2,
            "error: dir.csv: no files under this directory\n",
            None,
            id="directory-named-csv",
        ),
        pytest.param(
            "broken/missing.csv",
            2,
            "error: broken/missing.csv: no such file\n",
            None,
            id="missing",
        ),
        pytest.param(
            "broken/unknown_extension.txt",
            2,
            "error: broken/unknown_extension.txt: unknown input format (expected .csv, .tsv,"
            " .jsonl, .ndjson, .json or .parquet, optionally .gz; or give --format)\n",
            None,
            id="unknown-extension",
        ),
        pytest.param(
            "-",
            2,
            "error: -: reading stdin needs --format csv, tsv, jsonl, json or parquet\n",
            None,
            id="stdin-without-format",
        ),
    ],
)
def test_broken_inputs(
    data: Path,
    run: Run,
    path: str,
    code: int,
    stderr: str,
    invalid: dict[str, int] | None,
) -> None:
    (data / "dir.csv").mkdir()
    result = run("validate", path, "-m", "mapping.toml", "--json", input="")
    assert result.exit_code == code
    assert result.stderr == stderr
    if invalid is None:
        assert result.stdout == ""
    else:
        assert report_of(result)["invalid_by_reason"] == invalid


def test_broken_rows_are_explained(data: Path, run: Run) -> None:
    result = run(
        "validate",
        "broken/latin1.csv",
        "broken/unterminated_quote.csv",
        "broken/array_line.jsonl",
        "-m",
        "mapping.toml",
        "--invalid-out",
        "bad.jsonl",
    )
    assert result.exit_code == 1
    records = [json.loads(line) for line in Path("bad.jsonl").read_text().splitlines()]
    assert [(r["source"], r["row"], r["message"]) for r in records] == [
        ("broken/latin1.csv", 1, "not valid UTF-8"),
        ("broken/unterminated_quote.csv", 1, "a quote opened in this row is never closed"),
        ("broken/array_line.jsonl", 2, "not a JSON object"),
    ]


# Bugs found and fixed: unwritable outputs, outputs over inputs, column clashes.


def test_report_unwritable(data: Path, run: Run) -> None:
    result = run("validate", "valid.csv", "-m", "mapping.toml", "--report", "no/such/dir/r.json")
    assert result.exit_code == 2
    assert result.stderr == "error: no/such/dir/r.json: cannot write: No such file or directory\n"


def test_unwritable_invalid_out_closes_the_inputs(data: Path, run: Run) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run("validate", "valid.csv", "-m", "mapping.toml", "--invalid-out", "no/x.csv")
        assert result.exit_code == 2
        del result
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_stdin_twice(data: Path, run: Run) -> None:
    content = Path("valid.csv").read_text()
    result = run("validate", "-", "-", "--format", "csv", "-m", "mapping.toml", input=content)
    assert result.exit_code == 2
    assert result.stderr == "error: -: stdin can be given only once\n"


def test_invalid_out_over_an_input_is_refused(data: Path, run: Run) -> None:
    original = Path("one_of_each.csv").read_bytes()
    result = run(
        "validate", "one_of_each.csv", "-m", "mapping.toml", "--invalid-out", "one_of_each.csv"
    )
    assert Path("one_of_each.csv").read_bytes() == original
    assert result.exit_code == 2


def test_input_column_named_row(write: Write, data: Path, run: Run) -> None:
    write("r.csv", ",".join([*COLUMNS, "row"]) + "\nflow_1,soon,e,email,a@b.c,,,,7\n")
    result = run("validate", "r.csv", "-m", "mapping.toml", "--invalid-out", "bad.csv")
    assert result.exit_code == 1


def test_input_columns_named_like_invalid_out_columns(write: Write, data: Path, run: Run) -> None:
    header = ",".join([*COLUMNS, "source", "message"])
    write("r.csv", header + "\nflow_1,soon,e,email,a@b.c,,,,newsletter,hello\n")
    run("validate", "r.csv", "-m", "mapping.toml", "--invalid-out", "bad.jsonl")
    record = json.loads(Path("bad.jsonl").read_text())
    assert "newsletter" in record.values()
    assert "hello" in record.values()


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(["__row", "__malformed", "__line"], id="reader"),
        pytest.param(["*", "^f.*$", "^x$"], id="polars-patterns"),
    ],
)
def test_invalid_out_keeps_columns_named_like_the_readers_or_like_patterns(
    write: Write, data: Path, run: Run, names: list[str]
) -> None:
    write("r.csv", ",".join([*COLUMNS, *names]) + "\nflow_1,soon,e,email,a@b.c,,,,x,y,z\n")
    result = run("validate", "r.csv", "-m", "mapping.toml", "--invalid-out", "bad.csv")
    assert result.exit_code == 1
    assert Path("bad.csv").read_text(encoding="utf-8") == (
        ",".join(["source", "row", "reason", "message", *COLUMNS, *names]) + "\n"
        "r.csv,1,bad_timestamp,column 'occurred_at': cannot read 'soon' as a timestamp,"
        'flow_1,soon,e,email,a@b.c,"","","",x,y,z\n'
    )
    run("validate", "r.csv", "-m", "mapping.toml", "--invalid-out", "bad.jsonl")
    record = json.loads(Path("bad.jsonl").read_text(encoding="utf-8"))
    assert list(record.items())[-3:] == list(zip(names, "xyz", strict=True))


def test_event_column_named_event_name(write: Write, run: Run) -> None:
    write(
        "m.toml",
        '[fields]\nembeddable_id = "flow_id"\ntimestamp = "ts"\n'
        'custom_event_name = { column = "event_name", snake_case = "convert" }\n'
        '[identifier]\nkey = { value = "email" }\nvalue = "email"\n',
    )
    write("e.csv", "flow_id,ts,event_name,email\nflow_1,2024-03-01T12:00:00Z,Signed Up,a@b.c\n")
    result = run("validate", "e.csv", "-m", "m.toml", "--json")
    assert report_of(result)["event_names"] == {"signed_up": 1}


def test_validate_and_dry_run_never_load_the_http_stack() -> None:
    # aiohttp costs a third of a second to import: a tenth of validating a million rows.
    sample = Path(__file__).parent.parent / "sample_data"
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from backfill.cli import cli\n"
        "for extra in (['validate'], ['send', '--dry-run']):\n"
        "    result = CliRunner().invoke(cli, [*extra, sys.argv[1], '-m', sys.argv[2]])\n"
        "    assert result.exit_code == 1, result.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))\n"
    )
    args = [sys.executable, "-c", script, str(sample / "events.csv"), str(sample / "mapping.toml")]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"


def test_a_column_one_input_lacks_reads_as_empty_there(data: Path, write: Write, run: Run) -> None:
    # Several inputs (a directory of exports, say) need not all have every column.
    write("other.csv", "occurred_at,event,key,email\n2024-03-01T12:00:00Z,signed_up,email,a@x.io\n")
    result = run("validate", "valid.csv", "other.csv", "-m", "mapping.toml", "--json")
    report = json.loads(result.output)
    assert report["invalid_by_reason"] == {"missing_embeddable_id": 1}
    assert report["examples"]["missing_embeddable_id"] == [{"source": "other.csv", "row": 1}]


@pytest.mark.skipif(not hasattr(os, "mkfifo") or sys.platform != "linux", reason="F_SETPIPE_SZ")
def test_a_broken_pipe_that_is_not_standard_output_is_an_error(tmp_path: Path) -> None:
    """The report goes to a FIFO whose reader leaves mid-write; stdout is fine: not exit 141."""
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    fcntl.fcntl(reader, 1031, 4096)  # F_SETPIPE_SZ: one page, less than the report
    repo = Path(__file__).parent.parent
    args = ["validate", str(repo / "sample_data" / "events.csv")]
    args += ["-m", str(repo / "sample_data" / "mapping.toml"), "--report", str(fifo)]
    command = subprocess.Popen(
        [sys.executable, "-m", "backfill", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        select.select([reader], [], [], 60)  # the report's first page is written
    finally:
        os.close(reader)  # and the reader leaves, the rest of the report unread
    out, err = command.communicate(timeout=60)
    assert command.returncode == 2, (out, err)
    assert err.startswith("error: ") and "Broken pipe" in err
