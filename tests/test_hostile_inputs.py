"""Hostile exports: whole files written by hypothesis, validated in CSV and in JSONL form.

Each example is one export: a random set of columns (the mapped ones, with names drawn from
a pool of names that collide with the tool's own words, unicode and punctuation, plus extras),
rows whose cells hold commas, quotes, line breaks, control characters and any unicode, a
cell past the csv module's field size limit, JSON props nested 50 to 300 deep (Polars'
parser stops at 128; in the JSONL form a compact one is an object), and timestamps at the
edges of every format the SPEC names. It is written twice, as CSV and as JSONL of the same
data, with or without a byte order mark, with LF or CRLF line ends, and sometimes with one
stray byte that is not UTF-8. Both files go through ``pipeline.validate`` (the core of
``backfill validate``), and:

- nothing raises; every row is accounted for once (rows = records written, valid + invalid
  = rows), and every valid row's payload passes the API's rules (``sandbox.parse_event``);
- the CSV and the JSONL form get the same reason, and the same payload, on every row;
- a timestamp whose instant is known is sent as that instant (milliseconds truncated), or
  refused as ``future_timestamp``; an impossible one is ``bad_timestamp``;
- a stray byte costs its own row (``malformed_row``) and changes no other row.

Left out of the CSV/JSONL comparison, by design: broken CSV quoting and ragged rows (no
JSONL form; ``test_broken_csv_quoting_costs_only_its_rows`` checks them against the same CSV
written by the book), blank lines (not a record in CSV, a numbered line in JSONL), a BOM in
a column name, and names padded with white space (names are trimmed).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from backfill import pipeline
from backfill.cli import cli
from backfill.codes import Reason
from backfill.inputs import ROW, batches, open_input
from backfill.mapping import load_mapping
from backfill.payloads import PAYLOAD, REASON, build_payloads
from backfill.report import ValidationReport
from backfill.sandbox import parse_event

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROLES = ("embeddable_id", "timestamp", "event", "key", "value", "metric", "dim", "col", "json")


HOSTILE_NAMES = (
    "__row",  # the reader's own columns
    "__malformed",
    "__line",
    "*",  # what pl.col reads as patterns
    "^x$",
    "^.*$",
    "row",
    "time",
    "in:x",
    "in:in:x",
    "reason",
    "message",
    "payload",
    "source",
    "line",
    "event_name",
    "embeddable_id",
    "identifier_key",
    "timezone_assumed",
    "__ts_text",
    "__json",
    "__props",
    "__text0",
    "__fast_base",
    "__ident",
    "__unwrapped",
    "é",
    "événement",
    "名前",
    "😀 emoji",
    "a,b",
    'say "hi"',
    "a'b",
    "it's 'x'",  # what Polars' JSONPath cannot address
    'it\'s "x"',
    "a\\b",
    "ends\\",
    "a]b",
    "$.x",
    "[0]",
    "**",
    "^x",
    "x$",
    "tab\there",
    "new\nline",
)
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Pacific/Kiritimati",
    "Etc/GMT+12",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
)
# Before the timestamp rules in SPEC.md's order: a row with one of these never gets to them.
BEFORE_TIME = frozenset(
    {
        Reason.MALFORMED_ROW,
        Reason.MISSING_EMBEDDABLE_ID,
        Reason.MISSING_TIMESTAMP,
        Reason.MISSING_CUSTOM_EVENT_NAME,
        Reason.MISSING_IDENTIFIER_KEY,
        Reason.MISSING_IDENTIFIER_VALUE,
    }
)
STRAY = "~~STRAY~~"  # replaced by one byte that is not UTF-8, in both forms
HUGE = 140_000  # characters: past the csv module's default field limit (131,072)
NOW = datetime.now(UTC)


# --- timestamps, with what each must become ---------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What a timestamp cell must come to: an instant, refusal, or anything (no oracle)."""

    kind: str  # "at", "bad" or "any"
    at: datetime | None = None


ANY = Expect("any")
BAD = Expect("bad")
EDGE_WALLS = (
    datetime(1970, 1, 1),
    datetime(2024, 2, 29, 12, 0, 0, 999_999),  # leap day
    datetime(2000, 2, 29, 23, 59, 59),
    datetime(2024, 3, 31, 2, 30),  # Berlin: a wall time that never happened
    datetime(2024, 10, 27, 2, 30),  # Berlin: one that happened twice
    datetime(2024, 3, 10, 2, 30),  # New York gap
    datetime(2024, 11, 3, 1, 30),  # New York fold
    datetime(2024, 4, 7, 1, 45),  # Lord Howe: a 30-minute fold
    datetime(2038, 1, 19, 3, 14, 8),  # past 2**31 seconds
    datetime(2099, 12, 31, 23, 59, 59, 999_999),
)
IMPOSSIBLE = (
    "2023-02-29T00:00:00Z",
    "2024-02-30 12:00:00",
    "2024-13-01T00:00:00",
    "2024-00-10T00:00:00+01:00",
    "2024-01-01T25:00:00Z",
    "2024-01-01T23:60:00",
    "2024-01-01T12:00:00+24:00",
    "2024-01-01T12:00:00.5-0560",
    "2024-01-01 12:00:00+0:530",
    "2024-01-01T12:00:00+\u0660\u0665:\u0660\u0660",  # Arabic-Indic digits
)
walls = st.one_of(
    st.sampled_from(EDGE_WALLS),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2025, 12, 31)),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2099, 12, 31, 23, 59)),
)


def truncated(moment: datetime) -> datetime:
    """A moment truncated to milliseconds, as payloads carry it."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def local_to_utc(wall: datetime, zone: str) -> datetime | None:
    """A wall time in a zone as UTC (the earlier one when it happened twice); None in a gap."""
    aware = wall.replace(tzinfo=ZoneInfo(zone), fold=0)
    back = aware.astimezone(UTC).astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    return aware.astimezone(UTC) if back == wall else None


@st.composite
def clock(draw: st.DrawFn, wall: datetime) -> tuple[str, int]:
    """The time of day of a wall time as text, and the microseconds that text keeps."""
    if draw(st.booleans()) and wall.second == 0 and wall.microsecond == 0:
        return f"{wall:%H:%M}", 0
    digits = draw(st.integers(0, 9))
    text = f"{wall:%H:%M:%S}"
    if digits == 0:
        return text, 0
    micro = f"{wall.microsecond:06d}"
    fraction = (micro + draw(st.text("0123456789", min_size=3, max_size=3)))[:digits]
    mark = draw(st.sampled_from(".,"))  # ISO 8601 allows a comma too
    return f"{text}{mark}{fraction}", int(fraction[:6].ljust(6, "0"))


@st.composite
def aware_iso(draw: st.DrawFn) -> tuple[str, Expect]:
    """ISO 8601 with an offset from -12:00 to +14:00 (Z for zero)."""
    wall = draw(walls)
    minutes = draw(
        st.one_of(st.sampled_from((-720, 840, 0, 330, 345, -570)), st.integers(-720, 840))
    )
    time_text, micro = draw(clock(wall))
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    styles = [f"{sign}{hours:02d}:{mins:02d}", f"{sign}{hours:02d}{mins:02d}"]
    if minutes == 0:
        styles += ["Z", "z"]
    offset = draw(st.sampled_from(styles))
    separator = draw(st.sampled_from("T "))
    text = f"{wall:%Y-%m-%d}{separator}{time_text}{offset}"
    moment = wall.replace(microsecond=micro, tzinfo=UTC) - timedelta(minutes=minutes)
    if len(time_text) == 5:
        moment = moment.replace(second=0)
    return text, Expect("at", truncated(moment))


@st.composite
def offset_out_of_range(draw: st.DrawFn) -> tuple[str, Expect]:
    """ISO 8601 with an offset of 24 hours or more, or of 60 minutes or more: no instant."""
    wall = draw(walls)
    time_text, _ = draw(clock(wall))
    hours, mins = draw(
        st.one_of(
            st.tuples(st.integers(24, 99), st.integers(0, 99)),
            st.tuples(st.integers(0, 99), st.integers(60, 99)),
        )
    )
    offset = f"{draw(st.sampled_from('+-'))}{hours:02d}{draw(st.sampled_from(('', ':')))}{mins:02d}"
    return f"{wall:%Y-%m-%d}{draw(st.sampled_from('T '))}{time_text}{offset}", BAD


@st.composite
def naive_iso(draw: st.DrawFn, zone: str) -> tuple[str, Expect]:
    """ISO 8601 or 'YYYY-MM-DD HH:MM:SS' without offset, read in the mapping's zone."""
    wall = draw(walls)
    if draw(st.integers(0, 9)) == 0:
        wall = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        text, micro = f"{wall:%Y-%m-%d}", 0
    else:
        time_text, micro = draw(clock(wall))
        text = f"{wall:%Y-%m-%d}{draw(st.sampled_from('T '))}{time_text}"
        wall = wall.replace(microsecond=micro, second=0 if len(time_text) == 5 else wall.second)
    moment = local_to_utc(wall, zone)
    return text, BAD if moment is None else Expect("at", truncated(moment))


@st.composite
def epoch(draw: st.DrawFn) -> tuple[str, Expect]:
    """Epoch seconds (9 or 10 digits) or milliseconds (12 or 13), maybe with a fraction.

    Fractions run past the millisecond, with 9s that rounding would carry into it.
    """
    millis = draw(st.booleans())
    low, high = (10**11, 10**13 - 1) if millis else (10**8, 10**10 - 1)
    whole = draw(st.one_of(st.sampled_from((low, high, 1_709_208_000)), st.integers(low, high)))
    if millis and whole == 1_709_208_000:
        whole *= 1000
    digits = st.one_of(st.text("0123456789", min_size=1, max_size=12), st.just("9999999999"))
    fraction = draw(digits) if draw(st.booleans()) else ""
    text = f"{whole}.{fraction}" if fraction else str(whole)
    ms = int(Decimal(text) * (1 if millis else 1000))
    return text, Expect("at", datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms))


def timestamps(zone: str, hostile: bool) -> st.SearchStrategy[tuple[str, Expect]]:
    """Timestamp cells of every form, each with what it must become (or, hostile, anything)."""
    unknown = st.one_of(
        st.sampled_from(("", " ", "yesterday", "0", "86400", "12345678901", "2024-01-01t00:00:00")),
        st.sampled_from(("2024-06-30T23:59:60Z", "1e9", "-1700000000", "2024-W01-1")),
        st.text(max_size=12),
    ).map(lambda text: (text, ANY))
    padded = st.tuples(st.sampled_from(("", " ", "\t", "  ")), st.sampled_from(("", " ", "\t")))
    known = st.one_of(
        aware_iso(),
        naive_iso(zone),
        epoch(),
        offset_out_of_range(),
        st.sampled_from(IMPOSSIBLE).map(lambda t: (t, BAD)),
    )
    padded_known = st.tuples(known, padded).map(lambda k: (k[1][0] + k[0][0] + k[1][1], k[0][1]))
    return st.one_of(padded_known, unknown) if hostile else padded_known


# --- cells, columns and whole exports ---------------------------------------------------

awkward = st.one_of(
    st.text(max_size=16),
    st.sampled_from(("a,b", 'say "hi"', "line\nbreak", "cr\r\nlf", "bare\rcr", '"', '""', ",")),
    st.sampled_from((" lead", "trail ", "\x00nul", "\x1c\x1d\x1e\x1f\x07", "\u2028", "\ufeffbom")),
    st.text(alphabet=",\"\n\r \t'x\\{}", max_size=10),
)


def nested(depth: int, leaf: Any) -> Any:
    """A JSON object nested ``depth`` levels deep."""
    for level in range(depth):
        leaf = {f"k{level % 3}": leaf}
    return leaf


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
json_cells = st.one_of(
    st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(json.dumps),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(
        lambda d: json.dumps(d, ensure_ascii=False, separators=(",", ":"))
    ),
    st.sampled_from(("{}", "[]", "1", '"x"', "null", '"{\\"a\\":1}"', "{", "{'a': 1}", " {} ")),
    st.sampled_from(('{"payload_metrics": 1}', '{"a": 1, "a": 2}', '{"a": NaN}', '{"": ""}')),
    awkward,
)
words = st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs", "P", "S"]), max_size=12)
emails = st.builds("{}@{}.com".format, words, words)
# Cells that pass their rule, so that most rows are valid and carry a payload to check.
GOOD: dict[str, st.SearchStrategy[str]] = {
    "embeddable_id": st.one_of(st.sampled_from(("flow_1", "flow_9f2c", "Ⓕlow id")), words),
    "event": st.from_regex(r"[a-z][a-z0-9]{0,8}(_[a-z0-9]{1,5}){0,2}", fullmatch=True),
    "key": st.sampled_from(("email", "user_email", "名前", "e-mail key")),
    "value:string": st.one_of(emails, words),
    "value:number": st.one_of(st.integers().map(str), st.floats(allow_nan=False).map(repr)),
    "value:json": json_values.map(json.dumps),
    "metric": st.one_of(st.just(""), st.integers().map(str), st.floats(allow_nan=False).map(str)),
    "dim": awkward,
    "col": awkward,
    "json": st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(json.dumps),
}
# Cells that may break their rule, or sit at its edge.
HOSTILE: dict[str, st.SearchStrategy[str]] = {
    "embeddable_id": st.one_of(st.sampled_from(("", "  ", "\t", "\u3000")), awkward),
    "event": st.one_of(
        st.sampled_from(("signed_up", "Signed Up", "signed-up", "signedUp", "SignedUp", "a__b")),
        st.sampled_from(("plan_upgraded2", "2fast", "_x", "événement", "Sign Up!", "", " ")),
        awkward,
    ),
    "key": st.one_of(st.sampled_from(("", " ", "名前")), awkward),
    "value": st.one_of(
        st.sampled_from(("ada@example.com", '"ada@example.com"', '"\\"ada@example.com\\""')),
        st.sampled_from(("ADA@Example.COM", "123", "-1.5e3", "0123", '{"a": 1}', "[1, 2]")),
        st.sampled_from(("null", "true", '""', '" "', '"\\"\\""', "", " ", '"unterminated')),
        awkward,
    ),
    "metric": st.one_of(
        st.sampled_from(("49", "49.50", "-0", "0.1", "1e308", "1e309", "-1e400", "NaN", "inf")),
        st.sampled_from(("Infinity", "1,5", " 12 ", "", "0x10", "1_000", "+5", ".5", "5.")),
        st.floats().map(repr),
        awkward,
    ),
    "dim": awkward,
    "col": awkward,
    "json": json_cells,
}


def cell(role: str, hostile: bool, id_type: str) -> st.SearchStrategy[str]:
    """The strategy for one mapped cell."""
    if hostile:
        return HOSTILE[role]
    return GOOD[f"value:{id_type}" if role == "value" else role]


def usable_name(name: str) -> bool:
    """A header name the tool reads back as written (names are trimmed; a BOM is a BOM)."""
    return bool(name) and name == name.strip() and not name.startswith("\ufeff")


column_names = st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(min_size=1, max_size=10)).filter(
    usable_name
)


@dataclass
class Export:
    """One generated export: columns, cells, the mapping's settings and how it is written."""

    columns: list[str]
    roles: dict[str, str]  # role -> column
    rows: list[dict[str, str]]
    expects: list[Expect]
    zone: str
    settings: dict[str, str]
    bom: bool = False
    crlf: bool = False
    quote_all: bool = False
    numbers: bool = False  # JSONL writes number-like cells as JSON numbers, objects as objects
    ascii_json: bool = False
    stray: tuple[int, bytes] | None = None  # (row, byte)
    omit: set[tuple[int, str]] = field(default_factory=set)  # JSONL leaves these keys out


@st.composite
def export_row(
    draw: st.DrawFn, columns: list[str], role_of: dict[str, str], zone: str, id_type: str
) -> tuple[dict[str, str], Expect]:
    """One row: mostly good cells, up to two roles hostile; and what its timestamp must become."""
    roles = list(role_of)
    hostile = draw(st.sets(st.sampled_from(roles), max_size=2))
    text, expect = draw(timestamps(zone, "timestamp" in hostile))
    row = {c: draw(awkward) for c in columns}
    for role in roles:
        if role != "timestamp":
            row[role_of[role]] = draw(cell(role, role in hostile, id_type))
    row[role_of["timestamp"]] = text
    return row, expect


@st.composite
def oversized(
    draw: st.DrawFn,
    rows: list[dict[str, str]],
    expects: list[Expect],
    columns: list[str],
    role_of: dict[str, str],
) -> None:
    """Maybe put a huge cell anywhere, and JSON nested 50 to 300 deep in the props column."""
    if draw(st.booleans()):
        at, column = draw(st.integers(0, len(rows) - 1)), draw(st.sampled_from(columns))
        huge = ("x" * HUGE, "é" * HUGE, 'a,"b"\n' * (HUGE // 6 + 1))
        rows[at][column] = draw(st.sampled_from(huge))
        if column == role_of["timestamp"]:
            expects[at] = ANY
    if draw(st.booleans()):
        deep = nested(draw(st.integers(50, 300)), draw(json_values))
        compact = draw(st.sampled_from(((", ", ": "), (",", ":"))))
        rows[draw(st.integers(0, len(rows) - 1))][role_of["json"]] = json.dumps(
            deep, separators=compact
        )


@st.composite
def exports(
    draw: st.DrawFn, max_rows: int = 6, names: st.SearchStrategy[str] = column_names
) -> Export:
    """A whole export: its columns, rows, mapping settings and file form."""
    key_is_column = draw(st.booleans())
    roles = [r for r in ROLES if key_is_column or r != "key"]
    extras = draw(st.integers(0, 3))
    names = draw(
        st.lists(names, min_size=len(roles) + extras, max_size=len(roles) + extras, unique=True)
    )
    columns = draw(st.permutations(names))
    role_of = dict(zip(roles, names, strict=False))
    zone = draw(st.sampled_from(ZONES))
    id_type = draw(st.sampled_from(("string", "number", "json")))
    n = draw(st.integers(1, max_rows))
    rows, expects = [], []
    for _ in range(n):
        row, expect = draw(export_row(columns, role_of, zone, id_type))
        rows.append(row)
        expects.append(expect)
    draw(oversized(rows, expects, columns, role_of))
    export = Export(
        columns=list(columns),
        roles=role_of,
        rows=rows,
        expects=expects,
        zone=zone,
        settings={
            "snake_case": draw(st.sampled_from(("reject", "convert"))),
            "type": id_type,
            "normalize": draw(st.sampled_from(("none", "lowercase", "uppercase"))),
        },
        bom=draw(st.booleans()),
        crlf=draw(st.booleans()),
        quote_all=draw(st.booleans()),
        numbers=draw(st.booleans()),
        ascii_json=draw(st.booleans()),
    )
    if n >= 2 and draw(st.booleans()):
        at, column = draw(st.integers(2, n)), draw(st.sampled_from(columns))
        rows[at - 1][column] = STRAY + rows[at - 1][column]
        export.stray = (at, draw(st.sampled_from((b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80"))))
    # JSONL lines may lack the fields that are empty (never on line 1, so every key is seen).
    export.omit = {
        (i, c)
        for i, row in enumerate(rows[1:], 2)
        for c in columns
        if row[c] == "" and draw(st.booleans())
    }
    return export


# --- writing the two forms --------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string (JSON escapes are TOML escapes; DEL must be escaped too)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def mapping_text(export: Export) -> str:
    """The mapping file for an export."""
    q, r, s = toml_string, export.roles, export.settings
    key = f"{{ column = {q(r['key'])} }}" if "key" in r else '{ value = "email" }'
    return f"""\
[fields]
embeddable_id     = {q(r["embeddable_id"])}
timestamp         = {{ column = {q(r["timestamp"])}, timezone = {q(export.zone)} }}
custom_event_name = {{ column = {q(r["event"])}, snake_case = "{s["snake_case"]}" }}

[identifier]
key   = {key}
value = {{ column = {q(r["value"])}, type = "{s["type"]}", normalize = "{s["normalize"]}" }}

[props]
metrics     = [{q(r["metric"])}]
dimensions  = [{q(r["dim"])}]
columns     = [{q(r["col"])}]
json_column = {q(r["json"])}
"""


def csv_field(value: str, quote_all: bool) -> str:
    """One CSV field, quoted by the book when it must be (or always)."""
    if quote_all or any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def encoded(text: str, export: Export) -> bytes:
    """The file's bytes: the BOM, and the stray byte in place of its marker."""
    data = text.encode("utf-8")
    if export.stray is not None:
        data = data.replace(STRAY.encode(), export.stray[1])
    return (b"\xef\xbb\xbf" if export.bom else b"") + data


def csv_bytes(export: Export) -> bytes:
    """The export as CSV."""
    end = "\r\n" if export.crlf else "\n"
    lines = [",".join(csv_field(c, export.quote_all) for c in export.columns)]
    lines += [
        ",".join(csv_field(row[c], export.quote_all) for c in export.columns) for row in export.rows
    ]
    return encoded(end.join(lines) + end, export)


NUMBER = re.compile(r"-?(0|[1-9][0-9]{0,14})(\.[0-9]{1,6})?")


def json_value(cell: str, export: Export) -> Any:
    """A cell as a JSONL value: the text, or (with ``numbers``) the number or object it is."""
    if not export.numbers:
        return cell
    # Only numbers that JSON writes back as the same text ("-0" would be written 0).
    if NUMBER.fullmatch(cell) and json.dumps(json.loads(cell)) == cell:
        return json.loads(cell)
    if cell in ("true", "false"):
        return cell == "true"
    if cell.startswith("{"):
        try:
            value = json.loads(cell)
        except ValueError:
            return cell
        # Only objects whose text is what the tool would make of the object itself.
        if isinstance(value, dict) and cell == json.dumps(value, separators=(",", ":")):
            return value
    return cell


def jsonl_bytes(export: Export) -> bytes:
    """The export as JSONL: one object per row, keys in column order."""
    end = "\r\n" if export.crlf else "\n"
    ascii_only = export.ascii_json and export.stray is None
    lines = []
    for i, row in enumerate(export.rows, 1):
        record = {
            c: json_value(row[c], export) for c in export.columns if (i, c) not in export.omit
        }
        lines.append(json.dumps(record, ensure_ascii=ascii_only))
    return encoded(end.join(lines) + end, export)


# --- running and checking ---------------------------------------------------------------


@dataclass
class Outcome:
    """What validation made of one file: the report, and each row's reason and payload."""

    report: ValidationReport
    rows: list[tuple[int, str | None, str | None]]

    def by_row(self) -> dict[int, tuple[str | None, str | None]]:
        """Reason and payload by row number."""
        return {row: (reason, payload) for row, reason, payload in self.rows}


def validated(path: Path, mapping: Path) -> Outcome:
    """Validate one file with payloads built, as ``send --dry-run`` does."""
    rows: list[tuple[int, str | None, str | None]] = []

    def keep(batch: pipeline.CheckedBatch) -> None:
        rows.extend(batch.checked.select(ROW, REASON, PAYLOAD).iter_rows())

    report = pipeline.validate([str(path)], load_mapping(mapping), bodies=True, on_batch=keep)
    return Outcome(report, rows)


def written(directory: Path, export: Export) -> tuple[Path, Path, Path]:
    """Write the CSV, the JSONL and the mapping of an export."""
    directory.mkdir(parents=True, exist_ok=True)
    mapping = directory / "mapping.toml"
    mapping.write_text(mapping_text(export), encoding="utf-8")
    csv_path, jsonl_path = directory / "export.csv", directory / "export.jsonl"
    csv_path.write_bytes(csv_bytes(export))
    jsonl_path.write_bytes(jsonl_bytes(export))
    return csv_path, jsonl_path, mapping


def check_accounted(outcome: Outcome, rows: int) -> None:
    """Every row once; the counts add up."""
    report = outcome.report
    assert sorted(row for row, _, _ in outcome.rows) == list(range(1, rows + 1))
    assert report.rows == rows
    assert report.valid + report.invalid == rows
    assert sum(report.invalid_by_reason.values()) == report.invalid
    assert report.valid == sum(1 for _, reason, _ in outcome.rows if reason is None)


def check_payloads(outcome: Outcome) -> None:
    """Every valid row has a payload the API accepts; no invalid row has one."""
    for row, reason, payload in outcome.rows:
        if reason is not None:
            assert payload is None, row
            continue
        assert payload is not None, row
        body = parse_event(payload.encode("utf-8"))
        assert isinstance(json.loads(body["custom_event_props"]), dict)


def check_times(export: Export, outcome: Outcome) -> None:
    """Timestamps whose meaning is known are sent as that instant, or refused as they must be."""
    limit = NOW + timedelta(minutes=5)
    for row, (reason, payload) in sorted(outcome.by_row().items()):
        expect = export.expects[row - 1]
        if expect.kind == "any" or reason in BEFORE_TIME:
            continue
        text = export.rows[row - 1][export.roles["timestamp"]]
        if expect.kind == "bad":
            assert reason == Reason.BAD_TIMESTAMP, (row, text)
            continue
        assert expect.at is not None
        if expect.at > limit:
            assert reason == Reason.FUTURE_TIMESTAMP, (row, text, expect.at)
            continue
        assert reason not in (Reason.BAD_TIMESTAMP, Reason.FUTURE_TIMESTAMP), (row, text)
        if reason is None:
            assert payload is not None
            sent = json.loads(payload)["timestamp"]
            assert sent == f"{expect.at:%Y-%m-%dT%H:%M:%S}.{expect.at.microsecond // 1000:03d}Z", (
                row,
                text,
            )


def check_file(path: Path, mapping: Path, export: Export) -> Outcome:
    """Validate one form and check what holds for any file."""
    outcome = validated(path, mapping)
    check_accounted(outcome, len(export.rows))
    check_payloads(outcome)
    check_times(export, outcome)
    if export.stray is not None:
        assert outcome.by_row()[export.stray[0]][0] == Reason.MALFORMED_ROW
    return outcome


def differences(a: Outcome, b: Outcome) -> dict[int, tuple[Any, Any]]:
    """The rows on which two outcomes differ, with both versions."""
    left, right = a.by_row(), b.by_row()
    return {
        row: (left.get(row), right.get(row))
        for row in left | right
        if left.get(row) != right.get(row)
    }


def others(outcome: Outcome, stray: tuple[int, bytes] | None) -> dict[int, tuple[Any, Any]]:
    """Reasons and payloads of the rows without the stray byte."""
    skip = stray[0] if stray else None
    return {row: value for row, value in outcome.by_row().items() if row != skip}


# --- the properties ---------------------------------------------------------------------


@SETTINGS
@given(export=exports())
def test_any_export_validates_alike_as_csv_and_as_jsonl(
    tmp_path_factory: Any, export: Export
) -> None:
    directory = tmp_path_factory.mktemp("hostile")
    csv_path, jsonl_path, mapping = written(directory, export)
    from_csv = check_file(csv_path, mapping, export)
    from_jsonl = check_file(jsonl_path, mapping, export)
    differ = differences(from_csv, from_jsonl)
    assert differ == {}, str(differ)[:2000]
    assert from_csv.report.invalid_by_reason == from_jsonl.report.invalid_by_reason
    assert from_csv.report.repairs == from_jsonl.report.repairs
    if export.stray is not None:
        clean = Export(**{**export.__dict__, "stray": None})
        clean.rows = [{c: v.replace(STRAY, "") for c, v in row.items()} for row in export.rows]
        clean_csv, clean_jsonl, _ = written(directory / "clean", clean)
        assert others(from_csv, export.stray) == others(validated(clean_csv, mapping), export.stray)
        assert others(from_jsonl, export.stray) == others(
            validated(clean_jsonl, mapping), export.stray
        )


# --- broken CSV: no JSONL form, so checked against the same CSV written by the book ---------

BREAKS = ("more fields", "fewer fields", "open quote", "stray quote", "quoted quotes")


@st.composite
def broken_csvs(draw: st.DrawFn) -> tuple[Export, dict[int, str]]:
    """An export of one-line records, and the rows to break (at most one odd quote a file).

    Two unmatched quotes make everything between them one quoted field, which is how CSV
    reads: no reader can tell. So only one break leaves an odd quote behind.
    """
    export = draw(exports(max_rows=8))
    assume(not any("\n" in c or "\r" in c for c in export.columns))
    export.rows = [
        {c: v.replace("\n", " ").replace("\r", " ").replace(STRAY, "") for c, v in row.items()}
        for row in export.rows
    ]
    export.stray = None
    rows = draw(st.sets(st.integers(1, len(export.rows)), min_size=1, max_size=3))
    kinds = [draw(st.sampled_from(BREAKS)) for _ in rows]
    odd = [i for i, kind in enumerate(kinds) if kind in ("open quote", "stray quote")]
    for i in odd[1:]:
        kinds[i] = "more fields"
    return export, dict(zip(sorted(rows), kinds, strict=True))


def broken_line(fields: list[str], kind: str, at: int) -> str:
    """One record's line, broken the given way at field ``at``."""
    fields = list(fields)
    at %= len(fields)
    bare = fields[at].replace('"', "").replace(",", " ")  # no quote or separator of its own
    if kind == "more fields":
        fields.append("extra")
    elif kind == "fewer fields":
        fields.pop(at)
    elif kind == "open quote":
        fields[at] = '"' + bare
    elif kind == "stray quote":
        fields[at] = f'a"{bare}'
    else:
        fields[at] = f'a"{bare}"b'
    return ",".join(fields)


@settings(SETTINGS, max_examples=20)
@given(case=broken_csvs(), at=st.integers(0, 20))
def test_broken_csv_quoting_costs_only_its_rows(
    tmp_path_factory: Any, case: tuple[Export, dict[int, str]], at: int
) -> None:
    export, breaks = case
    directory = tmp_path_factory.mktemp("broken")
    clean_csv, _, mapping = written(directory, export)
    end = "\r\n" if export.crlf else "\n"
    lines = clean_csv.read_bytes().decode("utf-8").removeprefix("\ufeff").split(end)
    for row, kind in breaks.items():
        fields = [csv_field(export.rows[row - 1][c], export.quote_all) for c in export.columns]
        lines[row] = broken_line(fields, kind, at)
    broken = directory / "broken.csv"
    broken.write_bytes(encoded(end.join(lines), export))
    outcome = validated(broken, mapping)
    check_accounted(outcome, len(export.rows))
    check_payloads(outcome)
    got, clean = outcome.by_row(), validated(clean_csv, mapping).by_row()
    for row, kind in breaks.items():
        if kind in ("more fields", "fewer fields", "open quote", "stray quote"):
            assert got[row][0] == Reason.MALFORMED_ROW, (row, kind)
    assert {r: v for r, v in got.items() if r not in breaks} == {
        r: v for r, v in clean.items() if r not in breaks
    }


# --- the command line: exit code, report and invalid rows file ----------------------------


@settings(SETTINGS, max_examples=8)
@given(export=exports(max_rows=4))
def test_validate_command_reports_every_row_without_a_traceback(
    tmp_path_factory: Any, export: Export
) -> None:
    directory = tmp_path_factory.mktemp("cli")
    for path in written(directory, export)[:2]:
        report, invalid = directory / f"{path.name}.report.json", directory / f"{path.name}.bad.csv"
        args = ["validate", str(path), "-m", str(directory / "mapping.toml")]
        args += ["--report", str(report), "--invalid-out", str(invalid)]
        result = CliRunner().invoke(cli, args, prog_name="backfill")
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert "Traceback" not in result.output
        data = json.loads(report.read_text(encoding="utf-8"))
        assert data["rows"] == len(export.rows)
        assert data["valid"] + data["invalid"] == data["rows"]
        assert sum(data["invalid_by_reason"].values()) == data["invalid"]
        assert result.exit_code == (0 if data["invalid"] == 0 else 1), result.output
        # Not the csv module: raising its field size limit would hide a bug of the tool's.
        bad = pl.read_csv(invalid, infer_schema=False)
        assert bad.height == data["invalid"]
        if path.suffix == ".csv":
            check_invalid_cells(invalid, bad, export)


def check_invalid_cells(invalid: Path, bad: pl.DataFrame, export: Export) -> None:
    """The invalid rows file of a CSV holds each invalid row's cells under the export's names.

    A malformed row (a stray byte) is left out: its cells are what could be read of it.
    """
    # The csv module for the header: Polars reads a name's doubled quotes ("") as two quotes.
    with invalid.open(encoding="utf-8", newline="") as f:
        assert next(csv.reader(f))[4:] == export.columns
    skip = export.stray[0] if export.stray else None
    for record in bad.iter_rows():
        row = int(record[1])
        if row != skip:
            cells = [cell or "" for cell in record[4:]]
            assert cells == [export.rows[row - 1][c] for c in export.columns], row


# --- bugs, pinned ---------------------------------------------------------------------------

PLAIN_MAPPING = """\
[fields]
embeddable_id     = {flow}
timestamp         = "ts"
custom_event_name = "ev"

[identifier]
key   = {{ value = "email" }}
value = {{ column = "email" }}

[props]
json_column = "extra"
"""
PLAIN_ROW = {"ts": "2024-03-01T12:00:00Z", "ev": "signed_up", "email": "a@b.c", "extra": "{}"}


def plain_export(directory: Path, form: str, rows: list[dict[str, Any]], flow: str) -> Path:
    """Write rows (CSV cells or JSONL values) and a mapping whose embeddable_id is ``flow``."""
    (directory / "mapping.toml").write_text(
        PLAIN_MAPPING.format(flow=toml_string(flow)), encoding="utf-8"
    )
    path = directory / f"export.{form}"
    if form == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        columns = list(rows[0])
        lines = [",".join(csv_field(c, False) for c in columns)]
        lines += [",".join(csv_field(str(r[c]), False) for c in columns) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "form", "mapped"),
    [
        pytest.param("__row", "csv", True, id="__row-csv-mapped"),
        pytest.param("__row", "csv", False, id="__row-csv-extra"),
        pytest.param("__row", "jsonl", True, id="__row-jsonl-mapped"),
        pytest.param("__row", "jsonl", False, id="__row-jsonl-extra"),
        pytest.param("__malformed", "csv", True, id="__malformed-csv-mapped"),
        pytest.param("__malformed", "jsonl", True, id="__malformed-jsonl-mapped"),
        pytest.param("__malformed", "csv", False, id="__malformed-csv-extra"),
        pytest.param("__line", "jsonl", True, id="__line-jsonl-mapped"),
        pytest.param("__line", "csv", True, id="__line-csv-mapped"),
        pytest.param("*", "csv", True, id="star-csv-mapped"),
        pytest.param("*", "csv", False, id="star-csv-extra"),
        pytest.param("*", "jsonl", True, id="star-jsonl-mapped"),
        pytest.param("^fl.*$", "csv", True, id="regex-csv-mapped"),
        pytest.param("^fl.*$", "jsonl", True, id="regex-jsonl-mapped"),
        pytest.param("a\\b", "jsonl", True, id="backslash-jsonl-mapped"),
        pytest.param("ends\\", "jsonl", True, id="trailing-backslash-jsonl"),
        pytest.param("a\\b", "csv", True, id="backslash-csv-mapped"),
        pytest.param("it's 'x'", "jsonl", True, id="two-quotes-jsonl-mapped"),
        pytest.param("it's", "jsonl", True, id="one-quote-jsonl-mapped"),
        # U+FFFF marks undecodable bytes of a transcoded input; in UTF-8 it is a character.
        pytest.param("\uffff", "csv", True, id="uffff-csv-mapped"),
        pytest.param("\uffff", "csv", False, id="uffff-csv-extra"),
        pytest.param("\uffff", "jsonl", True, id="uffff-jsonl-mapped"),
    ],
)
def test_a_column_name_is_only_a_name(tmp_path: Path, name: str, form: str, mapped: bool) -> None:
    row = {name: "flow_1", **PLAIN_ROW} if mapped else {"flow": "flow_1", **PLAIN_ROW, name: "x"}
    path = plain_export(tmp_path, form, [row], name if mapped else "flow")
    outcome = validated(path, tmp_path / "mapping.toml")
    assert outcome.rows == [(1, None, outcome.rows[0][2])]
    assert json.loads(outcome.rows[0][2] or "{}")["embeddable_id"] == "flow_1"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("note", id="plain"),
        pytest.param("__row", id="__row"),
        pytest.param("__malformed", id="__malformed"),
        pytest.param("__line", id="__line"),
        pytest.param("*", id="star"),
        pytest.param("^fl.*$", id="regex"),
    ],
)
def test_the_invalid_rows_file_keeps_every_column(tmp_path: Path, name: str) -> None:
    row = {"flow": "flow_1", **PLAIN_ROW, "ev": "Not Snake", name: "kept"}
    path = plain_export(tmp_path, "csv", [row], "flow")
    invalid = tmp_path / "invalid.csv"
    mapping = load_mapping(tmp_path / "mapping.toml")
    pipeline.validate([str(path)], mapping, invalid_out=str(invalid))
    assert pl.read_csv(invalid, infer_schema=False)[name].to_list() == ["kept"]


def nested_text(depth: int) -> str:
    """The JSON text of an object nested ``depth`` levels deep."""
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    ("form", "depth", "as_object"),
    [
        pytest.param("csv", 127, False, id="csv-127"),
        pytest.param("jsonl", 127, False, id="jsonl-text-127"),
        pytest.param("jsonl", 127, True, id="jsonl-object-127"),
        pytest.param("csv", 128, False, id="csv-128"),
        pytest.param("jsonl", 128, False, id="jsonl-text-128"),
        pytest.param("jsonl", 300, True, id="jsonl-object-300"),
        pytest.param("csv", 300, False, id="csv-300"),
    ],
)
def test_deeply_nested_props_are_a_json_object(
    tmp_path: Path, form: str, depth: int, as_object: bool
) -> None:
    extra: Any = json.loads(nested_text(depth)) if as_object else nested_text(depth)
    path = plain_export(tmp_path, form, [{"flow": "flow_1", **PLAIN_ROW, "extra": extra}], "flow")
    outcome = validated(path, tmp_path / "mapping.toml")
    assert [reason for _, reason, _ in outcome.rows] == [None]
    parse_event((outcome.rows[0][2] or "").encode())


def test_a_jsonl_line_too_deep_for_python_is_one_malformed_row(tmp_path: Path) -> None:
    deep = {"flow": "flow_1", **PLAIN_ROW}
    line = json.dumps(deep)[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = tmp_path / "export.jsonl"
    path.write_text(line + "\n" + json.dumps(deep) + "\n", encoding="utf-8")
    (tmp_path / "mapping.toml").write_text(PLAIN_MAPPING.format(flow='"flow"'), encoding="utf-8")
    outcome = validated(path, tmp_path / "mapping.toml")
    assert [(row, reason) for row, reason, _ in outcome.rows] == [
        (1, Reason.MALFORMED_ROW),
        (2, None),
    ]


@pytest.mark.parametrize(
    ("cell", "sent"),
    [
        pytest.param("1700000000.123", "2023-11-14T22:13:20.123Z", id="exact"),
        pytest.param("135055374.2", "1974-04-13T03:22:54.200Z", id="float-drift"),
        pytest.param("4317987067.69", "2106-10-31T16:51:07.690Z", id="float-drift-future"),
        pytest.param("1700000000.9999999999", "2023-11-14T22:13:20.999Z", id="nines-not-rounded"),
        pytest.param("1700000000123.9999", "2023-11-14T22:13:20.123Z", id="millis-fraction"),
    ],
)
def test_epoch_seconds_keep_their_milliseconds(tmp_path: Path, cell: str, sent: str) -> None:
    row = {"flow": "flow_1", **PLAIN_ROW, "ts": cell}
    path = plain_export(tmp_path, "csv", [row], "flow")
    inp = open_input(str(path))
    try:
        rows = next(batches(inp))
    finally:
        inp.close()
    later = datetime(2200, 1, 1, tzinfo=UTC)  # so that a moment in 2106 is not in the future
    checked = build_payloads(rows, load_mapping(tmp_path / "mapping.toml"), later)
    assert json.loads(checked[PAYLOAD][0])["timestamp"] == sent


@pytest.mark.parametrize(
    "cell",
    [
        pytest.param("2024-01-01T12:00:00+25:00", id="hours-25"),
        pytest.param("2024-01-01T12:00:00+99:99", id="hours-99"),
        pytest.param("2024-01-01T12:00:00-05:75", id="minutes-75"),
        pytest.param("2024-01-01T12:00:00+24:00", id="hours-24"),
        pytest.param("2024-01-01T12:00:00.123+0:530", id="colon-misplaced"),
        pytest.param("2024-01-01T12:00:00+\u0660\u0665:\u0660\u0660", id="arabic-indic-digits"),
        pytest.param("2024-01-01T12:00+99:99", id="no-seconds"),
    ],
)
def test_an_offset_out_of_range_is_a_bad_timestamp(tmp_path: Path, cell: str) -> None:
    path = plain_export(tmp_path, "csv", [{"flow": "flow_1", **PLAIN_ROW, "ts": cell}], "flow")
    outcome = validated(path, tmp_path / "mapping.toml")
    assert [reason for _, reason, _ in outcome.rows] == [Reason.BAD_TIMESTAMP]


def test_a_huge_cell_in_a_chunk_read_by_the_csv_module_costs_no_rows(tmp_path: Path) -> None:
    rows = [{"flow": "flow_1", **PLAIN_ROW, "extra": "{}"} for _ in range(5)]
    rows[0]["ev"] = "signed\nup"  # a quoted line break: the chunk goes to the csv module
    rows[1]["ts"] = "x" * 200_000
    path = plain_export(tmp_path, "csv", rows, "flow")
    outcome = validated(path, tmp_path / "mapping.toml")
    assert [reason for _, reason, _ in outcome.rows] == [
        Reason.BAD_EVENT_NAME,
        Reason.BAD_TIMESTAMP,
        None,
        None,
        None,
    ]
