"""Guess a mapping file from a sample of an export: the core of ``backfill init``.

The first rows of the input (``SAMPLE_ROWS`` at most, read with ``backfill.inputs`` so every
input format works) are profiled column by column with Polars expressions. Timestamps and
event names are tried with the very rules ``validate`` applies (``build_payloads`` on the
sample), so a guess never relies on a parser of its own. Each field is chosen by its column
name first, then by how many of its values fit:

- timestamp: the column whose values read as timestamps (ISO 8601, epoch seconds or
  milliseconds, or a common day/month format); none: refused, nothing is written, since a
  constant time would silently date every event the same.
- identifier: a column of email addresses (key ``{ value = "email" }``), else a column named
  like a user id (key ``{ value = "<column>" }``); none: refused, as for the timestamp.
- embeddable id, event name: a column named for them (or, for event names, values that look
  like event names); none: a placeholder constant and a warning. The embeddable id
  placeholder passes validation; the event name placeholder is not snake_case, so
  ``validate`` flags every row until it is filled in.
- props: numbers are metrics, text with few distinct values that repeat are dimensions, and
  a column of JSON objects is the json_column; the other columns are listed, not sent.

The mapping text is loaded back with ``load_mapping`` before it is written: ``init`` never
writes a mapping that the tool itself would refuse.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from backfill.codes import Reason, Repair
from backfill.errors import InputError, MappingError, UsageError
from backfill.inputs import MALFORMED, batches, open_input
from backfill.mapping import Mapping, Source, check_columns, load_mapping
from backfill.payloads import CONVERTIBLE_NAME, JSON_NUMBER, REASON, build_payloads
from backfill.pipeline import check_outputs

SAMPLE_ROWS = 10_000
MIN_SHARE = 0.5  # a column named for a field qualifies when half its values fit
MIN_SHARE_UNNAMED = 0.9  # a column chosen by its values alone must fit almost always
MAX_DIMENSION_VALUES = 50
EMBEDDABLE_PLACEHOLDER = "REPLACE_WITH_EMBEDDABLE_ID"
EVENT_NAME_PLACEHOLDER = "REPLACE_WITH_EVENT_NAME"
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

    source: str
    rows: int
    text: str = ""
    guesses: list[Guess] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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


def init(
    source: str,
    output: str = DEFAULT_OUTPUT,
    fmt: str | None = None,
    force: bool = False,
    sample_rows: int = SAMPLE_ROWS,
) -> Guessed:
    """Guess a mapping for an input and write it to ``output``; refused if it exists."""
    check_outputs([output], [source])
    if Path(output).exists() and not force:
        raise UsageError(f"{output} already exists; give --force to write over it")
    frame, columns = read_sample(source, fmt, sample_rows)
    guessed = guess_mapping(frame, source, output)
    write_mapping(guessed.text, output, source, columns, force)
    return guessed


def read_sample(source: str, fmt: str | None, rows: int) -> tuple[pl.DataFrame, list[str]]:
    """The first readable rows of an input (``rows`` at most, as text), and all its columns."""
    inp = open_input(source, fmt)
    frames: list[pl.DataFrame] = []
    try:
        reader = batches(inp, inp.columns)
        for frame in reader:
            frames.append(frame)
            if sum(f.height for f in frames) >= rows:
                break
        reader.close()
    finally:
        inp.close()
    sample = pl.concat(frames).head(rows) if frames else pl.DataFrame()
    read = sample.height
    if read:
        sample = sample.filter(pl.col(MALFORMED).is_null())
    if not sample.height:
        detail = f"none of the {read:,} rows sampled can be read" if read else "it has no rows"
        raise InputError(f"{source}: nothing to guess a mapping from: {detail}")
    usable = [c for c in inp.columns if c.strip()]
    return sample.select(usable), inp.columns


def guess_mapping(sample: pl.DataFrame, source: str, output: str) -> Guessed:
    """Guess every field from a sample (text columns), and render the mapping file."""
    profiles = profile(sample)
    times = {p.column: time_fit(sample, p) for p in profiles if p.filled}
    guessed = Guessed(source, sample.height)
    ts = pick_timestamp(profiles, times, source, sample.height)
    ident, email = pick_identifier(profiles, {ts}, source)
    choices = Choices(ts, times[ts], ident, email)
    taken = {ts, ident}
    choices.embeddable = pick_embeddable(profiles, taken)
    taken.add(choices.embeddable or "")
    event_fits = {p.column: event_fit(sample, p) for p in profiles if p.column not in taken}
    choices.event = pick_event(profiles, event_fits)
    taken.add(choices.event or "")
    if choices.event is not None:
        choices.convert = event_fits[choices.event][1] > 0
    pick_props(choices, [p for p in profiles if p.column not in taken], times)
    explain(guessed, choices, profiles, event_fits)
    guessed.text = render(choices, guessed, output)
    return guessed


def _text(column: str) -> pl.Expr:
    """A column as trimmed text, null when blank: what the validate rules see."""
    return pl.col(column).cast(pl.String).str.strip_chars().replace("", None)


def profile(sample: pl.DataFrame) -> list[Profile]:
    """Counts for every column, computed in one pass over the sample."""
    exprs: list[pl.Expr] = []
    for i, column in enumerate(sample.columns):
        text = _text(column)
        compact = text.str.json_path_match("$")
        exprs += [
            text.count().alias(f"{i}:filled"),
            text.drop_nulls().n_unique().alias(f"{i}:distinct"),
            text.str.contains(JSON_NUMBER).sum().alias(f"{i}:numbers"),
            text.str.contains(EMAIL).sum().alias(f"{i}:emails"),
            (text.str.starts_with("{") & compact.str.starts_with("{")).sum().alias(f"{i}:objects"),
            (text.str.contains(CONVERTIBLE_NAME) & text.str.contains(WORDY))
            .sum()
            .alias(f"{i}:wordy"),
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
        )
        for i, column in enumerate(sample.columns)
    ]


def _trial(column: str | None = None, event: str | None = None, **options: str) -> Mapping:
    """A mapping that reads one column as the timestamp or the event name; the rest constant."""
    ts = Source("fields.timestamp", column=column, value=None if column else "2024-01-01")
    name = Source("fields.custom_event_name", column=event, value=None if event else "e")
    return Mapping(
        path="(init)",
        embeddable_id=Source("fields.embeddable_id", value="e"),
        timestamp=ts,
        event_name=name,
        identifier_key=Source("identifier.key", value="k"),
        identifier_value=Source("identifier.value", value="v"),
        **options,  # type: ignore[arg-type]
    )


def _read_times(sample: pl.DataFrame, p: Profile, fmt: str | None) -> TimeFit:
    """How many of a column's values validate as timestamps, with or without a format."""
    options = {"timestamp_format": fmt} if fmt else {}
    checked = build_payloads(sample, _trial(p.column, **options), bodies=False)
    valid = checked[REASON].is_null()
    bad = sample[p.column].filter(checked[REASON] == Reason.BAD_TIMESTAMP.value)
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
    also = next((t.format for t in tried if t.share == best.share and t is not best), None)
    return TimeFit(best.share, best.filled, best.naive, best.format, also, best.example)


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
    profiles: list[Profile], times: dict[str, TimeFit], source: str, rows: int
) -> str:
    """The timestamp column; refused when no column reads as timestamps."""
    fits = [(p, times[p.column].share) for p in profiles if p.column in times]
    found = _best([c for c in fits if _qualifies(TIMESTAMP_NAMES, c[0].column, c[1])], [])
    found = _best(
        [c for c in fits if _qualifies(TIMESTAMP_NAMES, c[0].column, c[1])], TIMESTAMP_NAMES
    )
    if found is not None:
        return found.column
    named = _best([c for c in fits if TIMESTAMP_NAMES.tier(c[0].column)], TIMESTAMP_NAMES)
    near = ""
    if named is not None:
        fit = times[named.column]
        near = f"; column '{named.column}' is named like one but {_percent(fit.share)} of its"
        near += f" values parse (e.g. '{fit.example}')" if fit.example else " values parse"
    raise InputError(
        f"{source}: no column reads as timestamps in the {rows:,} rows sampled{near};"
        " nothing written (write the mapping by hand: see 'The mapping file' in README.md)"
    )
