"""``backfill init``: the guesses a user reads, the mapping it writes, and its refusals.

Every mapping written here is run through ``backfill validate`` unedited: it must check the
rows (exit 0 or 1), never be refused (exit 2).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import Result

from backfill.mapping import Mapping, Source, load_mapping

Write = Callable[[str, str | bytes], str]
Run = Callable[..., Result]

REPO = Path(__file__).parent.parent
EMBEDDABLE_WARNING = (
    "warning: no column is named like an embeddable id: every row goes to the placeholder"
    " 'REPLACE_WITH_EMBEDDABLE_ID' (validate accepts it); fill in fields.embeddable_id"
    " before sending\n"
)
EVENT_WARNING = (
    "warning: no column holds event names: every row gets the placeholder"
    " 'REPLACE_WITH_EVENT_NAME', which validate rejects until you fill in"
    " fields.custom_event_name\n"
)
SEMICOLONS = (
    "flow_id;occurred_at;event;email\n"
    "flow_1;2024-03-01T12:00:00Z;signed_up;a@example.com\n"
    "flow_1;2024-03-02T12:00:00Z;signed_up;b@example.com\n"
)
# What init says it sniffed of a comma-delimited UTF-8 file (with the header's commas).
COMMAS = """\
  delimiter: "," (sniffed: the header holds {} ',')
  encoding: utf-8 (sniffed: the file decodes as UTF-8)
  decimal_comma: false (the delimiter is ',', so decimals are points)
"""
SAMPLE_GUESSES = """\
  embeddable_id: flow_id (name)
  timestamp: occurred_at (name; 99% of 297 sampled values parse; 40 in epoch seconds; \
19 in epoch milliseconds; 79 without an offset, read as UTC)
  custom_event_name: event (name; 99% of 297 sampled values are or convert to snake_case; \
164 converted (e.g. 'signedUp'), so snake_case = "convert")
  identifier: email (name; 100% of 296 sampled values are email addresses; key "email")
  metrics: amount (numbers)
  dimensions: plan, country, coupon (at most 50 distinct values, repeated)
  json_column: extra (JSON objects)
  not sent: event_id (add any to props.columns to copy it as it is)
"""
SAMPLE_FIELDS: dict[str, Any] = {
    "embeddable_id": Source("fields.embeddable_id", column="flow_id"),
    "timestamp": Source("fields.timestamp", column="occurred_at"),
    "timezone": "UTC",
    "event_name": Source("fields.custom_event_name", column="event"),
    "snake_case": "convert",
    "identifier_key": Source("identifier.key", value="email"),
    "identifier_value": Source("identifier.value", column="email"),
    "normalize": "lowercase",
    "metrics": ("amount",),
    "dimensions": ("plan", "country", "coupon"),
    "columns": (),
    "json_column": "extra",
}

EXPORTS = [
    pytest.param(
        "events.csv",
        "Guessed from 298 sampled rows of events.csv:\n" + COMMAS.format(9) + SAMPLE_GUESSES,
        "",
        SAMPLE_FIELDS,
        1,  # the sample export has a row of each kind of problem
        id="sample-csv",
    ),
    pytest.param(
        "events.jsonl",
        "Guessed from 298 sampled rows of events.jsonl:\n" + SAMPLE_GUESSES,
        "",
        SAMPLE_FIELDS,
        1,
        id="sample-jsonl",
    ),
    pytest.param(
        "init/tracking.csv",
        """\
Guessed from 24 sampled rows of init/tracking.csv:
  delimiter: "," (sniffed: the header holds 6 ',')
  encoding: utf-8 (sniffed: the file decodes as UTF-8)
  decimal_comma: false (the delimiter is ',', so decimals are points)
  embeddable_id: flow (name)
  timestamp: ts (name; 100% of 24 sampled values parse; 24 in epoch seconds)
  custom_event_name: action (name; 100% of 24 sampled values are or convert to snake_case; \
18 converted (e.g. 'Button Clicked'), so snake_case = "convert")
  identifier: user_mail (name; 100% of 24 sampled values are email addresses; key "email")
  metrics: duration_ms (numbers)
  dimensions: plan (at most 50 distinct values, repeated)
  not sent: page_url (add any to props.columns to copy it as it is)
""",
        "",
        {
            "embeddable_id": Source("fields.embeddable_id", column="flow"),
            "timestamp": Source("fields.timestamp", column="ts"),
            "timezone": "UTC",
            "event_name": Source("fields.custom_event_name", column="action"),
            "snake_case": "convert",
            "identifier_key": Source("identifier.key", value="email"),
            "identifier_value": Source("identifier.value", column="user_mail"),
            "metrics": ("duration_ms",),
            "dimensions": ("plan",),
            "json_column": None,
        },
        0,
        id="epoch-seconds-csv",
    ),
    pytest.param(
        "init/orders.tsv.gz",
        """\
Guessed from 30 sampled rows of init/orders.tsv.gz:
  delimiter: "\\t" (sniffed: the header holds 6 tabs)
  encoding: utf-8 (sniffed: the file decodes as UTF-8)
  decimal_comma: false (sniffed: no column holds numbers like 12,50)
  embeddable_id: embeddable_id (name)
  timestamp: eventTime (name; 100% of 30 sampled values parse; 30 in epoch milliseconds)
  custom_event_name: eventName (name; 100% of 30 sampled values are snake_case)
  identifier: customer_id (name; key "customer_id")
  metrics: price (numbers)
  dimensions: currency (at most 50 distinct values, repeated)
  not sent: order_ref (add any to props.columns to copy it as it is)
""",
        "",
        {
            "embeddable_id": Source("fields.embeddable_id", column="embeddable_id"),
            "timestamp": Source("fields.timestamp", column="eventTime"),
            "event_name": Source("fields.custom_event_name", column="eventName"),
            "snake_case": "reject",
            "identifier_key": Source("identifier.key", value="customer_id"),
            "identifier_value": Source("identifier.value", column="customer_id"),
            "identifier_type": "string",
            "normalize": "none",
            "metrics": ("price",),
            "dimensions": ("currency",),
        },
        0,
        id="epoch-millis-tsv-gz",
    ),
    pytest.param(
        "init/app_events.jsonl",
        """\
Guessed from 20 sampled rows of init/app_events.jsonl:
  embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: no column is named like one)
  timestamp: time (name; 100% of 20 sampled values parse; 7 in epoch milliseconds)
  custom_event_name: name (name; 100% of 20 sampled values are or convert to snake_case; \
20 converted (e.g. 'Order Placed'), so snake_case = "convert")
  identifier: email (name; 100% of 20 sampled values are email addresses; key "email")
  metrics: revenue (numbers)
  dimensions: platform (at most 50 distinct values, repeated)
  json_column: properties (JSON objects)
  not sent: id (add any to props.columns to copy it as it is)
""",
        EMBEDDABLE_WARNING,
        {
            "embeddable_id": Source("fields.embeddable_id", value="REPLACE_WITH_EMBEDDABLE_ID"),
            "timestamp": Source("fields.timestamp", column="time"),
            "event_name": Source("fields.custom_event_name", column="name"),
            "snake_case": "convert",
            "identifier_value": Source("identifier.value", column="email"),
            "metrics": ("revenue",),
            "dimensions": ("platform",),
            "json_column": "properties",
        },
        0,
        id="nested-props-jsonl",
    ),
]


@pytest.fixture
def exports(workdir: Path) -> Path:
    """tests/data/init (as init/) and the sample exports, in the current directory."""
    shutil.copytree(REPO / "tests" / "data" / "init", workdir / "init")
    for name in ("events.csv", "events.jsonl"):
        shutil.copy(REPO / "sample_data" / name, workdir / name)
    return workdir


def assert_mapping(path: str, expected: dict[str, Any]) -> Mapping:
    """Load a written mapping with the tool's own loader and compare the named settings."""
    mapping = load_mapping(path)
    assert {k: getattr(mapping, k) for k in expected} == expected
    return mapping


@pytest.mark.parametrize(("source", "stdout", "stderr", "fields", "validate_exit"), EXPORTS)
def test_guesses_a_mapping_that_validate_runs_unedited(
    exports: Path,
    run: Run,
    source: str,
    stdout: str,
    stderr: str,
    fields: dict[str, Any],
    validate_exit: int,
) -> None:
    result = run("init", source, "-o", "guessed.toml")
    assert result.exit_code == 0
    assert result.stdout == (
        stdout + f"Wrote guessed.toml. Check it, then run: backfill validate {source}"
        " -m guessed.toml\n"
    )
    assert result.stderr == stderr
    assert_mapping("guessed.toml", fields)
    checked = run("validate", source, "-m", "guessed.toml")
    assert checked.stderr == ""
    assert checked.exit_code == validate_exit


def test_the_mapping_file_explains_each_guess(exports: Path, run: Run) -> None:
    assert run("init", "init/orders.tsv.gz").exit_code == 0
    written = Path("mapping.toml").read_text(encoding="utf-8")
    assert (
        written
        == """\
# Mapping for init/orders.tsv.gz, guessed by `backfill init` from 30 sampled rows.
# Check each guess (the comment above each setting says why it was made), then run:
#   backfill validate init/orders.tsv.gz -m mapping.toml

[fields]
# embeddable_id: embeddable_id (name)
embeddable_id = "embeddable_id"
# timestamp: eventTime (name; 100% of 30 sampled values parse; 30 in epoch milliseconds)
timestamp = { column = "eventTime" }
# custom_event_name: eventName (name; 100% of 30 sampled values are snake_case)
custom_event_name = { column = "eventName" }

[identifier]
# identifier: customer_id (name; key "customer_id")
# key: the User Data key under which your Embeddables captured this value; the
# column's name is only a guess of it.
key = { value = "customer_id" }
# type = "number" if your entries hold it as a number rather than as text.
value = { column = "customer_id", type = "string" }

[props]
# metrics: price (numbers)
metrics = ["price"]
# dimensions: currency (at most 50 distinct values, repeated)
dimensions = ["currency"]
# Not sent; uncomment to copy them into the props as they are:
# columns = ["order_ref"]
"""
    )


def test_naive_times_get_utc_with_a_comment(exports: Path, run: Run) -> None:
    assert run("init", "events.csv").exit_code == 0
    text = Path("mapping.toml").read_text(encoding="utf-8")
    assert (
        "# Times without an offset are read in this time zone: UTC is assumed. If they are\n"
        '# local times, give the export\'s zone instead (e.g. "Europe/Berlin").\n'
        'timestamp = { column = "occurred_at", timezone = "UTC" }\n'
    ) in text
    assert '# columns = ["event_id"]\n' in text


def test_refuses_to_write_over_a_mapping(exports: Path, write: Write, run: Run) -> None:
    write("mapping.toml", "# mine\n")
    result = run("init", "events.csv")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == "error: mapping.toml already exists; give --force to write over it\n"
    assert Path("mapping.toml").read_text(encoding="utf-8") == "# mine\n"


def test_force_writes_over_a_mapping(exports: Path, write: Write, run: Run) -> None:
    write("mapping.toml", "# mine\n")
    result = run("init", "events.csv", "--force")
    assert result.exit_code == 0
    assert_mapping("mapping.toml", SAMPLE_FIELDS)


def test_no_timestamp_column_is_refused_and_nothing_written(write: Write, run: Run) -> None:
    write("x.csv", "email,event,when\na@x.com,signed_up,yesterday\nb@x.com,signed_up,today\n")
    result = run("init", "x.csv")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "error: x.csv: no column reads as timestamps in 2 sampled rows; nothing written"
        " (write the mapping by hand: see 'The mapping file' in README.md)\n"
    )
    assert not Path("mapping.toml").exists()


def test_a_timestamp_column_that_does_not_parse_is_named(write: Write, run: Run) -> None:
    write(
        "x.csv",
        "created_at,email\nyesterday,a@x.com\n2024-03-01,b@x.com\nlast week,c@x.com\n",
    )
    result = run("init", "x.csv")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: x.csv: no column reads as timestamps in 3 sampled rows; column 'created_at'"
        " is named like one, but 33% of its values parse (e.g. 'yesterday'); nothing written"
        " (write the mapping by hand: see 'The mapping file' in README.md)\n"
    )


def test_no_identifier_column_is_refused(write: Write, run: Run) -> None:
    write("x.csv", "ts,event\n2024-03-01T10:00:00Z,signed_up\n2024-03-01T11:00:00Z,signed_up\n")
    result = run("init", "x.csv")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: x.csv: no column holds user identifiers (email addresses, or a name such as"
        " user_id or customer_id); nothing written (write the mapping by hand: see"
        " 'The mapping file' in README.md)\n"
    )
    assert not Path("mapping.toml").exists()


def test_placeholders_are_written_warned_about_and_flagged_by_validate(
    write: Write, run: Run
) -> None:
    write(
        "x.csv",
        "Date,contact\n01/03/2024 12:30,a@x.com\n25/03/2024 13:30,b@x.com\n",
    )
    result = run("init", "x.csv")
    assert result.exit_code == 0
    assert result.stdout == (
        "Guessed from 2 sampled rows of x.csv:\n"
        + COMMAS.format(1)
        + "  embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: no column is named like one)\n"
        '  timestamp: Date (name; 100% of 2 sampled values parse with format "%d/%m/%Y %H:%M";'
        " 2 without an offset, read as UTC)\n"
        "  custom_event_name: REPLACE_WITH_EVENT_NAME (placeholder: no column holds them)\n"
        "  identifier: contact (values; 100% of 2 sampled values are email addresses;"
        ' key "email")\n'
        "Wrote mapping.toml. Check it, then run: backfill validate x.csv -m mapping.toml\n"
    )
    assert result.stderr == EMBEDDABLE_WARNING + EVENT_WARNING
    assert_mapping(
        "mapping.toml",
        {
            "event_name": Source("fields.custom_event_name", value="REPLACE_WITH_EVENT_NAME"),
            "timestamp_format": "%d/%m/%Y %H:%M",
        },
    )
    checked = run("validate", "x.csv", "-m", "mapping.toml", "--json")
    assert checked.exit_code == 1
    assert json.loads(checked.stdout)["invalid_by_reason"] == {"bad_event_name": 2}


@pytest.mark.parametrize(
    ("args", "files", "message"),
    [
        pytest.param(
            ["init", "x.csv", "-o", "x.csv", "--force"],
            {"x.csv": "ts,email\n2024-03-01,a@x.com\n"},
            "error: x.csv: is one of the inputs; writing it would destroy it\n",
            id="output-is-the-input",
        ),
        pytest.param(
            ["init", "x.csv", "-o", "no/such/dir/m.toml"],
            {"x.csv": "ts,email\n2024-03-01,a@x.com\n"},
            "error: no/such/dir/m.toml: cannot write: No such file or directory\n",
            id="output-directory-missing",
        ),
        pytest.param(
            ["init", "nope.csv"],
            {},
            "error: nope.csv: no such file\n",
            id="input-missing",
        ),
        pytest.param(
            ["init", "x.csv"],
            {"x.csv": "ts,email\n"},
            "error: x.csv: nothing to guess a mapping from: no rows\n",
            id="header-only",
        ),
        pytest.param(
            ["init", "x.csv"],
            {"x.csv": "ts,email\n2024-03-01\n2024-03-02,a@x.com,extra\n"},
            "error: x.csv: nothing to guess a mapping from: none of the 2 rows sampled can be"
            " read\n",
            id="every-row-malformed",
        ),
        pytest.param(
            ["init", "-"],
            {},
            "error: -: reading stdin needs --format csv, tsv, jsonl, json or parquet\n",
            id="stdin-without-format",
        ),
        pytest.param(
            ["init", "x.csv"],
            {"x.csv": SEMICOLONS.replace(";", " ")},
            "error: x.csv: the header reads as one column, 'flow_id occurred_at event email': it"
            " holds no ',', ';', tab or '|' (give --delimiter if another character parts its"
            " columns); nothing written\n",
            id="one-column",
        ),
        pytest.param(
            ["init", "x.csv", "--delimiter", "|"],
            {"x.csv": SEMICOLONS},
            'error: x.csv: with --delimiter "|" the header reads as one column,'
            " 'flow_id;occurred_at;event;email'; nothing written\n",
            id="one-column-with-the-delimiter-given",
        ),
        pytest.param(
            ["init", "x.csv", "--delimiter", "ab"],
            {"x.csv": SEMICOLONS},
            'error: --delimiter must be one character (",", ";", "\\t", "|") or'
            " \"auto\", got 'ab'\n",
            id="delimiter-of-two-characters",
        ),
        pytest.param(
            ["init", "x.csv", "--encoding", "klingon"],
            {"x.csv": SEMICOLONS},
            "error: --encoding: unknown encoding 'klingon'\n",
            id="unknown-encoding",
        ),
        pytest.param(
            ["init", "exports", "-o", "exports/mapping.toml"],
            {"exports/a.csv": SEMICOLONS},
            "error: exports/mapping.toml: is inside the input directory exports, where validate"
            " would read it as an export; write it elsewhere\n",
            id="output-inside-the-input-directory",
        ),
    ],
)
def test_nothing_written_exits_2(
    write: Write, run: Run, args: list[str], files: dict[str, str], message: str
) -> None:
    for name, content in files.items():
        write(name, content)
    result = run(*args)
    assert result.exit_code == 2
    assert result.stderr == message
    assert not Path("mapping.toml").exists()


def test_reads_stdin_with_format(write: Write, run: Run) -> None:
    jsonl = '{"ts": 1709294400, "email": "a@x.com", "event": "signed_up"}\n'
    result = run("init", "-", "--format", "jsonl", input=jsonl * 3)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "Guessed from 3 sampled rows of -:"
    assert_mapping("mapping.toml", {"timestamp": Source("fields.timestamp", column="ts")})


def test_sample_bounds_the_rows_read(write: Write, run: Run) -> None:
    rows = "".join(f"2024-03-01T10:00:{i % 60:02d}Z,u{i}@x.com\n" for i in range(500))
    write("x.csv.gz", gzip.compress(("ts,email\n" + rows).encode(), mtime=0))
    result = run("init", "x.csv.gz", "--sample", "100")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[:6] == [
        "Guessed from 100 sampled rows of x.csv.gz:",
        "  delimiter: \",\" (sniffed: the header holds 1 ',')",
        "  encoding: utf-8 (sniffed: the file decodes as UTF-8)",
        "  decimal_comma: false (the delimiter is ',', so decimals are points)",
        "  embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: no column is named like one)",
        "  timestamp: ts (name; 100% of 100 sampled values parse)",
    ]


def test_odd_column_names_round_trip(write: Write, run: Run) -> None:
    line = (
        '{"ts": "2024-03-01T10:00:00Z", "e-mail \\"work\\"": "a@x.com", "event": "a_b",'
        ' "\\u00e9t\\u00e9\\ncount": 3, "": "blank", "__row": 9}\n'
    )
    write("x.jsonl", line * 4)
    result = run("init", "x.jsonl")
    assert result.exit_code == 0
    assert '  metrics: "été\\ncount", __row (numbers)\n' in result.stdout
    mapping = assert_mapping(
        "mapping.toml",
        {
            "identifier_value": Source("identifier.value", column='e-mail "work"'),
            "metrics": ("été\ncount", "__row"),
        },
    )
    assert "" not in mapping.columns_used()
    assert run("validate", "x.jsonl", "-m", "mapping.toml").exit_code == 0


@pytest.mark.parametrize("form", ["csv", "jsonl"])
def test_columns_named_like_patterns_or_the_readers_are_guessed(
    write: Write, run: Run, form: str
) -> None:
    columns = {
        "flow_id": ["flow_1"] * 4,
        "*": ["10", "11", "12", "13"],
        "^a$": ["free", "pro"] * 2,
        "__row": [f"2024-03-0{1 + i}T10:00:00Z" for i in range(4)],
        "email": [f"u{i}@x.com" for i in range(4)],
        "event": ["signed_up"] * 4,
        "__line": [f"n{i}" for i in range(4)],
    }
    header, cells = list(columns), list(zip(*columns.values(), strict=True))
    if form == "csv":
        write("x.csv", "\n".join(",".join(r) for r in [header, *cells]) + "\n")
    else:
        write(
            "x.jsonl", "".join(json.dumps(dict(zip(header, r, strict=True))) + "\n" for r in cells)
        )
    result = run("init", f"x.{form}")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout == (
        f"Guessed from 4 sampled rows of x.{form}:\n"
        + (COMMAS.format(6) if form == "csv" else "")
        + "  embeddable_id: flow_id (name)\n"
        "  timestamp: __row (values; 100% of 4 sampled values parse)\n"
        "  custom_event_name: event (name; 100% of 4 sampled values are snake_case)\n"
        '  identifier: email (name; 100% of 4 sampled values are email addresses; key "email")\n'
        "  metrics: * (numbers)\n"
        "  dimensions: ^a$ (at most 50 distinct values, repeated)\n"
        "  not sent: __line (add any to props.columns to copy it as it is)\n"
        f"Wrote mapping.toml. Check it, then run: backfill validate x.{form} -m mapping.toml\n"
    )
    assert_mapping(
        "mapping.toml",
        {
            "timestamp": Source("fields.timestamp", column="__row"),
            "metrics": ("*",),
            "dimensions": ("^a$",),
        },
    )
    checked = run("validate", f"x.{form}", "-m", "mapping.toml", "--json")
    assert (checked.exit_code, checked.stderr) == (0, "")
    assert json.loads(checked.stdout)["valid"] == 4


def test_help_has_an_example(run: Run) -> None:
    result = run("init", "--help")
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: backfill init [OPTIONS] INPUT\n")
    example = result.stdout.split("Example:\n", 1)[1]
    assert example.lstrip().startswith("backfill init events.csv -o mapping.toml\n")
    assert "mapping.toml]" in result.stdout  # the default output, shown
    assert "[default: 10000; x>=1]" in result.stdout


# --- Dialects and input kinds: what init sniffs, writes down, and validate then reads -----

# A German spreadsheet's "CSV (Trennzeichen-getrennt)": semicolons, cp1252, decimal commas,
# day-first dates, CRLF line ends.
SPREADSHEET = """\
Datum;Ereignis;E-Mail;Betrag;Stadt
01.03.2024 12:00;Kauf abgeschlossen;anna@beispiel.de;1.234,50;München
01.03.2024 12:05;Konto erstellt;ben@beispiel.de;0;Köln
02.03.2024 09:30;Kauf abgeschlossen;ben@beispiel.de;12,50;Köln
03.03.2024 18:45;Kauf abgeschlossen;clara@beispiel.de;99,90;Düsseldorf
04.03.2024 08:00;Konto erstellt;dora@beispiel.de;0;München
05.03.2024 21:15;Kauf abgeschlossen;anna@beispiel.de;2.000,00;München
""".replace("\n", "\r\n").encode("cp1252")
SPREADSHEET_GUESSES = """\
Guessed from 6 sampled rows of umsatz.csv:
  delimiter: ";" (sniffed: the header holds 4 ';')
  encoding: cp1252 (sniffed: byte 0xFC on line 2 is not UTF-8; cp1252 reads the file)
  decimal_comma: true (sniffed: Betrag holds numbers like '1.234,50')
  embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: no column is named like one)
  timestamp: Datum (values; 100% of 6 sampled values parse with format "%d.%m.%Y %H:%M"; \
6 without an offset, read as UTC)
  custom_event_name: Ereignis (values; 100% of 6 sampled values are or convert to \
snake_case; 6 converted (e.g. 'Kauf abgeschlossen'), so snake_case = "convert")
  identifier: E-Mail (name; 100% of 6 sampled values are email addresses; key "email")
  metrics: Betrag (numbers with decimal commas)
  dimensions: Stadt (at most 50 distinct values, repeated)
Wrote mapping.toml. Check it, then run: backfill validate umsatz.csv -m mapping.toml
"""
SPREADSHEET_MAPPING = """\
# Mapping for umsatz.csv, guessed by `backfill init` from 6 sampled rows.
# Check each guess (the comment above each setting says why it was made), then run:
#   backfill validate umsatz.csv -m mapping.toml

[input]
# delimiter: ";" (sniffed: the header holds 4 ';')
delimiter = ";"
# encoding: cp1252 (sniffed: byte 0xFC on line 2 is not UTF-8; cp1252 reads the file)
encoding = "cp1252"
# decimal_comma: true (sniffed: Betrag holds numbers like '1.234,50')
decimal_comma = true

[fields]
# embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: no column is named like one)
# FILL IN the id of the Embeddable these events belong to (e.g. "flow_9f2c"), or the
# column that holds it: embeddable_id = "column". Validate accepts the placeholder.
embeddable_id = { value = "REPLACE_WITH_EMBEDDABLE_ID" }
# timestamp: Datum (values; 100% of 6 sampled values parse with format "%d.%m.%Y %H:%M"; \
6 without an offset, read as UTC)
# Times without an offset are read in this time zone: UTC is assumed. If they are
# local times, give the export's zone instead (e.g. "Europe/Berlin").
timestamp = { column = "Datum", format = "%d.%m.%Y %H:%M", timezone = "UTC" }
# custom_event_name: Ereignis (values; 100% of 6 sampled values are or convert to \
snake_case; 6 converted (e.g. 'Kauf abgeschlossen'), so snake_case = "convert")
custom_event_name = { column = "Ereignis", snake_case = "convert" }

[identifier]
# identifier: E-Mail (name; 100% of 6 sampled values are email addresses; key "email")
# key: the User Data key under which your Embeddables captured the email.
key = { value = "email" }
# Emails are matched lowercased: normalize = "none" if your entries keep capitals.
value = { column = "E-Mail", type = "string", normalize = "lowercase" }

[props]
# metrics: Betrag (numbers with decimal commas)
metrics = ["Betrag"]
# dimensions: Stadt (at most 50 distinct values, repeated)
dimensions = ["Stadt"]
"""


def valid_rows(run: Run, source: str, mapping: str = "mapping.toml") -> tuple[int, int]:
    """(rows, valid) that validate finds with a mapping init wrote."""
    checked = run("validate", source, "-m", mapping, "--json")
    assert checked.stderr == ""
    report = json.loads(checked.stdout)
    return report["rows"], report["valid"]


def first_props(run: Run, source: str) -> list[dict[str, Any]]:
    """The props of the payloads a dry run shows."""
    result = run("send", source, "-m", "mapping.toml", "--dry-run")
    assert result.exit_code == 0, result.output
    bodies = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return [json.loads(json.loads(body)["custom_event_props"]) for body in bodies]


def test_a_spreadsheet_export_in_semicolons_cp1252_and_decimal_commas(
    write: Write, run: Run
) -> None:
    write("umsatz.csv", SPREADSHEET)
    result = run("init", "umsatz.csv")
    assert (result.exit_code, result.stderr) == (0, EMBEDDABLE_WARNING)
    assert result.stdout == SPREADSHEET_GUESSES
    assert Path("mapping.toml").read_text(encoding="utf-8") == SPREADSHEET_MAPPING
    assert valid_rows(run, "umsatz.csv") == (6, 6)
    # The metric reads as the number it is, the dimension as the text it is.
    assert first_props(run, "umsatz.csv") == [
        {"payload_metrics": {"Betrag": 1234.5}, "payload_dimensions": {"Stadt": "München"}},
        {"payload_metrics": {"Betrag": 0}, "payload_dimensions": {"Stadt": "Köln"}},
        {"payload_metrics": {"Betrag": 12.5}, "payload_dimensions": {"Stadt": "Köln"}},
    ]


def test_a_spreadsheet_export_gzipped_under_any_name_or_on_stdin(write: Write, run: Run) -> None:
    write("export.csv", gzip.compress(SPREADSHEET, mtime=0))  # gzip whatever the name says
    assert run("init", "export.csv").exit_code == 0
    written = Path("mapping.toml").read_text(encoding="utf-8")
    assert written == SPREADSHEET_MAPPING.replace("umsatz.csv", "export.csv")
    assert valid_rows(run, "export.csv") == (6, 6)
    result = run("init", "-", "--format", "csv", "-o", "stdin.toml", input=SPREADSHEET)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:4] == SPREADSHEET_GUESSES.splitlines()[1:4]
    assert "\n[input]\n" in Path("stdin.toml").read_text(encoding="utf-8")


TAB_EXPORT = (
    "ts\tuser_email\tevent\tprice\n"
    "2024-03-01T10:00:00Z\ta@x.io\tsigned_up\t1.5\n"
    "2024-03-02T10:00:00Z\tb@x.io\tsigned_up\t2.25\n"
)
INPUT_TABLE_TAIL = """\
# decimal_comma: false (sniffed: no column holds numbers like 12,50)
decimal_comma = false

[fields]
"""


def test_a_tab_delimited_csv_is_read_with_tabs(write: Write, run: Run) -> None:
    write("x.csv", TAB_EXPORT)
    result = run("init", "x.csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:4] == [
        "Guessed from 2 sampled rows of x.csv:",
        '  delimiter: "\\t" (sniffed: the header holds 3 tabs)',
        "  encoding: utf-8 (sniffed: the file decodes as UTF-8)",
        "  decimal_comma: false (sniffed: no column holds numbers like 12,50)",
    ]
    written = Path("mapping.toml").read_text(encoding="utf-8")
    assert (
        "\n[input]\n"
        '# delimiter: "\\t" (sniffed: the header holds 3 tabs)\n'
        'delimiter = "\\t"\n'
        "# encoding: utf-8 (sniffed: the file decodes as UTF-8)\n"
        'encoding = "utf-8"\n' + INPUT_TABLE_TAIL
    ) in written
    assert valid_rows(run, "x.csv") == (2, 2)
    # The same rows named .tsv need no [input] table: tabs are what .tsv means.
    write("x.tsv", TAB_EXPORT)
    assert run("init", "x.tsv", "-o", "tsv.toml").exit_code == 0
    assert "[input]" not in Path("tsv.toml").read_text(encoding="utf-8")


def test_a_utf16_file_is_read_as_utf16(write: Write, run: Run) -> None:
    write("x.csv", TAB_EXPORT.replace("\t", ",").replace("a@x", "zoë@x").encode("utf-16"))
    result = run("init", "x.csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:4] == [
        "  delimiter: \",\" (sniffed: the header holds 3 ',')",
        "  encoding: utf-16 (sniffed: a UTF-16 byte order mark)",
        "  decimal_comma: false (the delimiter is ',', so decimals are points)",
    ]
    written = Path("mapping.toml").read_text(encoding="utf-8")
    assert (
        "\n[input]\n"
        "# delimiter: \",\" (sniffed: the header holds 3 ',')\n"
        'delimiter = ","\n'
        "# encoding: utf-16 (sniffed: a UTF-16 byte order mark)\n"
        'encoding = "utf-16"\n'
        "# decimal_comma: false (the delimiter is ',', so decimals are points)\n"
        "decimal_comma = false\n\n[fields]\n"
    ) in written
    assert valid_rows(run, "x.csv") == (2, 2)


def test_an_encoding_or_delimiter_given_is_taken_as_given(write: Write, run: Run) -> None:
    write("umsatz.csv", SPREADSHEET)
    result = run("init", "umsatz.csv", "--encoding", "latin-1", "--delimiter", ";")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:4] == [
        '  delimiter: ";" (given with --delimiter)',
        "  encoding: latin-1 (given with --encoding)",
        "  decimal_comma: true (sniffed: Betrag holds numbers like '1.234,50')",
    ]
    assert 'encoding = "latin-1"\n' in Path("mapping.toml").read_text(encoding="utf-8")


def test_a_parquet_export_keeps_its_types(write: Write, run: Run) -> None:
    pl.DataFrame(
        {
            "happened": [datetime(2024, 3, 1, 12, i) for i in range(4)],
            "user": [
                {
                    "email": f"U{i}@x.io",
                    "plan": ["free", "pro"][i % 2],
                    "address": {"country": "DE"},
                }
                for i in range(4)
            ],
            "event": ["signed_up", "logged_in"] * 2,
            "amount": [1.5, 2.0, 3.25, 4.0],
        }
    ).write_parquet("x.parquet")
    result = run("init", "x.parquet")
    assert (result.exit_code, result.stderr) == (0, EMBEDDABLE_WARNING)
    assert result.stdout == (
        "Guessed from 4 sampled rows of x.parquet:\n"
        "  embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: no column is named like one)\n"
        "  timestamp: happened (Parquet timestamps; 100% of 4 sampled values parse; 4 without"
        " an offset, read as UTC)\n"
        "  custom_event_name: event (name; 100% of 4 sampled values are snake_case)\n"
        "  identifier: user.email (name; 100% of 4 sampled values are email addresses;"
        ' key "email")\n'
        "  metrics: amount (numbers)\n"
        "  dimensions: user.plan, user.address.country (at most 50 distinct values, repeated)\n"
        "Wrote mapping.toml. Check it, then run: backfill validate x.parquet -m mapping.toml\n"
    )
    assert_mapping(
        "mapping.toml",
        {
            "timestamp": Source("fields.timestamp", column="happened"),
            "timezone": "UTC",
            "identifier_value": Source("identifier.value", column="user.email"),
            "dimensions": ("user.plan", "user.address.country"),
        },
    )
    assert "[input]" not in Path("mapping.toml").read_text(encoding="utf-8")
    assert valid_rows(run, "x.parquet") == (4, 4)


def json_rows(first: int, n: int) -> list[dict[str, Any]]:
    """Export rows as JSON objects."""
    return [
        {"time": f"2024-03-{i:02d}T10:00:00Z", "email": f"u{i}@x.io", "event": "signed_up"}
        for i in range(first, first + n)
    ]


def test_a_zip_of_json_files_is_guessed_from_its_first_member(write: Write, run: Run) -> None:
    lines = "".join(json.dumps(r) + "\n" for r in json_rows(1, 3))
    with zipfile.ZipFile("export.zip", "w") as archive:
        archive.writestr("b/2024-03-04.json", json.dumps(json_rows(4, 2), indent=2))
        archive.writestr("a/2024-03-01.json.gz", gzip.compress(lines.encode(), mtime=0))
        archive.writestr("a/", "")  # a directory entry
    result = run("init", "export.zip")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "Guessed from 3 sampled rows of export.zip!a/2024-03-01.json.gz (the first of 2 files"
        " in export.zip):"
    )
    assert result.stdout.endswith(
        "Wrote mapping.toml. Check it, then run: backfill validate export.zip -m mapping.toml\n"
    )
    assert (
        Path("mapping.toml")
        .read_text(encoding="utf-8")
        .startswith(
            "# Mapping for export.zip, guessed by `backfill init` from 3 sampled rows.\n"
            "# The rows are those of export.zip!a/2024-03-01.json.gz, the first of 2 files in"
            " export.zip.\n"
        )
    )
    assert valid_rows(run, "export.zip") == (5, 5)


def test_a_directory_is_guessed_from_its_first_export(write: Write, run: Run) -> None:
    write("exports/2024-03-02/part-0.json", json.dumps(json_rows(4, 2)))  # an array
    write("exports/2024-03-01/part-0.jsonl", "".join(json.dumps(r) + "\n" for r in json_rows(1, 3)))
    write("exports/_SUCCESS", "")
    result = run("init", "exports")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "Guessed from 3 sampled rows of exports/2024-03-01/part-0.jsonl (the first of 2 files"
        " in exports):"
    )
    assert valid_rows(run, "exports") == (5, 5)
    # A mapping written where the directory's readers skip it is fine.
    assert run("init", "exports", "-o", "exports/_mapping.toml").exit_code == 0
    assert valid_rows(run, "exports", "exports/_mapping.toml") == (5, 5)


def test_output_closed_early_stops_quietly(tmp_path: Path) -> None:
    """`backfill init ... | head -1`: no error about the closed pipe, and the shell's 141."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "backfill",
                "init",
                str(REPO / "sample_data" / "events.csv"),
                "-o",
                str(tmp_path / "m"),
            ],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")
    assert load_mapping(tmp_path / "m").embeddable_id.column == "flow_id"
