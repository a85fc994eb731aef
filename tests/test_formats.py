"""Exports as other tools write them: JSON arrays, Parquet, sniffed gzip, zip archives,
directories, and CSV in other dialects (delimiters, encodings, decimal commas)."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.conftest import Run, Write, read_records

MAPPING = """\
[fields]
embeddable_id = { value = "flow_1" }
timestamp = "time"
custom_event_name = "event"

[identifier]
key = { value = "email" }
value = "email"
"""


def rows(n: int, start: int = 1) -> list[dict[str, Any]]:
    """Export rows: row i is event e{i} of user u{i}."""
    return [
        {"event": f"e{i}", "time": "2024-03-01T12:00:00Z", "email": f"u{i}@x.io"}
        for i in range(start, start + n)
    ]


def jsonl(records: list[dict[str, Any]]) -> bytes:
    """JSON Lines of the records."""
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def report(run: Run, *inputs: str, mapping: str = "m.toml", extra: tuple[str, ...] = ()) -> Any:
    """validate --json's report (the run must read the inputs)."""
    result = run("validate", *inputs, "-m", mapping, "--json", *extra)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.output)


def sent(run: Run, *inputs: str, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """send --sandbox the inputs: their records, by source and row."""
    result = run("send", *inputs, "-m", "m.toml", "--sandbox", "-o", "r.jsonl", *extra)
    assert result.exit_code in (0, 1), result.output
    return sorted(read_records("r.jsonl"), key=lambda r: (r["source"], r["row"]))


def events(records: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    """(source, row, event name sent) of each record."""
    return [(r["source"], r["row"], json.loads(r["payload"])["custom_event_name"]) for r in records]


@pytest.fixture(autouse=True)
def mapping_file(write: Write) -> None:
    write("m.toml", MAPPING)


# --- JSON -------------------------------------------------------------------------------


def test_a_json_array_is_read_element_by_element(write: Write, run: Run) -> None:
    tricky = {"event": "e2", "time": "2024-03-01T12:00:00Z", "email": "u2@x.io"}
    tricky["note"] = 'a "quote", a [bracket], a {brace}, a \\ and ,'
    array = json.dumps([rows(1)[0], tricky, *rows(2, start=3)], indent=2)
    write("a.json", array)
    write("b.json", jsonl(rows(2)))  # a .json of JSON Lines
    assert events(sent(run, "a.json", "b.json")) == [
        ("a.json", 1, "e1"),
        ("a.json", 2, "e2"),
        ("a.json", 3, "e3"),
        ("a.json", 4, "e4"),
        ("b.json", 1, "e1"),
        ("b.json", 2, "e2"),
    ]


def test_a_json_array_of_other_things_and_a_cut_array(write: Write, run: Run) -> None:
    write("a.json", '[{"event": "e1", "time": "2024-03-01T12:00:00Z", "email": "a@x"}, 5]')
    found = report(run, "a.json")
    assert (found["valid"], found["invalid_by_reason"]) == (1, {"malformed_row": 1})
    write("cut.json", '[{"event": "e1", "time": "2024-03-01T12:00:00Z", "email": "a@x"},')
    result = run("validate", "cut.json", "-m", "m.toml")
    assert (result.exit_code, result.output) == (
        2,
        "error: cut.json: the JSON array is cut short (never closed)\n",
    )


# --- Parquet ------------------------------------------------------------------------------


def test_parquet_keeps_native_types(write: Write, run: Run, workdir: Path) -> None:
    frame = pl.DataFrame(
        {
            "event": ["a", "b", "c"],
            "time": [datetime(2024, 3, 1, 12, 0, 0, 123456)] * 3,  # naive: the mapping's zone
            "at": pl.Series([datetime(2024, 3, 1, 12, tzinfo=UTC)] * 3),
            "user": [{"email": "A@x.io", "age": 3}, {"email": "b@x.io", "age": None}, None],
            "amount": [1.5, 2.0, None],
            "params": [[{"key": "k", "value": {"int_value": 1}}], [], None],
            "blob": [b"x", b"y", b"z"],  # a type with no text form, which the mapping never reads
        }
    )
    frame.write_parquet(workdir / "e.parquet", row_group_size=2)
    write(
        "m.toml",
        MAPPING.replace('value = "email"', 'value = "user.email"').replace(
            'timestamp = "time"', 'timestamp = { column = "time", timezone = "Europe/Berlin" }'
        )
        + '[props]\nmetrics = ["amount"]\njson_column = "params"\ncolumns = ["at"]\n',
    )
    records = sent(run, "e.parquet")
    bodies = [json.loads(r["payload"]) if r["payload"] else r["error"] for r in records]
    assert [r["row"] for r in records] == [1, 2, 3]
    assert bodies[0]["timestamp"] == "2024-03-01T11:00:00.123Z"
    assert json.loads(bodies[0]["identifiers"][0]["value"]) == "A@x.io"
    assert json.loads(bodies[0]["custom_event_props"]) == {
        "k": 1,
        "payload_metrics": {"amount": 1.5},
        "at": "2024-03-01T12:00:00Z",
    }
    assert json.loads(bodies[1]["custom_event_props"]) == {
        "payload_metrics": {"amount": 2.0},
        "at": "2024-03-01T12:00:00Z",
    }
    assert bodies[2] == "missing_identifier_value"


def test_a_parquet_column_without_a_text_form_is_refused_when_read(
    workdir: Path, write: Write, run: Run
) -> None:
    pl.DataFrame({"event": ["a"], "time": [b"\x00"], "email": ["a@x"]}).write_parquet(
        workdir / "e.parquet"
    )
    result = run("validate", "e.parquet", "-m", "m.toml")
    assert (result.exit_code, result.output) == (
        2,
        "error: e.parquet: column 'time' is of the Parquet type Binary, which has no text"
        " form to read\n",
    )
    write("bad.parquet", b"PAR1 this is not parquet")
    result = run("validate", "bad.parquet", "-m", "m.toml")
    assert result.exit_code == 2
    assert result.output.startswith("error: bad.parquet: not a readable Parquet file (")


# --- gzip, zip and directories ---------------------------------------------------------------


def test_gzip_is_sniffed_and_a_name_that_says_nothing_is_json_lines(write: Write, run: Run) -> None:
    write("part-0001.gz", gzip.compress(jsonl(rows(2))))  # Segment's S3 archive names
    write("export", jsonl(rows(1)))
    assert events(sent(run, "part-0001.gz", "export")) == [
        ("export", 1, "e1"),
        ("part-0001.gz", 1, "e1"),
        ("part-0001.gz", 2, "e2"),
    ]


def zip_of(members: dict[str, bytes | None]) -> bytes:
    """A zip archive of the members (None: a directory entry)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            if content is None:
                archive.writestr(zipfile.ZipInfo(name), b"")
            else:
                archive.writestr(name, content)
    return buffer.getvalue()


def test_a_zip_is_read_member_by_member_in_name_order(write: Write, run: Run) -> None:
    members: dict[str, bytes | None] = {
        "b/2.json.gz": gzip.compress(jsonl(rows(1, start=3))),  # Amplitude's export archive
        "a.jsonl": jsonl(rows(2)),
        "b/": None,
        "_SUCCESS": b"",
    }
    write("export.zip", zip_of(members))
    assert events(sent(run, "export.zip")) == [
        ("export.zip!a.jsonl", 1, "e1"),
        ("export.zip!a.jsonl", 2, "e2"),
        ("export.zip!b/2.json.gz", 1, "e3"),
    ]


def test_a_zip_member_that_is_not_an_export_is_named(write: Write, run: Run) -> None:
    write("export.zip", zip_of({"a.jsonl": jsonl(rows(1)), "README.txt": b"hello"}))
    result = run("validate", "export.zip", "-m", "m.toml")
    assert (result.exit_code, result.output) == (
        2,
        "error: export.zip!README.txt: unknown input format (expected .csv, .tsv, .jsonl,"
        " .ndjson, .json or .parquet, optionally .gz; or give --format)\n",
    )
    write("empty.zip", zip_of({"dir/": None}))
    result = run("validate", "empty.zip", "-m", "m.toml")
    assert (result.exit_code, result.output) == (
        2,
        "error: empty.zip: the zip archive holds no files\n",
    )


def test_a_directory_is_read_recursively_in_name_order(write: Write, run: Run) -> None:
    write("exports/2024/02.jsonl", jsonl(rows(1, start=2)))
    write("exports/2024/01.csv", "event,time,email\ne1,2024-03-01T12:00:00Z,u1@x.io\n")
    write("exports/.hidden.jsonl", b"not read")
    write("exports/_SUCCESS", b"")
    write("exports/z.zip", zip_of({"x.jsonl": jsonl(rows(1, start=3))}))
    assert events(sent(run, "exports")) == [
        ("exports/2024/01.csv", 1, "e1"),
        ("exports/2024/02.jsonl", 1, "e2"),
        ("exports/z.zip!x.jsonl", 1, "e3"),
    ]


def test_a_file_given_with_its_directory_is_refused(write: Write, run: Run) -> None:
    write("exports/a.jsonl", jsonl(rows(1)))
    result = run("validate", "exports", "exports/a.jsonl", "-m", "m.toml")
    assert (result.exit_code, result.output) == (
        2,
        "error: exports/a.jsonl: given twice; every row would be sent twice\n",
    )


def test_resume_and_retry_with_a_directory(write: Write, run: Run) -> None:
    write("exports/a.jsonl", jsonl(rows(3)))
    write("exports/b.jsonl", jsonl(rows(2, start=4)))
    send = ("send", "exports", "-m", "m.toml", "--sandbox", "-o", "r.jsonl")
    assert run(*send, "--limit", "2").exit_code == 0
    assert run(*send, "--resume").exit_code == 0
    assert len(read_records("r.jsonl")) == 5
    retry = ("retry", "r.jsonl", "exports", "-m", "m.toml", "-o", "again.jsonl", "--sandbox")
    assert run(*retry, "--status", "sent").exit_code == 0
    assert [(r["source"], r["row"]) for r in read_records("again.jsonl")] != []
    write("exports/b.jsonl", jsonl(rows(2, start=6)))  # changed since
    refused = run(*send, "--resume")
    assert refused.exit_code == 2
    assert "has changed since the run started" in refused.output


# --- CSV dialects ---------------------------------------------------------------------------

SPREADSHEET = "event;time;email;Betrag\r\ncafé;2024-03-01 12:00:00;a@x.io;1.234,50\r\n"


def test_a_spreadsheet_csv_with_its_dialect_in_the_mapping(write: Write, run: Run) -> None:
    write("s.csv", SPREADSHEET.encode("cp1252"))
    dialect = '[input]\ndelimiter = ";"\nencoding = "cp1252"\ndecimal_comma = true\n'
    props = '[props]\nmetrics = ["Betrag"]\n'
    write(
        "m.toml",
        MAPPING.replace('custom_event_name = "event"', 'custom_event_name = { value = "imported" }')
        + props
        + dialect,
    )
    [record] = sent(run, "s.csv")
    payload = json.loads(record["payload"])
    assert json.loads(payload["custom_event_props"]) == {"payload_metrics": {"Betrag": 1234.5}}


def test_the_command_line_dialect_wins_and_auto_sniffs(write: Write, run: Run) -> None:
    write("s.csv", SPREADSHEET.encode("cp1252"))
    write("m.toml", MAPPING + '[input]\ndelimiter = ","\n')
    found = report(run, "s.csv", extra=("--delimiter", "auto", "--encoding", "cp1252"))
    assert (found["rows"], found["valid"]) == (1, 0)  # café is not snake_case: read right
    assert found["invalid_by_reason"] == {"bad_event_name": 1}
    assert found["example_messages"]["bad_event_name"] == [
        "column 'event': 'café' is not snake_case"
    ]


def test_a_byte_the_encoding_cannot_read_names_its_row_and_column(write: Write, run: Run) -> None:
    # 0x81 is not a cp1252 character.
    write(
        "s.csv",
        b"event,time,email\ne1,2024-03-01T12:00:00Z,a\x81@x.io\ne2,2024-03-01T12:00:00Z,b@x\n",
    )
    result = run("validate", "s.csv", "-m", "m.toml", "--encoding", "cp1252", "--json")
    found = json.loads(result.output)
    assert found["examples"]["malformed_row"] == [{"source": "s.csv", "row": 1}]
    assert found["example_messages"]["malformed_row"] == [
        "column 'email': bytes that are not cp1252"
    ]
    assert found["valid"] == 1


def test_utf16_with_its_bom_and_a_tab_delimiter(write: Write, run: Run) -> None:
    text = "event\ttime\temail\ne1\t2024-03-01T12:00:00Z\ta@x.io\n"
    write("s.txt", text.encode("utf-16"))
    found = report(
        run, "s.txt", extra=("--format", "csv", "--encoding", "utf-16", "--delimiter", "\\t")
    )
    assert (found["rows"], found["valid"]) == (1, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("--delimiter", ";;"),
            'error: --delimiter must be one character (",", ";", "\\t", "|") or "auto",'
            " got ';;'\n",
            id="delimiter",
        ),
        pytest.param(
            ("--encoding", "klingon"),
            "error: --encoding: unknown encoding 'klingon'\n",
            id="encoding",
        ),
    ],
)
def test_a_bad_dialect_is_refused(
    write: Write, run: Run, args: tuple[str, ...], message: str
) -> None:
    write("s.csv", "event,time,email\n")
    result = run("validate", "s.csv", "-m", "m.toml", *args)
    assert (result.exit_code, result.output) == (2, message)


def test_decimal_commas_never_misread_a_dot(write: Write, run: Run) -> None:
    lines = ["event;time;email;n"] + [
        f"e;2024-03-01T12:00:00Z;a@x;{n}" for n in ("12,5", "1.234,50", "-3", "12.5", "1.23")
    ]
    write("s.csv", "\n".join(lines) + "\n")
    write(
        "m.toml",
        MAPPING + '[props]\nmetrics = ["n"]\n[input]\ndelimiter = ";"\ndecimal_comma = true\n',
    )
    records = sent(run, "s.csv")
    metrics = [
        json.loads(json.loads(r["payload"])["custom_event_props"])["payload_metrics"]["n"]
        if r["payload"]
        else r["message"]
        for r in records
    ]
    assert metrics == [
        12.5,
        1234.5,
        -3,
        "column 'n': '12.5' is not a number",  # a dot that groups no thousands: ambiguous
        "column 'n': '1.23' is not a number",
    ]


def test_a_tab_delimiter_in_the_mapping_and_a_utf16_file_without_its_mark(
    write: Write, run: Run
) -> None:
    write("s.csv", "event\ttime\temail\ne1\t2024-03-01T12:00:00Z\ta@x.io\n")
    write("m.toml", MAPPING + '[input]\ndelimiter = "\\t"\n')
    assert report(run, "s.csv")["valid"] == 1
    write("u.csv", "event,time,email\n".encode("utf-16-le"))
    result = run("validate", "u.csv", "-m", "m.toml", "--encoding", "utf-16")
    assert result.exit_code == 2
    assert result.output.startswith("error: u.csv: cannot be read as utf-16 (")


@pytest.mark.parametrize("row_group", [700, 4096, 10_000])
def test_parquet_batches_number_every_row_once_in_order(workdir: Path, row_group: int) -> None:
    # Slices read across row-group boundaries and split into batches: no row lost, none twice.
    from backfill.inputs import ROW, batches, frame_column, open_input

    path = workdir / "e.parquet"
    pl.DataFrame(rows(10_000)).write_parquet(path, row_group_size=row_group)
    inp = open_input(str(path))
    try:
        frames = list(batches(inp, ["event"], batch_bytes=1024 * 128))  # 1,024 rows a batch
    finally:
        inp.close()
    assert max(f.height for f in frames) == 1024
    read = pl.concat(frames)
    assert read[ROW].to_list() == list(range(1, 10_001))
    assert read[frame_column("event")].to_list() == [f"e{i}" for i in range(1, 10_001)]
