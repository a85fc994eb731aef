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
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import polars.selectors as cs

from backfill.codes import Reason, Repair
from backfill.errors import InputError, MappingError, UsageError
from backfill.inputs import MALFORMED, InputFile, batches, frame_column, open_input
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
# Delimiters other than the file's that a one-column header may hold, as a message names them.
OTHER_DELIMITERS = {";": "';'", "\t": "tabs", "|": "'|'"}

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

    source: str
    rows: int
    text: str = ""
    guesses: list[Guess] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def heading(self) -> str:
        """What the guesses were made from: 'Guessed from 300 sampled rows of events.csv:'."""
        return f"Guessed from {_count(self.rows, 'sampled row')} of {self.source}:"


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
    guessed = guess_mapping(frame, columns, source, output)
    write_mapping(guessed.text, output, source, columns, force)
    return guessed


def read_sample(source: str, fmt: str | None, rows: int) -> tuple[pl.DataFrame, list[str]]:
    """The first readable rows of an input (``rows`` at most, as text), and all its columns."""
    inp = open_input(source, fmt)
    frames: list[pl.DataFrame] = []
    try:
        check_delimiter(inp)
        for frame in batches(inp, usable(inp.columns)):
            frames.append(frame)
            if sum(f.height for f in frames) >= rows:
                break
    finally:
        inp.close()
    sample = pl.concat(frames).head(rows) if frames else pl.DataFrame()
    read = sample.height
    if read:
        sample = sample.filter(pl.col(MALFORMED).is_null())
    if not sample.height:
        detail = f"none of the {_count(read, 'row')} sampled can be read" if read else "no rows"
        raise InputError(f"{source}: nothing to guess a mapping from: {detail}")
    return sample, inp.columns


def check_delimiter(inp: InputFile) -> None:
    """Refuse a delimited file whose header reads as one column holding another delimiter.

    Without this a ;-delimited .csv is refused for having no timestamp column, which sends
    the user looking in the wrong place.
    """
    if inp.format == "jsonl" or len(inp.columns) != 1:
        return
    header = inp.columns[0]
    held = [d for d in OTHER_DELIMITERS if d in header]
    if not held:
        return
    delimiter = max(held, key=header.count)
    looks = "tab" if delimiter == "\t" else delimiter
    start = f"{inp.name}: the header reads as one column but holds {OTHER_DELIMITERS[delimiter]}:"
    todo = (
        "; read it as one with --format tsv (or name it .tsv)"
        if delimiter == "\t"
        else ", and backfill reads comma-delimited (.csv) and tab-delimited (.tsv) files only;"
        " convert it to commas or tabs first"
    )
    raise InputError(f"{start} this looks like a {looks}-delimited file{todo}; nothing written")


def usable(columns: Sequence[str]) -> list[str]:
    """The columns a mapping can name: not blank (a JSONL key "")."""
    return [c for c in columns if c.strip()]


def guess_mapping(
    sample: pl.DataFrame, columns: Sequence[str], source: str, output: str
) -> Guessed:
    """Guess every field from a sample (a batch of ``columns``), and render the mapping file."""
    profiles = profile(sample, usable(columns))
    times = {p.column: time_fit(sample, p) for p in profiles if _may_hold_times(p)}
    guessed = Guessed(source, sample.height)
    ts = pick_timestamp(profiles, times, source, sample.height)
    ident, email = pick_identifier(profiles, {ts}, source)
    choices = Choices(ts, times[ts], ident, email)
    choices.embeddable = pick_embeddable(profiles, {ts, ident})
    taken = {ts, ident, choices.embeddable}
    # A column of numbers cannot hold event names: it is not tried.
    event_fits = {
        p.column: event_fit(sample, p)
        for p in profiles
        if p.column not in taken and p.numbers < p.filled
    }
    choices.event = pick_event(profiles, event_fits)
    if choices.event is not None:
        choices.convert = event_fits[choices.event].converted > 0
    taken.add(choices.event)
    pick_props(choices, [p for p in profiles if p.column not in taken], times)
    explain(guessed, choices, profiles, event_fits)
    guessed.text = render(choices, guessed, output)
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


def profile(sample: pl.DataFrame, columns: Sequence[str]) -> list[Profile]:
    """Counts for every column, computed in one pass over the sample."""
    exprs: list[pl.Expr] = []
    for i, column in enumerate(columns):
        text = _text(column)
        compact = text.str.json_path_match("$")
        digits = text.str.extract(r"^([0-9]+)(\.[0-9]+)?$", 1).str.len_chars()
        exprs += [
            text.count().alias(f"{i}:filled"),
            text.drop_nulls().n_unique().alias(f"{i}:distinct"),
            text.str.contains(JSON_NUMBER).sum().alias(f"{i}:numbers"),
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
    profiles: list[Profile], times: dict[str, TimeFit], source: str, rows: int
) -> str:
    """The timestamp column; refused when no column reads as timestamps."""
    fits = [(p, times[p.column].share) for p in profiles if p.column in times]
    found = _best(
        [c for c in fits if _qualifies(TIMESTAMP_NAMES, c[0].column, c[1])], TIMESTAMP_NAMES
    )
    if found is not None:
        return found.column
    named = _best([c for c in fits if TIMESTAMP_NAMES.tier(c[0].column)], TIMESTAMP_NAMES)
    near = _near_miss(named.column, times[named.column]) if named is not None else ""
    raise InputError(
        f"{source}: no column reads as timestamps in {_count(rows, 'sampled row')}{near};"
        " nothing written (write the mapping by hand: see 'The mapping file' in README.md)"
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
        " 'The mapping file' in README.md)"
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
        guessed.warnings.append(
            "no column is named like an embeddable id: every row goes to the placeholder"
            f" '{EMBEDDABLE_PLACEHOLDER}' (validate accepts it); fill in fields.embeddable_id"
            " before sending"
        )
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
    reason = f"{_how(TIMESTAMP_NAMES, c.timestamp)}; {_percent(fit.share)} of"
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
        ("metrics", c.metrics, "numbers"),
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
        _comment(f"Mapping for {guessed.source}, guessed by `backfill init` from")
        + f" {_count(guessed.rows, 'sampled row')}.",
        "# Check each guess (the comment above each setting says why it was made), then run:",
        _comment(f"  backfill validate {guessed.source} -m {output}"),
        "",
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
        raise UsageError(f"{output}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            check_columns(load_mapping(scratch), source, columns)
        except MappingError as exc:
            raise MappingError(
                f"{output}: not written: the guessed mapping is refused ({exc})"
            ) from None
        try:
            with out.open("w" if force else "x", encoding="utf-8") as f:
                f.write(text)
        except FileExistsError:
            raise UsageError(f"{output} already exists; give --force to write over it") from None
        except OSError as exc:
            raise UsageError(f"{output}: cannot write: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
