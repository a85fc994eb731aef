"""Guess a mapping file from a sample of an export: the core of ``backfill init``.

The first rows of the input (``SAMPLE_ROWS`` at most, read with ``backfill.inputs`` so every
input kind works; a directory, archive or prefix by its first export in name order) are
profiled column by column with Polars expressions. Timestamps and
event names are tried with the very rules ``validate`` applies (``build_payloads`` on the
sample), so a guess never relies on a parser of its own. Each field is chosen by its column
name first, then by how many of its values fit:

- timestamp: a column of native timestamps (Parquet), else the column whose values read as
  timestamps (ISO 8601, epoch seconds or milliseconds, or a common day/month format); none:
  refused, nothing is written, since a constant time would silently date every event the
  same.
- identifier: a column of email addresses (key ``{ value = "email" }``), else a column named
  like a user id (key ``{ value = "<column>" }``); none: refused, as for the timestamp.
- embeddable id, event name: a column named for them (or, for event names, values that look
  like event names); none: a placeholder constant and a warning. The embeddable id
  placeholder passes validation; the event name placeholder is not snake_case, so
  ``validate`` flags every row until it is filled in.
- props: numbers are metrics, text with few distinct values that repeat are dimensions, and
  a column of JSON objects is the json_column; the other columns are listed, not sent.

A Parquet struct column is guessed key by key, as paths (``user.email``). A delimited
input's dialect is sniffed first: its encoding from its first bytes (UTF-8, else UTF-16 by
its byte order mark, else cp1252, else latin-1), its delimiter from its header (the commonest
of ``,`` ``;`` tab ``|``), which read the sample; then decimal commas from the sample's
numbers (12,50; 1.234,50). What was sniffed is printed, and written to an ``[input]`` table
when it is not what the reader assumes anyway.

Exports of the common analytics tools (Mixpanel, Amplitude, Segment, PostHog, GA4, Heap)
are recognised first, by their telltale columns and the keys nested in them; a recognised
export (or one named with ``preset``) gets that tool's mapping from ``backfill.presets``.
Anything else is guessed column by column as above.

The mapping text is loaded back with ``load_mapping`` before it is written: ``init`` never
writes a mapping that the tool itself would refuse.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import io
import json
import os
import re
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import polars as pl
import polars.selectors as cs

from backfill.codes import Reason, Repair
from backfill.errors import Hint, InputError, MappingError, UsageError
from backfill.inputs import (
    BOM,
    GZIP_MAGIC,
    MALFORMED,
    SEPARATORS,
    Dialect,
    batches,
    format_of_name,
    frame_column,
    open_input,
    parquet_types,
    sniff_delimiter,
)
from backfill.locate import Located, locate
from backfill.mapping import Mapping, Source, check_columns, load_mapping
from backfill.payloads import CONVERTIBLE_NAME, JSON_NUMBER, REASON, build_payloads
from backfill.pipeline import check_outputs

if TYPE_CHECKING:
    from backfill.presets import Recognised

SAMPLE_ROWS = 10_000
MIN_SHARE = 0.5  # a column named for a field qualifies when half its values fit
MIN_SHARE_UNNAMED = 0.9  # a column chosen by its values alone must fit almost always
MAX_DIMENSION_VALUES = 50
EMBEDDABLE_PLACEHOLDER = "REPLACE_WITH_EMBEDDABLE_ID"
EVENT_NAME_PLACEHOLDER = "REPLACE_WITH_EVENT_NAME"
EMBEDDABLE_WARNING = (
    "no column is named like an embeddable id: every row goes to the placeholder"
    f" '{EMBEDDABLE_PLACEHOLDER}' (validate accepts it); fill in fields.embeddable_id"
    " before sending"
)
DEFAULT_OUTPUT = "mapping.toml"

EMAIL = r'^[\\"]*[^@\s"\\]+@[^@\s"\\]+\.[^@\s"\\]+[\\"]*$'
WORDY = r"[ _\-./]|[a-z][A-Z]"  # a name of several words: "Signed Up", "signedUp", "sign_up"
ID_LIKE = r"(^|_)(id|ids|uuid|guid)$"
# Day/month formats tried when a column does not read with the built-in rules; in pairs
# that read the same value two ways, the day-first one is listed first.
FORMATS = (
    "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
)
DAY_MONTH = r"^\d{1,4}[/.]\d{1,2}[/.]\d{1,4}"


@dataclass(frozen=True)
class Names:
    """How columns are recognised by name: exact names (best first) and a looser pattern."""

    exact: tuple[str, ...]
    hint: str

    def tier(self, column: str) -> int:
        """2 for an exact name, 1 for a name that fits the pattern, 0 otherwise."""
        name = normal_name(column)
        if name in self.exact:
            return 2
        return 1 if re.search(self.hint, name) else 0

    def rank(self, column: str) -> int:
        """Position in the exact names (earlier is better), len(exact) when not there."""
        name = normal_name(column)
        return self.exact.index(name) if name in self.exact else len(self.exact)


TIMESTAMP_NAMES = Names(
    (
        "occurred_at",
        "timestamp",
        "event_time",
        "event_timestamp",
        "time",
        "created_at",
        "ts",
        "datetime",
        "date",
        "event_date",
        "received_at",
        "sent_at",
    ),
    r"(^|_)(time|timestamp|ts|date|datetime)($|_)|_at$",
)
EMAIL_NAMES = Names(
    ("email", "user_email", "email_address", "mail", "e_mail", "user_mail", "customer_email"),
    r"mail",
)
IDENTIFIER_NAMES = Names(
    (
        "user_id",
        "userid",
        "customer_id",
        "distinct_id",
        "person_id",
        "contact_id",
        "member_id",
        "account_id",
        "external_id",
        "uid",
        "user",
        "phone",
        "phone_number",
        "identifier",
    ),
    r"^(user|customer|person|contact|member|account)(_|$)",
)
EVENT_NAMES = Names(
    (
        "event",
        "event_name",
        "custom_event_name",
        "event_type",
        "action",
        "name",
        "type",
        "activity",
    ),
    r"event|action|activity",
)
EMBEDDABLE_NAMES = Names(
    ("embeddable_id", "embeddable", "flow_id", "flow", "embeddable_key", "flow_key"),
    r"embeddable|(^|_)flow(_|$)",
)
JSON_NAMES = Names(
    ("props", "properties", "extra", "metadata", "meta", "context", "attributes", "data"),
    r"prop|meta|extra",
)


def normal_name(column: str) -> str:
    """A column name in snake_case for matching: 'eventTime', 'Event Time' -> 'event_time'."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", column.strip())
    return re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")


@dataclass(frozen=True)
class Profile:
    """Counts over one column's non-empty sampled values."""

    column: str
    filled: int  # non-empty values
    distinct: int
    numbers: int  # JSON numbers
    emails: int
    objects: int  # JSON objects (or their text)
    wordy: int  # convertible names of several words
    seconds: int = 0  # whole numbers of 9-10 digits (epoch seconds)
    millis: int = 0  # whole numbers of 11-13 digits (epoch milliseconds)
    dated: int = 0  # values with four digits in a row (a year, or epoch digits)

    def share(self, count: int) -> float:
        """A count as a share of the non-empty values."""
        return count / self.filled if self.filled else 0.0

    @property
    def repeated(self) -> bool:
        """Whether some value occurs more than once."""
        return self.distinct < self.filled


@dataclass(frozen=True)
class TimeFit:
    """How well a column reads as timestamps under the validate rules."""

    share: float  # of the non-empty values, those that validate
    filled: int
    naive: int  # values read without an offset (the time zone is assumed)
    format: str | None = None
    also: str | None = None  # another format that reads the values as well
    example: str | None = None  # a value that does not read


@dataclass(frozen=True)
class Guess:
    """One field's guess: the column(s) chosen and why, for the user to check."""

    field: str
    choice: str
    reason: str

    def line(self) -> str:
        """How the guess is shown: 'timestamp: occurred_at (name; 98% of ... parse)'."""
        return f"{self.field}: {self.choice} ({self.reason})"


@dataclass
class Guessed:
    """What ``init`` found in the sample: the mapping text, the guesses and the warnings."""

    source: str  # the input as given: a file, a directory, an archive
    rows: int
    text: str = ""
    guesses: list[Guess] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    preset: str | None = None  # the tool's preset the mapping was built from
    recognised: Recognised | None = None  # why the export was taken for that tool's
    forced: bool = False  # the preset was asked for, not recognised
    sampled: str = ""  # the input the rows come from, when not the source itself
    note: str = ""  # which of the source's inputs that is: 'the first of 3 files in x/'
    dialect: Sniffed | None = None  # a delimited input's dialect, and why

    def heading(self) -> str:
        """What the guesses were made from: 'Guessed from 300 sampled rows of events.csv:'."""
        rows = _count(self.rows, "sampled row")
        name = self.sampled or self.source
        if self.recognised is None:
            return f"Guessed from {rows} of {name}{f' ({self.note})' if self.note else ''}:"
        found = self.recognised
        rows += f"; {self.note}" if self.note else ""
        if self.forced:
            head = f"Preset {found.preset.name} ({found.preset.title}) for {name} ({rows})"
        else:
            head = f"Recognised {found.preset.title} in {name} ({rows})"
        return f"{head}: {found.because()}"

    def header(self, verb: str) -> list[str]:
        """The mapping file's first comments: what it was made from."""
        lines = [
            _comment(f"Mapping for {self.source}, {verb} by `backfill init` from")
            + f" {_count(self.rows, 'sampled row')}."
        ]
        if self.note:
            lines.append(_comment(f"The rows are those of {self.sampled}, {self.note}."))
        return lines

    def how_to_check(self, what: str, output: str) -> list[str]:
        """The comments that say to check each guess (or choice) and how to validate, then
        the [input] table when the dialect needs one."""
        return [
            f"# Check each {what} (the comment above each setting says why it was made), then run:",
            _comment(f"  backfill validate {self.source} -m {output}"),
            "",
            *(self.dialect.table() if self.dialect else []),
        ]


@dataclass
class Choices:
    """The chosen columns and settings the mapping file is written from."""

    timestamp: str
    time: TimeFit
    identifier: str
    email: bool
    embeddable: str | None = None
    event: str | None = None
    convert: bool = False
    metrics: list[str] = field(default_factory=list)
    dimensions: list[str] = field(default_factory=list)
    json_column: str | None = None
    unsent: list[str] = field(default_factory=list)
    native_time: bool = False  # the timestamp column holds native timestamps (Parquet)
    decimal_comma: bool = False  # metrics are written with decimal commas


def init(
    source: str,
    output: str = DEFAULT_OUTPUT,
    fmt: str | None = None,
    force: bool = False,
    sample_rows: int = SAMPLE_ROWS,
    preset: str | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
) -> Guessed:
    """Guess a mapping for an input and write it to ``output``; refused if it exists.

    ``preset`` (one of ``presets.PRESET_NAMES``) takes that tool's mapping without
    recognising it; ``delimiter`` and ``encoding`` are taken as given instead of sniffed.
    """
    check_outputs([output], [source])
    _refuse_output_inside(output, source)
    if Path(output).exists() and not force:
        raise UsageError(
            f"{output} already exists; ask to replace it to write over it",
            file=output,
            hint=Hint.REPLACE,
        )
    sample = read_sample(source, fmt, sample_rows, delimiter, encoding)
    refuse_one_column(sample)
    guessed = guess_any(sample, source, output, preset)
    write_mapping(guessed.text, output, sample.name, sample.columns, force)
    return guessed


def _refuse_output_inside(output: str, source: str) -> None:
    """Refuse a mapping written among the exports of a directory: it would be read as one."""
    if source == "-" or not Path(source).is_dir():
        return
    try:
        inside = Path(output).resolve().relative_to(Path(source).resolve())
    except ValueError:
        return
    if not any(part.startswith((".", "_")) for part in inside.parts):
        raise UsageError(
            f"{output}: is inside the input directory {source}, where validate would read it"
            " as an export; write it elsewhere",
            file=output,
        )


def guess_any(sample: Sample, source: str, output: str, preset: str | None = None) -> Guessed:
    """A known tool's mapping when the export is one (or ``preset`` says so), else a guess.

    ``source`` is the input as given (a file, a directory, an archive): the mapping's
    comments name it in the validate command to run.
    """
    # Here, not at the top: presets builds on this module's sample, guesses and TOML writing.
    from backfill.presets import known_tool_mapping

    found = known_tool_mapping(sample, source, output, preset)
    return found if found is not None else guess_mapping(sample, source, output)


@dataclass
class Sample:
    """The first rows of an export, as text, and what init learnt of it on the way."""

    frame: pl.DataFrame  # the sampled rows (readable ones), plus a column per struct key
    columns: list[str]  # the input's own columns (or top-level keys)
    name: str  # the input sampled: a file, an archive member, an object
    note: str = ""  # which of several inputs it is: 'the first of 3 files in exports/'
    dialect: Sniffed | None = None  # a delimited input's dialect, and why
    read: list[str] = field(default_factory=list)  # the columns the reader gives as text
    times: list[str] = field(default_factory=list)  # columns of native timestamps (Parquet)
    paths: dict[str, list[str]] = field(default_factory=dict)  # struct column -> key paths

    def candidates(self) -> list[str]:
        """The columns a field may take: a struct column's key paths stand in for it."""
        found: list[str] = []
        for column in usable(self.columns):
            if column in self.paths:
                found += self.paths[column]
            elif column in self.read:
                found.append(column)
        return found


def read_sample(
    source: str,
    fmt: str | None = None,
    rows: int = SAMPLE_ROWS,
    delimiter: str | None = None,
    encoding: str | None = None,
) -> Sample:
    """The first readable rows of an input (``rows`` at most, as text), and its columns.

    A directory, an archive or a prefix is sampled in its first export in name order. A
    delimited input's encoding and delimiter are sniffed from its first bytes (unless
    given), then its decimal commas from the rows read with them.
    """
    delimiter = None if delimiter == "auto" else delimiter
    units = locate(source)
    unit = units[0]
    note = _first_of(source, units)
    kind = format_of_name(unit.name, fmt)
    delimited = kind in ("csv", "tsv")
    dialect = None
    if delimited:
        unit, dialect = _sniffed_unit(unit, kind or "csv", delimiter, encoding)
    elif delimiter is not None or encoding is not None:
        given = GIVEN.format("encoding") if encoding else ""
        dialect = Sniffed(
            delimiter, GIVEN.format("delimiter"), encoding or "utf-8", given, delimited=False
        )
    inp = open_input(unit, fmt, _reader_dialect(dialect))
    frames: list[pl.DataFrame] = []
    try:
        types = parquet_types(inp) if inp.format == "parquet" else {}
        for frame in batches(inp, usable(inp.columns)):
            frames.append(frame)
            if sum(f.height for f in frames) >= rows:
                break
    finally:
        inp.close()
    frame = pl.concat(frames).head(rows) if frames else pl.DataFrame()
    count = frame.height
    if count:
        frame = frame.filter(pl.col(MALFORMED).is_null())
    if not frame.height:
        detail = f"none of the {_count(count, 'row')} sampled can be read" if count else "no rows"
        raise InputError(f"{unit.name}: nothing to guess a mapping from: {detail}", file=unit.name)
    sample = Sample(frame, inp.columns, unit.name, note, dialect)
    sample.read = [c for c in inp.columns if frame_column(c) in frame.columns]
    sample.times = [c for c, t in types.items() if isinstance(t, pl.Datetime | pl.Date)]
    _add_struct_paths(sample, types)
    if dialect is not None and delimited:
        _sniff_decimal_comma(sample, dialect)
    return sample


def _first_of(source: str, units: Sequence[Located]) -> str:
    """Which input of several the sample comes from: 'the first of 3 files in exports/'."""
    if len(units) == 1 and units[0].name == source:
        return ""
    if len(units) == 1:
        return f"the only file in {source}"
    return f"the first of {len(units):,} files in {source}"


def _reader_dialect(dialect: Sniffed | None) -> Dialect:
    """How the reader is to read the input: the sniffed or given dialect, else its defaults."""
    if dialect is None:
        return Dialect()
    return Dialect(dialect.delimiter, dialect.encoding)


def refuse_one_column(sample: Sample) -> None:
    """Refuse a delimited file whose header reads as one column: a mapping needs two (a
    timestamp and an identifier), so the delimiter must be another one."""
    dialect = sample.dialect
    if dialect is None or not dialect.delimited or len(sample.columns) != 1:
        return
    header = _show(sample.columns[0], 60)
    if dialect.delimiter_why == GIVEN.format("delimiter"):
        raise InputError(
            f"{sample.name}: with the delimiter {_toml(dialect.delimiter or '')} the header reads"
            f" as one column, '{header}'; nothing written",
            file=sample.name,
            hint=Hint.DELIMITER,
        )
    raise InputError(
        f"{sample.name}: the header reads as one column, '{header}': it holds no ',', ';', tab"
        " or '|' (name the delimiter if another character parts its columns); nothing written",
        file=sample.name,
        hint=Hint.DELIMITER,
    )


def usable(columns: Sequence[str]) -> list[str]:
    """The columns a mapping can name: not blank (a JSONL key "")."""
    return [c for c in columns if c.strip()]


def guess_mapping(sample: Sample, source: str, output: str) -> Guessed:
    """Guess every field from a sample, and render the mapping file."""
    frame = sample.frame
    comma = sample.dialect is not None and sample.dialect.decimal_comma
    profiles = profile(frame, sample.candidates(), decimal_comma=comma)
    times = {p.column: time_fit(frame, p) for p in profiles if _may_hold_times(p)}
    guessed = _guessed(sample, source)
    ts = pick_timestamp(profiles, times, sample.name, frame.height, native=sample.times)
    ident, email = pick_identifier(profiles, {ts}, sample.name)
    choices = Choices(ts, times[ts], ident, email, native_time=ts in sample.times)
    choices.decimal_comma = comma
    choices.embeddable = pick_embeddable(profiles, {ts, ident})
    taken = {ts, ident, choices.embeddable}
    # A column of numbers cannot hold event names: it is not tried.
    event_fits = {
        p.column: event_fit(frame, p)
        for p in profiles
        if p.column not in taken and p.numbers < p.filled
    }
    choices.event = pick_event(profiles, event_fits)
    if choices.event is not None:
        choices.convert = event_fits[choices.event].converted > 0
    taken.add(choices.event)
    pick_props(choices, [p for p in profiles if p.column not in taken], times)
    explain(guessed, choices, profiles, event_fits)
    if comma and sample.dialect is not None:
        guessed.warnings += [
            _point_warning(column, value) for column, value in sample.dialect.points
        ]
    guessed.text = render(choices, guessed, output)
    return guessed


def _point_warning(column: str, value: str) -> str:
    """Why a column of numbers with decimal points is no metric in a file of decimal commas."""
    read = value.replace(".", "").replace(",", ".", 1)
    return (
        f"column '{_show(column)}' holds numbers with a decimal point (e.g. '{_show(value, 20)}'):"
        f" with decimal_comma = true they would read as {read}, so it is not a metric"
    )


def _guessed(sample: Sample, source: str) -> Guessed:
    """The guesses of a sample, starting with what was sniffed of its dialect."""
    guessed = Guessed(source, sample.frame.height, sampled=sample.name, note=sample.note)
    guessed.dialect = sample.dialect
    if sample.dialect is not None:
        guessed.guesses += sample.dialect.guesses()
    return guessed


def _may_hold_times(p: Profile) -> bool:
    """Whether a column is worth trying as timestamps: every accepted shape has 4 digits."""
    return p.filled > 0 and (p.share(p.dated) >= MIN_SHARE or TIMESTAMP_NAMES.tier(p.column) > 0)


def _column(sample: pl.DataFrame, column: str) -> pl.Series:
    """An export's column of the sample (kept under another name if named like the reader's)."""
    return sample.get_column(frame_column(column))


def _text(column: str) -> pl.Expr:
    """A column as trimmed text, null when blank: what the validate rules see."""
    # By exact name: pl.col would read a column named "*" or "^...$" as a pattern.
    exact = cs.by_name(frame_column(column), require_all=True).as_expr()
    return exact.cast(pl.String).str.strip_chars().replace("", None)


def profile(
    sample: pl.DataFrame, columns: Sequence[str], decimal_comma: bool = False
) -> list[Profile]:
    """Counts for every column, computed in one pass over the sample.

    With decimal commas, numbers are those written so (12,50; 1.234,50; 12): a value like
    12.5 would read as 125, so it does not count as one.
    """
    exprs: list[pl.Expr] = []
    number = COMMA_NUMBER if decimal_comma else JSON_NUMBER
    for i, column in enumerate(columns):
        text = _text(column)
        compact = text.str.json_path_match("$")
        digits = text.str.extract(r"^([0-9]+)(\.[0-9]+)?$", 1).str.len_chars()
        exprs += [
            text.count().alias(f"{i}:filled"),
            text.drop_nulls().n_unique().alias(f"{i}:distinct"),
            text.str.contains(number).sum().alias(f"{i}:numbers"),
            text.str.contains(EMAIL).sum().alias(f"{i}:emails"),
            (text.str.starts_with("{") & compact.str.starts_with("{")).sum().alias(f"{i}:objects"),
            (text.str.contains(CONVERTIBLE_NAME) & text.str.contains(WORDY))
            .sum()
            .alias(f"{i}:wordy"),
            digits.is_between(9, 10).sum().alias(f"{i}:seconds"),
            digits.is_between(11, 13).sum().alias(f"{i}:millis"),
            text.str.contains(r"\d{4}").sum().alias(f"{i}:dated"),
        ]
    counts = sample.select(exprs).row(0, named=True)
    return [
        Profile(
            column,
            filled=counts[f"{i}:filled"],
            distinct=counts[f"{i}:distinct"],
            numbers=counts[f"{i}:numbers"] or 0,
            emails=counts[f"{i}:emails"] or 0,
            objects=counts[f"{i}:objects"] or 0,
            wordy=counts[f"{i}:wordy"] or 0,
            seconds=counts[f"{i}:seconds"] or 0,
            millis=counts[f"{i}:millis"] or 0,
            dated=counts[f"{i}:dated"] or 0,
        )
        for i, column in enumerate(columns)
    ]


def _trial(column: str | None = None, event: str | None = None, fmt: str | None = None) -> Mapping:
    """A mapping that reads one column as the timestamp or the event name; the rest constant.

    With an event column, names are converted: a value counts as an event name when it is
    snake_case or converts to it.
    """
    return Mapping(
        path="(init)",
        embeddable_id=Source("fields.embeddable_id", value="e"),
        timestamp=Source("fields.timestamp", column=column, value=None if column else "2024-01-01"),
        event_name=Source("fields.custom_event_name", column=event, value=None if event else "e"),
        identifier_key=Source("identifier.key", value="k"),
        identifier_value=Source("identifier.value", value="v"),
        timestamp_format=fmt,
        snake_case="convert" if event else "reject",
    )


def _read_times(sample: pl.DataFrame, p: Profile, fmt: str | None) -> TimeFit:
    """How many of a column's values validate as timestamps, with or without a format."""
    checked = build_payloads(sample, _trial(p.column, fmt=fmt), bodies=False)
    valid = checked[REASON].is_null()
    bad = _column(sample, p.column).filter(checked[REASON] == Reason.BAD_TIMESTAMP.value)
    return TimeFit(
        share=p.share(int(valid.sum())),
        filled=p.filled,
        naive=int(checked[Repair.TIMEZONE_ASSUMED.value].sum()),
        format=fmt,
        example=bad[0] if len(bad) else None,
    )


def time_fit(sample: pl.DataFrame, p: Profile) -> TimeFit:
    """How well a column reads as timestamps: built-in rules, else the best common format."""
    fit = _read_times(sample, p, None)
    if fit.share >= MIN_SHARE_UNNAMED:
        return fit
    day_month = _text(p.column).str.contains(DAY_MONTH).sum()
    if p.share(int(sample.select(day_month).item() or 0)) < MIN_SHARE:
        return fit
    tried = [_read_times(sample, p, f) for f in FORMATS]
    best = max(tried, key=lambda t: t.share)  # the first of equals: day-first
    if best.share <= fit.share:
        return fit
    swapped = _swap_day_month(best.format or "")
    also = next((t for t in tried if t.format == swapped and t.share == best.share), None)
    return dataclasses.replace(best, also=also.format if also else None)


def _swap_day_month(fmt: str) -> str:
    """A format with day and month swapped: '%d/%m/%Y' -> '%m/%d/%Y'."""
    swap = {"%d": "%m", "%m": "%d"}
    return "".join(swap.get(part, part) for part in re.split(r"(%[dm])", fmt))


def _best(candidates: Sequence[tuple[Profile, float]], names: Names) -> Profile | None:
    """The candidate with the best name, then the highest share, then the first column."""
    if not candidates:
        return None
    ranked = sorted(
        candidates, key=lambda c: (-names.tier(c[0].column), -c[1], names.rank(c[0].column))
    )
    return ranked[0][0]


def _qualifies(names: Names, column: str, share: float) -> bool:
    """Whether a share of fitting values is enough, given how the column is named."""
    return share >= (MIN_SHARE if names.tier(column) else MIN_SHARE_UNNAMED)


def pick_timestamp(
    profiles: list[Profile],
    times: dict[str, TimeFit],
    source: str,
    rows: int,
    native: Sequence[str] = (),
) -> str:
    """The timestamp column; refused when no column reads as timestamps.

    A column of native timestamps (Parquet) is taken first, whatever its name.
    """
    fits = [(p, times[p.column].share) for p in profiles if p.column in times]
    natives = [c for c in fits if c[0].column in native and c[1] >= MIN_SHARE]
    found = _best(natives, TIMESTAMP_NAMES)
    if found is not None:
        return found.column
    found = _best(
        [c for c in fits if _qualifies(TIMESTAMP_NAMES, c[0].column, c[1])], TIMESTAMP_NAMES
    )
    if found is not None:
        return found.column
    named = _best([c for c in fits if TIMESTAMP_NAMES.tier(c[0].column)], TIMESTAMP_NAMES)
    near = _near_miss(named.column, times[named.column]) if named is not None else ""
    raise InputError(
        f"{source}: no column reads as timestamps in {_count(rows, 'sampled row')}{near};"
        " nothing written (write the mapping by hand: see 'The mapping file' in README.md)",
        file=source,
    )


def _near_miss(column: str, fit: TimeFit) -> str:
    """Why a column named like a timestamp was not taken, for the refusal message."""
    example = f" (e.g. '{_show(fit.example, 40)}')" if fit.example else ""
    return (
        f"; column '{_show(column)}' is named like one, but {_percent(fit.share)} of its"
        f" values parse{example}"
    )


def pick_identifier(profiles: list[Profile], taken: set[str], source: str) -> tuple[str, bool]:
    """The identifier column, and whether it holds emails; refused when there is none."""
    rest = [p for p in profiles if p.column not in taken and p.filled]
    emails = [(p, p.share(p.emails)) for p in rest]
    found = _best([c for c in emails if _qualifies(EMAIL_NAMES, c[0].column, c[1])], EMAIL_NAMES)
    if found is not None:
        return found.column, True
    named = [(p, float(p.filled)) for p in rest if IDENTIFIER_NAMES.tier(p.column)]
    found = _best(named, IDENTIFIER_NAMES)
    if found is not None:
        return found.column, False
    raise InputError(
        f"{source}: no column holds user identifiers (email addresses, or a name such as"
        " user_id or customer_id); nothing written (write the mapping by hand: see"
        " 'The mapping file' in README.md)",
        file=source,
    )


def pick_embeddable(profiles: list[Profile], taken: set[str]) -> str | None:
    """The embeddable id column, by name only (any non-empty text is a valid id)."""
    named = [
        (p, float(p.filled))
        for p in profiles
        if p.column not in taken and p.filled and EMBEDDABLE_NAMES.tier(p.column)
    ]
    found = _best(named, EMBEDDABLE_NAMES)
    return found.column if found is not None else None


@dataclass(frozen=True)
class EventFit:
    """How a column reads as event names under the validate rules (converting names)."""

    share: float  # of the non-empty values, those that are or convert to snake_case
    converted: int  # values that are not snake_case but convert
    example: str | None  # one converted value, as in the export


def event_fit(sample: pl.DataFrame, p: Profile) -> EventFit:
    """Try a column as the event name, with the names converted to snake_case."""
    if not p.filled:
        return EventFit(0.0, 0, None)
    checked = build_payloads(sample, _trial(event=p.column), bodies=False)
    converted = checked[Repair.EVENT_NAME_CONVERTED.value]
    examples = _column(sample, p.column).filter(converted)
    return EventFit(
        share=p.share(int(checked[REASON].is_null().sum())),
        converted=int(converted.sum()),
        example=examples[0] if len(examples) else None,
    )


def pick_event(profiles: list[Profile], fits: dict[str, EventFit]) -> str | None:
    """The event name column: named like one, or values that look like event names."""
    candidates: list[tuple[Profile, float]] = []
    for p in profiles:
        if p.column not in fits or re.search(ID_LIKE, normal_name(p.column)):
            continue
        share = fits[p.column].share
        # Event names repeat; a column of distinct names (people, titles) is something else.
        if EVENT_NAMES.tier(p.column):
            fits_well = share >= MIN_SHARE and (p.repeated or p.filled == 1)
        else:
            fits_well = (
                share >= MIN_SHARE_UNNAMED
                and p.share(p.wordy) >= MIN_SHARE_UNNAMED
                and 2 * p.distinct <= p.filled
            )
        if fits_well:
            candidates.append((p, share))
    found = _best(candidates, EVENT_NAMES)
    return found.column if found is not None else None


def pick_props(choices: Choices, rest: list[Profile], times: dict[str, TimeFit]) -> None:
    """Sort the remaining columns into metrics, dimensions, the JSON column and the unsent."""
    objects: list[tuple[Profile, float]] = []
    for p in rest:
        id_like = re.search(ID_LIKE, normal_name(p.column)) is not None
        timelike = p.column in times and times[p.column].share >= MIN_SHARE_UNNAMED
        numeric = p.filled > 0 and p.share(p.numbers) >= MIN_SHARE_UNNAMED
        if numeric and not id_like and not timelike:
            choices.metrics.append(p.column)
        elif p.filled and p.share(p.objects) >= MIN_SHARE_UNNAMED:
            objects.append((p, p.share(p.objects)))
        elif p.filled and p.distinct <= MAX_DIMENSION_VALUES and 2 * p.distinct <= p.filled:
            choices.dimensions.append(p.column)
    json_column = _best(objects, JSON_NAMES)
    choices.json_column = json_column.column if json_column is not None else None
    chosen = {*choices.metrics, *choices.dimensions, choices.json_column}
    choices.unsent = [p.column for p in rest if p.column not in chosen]


def _count(n: int, noun: str) -> str:
    """'1 sampled row', '1,000 sampled rows'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _percent(share: float) -> str:
    """A share as a whole percentage, rounded down so that 99.9% never shows as 100%."""
    if 0 < share < 0.01:
        return "<1%"
    return f"{int(share * 100)}%"


def _how(names: Names, column: str) -> str:
    """'name' when a column was recognised by its name, else 'values'."""
    return "name" if names.tier(column) else "values"


def explain(
    guessed: Guessed, c: Choices, profiles: list[Profile], events: dict[str, EventFit]
) -> None:
    """Add one guess per field, saying why it was made, and a warning per placeholder."""
    by_column = {p.column: p for p in profiles}
    add = guessed.guesses.append
    if c.embeddable is None:
        add(
            Guess(
                "embeddable_id", EMBEDDABLE_PLACEHOLDER, "placeholder: no column is named like one"
            )
        )
        guessed.warnings.append(EMBEDDABLE_WARNING)
    else:
        add(Guess("embeddable_id", _show(c.embeddable), "name"))
    add(Guess("timestamp", _show(c.timestamp), _time_reason(c, by_column[c.timestamp])))
    if c.event is None:
        add(Guess("custom_event_name", EVENT_NAME_PLACEHOLDER, "placeholder: no column holds them"))
        guessed.warnings.append(
            "no column holds event names: every row gets the placeholder"
            f" '{EVENT_NAME_PLACEHOLDER}', which validate rejects until you fill in"
            " fields.custom_event_name"
        )
    else:
        why = _event_reason(c, by_column[c.event], events[c.event])
        add(Guess("custom_event_name", _show(c.event), why))
    why = _identifier_reason(c, by_column[c.identifier])
    add(Guess("identifier", _show(c.identifier), why))
    _explain_props(guessed, c)


def _show(text: str, limit: int | None = None) -> str:
    """A column name or value for a message: as it is when printable, else in JSON quotes."""
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text if text.isprintable() else json.dumps(text, ensure_ascii=False)


def _time_reason(c: Choices, p: Profile) -> str:
    """Why the timestamp column was chosen, and how its values read."""
    fit = c.time
    how = "Parquet timestamps" if c.native_time else _how(TIMESTAMP_NAMES, c.timestamp)
    reason = f"{how}; {_percent(fit.share)} of"
    reason += f" {_count(fit.filled, 'sampled value')} parse"
    if fit.format is not None:
        reason += f' with format "{fit.format}"'
    if fit.also is not None:
        reason += f'; day and month may be swapped: "{fit.also}" reads them too'
    if p.seconds:
        reason += f"; {p.seconds:,} in epoch seconds"
    if p.millis:
        reason += f"; {p.millis:,} in epoch milliseconds"
    if fit.naive:
        reason += f"; {fit.naive:,} without an offset, read as UTC"
    return reason


def _event_reason(c: Choices, p: Profile, fit: EventFit) -> str:
    """Why the event name column was chosen, and whether names are converted."""
    reason = f"{_how(EVENT_NAMES, p.column)}; {_percent(fit.share)} of"
    reason += f" {_count(p.filled, 'sampled value')}"
    if not c.convert:
        return reason + " are snake_case"
    return (
        reason + f" are or convert to snake_case; {fit.converted:,} converted (e.g."
        f" '{_show(fit.example or '', 40)}'), so snake_case = \"convert\""
    )


def _identifier_reason(c: Choices, p: Profile) -> str:
    """Why the identifier column was chosen, and the key it is sent with."""
    if c.email:
        return (
            f"{_how(EMAIL_NAMES, p.column)}; {_percent(p.share(p.emails))} of"
            f' {_count(p.filled, "sampled value")} are email addresses; key "email"'
        )
    return f"name; key {_toml(p.column)}"


def _explain_props(guessed: Guessed, c: Choices) -> None:
    """One guess for each kind of props that has columns, and one for the unsent columns."""
    kinds = [
        ("metrics", c.metrics, "numbers with decimal commas" if c.decimal_comma else "numbers"),
        ("dimensions", c.dimensions, f"at most {MAX_DIMENSION_VALUES} distinct values, repeated"),
        ("json_column", [c.json_column] if c.json_column else [], "JSON objects"),
        ("not sent", c.unsent, "add any to props.columns to copy it as it is"),
    ]
    for name, columns, reason in kinds:
        if columns:
            guessed.guesses.append(Guess(name, ", ".join(_show(c) for c in columns), reason))


def _toml(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; TOML also wants DEL escaped)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_list(items: Sequence[str]) -> str:
    """A TOML array of strings."""
    return "[" + ", ".join(_toml(i) for i in items) + "]"


def _comment(text: str) -> str:
    """A comment line; control characters (a newline in a column name) cannot end it early."""
    return "# " + re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", "?", text)


def render(c: Choices, guessed: Guessed, output: str) -> str:
    """The mapping file: every setting, with the guess that chose it as a comment above it."""
    why = {g.field: _comment(g.line()) for g in guessed.guesses}
    lines = [
        *guessed.header("guessed"),
        *guessed.how_to_check("guess", output),
        "[fields]",
        why["embeddable_id"],
        *_embeddable_lines(c),
        why["timestamp"],
        *_timestamp_lines(c),
        why["custom_event_name"],
        *_event_lines(c),
        "",
        "[identifier]",
        why["identifier"],
        *_identifier_lines(c),
        "",
        "[props]",
        *_props_lines(c, why),
    ]
    return "\n".join(lines) + "\n"


def _embeddable_lines(c: Choices) -> list[str]:
    """The embeddable_id setting: the column, or the placeholder to fill in."""
    if c.embeddable is not None:
        return [f"embeddable_id = {_toml(c.embeddable)}"]
    return [
        '# FILL IN the id of the Embeddable these events belong to (e.g. "flow_9f2c"), or the',
        '# column that holds it: embeddable_id = "column". Validate accepts the placeholder.',
        f"embeddable_id = {{ value = {_toml(EMBEDDABLE_PLACEHOLDER)} }}",
    ]


def _timestamp_lines(c: Choices) -> list[str]:
    """The timestamp setting, with its format and time zone when needed."""
    options = f"column = {_toml(c.timestamp)}"
    lines = []
    if c.time.format is not None:
        options += f", format = {_toml(c.time.format)}"
    if c.time.naive:
        lines += [
            "# Times without an offset are read in this time zone: UTC is assumed. If they are",
            '# local times, give the export\'s zone instead (e.g. "Europe/Berlin").',
        ]
        options += ', timezone = "UTC"'
    return [*lines, f"timestamp = {{ {options} }}"]


def _event_lines(c: Choices) -> list[str]:
    """The custom_event_name setting: the column (converting names if needed) or a placeholder."""
    if c.event is None:
        return [
            '# FILL IN the event name (snake_case, e.g. "imported_purchase"), or the column that',
            '# holds the names: custom_event_name = { column = "...", snake_case = "convert" }.',
            f"custom_event_name = {{ value = {_toml(EVENT_NAME_PLACEHOLDER)} }}",
        ]
    convert = ', snake_case = "convert"' if c.convert else ""
    return [f"custom_event_name = {{ column = {_toml(c.event)}{convert} }}"]


def _identifier_lines(c: Choices) -> list[str]:
    """The identifier key and value settings."""
    column = _toml(c.identifier)
    if c.email:
        return [
            "# key: the User Data key under which your Embeddables captured the email.",
            'key = { value = "email" }',
            '# Emails are matched lowercased: normalize = "none" if your entries keep capitals.',
            f'value = {{ column = {column}, type = "string", normalize = "lowercase" }}',
        ]
    return [
        "# key: the User Data key under which your Embeddables captured this value; the",
        "# column's name is only a guess of it.",
        f"key = {{ value = {column} }}",
        '# type = "number" if your entries hold it as a number rather than as text.',
        f'value = {{ column = {column}, type = "string" }}',
    ]


def _props_lines(c: Choices, why: dict[str, str]) -> list[str]:
    """The props settings, and the columns left out, as a line to uncomment."""
    lines: list[str] = []
    if c.metrics:
        lines += [why["metrics"], f"metrics = {_toml_list(c.metrics)}"]
    if c.dimensions:
        lines += [why["dimensions"], f"dimensions = {_toml_list(c.dimensions)}"]
    if c.json_column is not None:
        lines += [why["json_column"], f"json_column = {_toml(c.json_column)}"]
    if c.unsent:
        lines += [
            "# Not sent; uncomment to copy them into the props as they are:",
            _comment(f"columns = {_toml_list(c.unsent)}"),
        ]
    return lines


def write_mapping(text: str, output: str, source: str, columns: Sequence[str], force: bool) -> None:
    """Write the mapping file once our own loader accepts it; never over a file unless force."""
    out = Path(output)
    try:
        fd, scratch = tempfile.mkstemp(prefix=".init-", suffix=".toml", dir=out.parent)
    except OSError as exc:
        raise UsageError(f"{output}: cannot write: {exc.strerror}", file=output) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            check_columns(load_mapping(scratch), source, columns)
        except MappingError as exc:
            reason = str(exc).replace(scratch, output)  # the scratch file is no name to show
            raise MappingError(
                f"{output}: not written: the guessed mapping is refused ({reason})", file=output
            ) from None
        try:
            with out.open("w" if force else "x", encoding="utf-8") as f:
                f.write(text)
        except FileExistsError:
            raise UsageError(
                f"{output} already exists; ask to replace it to write over it",
                file=output,
                hint=Hint.REPLACE,
            ) from None
        except OSError as exc:
            raise UsageError(f"{output}: cannot write: {exc.strerror}", file=output) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(scratch)


# --- The CSV dialect: sniffed from the first bytes, decimal commas from the rows ----------

SNIFF_BYTES = 1 << 20  # the encoding and the header are sniffed from the first MiB
GIVEN = "given with --{}"
DELIMITER_WORDS = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
# A number as a decimal-comma locale writes it: 12, 12,50, 1.234,50, -0,5.
COMMA_NUMBER = r"^-?([0-9]{1,3}(\.[0-9]{3})+|[0-9]+)(,[0-9]+)?$"
COMMA_DECIMALS = r",[0-9]+$"
POINT_DECIMALS = r"^-?[0-9]+\.[0-9]+$"  # 1.5: with decimal commas, read as 15


@dataclass
class Sniffed:
    """A delimited export's dialect as init found it (or was given it), and why."""

    delimiter: str | None  # None: the input's kind says (not a delimited input)
    delimiter_why: str
    encoding: str
    encoding_why: str
    decimal_comma: bool = False
    decimal_why: str = ""
    default_delimiter: str = ","  # the input's kind's own: tab for .tsv
    delimited: bool = True  # else JSON or Parquet, with a setting given on the command line
    # Columns of numbers written with a decimal point, and one of them, in a file of commas.
    points: list[tuple[str, str]] = field(default_factory=list)

    def is_default(self) -> bool:
        """Whether the reader's defaults read the input so: no [input] table is needed."""
        return (
            self.delimiter in (None, self.default_delimiter)
            and codecs.lookup(self.encoding).name == "utf-8"
            and not self.decimal_comma
        )

    def guesses(self) -> list[Guess]:
        """One printed line per setting sniffed or given."""
        found = []
        if self.delimiter is not None:
            found.append(Guess("delimiter", _toml(self.delimiter), self.delimiter_why))
        if self.encoding_why:
            found.append(Guess("encoding", self.encoding, self.encoding_why))
        if self.delimited:
            found.append(Guess("decimal_comma", _bool(self.decimal_comma), self.decimal_why))
        return found

    def table(self) -> list[str]:
        """The [input] table, each setting under its reason; none when the defaults do."""
        if self.is_default():
            return []
        settings = {
            "delimiter": f"delimiter = {_toml(self.delimiter or '')}",
            "encoding": f"encoding = {_toml(self.encoding)}",
            "decimal_comma": f"decimal_comma = {_bool(self.decimal_comma)}",
        }
        lines = ["[input]"]
        for guess in self.guesses():
            lines += [_comment(guess.line()), settings[guess.field]]
        return [*lines, ""]


def _bool(value: bool) -> str:
    """A TOML boolean."""
    return "true" if value else "false"


def _sniffed_unit(
    unit: Located, kind: str, delimiter: str | None, encoding: str | None
) -> tuple[Located, Sniffed]:
    """A delimited input's dialect, sniffed from its first bytes (or as given), and the input
    to read with it: its bytes are read once, those sniffed put back in front of the rest."""
    stream = unit.opener()
    try:
        head, complete = _head(stream, unit.name)
    except BaseException:
        if unit.name != "-":
            stream.close()
        raise
    replayed = cast(BinaryIO, _Replayed(head, stream, owned=unit.name != "-"))
    unit = dataclasses.replace(unit, opener=lambda: replayed)
    plain = _gunzipped(head)
    complete = complete and len(plain) < SNIFF_BYTES
    if encoding is not None:
        sniffed_encoding, encoding_why = encoding, GIVEN.format("encoding")
    else:
        sniffed_encoding, encoding_why = sniff_encoding(plain, complete)
    header = _header_line(plain, sniffed_encoding)
    if delimiter is not None:
        chosen, delimiter_why = delimiter, GIVEN.format("delimiter")
    else:
        chosen = sniff_delimiter(header)
        delimiter_why = _delimiter_reason(header)
    default = SEPARATORS.get(kind, ",")
    return unit, Sniffed(
        chosen, delimiter_why, sniffed_encoding, encoding_why, default_delimiter=default
    )


def _head(stream: BinaryIO, name: str) -> tuple[bytes, bool]:
    """The first SNIFF_BYTES of a stream as it is (maybe gzip), and whether that is all."""
    head = bytearray()
    try:
        while len(head) < SNIFF_BYTES:
            block = stream.read(SNIFF_BYTES - len(head))
            if not block:
                return bytes(head), True
            head += block
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}", file=name) from None
    return bytes(head), False


def _gunzipped(head: bytes) -> bytes:
    """The start of a gzip stream's content (as much as decompresses); other bytes as they
    are. A corrupt stream gives what came before the damage: the reader reports it."""
    if not head.startswith(GZIP_MAGIC):
        return head
    out = bytearray()
    data = head
    while data.startswith(GZIP_MAGIC) and len(out) < SNIFF_BYTES:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, SNIFF_BYTES - len(out))
        except zlib.error:
            break
        if not inflater.eof:
            break
        data = inflater.unused_data  # the next member of a multi-member gzip
    return bytes(out)


class _Replayed(io.RawIOBase):
    """A stream whose first bytes, already read to sniff them, are read again first."""

    def __init__(self, head: bytes, stream: BinaryIO, owned: bool) -> None:
        self.head = memoryview(head)
        self.stream = stream
        self.owned = owned  # stdin is not closed with it

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wanted = len(buffer)
        taken = min(wanted, len(self.head))
        buffer[:taken] = self.head[:taken]
        self.head = self.head[taken:]
        if taken < wanted:  # a short read would look like the end to a sniffer
            data = self.stream.read(wanted - taken)
            buffer[taken : taken + len(data)] = data
            taken += len(data)
        return taken

    def close(self) -> None:
        if self.owned and not self.closed:
            self.stream.close()
        super().close()


def sniff_encoding(head: bytes, complete: bool = True) -> tuple[str, str]:
    """The encoding of an export's first bytes, and why: UTF-8 when they decode as UTF-8 (a
    byte order mark is fine), else UTF-16 when they start with its byte order mark, else
    cp1252 (Excel's on Western Windows), or latin-1 when cp1252 cannot read them."""
    what = "the file" if complete else "its first MiB"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
    except UnicodeDecodeError as exc:
        not_utf8 = f"{_byte_at(head, exc.start)} is not UTF-8"
    else:
        bom = ", after a byte order mark" if head.startswith(BOM) else ""
        return "utf-8", f"sniffed: {what} decodes as UTF-8{bom}"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16", "sniffed: a UTF-16 byte order mark"
    try:
        head.decode("cp1252")
    except UnicodeDecodeError as exc:
        return "latin-1", f"sniffed: {not_utf8}, and {_byte_at(head, exc.start)} not cp1252"
    return "cp1252", f"sniffed: {not_utf8}; cp1252 reads {what}"


def _byte_at(head: bytes, offset: int) -> str:
    """'byte 0xFC on line 3'."""
    line = head.count(b"\n", 0, offset) + 1
    return f"byte 0x{head[offset]:02X} on line {line:,}"


def _header_line(head: bytes, encoding: str) -> str:
    """The first line of an export's first bytes, decoded (what cannot be, replaced)."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    except LookupError:
        return ""  # the reader names the unknown encoding
    text = decoder.decode(head[: 1 << 16]).removeprefix("\ufeff")
    return text.split("\n", 1)[0].removesuffix("\r")


def _delimiter_reason(header: str) -> str:
    """Why a delimiter was sniffed: 'sniffed: the header holds 3 ';' and 1 ','."""
    unquoted = "".join(header.split('"')[::2])  # as sniff_delimiter counts them
    counts = sorted(
        ((unquoted.count(d), d) for d in DELIMITER_WORDS if d in unquoted),
        key=lambda c: -c[0],
    )
    held = [
        f"{n:,} tab{'' if n == 1 else 's'}" if d == "\t" else f"{n:,} {DELIMITER_WORDS[d]}"
        for n, d in counts
    ]
    if not held:
        return "sniffed: the header holds none of ',', ';', tab, '|'"
    if len(held) > 1:
        held = [", ".join(held[:-1]), held[-1]]
    return "sniffed: the header holds " + " and ".join(held)


def _sniff_decimal_comma(sample: Sample, dialect: Sniffed) -> None:
    """Whether metric cells are written with decimal commas (12,50 or 1.234,50): when some
    column holds such numbers (and nothing else), in a file not delimited by commas."""
    if dialect.delimiter == ",":
        dialect.decimal_comma = False
        dialect.decimal_why = "the delimiter is ',', so decimals are points"
        return
    exprs = []
    columns = [c for c in sample.candidates() if c not in sample.times]
    for i, column in enumerate(columns):
        text = _text(column)
        exprs += [
            text.count().alias(f"{i}:filled"),
            text.str.contains(COMMA_NUMBER).sum().alias(f"{i}:numbers"),
            text.filter(text.str.contains(COMMA_NUMBER) & text.str.contains(COMMA_DECIMALS))
            .first()
            .alias(f"{i}:example"),
            text.str.contains(JSON_NUMBER).sum().alias(f"{i}:json"),
            text.filter(text.str.contains(POINT_DECIMALS) & ~text.str.contains(COMMA_NUMBER))
            .first()
            .alias(f"{i}:point"),
        ]
    counts = sample.frame.select(exprs).row(0, named=True) if exprs else {}
    dialect.points = [
        (column, counts[f"{i}:point"])
        for i, column in enumerate(columns)
        if counts[f"{i}:point"] is not None
        and (counts[f"{i}:json"] or 0) >= MIN_SHARE_UNNAMED * counts[f"{i}:filled"]
    ]
    found = [
        (column, counts[f"{i}:example"])
        for i, column in enumerate(columns)
        if counts[f"{i}:example"] is not None
        and (counts[f"{i}:numbers"] or 0) >= MIN_SHARE_UNNAMED * counts[f"{i}:filled"]
    ]
    dialect.decimal_comma = bool(found)
    if not found:
        dialect.decimal_why = "sniffed: no column holds numbers like 12,50"
        return
    names = ", ".join(_show(column) for column, _ in found)
    holds = "holds" if len(found) == 1 else "hold"
    dialect.decimal_why = f"sniffed: {names} {holds} numbers like '{_show(found[0][1], 40)}'"


def _add_struct_paths(sample: Sample, types: dict[str, pl.DataType]) -> None:
    """A column per key of each struct column (Parquet): 'user.email', as a mapping names it.

    Keys holding a dot, and paths that are also a column's name, are left out: a mapping
    would have to name them another way.
    """
    added: list[pl.Expr] = []
    for column, dtype in types.items():
        if not isinstance(dtype, pl.Struct) or column not in sample.read or "." in column:
            continue
        paths = [p for p in _key_paths(dtype, [column]) if ".".join(p) not in sample.columns]
        if not paths:
            continue
        sample.paths[column] = [".".join(p) for p in paths]
        added += [
            _text(column).str.json_path_match(_key_path(p[1:])).alias(frame_column(".".join(p)))
            for p in paths
        ]
    if added:
        sample.frame = sample.frame.with_columns(added)


def _key_paths(dtype: pl.Struct, prefix: list[str]) -> list[list[str]]:
    """The paths to a struct's leaves (a nested struct's keys, not the struct)."""
    found = []
    for key in dtype.fields:
        if not key.name or "." in key.name or '"' in key.name:
            continue
        path = [*prefix, key.name]
        if isinstance(key.dtype, pl.Struct):
            found += _key_paths(key.dtype, path)
        else:
            found.append(path)
    return found


def _key_path(keys: Sequence[str]) -> str:
    """A JSONPath selecting nested keys by name (no key asked for holds a quote: a struct's
    keys with one are left out, and the presets' have none)."""
    return "$" + "".join(f'["{key}"]' for key in keys)
