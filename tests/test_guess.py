"""The guesses of ``backfill init``: which column each field takes, and why."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.cli import cli_message
from backfill.errors import InputError, MappingError, UsageError
from backfill.guess import (
    EMBEDDABLE_PLACEHOLDER,
    EVENT_NAME_PLACEHOLDER,
    Guessed,
    _delimiter_reason,
    _percent,
    _swap_day_month,
    _toml,
    init,
    normal_name,
    profile,
    read_sample,
    sniff_encoding,
    time_fit,
    usable,
    write_mapping,
)
from backfill.mapping import Mapping, Source, load_mapping

Write = Callable[[str, str | bytes], str]


def guess(write: Write, text: str, name: str = "x.csv") -> tuple[Mapping, Guessed]:
    """Run the core of ``init`` on an export and load the mapping it wrote."""
    write(name, text)
    guessed = init(name, "mapping.toml")
    return load_mapping("mapping.toml"), guessed


def why(guessed: Guessed, field: str) -> str:
    """The printed line of one field's guess."""
    return next(g.line() for g in guessed.guesses if g.field == field)


def rows(header: str, *columns: list[str]) -> str:
    """A CSV export from a header and one list of values per column."""
    lines = [",".join(values) for values in zip(*columns, strict=True)]
    return header + "\n" + "\n".join(lines) + "\n"


EMAILS = [f"user{i % 4}@example.com" for i in range(8)]
ISO = [f"2024-03-0{1 + i % 7}T10:00:00Z" for i in range(8)]
EVENTS = ["signed_up", "logged_in"] * 4


@pytest.mark.parametrize(
    ("column", "normal"),
    [
        ("occurred_at", "occurred_at"),
        ("eventTime", "event_time"),
        ("Event Time", "event_time"),
        ("E-mail", "e_mail"),
        (" USER_ID ", "user_id"),
        ("HTTPStatus", "httpstatus"),
    ],
)
def test_normal_name(column: str, normal: str) -> None:
    assert normal_name(column) == normal


@pytest.mark.parametrize(
    ("share", "shown"),
    [(1.0, "100%"), (0.999, "99%"), (0.5, "50%"), (0.004, "<1%"), (0.0, "0%")],
)
def test_percent_never_rounds_up_to_all(share: float, shown: str) -> None:
    assert _percent(share) == shown


@pytest.mark.parametrize(
    ("values", "share", "fmt", "also", "naive"),
    [
        pytest.param(ISO, 1.0, None, None, 0, id="iso-utc"),
        pytest.param(["1709294400", "1709294401.5"], 1.0, None, None, 0, id="epoch-seconds"),
        pytest.param(["1709294400000", "1709294400123"], 1.0, None, None, 0, id="epoch-millis"),
        pytest.param(["2024-03-01 10:00:00", "2024-03-01"], 1.0, None, None, 2, id="naive"),
        pytest.param(
            ["25/03/2024 10:30", "01/04/2024 11:00"], 1.0, "%d/%m/%Y %H:%M", None, 2, id="day-first"
        ),
        pytest.param(
            ["03/25/2024 10:30:00", "04/01/2024 11:00:00"],
            1.0,
            "%m/%d/%Y %H:%M:%S",
            None,
            2,
            id="month-first",
        ),
        pytest.param(
            ["01/03/2024", "02/03/2024"], 1.0, "%d/%m/%Y", "%m/%d/%Y", 2, id="day-month-ambiguous"
        ),
        pytest.param(["yesterday", "2024-03-01T10:00:00Z"], 0.5, None, None, 0, id="half"),
        pytest.param(["2999-01-01T00:00:00Z"], 0.0, None, None, 0, id="future-does-not-count"),
        pytest.param(["12345", "99"], 0.0, None, None, 0, id="small-numbers"),
    ],
)
def test_time_fit_uses_the_validate_rules(
    write: Write,
    values: list[str],
    share: float,
    fmt: str | None,
    also: str | None,
    naive: int,
) -> None:
    write("x.csv", "t\n" + "\n".join(values) + "\n")
    sample = read_sample("x.csv", None, 100)
    fit = time_fit(sample.frame, profile(sample.frame, sample.columns)[0])
    assert (fit.share, fit.format, fit.also, fit.naive) == (share, fmt, also, naive)


def test_swap_day_month() -> None:
    assert _swap_day_month("%d.%m.%Y %H:%M") == "%m.%d.%Y %H:%M"


def test_read_sample_is_bounded_and_skips_malformed_rows(write: Write) -> None:
    write("x.csv", "a,b\n" + "1,2\n3\n" + "5,6\n" * 50)
    sample = read_sample("x.csv", None, 10)
    assert sample.columns == ["a", "b"]
    assert sample.frame.height == 9  # 10 rows read, the short one left out
    assert sample.frame["__row"].to_list()[:3] == [1, 3, 4]


def test_usable_columns() -> None:
    assert usable(["a", "", " ", "__row", "__malformed", "__line", "__rows", "*", "^a$"]) == [
        "a",
        "__row",
        "__malformed",
        "__line",
        "__rows",
        "*",
        "^a$",
    ]


def jsonl(header: str, *columns: list[str]) -> str:
    """The JSONL form of ``rows``: one object of text values per row."""
    names = header.split(",")
    return "".join(
        json.dumps(dict(zip(names, values, strict=True))) + "\n"
        for values in zip(*columns, strict=True)
    )


HOSTILE_NAMES = ["*", "^a$", "^.*$", "__row", "__malformed", "__line"]


@pytest.mark.parametrize("form", ["csv", "jsonl"])
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_any_column_name_is_guessed_by_its_values(write: Write, name: str, form: str) -> None:
    # The name holds each field in turn; a plain column beside it keeps its own guess.
    export = rows if form == "csv" else jsonl
    other = [f"x{i % 2}" for i in range(8)]  # a dimension
    path = f"x.{form}"
    mapping, guessed = guess(write, export(f"{name},email,other", ISO, EMAILS, other), path)
    assert mapping.timestamp == Source("fields.timestamp", column=name)
    assert (
        why(guessed, "timestamp") == f"timestamp: {name} (values; 100% of 8 sampled values parse)"
    )
    assert mapping.dimensions == ("other",)
    os.unlink("mapping.toml")
    mapping, _ = guess(write, export(f"ts,{name},other", ISO, EMAILS, other), path)
    assert mapping.identifier_value == Source("identifier.value", column=name)
    os.unlink("mapping.toml")
    mapping, _ = guess(write, export(f"ts,email,{name}", ISO, EMAILS, EVENTS), path)
    assert mapping.event_name == Source("fields.custom_event_name", column=name)
    os.unlink("mapping.toml")
    amounts = [str(i) for i in range(8)]
    mapping, _ = guess(write, export(f"ts,email,{name},other", ISO, EMAILS, amounts, other), path)
    assert (mapping.metrics, mapping.dimensions) == ((name,), ("other",))


def test_a_named_timestamp_beats_numbers_that_read_as_epochs(write: Write) -> None:
    order_no = [str(1700000000 + i) for i in range(8)]
    mapping, guessed = guess(write, rows("order_no,created_at,email", order_no, ISO, EMAILS))
    assert mapping.timestamp == Source("fields.timestamp", column="created_at")
    assert "order_no" not in mapping.metrics  # epoch-like numbers are not metrics
    assert why(guessed, "not sent") == (
        "not sent: order_no (add any to props.columns to copy it as it is)"
    )


def test_an_unnamed_timestamp_is_taken_by_its_values(write: Write) -> None:
    _, guessed = guess(write, rows("happened,email", ISO, EMAILS))
    assert why(guessed, "timestamp") == (
        "timestamp: happened (values; 100% of 8 sampled values parse)"
    )


def test_an_unnamed_column_must_read_almost_always(write: Write) -> None:
    values = [*ISO[:6], "soon", "later"]
    write("x.csv", rows("happened,email", values, EMAILS))
    with pytest.raises(InputError, match=r"no column reads as timestamps in 8 sampled rows;"):
        init("x.csv")


def test_of_two_timestamp_names_the_likelier_wins(write: Write) -> None:
    mapping, _ = guess(write, rows("created_at,occurred_at,email", ISO, ISO, EMAILS))
    assert mapping.timestamp.column == "occurred_at"


def test_emails_are_found_by_their_values_even_when_stringified(write: Write) -> None:
    contact = ['"""ada@example.com"""', "grace@example.com"] * 4
    mapping, guessed = guess(write, rows("ts,contact", ISO, contact))
    assert mapping.identifier_value == Source("identifier.value", column="contact")
    assert mapping.identifier_key == Source("identifier.key", value="email")
    assert mapping.normalize == "lowercase"
    assert why(guessed, "identifier") == (
        'identifier: contact (values; 100% of 8 sampled values are email addresses; key "email")'
    )


def test_without_emails_a_user_id_column_is_the_identifier(write: Write) -> None:
    agent = ["Mozilla/5.0"] * 8
    ids = [str(100 + i) for i in range(8)]
    mapping, _ = guess(write, rows("ts,user_agent,customer_id", ISO, agent, ids))
    assert mapping.identifier_key == Source("identifier.key", value="customer_id")
    assert mapping.identifier_value == Source("identifier.value", column="customer_id")
    assert mapping.identifier_type == "string"
    assert "customer_id" not in mapping.metrics


def test_event_names_already_snake_case_are_not_converted(write: Write) -> None:
    mapping, guessed = guess(write, rows("ts,email,event_name", ISO, EMAILS, EVENTS))
    assert mapping.event_name == Source("fields.custom_event_name", column="event_name")
    assert mapping.snake_case == "reject"
    assert why(guessed, "custom_event_name") == (
        "custom_event_name: event_name (name; 100% of 8 sampled values are snake_case)"
    )


def test_event_names_are_found_by_their_values(write: Write) -> None:
    what = ["Signed Up", "Logged In"] * 4
    mapping, guessed = guess(write, rows("ts,email,what", ISO, EMAILS, what))
    assert mapping.event_name == Source("fields.custom_event_name", column="what")
    assert mapping.snake_case == "convert"
    assert why(guessed, "custom_event_name") == (
        "custom_event_name: what (values; 100% of 8 sampled values are or convert to"
        " snake_case; 8 converted (e.g. 'Signed Up'), so snake_case = \"convert\")"
    )


def test_distinct_names_and_ids_are_not_event_names(write: Write) -> None:
    people = [f"Person Number{i}" for i in range(8)]
    event_id = ["evt_a", "evt_b"] * 4
    mapping, guessed = guess(write, rows("ts,email,name,event_id", ISO, EMAILS, people, event_id))
    assert mapping.event_name == Source("fields.custom_event_name", value=EVENT_NAME_PLACEHOLDER)
    assert mapping.embeddable_id == Source("fields.embeddable_id", value=EMBEDDABLE_PLACEHOLDER)
    assert len(guessed.warnings) == 2


def test_props_by_kind(write: Write) -> None:
    amount = ["1.5", "2", "n/a", "3", "4", "5", "6", "7", "8", "9"]  # 90% numbers: a metric
    ten = [f"2024-03-0{1 + i % 7}T10:00:00Z" for i in range(10)]
    mails = [f"user{i % 4}@example.com" for i in range(10)]
    plan = ["free", "pro"] * 5
    note = [f"note {i}" for i in range(10)]  # all distinct: not a dimension
    blank = [""] * 10
    ctx = ['"{""a"": 1}"'] * 10
    extra = ['"{""b"": 2}"'] * 10
    row_id = [str(i) for i in range(10)]
    mapping, guessed = guess(
        write,
        rows(
            "ts,email,amount,plan,note,blank,ctx,extra,row_id",
            ten,
            mails,
            amount,
            plan,
            note,
            blank,
            ctx,
            extra,
            row_id,
        ),
    )
    assert mapping.metrics == ("amount",)
    assert mapping.dimensions == ("plan",)
    assert mapping.json_column == "extra"  # named like props, so it wins over ctx
    assert mapping.columns == ()
    assert why(guessed, "not sent") == (
        "not sent: note, blank, ctx, row_id (add any to props.columns to copy it as it is)"
    )


def test_dimensions_have_at_most_50_distinct_values(write: Write) -> None:
    n = 120
    ts = ["2024-03-01T10:00:00Z"] * n
    mails = ["a@x.com"] * n
    fifty = [f"v{i % 50}" for i in range(n)]
    fifty_one = [f"v{i % 51}" for i in range(n)]
    mapping, _ = guess(write, rows("ts,email,fifty,fifty_one", ts, mails, fifty, fifty_one))
    assert mapping.dimensions == ("fifty",)


@given(st.text())
def test_toml_strings_round_trip(text: str) -> None:
    assert tomllib.loads(f"k = {_toml(text)}")["k"] == text


def test_a_mapping_the_loader_refuses_is_never_written(workdir: Path) -> None:
    with pytest.raises(MappingError) as caught:
        write_mapping("[fields]\n", "m.toml", "x.csv", ["a"], force=False)
    assert str(caught.value).startswith("m.toml: not written: the guessed mapping is refused (")
    assert "missing table [identifier]" in str(caught.value)
    assert os.listdir(workdir) == []  # no mapping, and no scratch file left


def test_a_mapping_naming_a_missing_column_is_never_written(workdir: Path) -> None:
    text = (
        '[fields]\nembeddable_id = "e"\ntimestamp = "t"\ncustom_event_name = "n"\n'
        '[identifier]\nkey = { value = "email" }\nvalue = "v"\n'
    )
    with pytest.raises(MappingError, match=r"column 'e' is not in x\.csv"):
        write_mapping(text, "m.toml", "x.csv", ["t", "n", "v"], force=False)
    assert os.listdir(workdir) == []


def test_a_file_that_appears_meanwhile_is_not_overwritten(write: Write) -> None:
    write("x.csv", rows("ts,email", ISO, EMAILS))
    guessed = init("x.csv", "first.toml")
    write("m.toml", "# appeared\n")
    with pytest.raises(
        UsageError, match=r"^m\.toml already exists; ask to replace it to write over it$"
    ) as caught:
        write_mapping(guessed.text, "m.toml", "x.csv", ["ts", "email"], force=False)
    assert cli_message(caught.value) == "m.toml already exists; give --force to write over it"
    assert Path("m.toml").read_text(encoding="utf-8") == "# appeared\n"


# --- The CSV dialect: sniffed encoding, delimiter and decimal commas --------------------


@pytest.mark.parametrize(
    ("data", "encoding", "why"),
    [
        pytest.param(b"ts,email\n", "utf-8", "sniffed: the file decodes as UTF-8", id="ascii"),
        pytest.param(
            "ts,e\n1,zoë\n".encode(),
            "utf-8",
            "sniffed: the file decodes as UTF-8",
            id="utf-8",
        ),
        pytest.param(
            b"\xef\xbb\xbfts,e\n",
            "utf-8",
            "sniffed: the file decodes as UTF-8, after a byte order mark",
            id="utf-8-bom",
        ),
        pytest.param(
            "ts,e\n".encode("utf-16-le").join([b"\xff\xfe", b""]),
            "utf-16",
            "sniffed: a UTF-16 byte order mark",
            id="utf-16-le",
        ),
        pytest.param(
            "ts,e\n".encode("utf-16"),
            "utf-16",
            "sniffed: a UTF-16 byte order mark",
            id="utf-16",
        ),
        pytest.param(
            b"\xfe\xff" + "ts,e\n".encode("utf-16-be"),
            "utf-16",
            "sniffed: a UTF-16 byte order mark",
            id="utf-16-be",
        ),
        pytest.param(
            "ts;e\n1;Müller €5\n".encode("cp1252"),
            "cp1252",
            "sniffed: byte 0xFC on line 2 is not UTF-8; cp1252 reads the file",
            id="cp1252",
        ),
        pytest.param(
            b"ts;e\n1;M\xfcller\n2;\x81\n",
            "latin-1",
            "sniffed: byte 0xFC on line 2 is not UTF-8, and byte 0x81 on line 3 not cp1252",
            id="latin-1",
        ),
    ],
)
def test_sniff_encoding(data: bytes, encoding: str, why: str) -> None:
    assert sniff_encoding(data) == (encoding, why)


def test_a_character_cut_at_the_end_of_the_sniffed_bytes_is_still_utf8() -> None:
    head = "ts,e\n1,zoë".encode()[:-1]  # the ë cut in half, as the first MiB may end
    assert sniff_encoding(head, complete=False) == (
        "utf-8",
        "sniffed: its first MiB decodes as UTF-8",
    )
    assert sniff_encoding(head)[0] == "cp1252"  # a whole file cannot end so


def test_a_large_file_is_sniffed_from_its_first_mib(write: Write) -> None:
    big = "ts;email\n" + "2024-03-01T10:00:00Z;zoë@x.io\n" * 60_000  # about 1.8 MB
    write("x.csv", big)
    sample = read_sample("x.csv", None, 10)
    assert sample.dialect is not None
    assert (sample.dialect.encoding, sample.dialect.encoding_why) == (
        "utf-8",
        "sniffed: its first MiB decodes as UTF-8",
    )
    assert sample.frame.height == 10


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("a,b,c", "sniffed: the header holds 2 ','"),
        ("a;b;c,d", "sniffed: the header holds 2 ';' and 1 ','"),
        ("a\tb\tc|d,e", "sniffed: the header holds 2 tabs, 1 ',' and 1 '|'"),
        ('"a;b",c', "sniffed: the header holds 1 ','"),  # quoted, as sniff_delimiter counts
        ("a b", "sniffed: the header holds none of ',', ';', tab, '|'"),
    ],
)
def test_delimiter_reason(header: str, why: str) -> None:
    assert _delimiter_reason(header) == why


def semicolons(header: str, *columns: list[str]) -> str:
    """A ;-delimited export from a (comma-separated) header and one list per column."""
    lines = [";".join(values) for values in zip(*columns, strict=True)]
    return header.replace(",", ";") + "\n" + "\n".join(lines) + "\n"


def test_decimal_commas_are_sniffed_and_make_the_metrics(write: Write) -> None:
    amount = ["1.234,50", "12,50", "7", "0,99", "-3,5", "2.000", "", "1,0"]
    dotted = ["1.5", "2.25", "3", "4", "5", "6", "7", "8"]  # would read 1.5 as 15
    text = semicolons("ts,email,amount,dotted", ISO, EMAILS, amount, dotted)
    mapping, guessed = guess(write, text)
    assert mapping.input.delimiter == ";"
    assert mapping.input.decimal_comma
    assert mapping.metrics == ("amount",)
    assert why(guessed, "decimal_comma") == (
        "decimal_comma: true (sniffed: amount holds numbers like '1.234,50')"
    )
    assert why(guessed, "not sent") == (
        "not sent: dotted (add any to props.columns to copy it as it is)"
    )
    assert guessed.warnings[-1] == (
        "column 'dotted' holds numbers with a decimal point (e.g. '1.5'): with"
        " decimal_comma = true they would read as 15, so it is not a metric"
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param(
            semicolons("ts,email,n", ISO, EMAILS, [str(i) for i in range(8)]),
            "sniffed: no column holds numbers like 12,50",
            id="whole-numbers",
        ),
        pytest.param(
            semicolons("ts,email,n", ISO, EMAILS, ["1,5", *(["x"] * 7)]),
            "sniffed: no column holds numbers like 12,50",
            id="text-with-one-number",
        ),
        pytest.param(
            rows("ts,email,n", ISO, EMAILS, ['"1,5"'] * 8),
            "the delimiter is ',', so decimals are points",
            id="comma-delimited",
        ),
    ],
)
def test_no_decimal_commas(write: Write, text: str, why: str) -> None:
    mapping, guessed = guess(write, text)
    assert not mapping.input.decimal_comma
    assert next(g for g in guessed.guesses if g.field == "decimal_comma").reason == why
