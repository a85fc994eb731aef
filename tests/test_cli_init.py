"""``backfill init``: the guesses a user reads, the mapping it writes, and its refusals.

Every mapping written here is run through ``backfill validate`` unedited: it must check the
rows (exit 0 or 1), never be refused (exit 2).
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
        "Guessed from 298 sampled rows of events.csv:\n" + SAMPLE_GUESSES,
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
        "  embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: no column is named like one)\n"
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
            "error: -: reading stdin needs --format csv, tsv or jsonl\n",
            id="stdin-without-format",
        ),
        pytest.param(
            ["init", "x.csv"],
            {"x.csv": SEMICOLONS},
            "error: x.csv: the header reads as one column but holds ';': this looks like a"
            " ;-delimited file, and backfill reads comma-delimited (.csv) and tab-delimited"
            " (.tsv) files only; convert it to commas or tabs first; nothing written\n",
            id="semicolon-delimited-csv",
        ),
        pytest.param(
            ["init", "x.csv"],
            {"x.csv": SEMICOLONS.replace(";", "\t")},
            "error: x.csv: the header reads as one column but holds tabs: this looks like a"
            " tab-delimited file; read it as one with --format tsv (or name it .tsv); nothing"
            " written\n",
            id="tab-delimited-csv",
        ),
        pytest.param(
            ["init", "x.tsv"],
            {"x.tsv": SEMICOLONS.replace(";", "|")},
            "error: x.tsv: the header reads as one column but holds '|': this looks like a"
            " |-delimited file, and backfill reads comma-delimited (.csv) and tab-delimited"
            " (.tsv) files only; convert it to commas or tabs first; nothing written\n",
            id="pipe-delimited-tsv",
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
    assert result.stdout.splitlines()[:3] == [
        "Guessed from 100 sampled rows of x.csv.gz:",
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
        "  embeddable_id: flow_id (name)\n"
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
