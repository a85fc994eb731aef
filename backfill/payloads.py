"""Validation rules and payload building, as Polars expressions over a batch of rows.

``build_payloads`` turns a batch from ``inputs`` into one row per input row with its reason
code (null when valid), a message, the exact JSON body to send, and the columns the report
counts. Every rule is a column expression: no per-row Python.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from backfill.codes import Reason, Repair, Skip
from backfill.inputs import MALFORMED, ROW, compact_json, frame_column, load_json
from backfill.mapping import NESTED_PROPS, Identifier, Mapping, Source

SNAKE_CASE = r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"
JSON_NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
EPOCH = r"^[0-9]{9,19}(\.[0-9]+)?$"  # seconds to nanoseconds, by the number of digits
ANY_EPOCH = r"^[0-9]+(\.[0-9]+)?$"  # when the mapping gives the unit
UTC_OFFSET = r"^[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?$"
CONVERTIBLE_NAME = r"^[A-Za-z0-9 _\-./]+$"
DECIMAL_COMMA = r"^[+-]?([0-9]{1,3}(\.[0-9]{3})+|[0-9]+)(,[0-9]+)?$"  # 1.234,50 or 12,5
TYPED_VALUES = ("string_value", "int_value", "double_value", "float_value")  # GA4's value fields
FUTURE_TOLERANCE = timedelta(minutes=5)
UNWRAP_LEVELS = 3
AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")
OUTPUT_TIME = "%Y-%m-%dT%H:%M:%S%.3fZ"

# Output columns of build_payloads.
REASON = "reason"
MESSAGE = "message"
PAYLOAD = "payload"
EVENT_NAME = "event_name"
EMBEDDABLE_ID = "embeddable_id"
IDENTIFIER_KEY = "identifier_key"
IDENTIFIER_ALT = "identifier_alternative"  # which [[identifier]] alternative a row uses, from 0
SKIP = "skip"  # Skip.FILTERED or Skip.DUPLICATE for a row that is not an event to send
SKIP_RULE = "skip_rule"  # the rule that skipped it, as reports count it ("exclude event")
SKIP_MESSAGE = "skip_message"  # the rule and the value ("exclude event = '$identify'")
DEDUPE_KEY = "dedupe_key"  # the text rows are deduplicated on, for rows that would be sent
TIME = "time"


TS_TEXT = "__ts_text"
NAME_TEXT = "__name_text"
VALUE_TEXT = "__value_text"
SENT_AS_STRING = "__sent_as_string"
UNWRAPPED = "__unwrapped"
IDENT = "__ident"
PROPS = "__props"
BAD_METRIC = "__bad_metric"
BAD_JSON = "__bad_json"
BAD_SOURCE = "__bad_source"  # which json_column source is not an object, from 0
BAD_NAME = "__bad_name"
ASSUMED = Repair.TIMEZONE_ASSUMED.value

# Each stage adds columns computed from columns of the previous stage. Referring to
# materialised columns by name keeps every expression small: nesting the expressions instead
# makes Polars evaluate the shared parts again for every use.


def build_payloads(
    batch: pl.DataFrame, mapping: Mapping, now: datetime | None = None, bodies: bool = True
) -> pl.DataFrame:
    """Validate every row of a batch and build its payload: one output row per input row.

    With ``bodies=False`` (validation only) the PAYLOAD column stays empty: every rule is
    still checked, but the JSON bodies, which nothing would read, are not assembled.
    """
    now = now or datetime.now(UTC)
    # Input columns are renamed apart, so an export's own "time" or "event_name" column
    # can never be mistaken for a working column of this module. They are taken by position:
    # pl.col would read a name such as "*" or "^a$" as a pattern.
    inputs = [
        pl.nth(batch.get_column_index(frame_column(c))).alias(_in(c))
        for c in mapping.columns_used()
    ]
    frame = batch.select(ROW, MALFORMED, *inputs).with_columns(
        _text(mapping.embeddable_id).alias(EMBEDDABLE_ID),
        _text(mapping.timestamp).alias(TS_TEXT),
        *_chosen_identifier(mapping),
    )
    frame = _with_time(frame, mapping)
    frame = _with_filter(frame, mapping)
    name = mapping.event_name
    names = [] if name.column is None else [_in(name.column)]
    frame = per_distinct(frame, names, lambda t: _with_event_name(t, mapping))
    # Payloads compared for dedupe must be the ones sent: normalised, even when validating.
    exact = bodies or mapping.filter.dedupe_payload
    frame = _with_identifiers(frame, mapping, normalized=exact)
    frame = _with_props(frame, mapping, members=exact)
    frame = _with_reason(frame, mapping, now)
    if exact:
        frame = _with_body(frame, mapping)
    else:
        frame = frame.with_columns(pl.lit(None, pl.String).alias(PAYLOAD))
    frame = frame.with_columns(_dedupe_key(mapping).alias(DEDUPE_KEY))
    return frame.select(
        ROW,
        REASON,
        MESSAGE,
        PAYLOAD,
        SKIP,
        SKIP_RULE,
        SKIP_MESSAGE,
        DEDUPE_KEY,
        EMBEDDABLE_ID,
        EVENT_NAME,
        IDENTIFIER_KEY,
        IDENTIFIER_ALT,
        TIME,
        *_repair_flags(mapping),
    )


def per_distinct(
    frame: pl.DataFrame, keys: list[str], stage: Callable[[pl.DataFrame], pl.DataFrame]
) -> pl.DataFrame:
    """Run a stage on the distinct values of ``keys`` only, and join its columns back.

    Event names, embeddable ids, identifiers and props repeat across millions of rows, so
    computing once per distinct value is far cheaper than once per row.
    """
    if not keys:
        return stage(frame)
    if len(keys) == 1:  # a column's distinct values come twice as fast as a frame's
        distinct = frame.select(pl.col(keys[0]).unique())
    else:
        distinct = frame.select(keys).unique()
    return _looked_up(frame, keys, stage(distinct))


def per_subset(
    frame: pl.DataFrame,
    wanted: pl.Expr,
    stage: Callable[[pl.DataFrame], pl.DataFrame],
    columns: list[str] | None = None,
    patch: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Run a stage on the rows ``wanted`` selects (and ``columns``, default all) only.

    Polars string functions pay for every row, null or not, so work that only some rows
    need (unusual timestamps, quoted identifiers, invalid rows) is done on those rows alone;
    the columns it adds are put back in place, null on the other rows, or, for a column
    ``patch`` names, the frame's column it names there (far cheaper than a coalesce after).
    """
    mask = frame.select(wanted).to_series()
    rows = mask.arg_true()
    part = frame if columns is None else frame.select(columns)
    part = stage(part.gather(rows))
    added = [c for c in part.columns if c not in frame.columns]
    patch = patch or {}
    return frame.with_columns(
        _spread(part[c], rows, frame[patch[c]] if c in patch else frame.height) for c in added
    )


def _spread(values: pl.Series, rows: pl.Series, base: pl.Series | int) -> pl.Series:
    """``base`` (or that many nulls) with ``values`` at the positions ``rows``."""
    if isinstance(base, int):
        base = pl.repeat(None, base, dtype=values.dtype, eager=True)
    else:
        base = base.clone()  # scatter writes in place
    return base.alias(values.name).scatter(rows, values)


def _looked_up(frame: pl.DataFrame, keys: list[str], table: pl.DataFrame) -> pl.DataFrame:
    """Add the other columns of ``table`` (unique on ``keys``), matched on ``keys``.

    Only the keys go through the join: the frame's own columns are kept as they are.
    """
    found = frame.select(keys).join(
        table, on=keys, how="left", nulls_equal=True, maintain_order="left"
    )
    return frame.with_columns(found[c] for c in table.columns if c not in keys)


def _in(column: str) -> str:
    """The working name of an input column."""
    return f"in:{column}"


def _text(source: Source) -> pl.Expr:
    """A field's value as trimmed text, null when blank."""
    expr = pl.col(_in(source.column)) if source.column is not None else pl.lit(source.value)
    return expr.cast(pl.String).str.strip_chars().replace("", None)


def json_literal(expr: pl.Expr) -> pl.Expr:
    """The JSON string literal of a text expression; null stays null."""
    encoded = pl.struct(expr.alias("v")).struct.json_encode()
    literal = encoded.str.strip_prefix('{"v":').str.strip_suffix("}")
    return pl.when(expr.is_not_null()).then(literal)


def _with_literal(table: pl.DataFrame, column: str) -> pl.DataFrame:
    """Add the JSON string literal of a column, for the body."""
    return table.with_columns(json_literal(pl.col(column)).alias(f"{column}__literal"))


def _with_time(frame: pl.DataFrame, mapping: Mapping) -> pl.DataFrame:
    """Add TIME (UTC, or null when unreadable) and whether the mapping's time zone was assumed.

    Polars reads ``%Y-%m-%dT%H:%M:%S`` several times faster than any pattern with ``%.f`` or
    ``%z``, so ISO times are read by that pattern on their first 19 characters, with the
    fraction and offset read apart. Values of other shapes go to the slower general
    patterns, and each parser sees only the rows meant for it. Timestamps seldom repeat,
    so the parsers keep no cache of the values they have read.
    """
    text = pl.col(TS_TEXT)
    epoch = EPOCH if mapping.timestamp_unit is None else ANY_EPOCH
    frame = frame.with_columns(
        text.str.contains(epoch).alias("__is_epoch"),
        (text.str.slice(10, 1) == " ").alias("__is_spaced"),
    )
    frame = _with_fast_iso(frame)
    frame = _with_other_formats(frame, mapping)
    aware_utc = pl.coalesce("__aware", pl.when(pl.col("__fast_aware")).then("__fast"))
    naive_any = pl.coalesce("__naive", pl.when(~pl.col("__fast_aware")).then("__fast"))
    local = naive_any.dt.replace_time_zone(
        mapping.timezone, ambiguous="earliest", non_existent="null"
    )
    # Epoch numbers are read on their own rows only: the unit by digits costs several passes.
    read_epoch = _epoch_stage(mapping.timestamp_unit)
    frame = per_subset(frame, pl.col("__is_epoch"), read_epoch, [TS_TEXT])
    frame = frame.with_columns(
        aware_utc.dt.replace_time_zone("UTC").alias("__aware_utc"),
        local.dt.convert_time_zone("UTC").alias("__local_utc"),
    )
    frame = frame.with_columns(
        pl.coalesce("__aware_utc", "__epoch", "__local_utc").alias(TIME),
        (
            pl.col("__aware_utc").is_null()
            & pl.col("__epoch").is_null()
            & pl.col("__local_utc").is_not_null()
        ).alias(ASSUMED),
    )
    return frame.drop(
        pl.selectors.starts_with(
            "__iso", "__is_", "__has_", "__aware", "__naive", "__epoch", "__fast", "__local"
        )
    )


def _with_other_formats(frame: pl.DataFrame, mapping: Mapping) -> pl.DataFrame:
    """Add __aware and __naive: the general patterns, on the rows the fast path left."""
    custom = mapping.timestamp_format
    aware = [("__iso_z", f) for f in AWARE_FORMATS]
    naive = [("__iso_z", f) for f in NAIVE_FORMATS]
    if custom is not None:
        (aware if "%z" in custom else naive).insert(0, (TS_TEXT, custom))
    pending = pl.col("__fast").is_null() & ~pl.col("__is_epoch")
    if custom is not None:
        pending = ~pl.col("__is_epoch")  # the mapping's own format comes first

    def read(part: pl.DataFrame) -> pl.DataFrame:
        part = part.with_columns(_iso().alias("__iso"))
        iso = pl.col("__iso")
        part = part.with_columns(
            iso.str.replace(r"[zZ]$", "+00:00").alias("__iso_z"),
            iso.str.contains(r"([zZ]|[+-]\d\d:?\d\d)$").fill_null(False).alias("__has_offset"),
        )
        offset = pl.col("__has_offset")
        return part.select(
            _first_fit(aware, offset, True).dt.replace_time_zone(None).alias("__aware"),
            _first_fit(naive, ~offset, False).alias("__naive"),
        )

    return per_subset(frame, pending, read, [TS_TEXT, "__is_spaced"])


def _iso() -> pl.Expr:
    """The timestamp text with a space between date and time (YYYY-MM-DD HH...) made a T."""
    text = pl.col(TS_TEXT)
    t_joined = text.str.slice(0, 10) + pl.lit("T") + text.str.slice(11)
    return pl.when(pl.col("__is_spaced")).then(t_joined).otherwise(text)


def _with_fast_iso(frame: pl.DataFrame) -> pl.DataFrame:
    """Add __fast (naive datetime; UTC when __fast_aware) for YYYY-MM-DD[T ]HH:MM:SS[.f][offset].

    Only the rows with a space for the T have it put in, on those rows alone. A value the
    parser fails on costs it several times one it reads, so epoch numbers are left out.
    """
    text = pl.col(TS_TEXT)
    plain = ~pl.col("__is_epoch") & ~pl.col("__is_spaced")
    frame = frame.with_columns(
        _seconds(pl.when(plain).then(text)).alias("__fast_base"),
        text.str.slice(19).alias("__fast_rest"),
    )
    frame = per_subset(
        frame,
        pl.col("__is_spaced"),
        _spaced_base,
        [TS_TEXT, "__is_spaced"],
        patch={"__fast_time": "__fast_base"},  # __fast_base, with the spaced rows read
    )
    # Fractions and offsets repeat ("Z", ".123Z", "+02:00"): read each distinct one once.
    frame = per_distinct(frame, ["__fast_rest"], _with_fast_tail)
    ok = pl.col("__fast_time").is_not_null() & pl.col("__fast_tail_ok")
    moment = pl.col("__fast_time") + pl.col("__fast_shift")
    return frame.with_columns(pl.when(ok).then(moment).alias("__fast"))


def _spaced_base(table: pl.DataFrame) -> pl.DataFrame:
    """__fast_time: the date and time of rows that have a space for the T."""
    return table.select(_seconds(_iso()).alias("__fast_time"))


def _seconds(iso: pl.Expr) -> pl.Expr:
    """The first 19 characters of an ISO time (YYYY-MM-DDTHH:MM:SS) read as a naive datetime."""
    return iso.str.slice(0, 19).str.to_datetime(
        "%Y-%m-%dT%H:%M:%S", time_unit="us", strict=False, cache=False
    )


def _with_fast_tail(table: pl.DataFrame) -> pl.DataFrame:
    """Read what follows the seconds: __fast_tail_ok, __fast_shift (to UTC), __fast_aware."""
    rest = pl.col("__fast_rest")
    tail = rest.str.strip_chars_start(".,0123456789")
    table = table.with_columns(tail.alias("__fast_tail"))
    tail = pl.col("__fast_tail")
    cut = rest.str.len_chars() - tail.str.len_chars()  # the length of ".123456"
    fraction = pl.when(cut > 0).then(rest.str.slice(0, cut))
    offset = tail.str.replace(":", "", literal=True)
    micros = fraction.str.slice(1, 6).str.pad_end(6, "0").cast(pl.Int64, strict=False)
    hours = offset.str.slice(1, 2).cast(pl.Int64, strict=False)
    minutes = hours * 60 + offset.str.slice(3, 2).cast(pl.Int64, strict=False).fill_null(0)
    minutes = pl.when(offset.str.starts_with("-")).then(-minutes).otherwise(minutes).fill_null(0)
    fraction_ok = fraction.is_null() | fraction.str.contains(r"^[.,]\d+$")
    # Hours 00-23, minutes 00-59, ASCII digits, a colon only between them: "+25:00" or
    # "-05:75" is a typo, not an offset, and the general patterns refuse it too.
    offset_ok = tail.is_in(["", "Z", "z"]) | tail.str.contains(UTC_OFFSET)
    shift = pl.duration(microseconds=micros.fill_null(0)) - pl.duration(minutes=minutes)
    table = table.with_columns(
        (fraction_ok & offset_ok).alias("__fast_tail_ok"),
        shift.alias("__fast_shift"),
        (tail != "").alias("__fast_aware"),
    )
    return table.drop("__fast_tail")


def _first_fit(attempts: list[tuple[str, str]], wanted: pl.Expr, aware: bool) -> pl.Expr:
    """The first format in a list that reads a value, on the rows ``wanted`` selects."""
    zone = "UTC" if aware else None
    parsed = [
        pl.when(wanted)
        .then(pl.col(column))
        .str.to_datetime(pattern, time_unit="us", time_zone=zone, strict=False, cache=False)
        for column, pattern in attempts
    ]
    return pl.coalesce(parsed)


def _epoch_stage(unit: str | None) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """A stage that adds __epoch to rows whose TS_TEXT is an epoch number."""

    def stage(table: pl.DataFrame) -> pl.DataFrame:
        text = pl.col(TS_TEXT)
        if unit is None and not table.select(text.str.contains(".", literal=True).any()).item():
            return table.with_columns(_whole_epoch(text).alias("__epoch"))
        return table.with_columns(_epoch(text, unit).alias("__epoch"))

    return stage


def _whole_epoch(digits: pl.Expr) -> pl.Expr:
    """_epoch of 9 to 19 digits without a fraction, the unit told by their number, in integers.

    Dividing cuts digits exactly as slicing the text does; 19 digits fit in 64 unsigned bits.
    """
    number = digits.cast(pl.UInt64, strict=False)
    size = digits.str.len_bytes()  # the digits are ASCII
    millis = (
        pl.when(size <= 10)
        .then(number * 1000)
        .when(size <= 13)
        .then(number)
        .when(size <= 16)
        .then(number // 1000)
        .otherwise(number // 1_000_000)
    )
    moment = pl.from_epoch(millis.cast(pl.Int64), time_unit="ms").dt.cast_time_unit("us")
    return moment.dt.replace_time_zone("UTC")


def _epoch(digits: pl.Expr, unit: str | None) -> pl.Expr:
    """Epoch seconds, milliseconds, microseconds or nanoseconds as a datetime, read as UTC.

    The unit is the mapping's, or told by the number of digits: up to 10 seconds, 11-13
    milliseconds, 14-16 microseconds, 17-19 nanoseconds. The digits are cut to milliseconds
    as text (so never rounded up: as a float, 135055374.2 seconds times 1000 is
    135055374199.99998 milliseconds), and seconds read as an exact decimal.
    """
    point = digits.str.find(".", literal=True)
    whole = pl.when(point.is_null()).then(digits).otherwise(digits.str.slice(0, point))
    size = whole.str.len_chars()
    to_millis = pl.when(point.is_null()).then(digits).otherwise(digits.str.slice(0, point + 4))
    seconds = (to_millis.cast(pl.Decimal(38, 3), strict=False) * 1000).cast(pl.Int64)
    cut = {"ms": 0, "us": 3, "ns": 6}
    by_unit = {u: whole.str.slice(0, size - n).cast(pl.Int64, strict=False) for u, n in cut.items()}
    by_unit["s"] = seconds
    if unit is not None:
        millis = by_unit[unit]
    else:
        millis = (
            pl.when(size <= 10)
            .then(seconds)
            .when(size <= 13)
            .then(by_unit["ms"])
            .when(size <= 16)
            .then(by_unit["us"])
            .otherwise(by_unit["ns"])
        )
    moment = pl.from_epoch(millis, time_unit="ms").dt.cast_time_unit("us")
    return moment.dt.replace_time_zone("UTC")


def _with_event_name(table: pl.DataFrame, mapping: Mapping) -> pl.DataFrame:
    """Add the name as given, the name to send (converted if asked for) and BAD_NAME."""
    table = table.with_columns(_text(mapping.event_name).alias(NAME_TEXT))
    named = _stripped(_renamed(pl.col(NAME_TEXT), mapping), mapping)
    table = table.with_columns(_event_name(named, mapping).alias(EVENT_NAME))
    return table.with_columns((~pl.col(EVENT_NAME).str.contains(SNAKE_CASE)).alias(BAD_NAME))


def _renamed(text: pl.Expr, mapping: Mapping) -> pl.Expr:
    """The name renamed by the mapping's table (an exact match of the raw name), else as is."""
    if not mapping.event_rename:
        return text
    return text.replace(mapping.event_rename)


def _stripped(text: pl.Expr, mapping: Mapping) -> pl.Expr:
    """The name without the first of the mapping's prefixes it starts with."""
    stripped: pl.Expr = text
    for prefix in reversed(mapping.strip_prefix):
        cut = text.str.strip_prefix(prefix)
        stripped = pl.when(text.str.starts_with(prefix)).then(cut).otherwise(stripped)
    return stripped


def _event_name(text: pl.Expr, mapping: Mapping) -> pl.Expr:
    """The event name, converted to snake_case when the mapping asks for it."""
    if mapping.snake_case == "reject":
        return text
    converted = (
        text.str.replace_all(r"([a-z0-9])([A-Z])", "${1}_${2}")
        .str.replace_all(r"([A-Z]+)([A-Z][a-z])", "${1}_${2}")
        .str.to_lowercase()
        .str.replace_all(r"[^a-z0-9]+", "_")
        .str.strip_chars("_")
    )
    # Only plain ASCII names are converted: dropping other letters would change their meaning.
    return pl.when(text.str.contains(CONVERTIBLE_NAME)).then(converted).otherwise(text)


def _chosen_identifier(mapping: Mapping) -> list[pl.Expr]:
    """IDENTIFIER_ALT, IDENTIFIER_KEY and VALUE_TEXT of the first alternative with a value.

    The API takes one identifier per event: the first alternative whose value is there is
    sent; a row where none is takes the first, and is invalid for its empty value.
    """
    alternatives = mapping.identifiers()
    if len(alternatives) == 1:
        first = alternatives[0]
        return [
            pl.lit(0).alias(IDENTIFIER_ALT),
            _text(first.key).alias(IDENTIFIER_KEY),
            _text(first.value).alias(VALUE_TEXT),
        ]
    values = [_text(a.value) for a in alternatives]
    chosen = pl.coalesce(
        [pl.when(v.is_not_null()).then(pl.lit(i)) for i, v in enumerate(values)] + [pl.lit(0)]
    )
    key: pl.Expr = _text(alternatives[0].key)
    value: pl.Expr = values[0]
    for i, alternative in enumerate(alternatives[1:], start=1):
        key = pl.when(chosen == i).then(_text(alternative.key)).otherwise(key)
        value = pl.when(chosen == i).then(values[i]).otherwise(value)
    return [chosen.alias(IDENTIFIER_ALT), key.alias(IDENTIFIER_KEY), value.alias(VALUE_TEXT)]


def _with_identifiers(frame: pl.DataFrame, mapping: Mapping, normalized: bool) -> pl.DataFrame:
    """Add UNWRAPPED, IDENT and SENT_AS_STRING, each row read as its alternative says."""
    kinds = list(dict.fromkeys((a.type, a.normalize) for a in mapping.identifiers()))
    if len(kinds) == 1:
        frame = _with_identifier(frame, *kinds[0], normalized)
        return frame.with_columns(pl.lit(kinds[0][0] == "string").alias(SENT_AS_STRING))
    alternatives = mapping.identifiers()
    for n, kind in enumerate(kinds):
        uses = [i for i, a in enumerate(alternatives) if (a.type, a.normalize) == kind]

        def read(table: pl.DataFrame, kind: tuple[str, str] = kind, n: int = n) -> pl.DataFrame:
            table = _with_identifier(table, kind[0], kind[1], normalized)
            return table.select(pl.col(UNWRAPPED).alias(f"__u{n}"), pl.col(IDENT).alias(f"__i{n}"))

        frame = per_subset(frame, pl.col(IDENTIFIER_ALT).is_in(uses), read, [VALUE_TEXT])
    strings = [i for i, a in enumerate(alternatives) if a.type == "string"]
    return frame.with_columns(
        pl.coalesce([f"__u{n}" for n in range(len(kinds))]).alias(UNWRAPPED),
        pl.coalesce([f"__i{n}" for n in range(len(kinds))]).alias(IDENT),
        pl.col(IDENTIFIER_ALT).is_in(strings).alias(SENT_AS_STRING),
    ).drop([f"__{c}{n}" for n in range(len(kinds)) for c in "ui"])


def _with_identifier(
    frame: pl.DataFrame, kind: str, normalize: str, normalized: bool
) -> pl.DataFrame:
    """Add UNWRAPPED (quoting undone) and IDENT (the JSON text to send, or null when bad).

    ``normalized=False`` leaves the case of a string identifier as it is: whether there is
    one is all validation asks, and a change of case never makes a value appear or vanish.
    """
    text = pl.col(VALUE_TEXT)
    if kind == "json":
        frame = frame.with_columns(text.alias(UNWRAPPED))
        ident = pl.when(text.str.json_path_match("$").is_not_null()).then(text)
        return _with_ident(frame, ident)
    # Only a value in quotes can be unwrapped; the others are sent as they are.
    # A value that does not start with a quote is not unwrapped: _with_unwrapped checks the rest.
    quoted = text.str.starts_with('"')
    frame = per_subset(
        frame, quoted, _with_unwrapped, [VALUE_TEXT], patch={"__unwrapped": VALUE_TEXT}
    ).rename({"__unwrapped": UNWRAPPED})
    value = pl.col(UNWRAPPED)
    if kind == "string" and not normalized:
        return _with_ident(frame, value)
    if normalize == "lowercase":
        value = value.str.to_lowercase()
    elif normalize == "uppercase":
        value = value.str.to_uppercase()
    if kind == "number":
        return _with_ident(frame, pl.when(value.str.contains(JSON_NUMBER)).then(value))
    return _with_ident(frame, value)


def _in_quotes(value: pl.Expr) -> pl.Expr:
    """Whether a text starts and ends with a double quote (and is more than one)."""
    return value.str.starts_with('"') & value.str.ends_with('"') & (value.str.len_bytes() >= 2)


def _with_unwrapped(table: pl.DataFrame) -> pl.DataFrame:
    """Add __unwrapped: the value with up to UNWRAP_LEVELS levels of JSON quoting undone."""
    table = table.with_columns(pl.col(VALUE_TEXT).alias("__unwrapped"))
    for _ in range(UNWRAP_LEVELS):
        value = pl.col("__unwrapped")
        table = table.with_columns(_in_quotes(value).alias("__quoted"))
        if not table["__quoted"].any():
            break
        decoded = pl.when("__quoted").then(value).str.json_path_match("$").str.strip_chars()
        table = table.with_columns(pl.coalesce(decoded, value).alias("__unwrapped"))
    return table.drop("__quoted", strict=False)


def _with_ident(table: pl.DataFrame, ident: pl.Expr) -> pl.DataFrame:
    """Add IDENT: the value to send (JSON text, or a string to stringify), null when bad."""
    return table.with_columns(ident.alias(IDENT))


def _with_props(frame: pl.DataFrame, mapping: Mapping, members: bool) -> pl.DataFrame:
    """Add BAD_METRIC and BAD_JSON (and with ``members`` the JSON column's, for the body)."""
    m = mapping
    columns = [s.column for s in m.json_sources() if s.column is not None]
    if len(columns) == 1 and not m.drop:
        # Polars reads objects; lists of key/value pairs and JSON nulls are Python's to read.
        frame = per_distinct(frame, [_in(columns[0])], _json_objects(columns[0], members))
        frame = _merged_in_python(frame, m, columns, pl.col("__merge"))
    else:
        frame = frame.with_columns(
            pl.lit(None, pl.String).alias("__json"), pl.lit(False).alias(BAD_JSON)
        )
        if columns:
            frame = _merged_in_python(frame, m, columns, pl.lit(True))
    bad = [_bad_metric(c, m.input.decimal_comma) for c in m.metrics]
    return frame.with_columns((pl.any_horizontal(bad) if bad else pl.lit(False)).alias(BAD_METRIC))


def _with_props_text(frame: pl.DataFrame, mapping: Mapping) -> pl.DataFrame:
    """Add PROPS, the props object's JSON text."""
    m = mapping
    text_props = [*m.dimensions, *m.columns]
    for i, column in enumerate(text_props):
        member = _member(m.prop_name(column), json_literal(_cell(column))).alias(f"__text{i}")
        frame = per_distinct(frame, [_in(column)], _adding(member))
    metrics = [_member(m.prop_name(c), _metric(c, m.input.decimal_comma)) for c in m.metrics]
    dims = [pl.col(f"__text{i}") for i in range(len(m.dimensions))]
    cols = [pl.col(f"__text{i}") for i in range(len(m.dimensions), len(text_props))]
    frame = frame.with_columns(
        _nested("payload_metrics", _object(metrics)).alias("__metrics"),
        _nested("payload_dimensions", _object(dims)).alias("__dims"),
    )
    # The JSON column's members come first, so explicitly mapped columns win a duplicate key.
    members = [pl.col("__json"), pl.col("__metrics"), pl.col("__dims"), *cols]
    props = pl.lit("{") + _object(members).fill_null("") + pl.lit("}")
    return frame.with_columns(props.alias(PROPS))


def _adding(*exprs: pl.Expr) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """A stage that adds the given columns."""
    return lambda table: table.with_columns(*exprs)


def _json_objects(column: str, members: bool) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """A stage that adds BAD_JSON (and with ``members`` the cell's members, __json)."""
    bad_json, inner = _json_object(column)

    def stage(table: pl.DataFrame) -> pl.DataFrame:
        table = table.with_columns(bad_json, inner) if members else table.with_columns(bad_json)
        # Polars' parser gives up on objects nested 128 deep: Python reads those again.
        deep = pl.col(BAD_JSON) & _cell(column).str.starts_with("{")
        table = per_subset(table, deep, _python_members(column), [_in(column)])
        found = pl.col("__deep_members")
        # Lists of key/value pairs and JSON nulls are merged in Python: marked here, on the
        # distinct cells, rather than by passes over the whole batch.
        cell = _cell(column)
        python = cell.str.starts_with("[")
        if members:
            python = python | cell.str.contains("null", literal=True)
        table = table.with_columns(
            (pl.col(BAD_JSON) & found.is_null()).alias(BAD_JSON),
            python.fill_null(False).alias("__merge"),
        )
        if members:
            deep_inner = pl.when(found != "").then(found)
            table = table.with_columns(pl.coalesce("__json", deep_inner).alias("__json"))
        return table.drop("__deep_members")

    return stage


def _merged_in_python(
    frame: pl.DataFrame, mapping: Mapping, columns: list[str], wanted: pl.Expr
) -> pl.DataFrame:
    """Set BAD_JSON and __json of the rows ``wanted`` picks by merging the JSON sources in Python.

    Merging several objects, leaving out dropped keys and nulls, and reading GA4's lists of
    key/value pairs are beyond Polars' JSON functions. Each distinct combination of cells is
    read once.
    """
    if "__json" not in frame.columns:  # validation only: no members were read
        frame = frame.with_columns(pl.lit(None, pl.String).alias("__json"))
    if BAD_SOURCE not in frame.columns:
        frame = frame.with_columns(pl.lit(0).alias(BAD_SOURCE))
    frame = frame.with_columns(wanted.alias("__merge"))
    if not frame["__merge"].any():
        return frame.drop("__merge")
    keep = _json_merger(mapping)
    inputs = [_in(c) for c in columns]

    def stage(table: pl.DataFrame) -> pl.DataFrame:
        cells = table.select(_cell(c) for c in columns).rows()
        merged = [keep(row) for row in cells]
        return table.with_columns(
            pl.Series("__py_bad", [bad for bad, _ in merged], dtype=pl.Int64),
            pl.Series("__py_json", [text for _, text in merged], dtype=pl.String),
        )

    picked = per_subset(frame, pl.col("__merge"), lambda t: per_distinct(t, inputs, stage), inputs)
    merge = pl.col("__merge")
    return picked.with_columns(
        pl.when(merge).then(pl.col("__py_bad").is_not_null()).otherwise(BAD_JSON).alias(BAD_JSON),
        pl.when(merge).then("__py_bad").otherwise(pl.lit(0)).alias(BAD_SOURCE),
        pl.when(merge).then("__py_json").otherwise("__json").alias("__json"),
    ).drop("__merge", "__py_bad", "__py_json")


def _json_merger(
    mapping: Mapping,
) -> Callable[[tuple[str | None, ...]], tuple[int | None, str | None]]:
    """A function from a row's JSON cells to (the bad cell's index or None, merged members).

    An earlier source wins a key; a mapped props column wins over all (and the objects of
    metrics and dimensions keep their keys); dropped keys and JSON nulls are left out.
    """
    taken = {mapping.prop_name(c) for c in mapping.columns}
    taken |= {k for k, kind in NESTED_PROPS.items() if getattr(mapping, kind)}
    dropped = set(mapping.drop)

    def merge(cells: tuple[str | None, ...]) -> tuple[int | None, str | None]:
        merged: dict[str, Any] = {}
        for index, cell in enumerate(cells):
            if cell is None:
                continue
            found = json_object(cell)
            if found is None:
                return index, None
            for key, value in found.items():
                if value is not None and key not in dropped and key not in taken:
                    merged.setdefault(key, value)
        return None, compact_json(merged)[1:-1] or None

    return merge


def json_object(text: str) -> dict[str, Any] | None:
    """A props cell as an object: an object, JSON text of one, or a list of key/value pairs.

    A pair's value is taken as it is when it is a scalar; when it is an object (GA4's
    ``{"string_value": ..., "int_value": ...}``), its first non-null field. None when the
    cell is none of these.
    """
    try:
        value = load_json(text)
        if isinstance(value, str) and value.lstrip().startswith("{"):
            value = load_json(value)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, dict):
        return value
    if not isinstance(value, list):
        return None
    pairs: dict[str, Any] = {}
    for pair in value:
        if not isinstance(pair, dict) or not isinstance(pair.get("key"), str):
            return None
        pairs.setdefault(pair["key"], _pair_value(pair.get("value")))
    return pairs


def _pair_value(value: Any) -> Any:
    """A key/value pair's value: a scalar as it is, or the first non-null field of an object."""
    if not isinstance(value, dict):
        return value
    for field in (*TYPED_VALUES, *value):
        found = value.get(field)
        if found is not None:
            # BigQuery writes INT64 as a JSON string of digits: int_value is a number.
            if field == "int_value" and isinstance(found, str) and found.lstrip("-").isdigit():
                return int(found)
            return found
    return None


def _python_members(column: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """A stage that adds __deep_members: a cell's members read by Python, null if no object."""

    def stage(table: pl.DataFrame) -> pl.DataFrame:
        members = [_members(text) for text in table.select(_cell(column)).to_series()]
        return table.with_columns(pl.Series("__deep_members", members, dtype=pl.String))

    return stage


def _members(text: str) -> str | None:
    """The members of a JSON object's text, compact and without the braces; None if none."""
    try:
        value = load_json(text)
    except (ValueError, RecursionError):
        return None
    return compact_json(value)[1:-1] if isinstance(value, dict) else None


def _json_object(column: str) -> tuple[pl.Expr, pl.Expr]:
    """Whether a JSON-object cell is bad, and its members without the braces."""
    text = _cell(column)
    compact = text.str.json_path_match("$")
    is_object = (compact.str.starts_with("{") & text.str.starts_with("{")).fill_null(False)
    inner = compact.str.slice(1, compact.str.len_chars() - 2)
    return (
        (text.is_not_null() & ~is_object).alias(BAD_JSON),
        pl.when(is_object & (inner != "")).then(inner).alias("__json"),
    )


def _metric_cell(column: str, comma: bool) -> pl.Expr:
    """A metric cell as trimmed text; with decimal commas, 1.234,50 read as 1234.50."""
    text = _cell(column)
    if comma:
        # Only dots that group thousands (1.234,50): "12.5" is ambiguous, so not a number.
        plain = text.str.replace_all(".", "", literal=True).str.replace(",", ".", literal=True)
        readable = text.str.contains(DECIMAL_COMMA)
        text = pl.when(readable).then(plain).when(text.is_not_null()).then(pl.lit("?"))
    return text


def _metric(column: str, comma: bool = False) -> pl.Expr:
    """A metric cell as JSON number text, or null when blank or not a number."""
    text = _metric_cell(column, comma)
    number = text.cast(pl.Float64, strict=False)
    as_json = pl.when(text.str.contains(JSON_NUMBER)).then(text).otherwise(number.cast(pl.String))
    return pl.when(number.is_finite()).then(as_json)


def _bad_metric(column: str, comma: bool = False) -> pl.Expr:
    """Whether a metric cell is present but not a finite number."""
    text = _metric_cell(column, comma)
    return text.is_not_null() & ~text.cast(pl.Float64, strict=False).is_finite().fill_null(False)


def _member(name: str, value: pl.Expr) -> pl.Expr:
    """'"name":value' for a present value, else null."""
    return pl.lit(json.dumps(name) + ":") + value


def _object(members: list[pl.Expr]) -> pl.Expr:
    """The members of a JSON object joined, or null when there are none."""
    if not members:
        return pl.lit(None, pl.String)
    return pl.concat_str(members, separator=",", ignore_nulls=True).replace("", None)


def _cell(column: str) -> pl.Expr:
    """A props cell as trimmed text, null when blank (empty cells are left out)."""
    return pl.col(_in(column)).cast(pl.String).str.strip_chars().replace("", None)


def _nested(name: str, members: pl.Expr) -> pl.Expr:
    """'"name":{members}' when there are members, else null."""
    return pl.lit(json.dumps(name) + ":{") + members + pl.lit("}")


def _with_filter(frame: pl.DataFrame, mapping: Mapping) -> pl.DataFrame:
    """Add SKIP, SKIP_RULE and SKIP_MESSAGE for the rows the mapping's filter leaves out.

    include and exclude look at the raw values, so a row that is not an event (an identify
    call without an email) is skipped, not invalid; since and until look at the time, when
    it reads. A row that could not be read at all stays invalid: nothing can be said of it.
    """
    rules: list[tuple[pl.Expr, str, pl.Expr]] = []  # (skipped when, rule, message)
    f = mapping.filter
    if not (f.include or f.exclude or f.since or f.until):
        nothing = pl.lit(None, pl.String)
        return frame.with_columns(
            nothing.alias(SKIP), nothing.alias(SKIP_RULE), nothing.alias(SKIP_MESSAGE)
        )
    for source, values in f.include:
        text = _text(source)
        why = pl.lit(f"include {source.label}: ") + _shown(text) + pl.lit(" is not listed")
        rules.append((~text.is_in(values).fill_null(False), f"include {source.label}", why))
    for source, values in f.exclude:
        text = _text(source)
        why = pl.lit(f"exclude {source.label} = ") + _shown(text)
        rules.append((text.is_in(values).fill_null(False), f"exclude {source.label}", why))
    time = pl.col(TIME)
    if f.since is not None:
        rules.append((time < f.since, "since", pl.lit(f"before since {f.since_text}")))
    if f.until is not None:
        rules.append((time >= f.until, "until", pl.lit(f"not before until {f.until_text}")))
    rule: pl.Expr = pl.lit(None, pl.String)
    message: pl.Expr = pl.lit(None, pl.String)
    for condition, name, text in reversed(rules):
        rule = pl.when(condition.fill_null(False)).then(pl.lit(name)).otherwise(rule)
        message = pl.when(condition.fill_null(False)).then(text).otherwise(message)
    readable = pl.col(MALFORMED).is_null()
    return frame.with_columns(
        pl.when(readable & rule.is_not_null()).then(pl.lit(Skip.FILTERED.value)).alias(SKIP),
        pl.when(readable).then(rule).alias(SKIP_RULE),
        pl.when(readable).then(message).alias(SKIP_MESSAGE),
    )


def _shown(text: pl.Expr) -> pl.Expr:
    """A raw value in a skip message: quoted, shortened, or (empty)."""
    short = (
        pl.when(text.str.len_chars() > 60)
        .then(text.str.slice(0, 57) + pl.lit("..."))
        .otherwise(text)
    )
    return (pl.lit("'") + short + pl.lit("'")).fill_null(pl.lit("(empty)"))


def _dedupe_key(mapping: Mapping) -> pl.Expr:
    """The text a row is deduplicated on (null when it has none, or is not to be sent)."""
    f = mapping.filter
    sendable = pl.col(REASON).is_null() & pl.col(SKIP).is_null()
    if f.dedupe_payload:
        return pl.when(sendable).then(pl.col(PAYLOAD))
    if not f.dedupe:
        return pl.lit(None, pl.String)
    parts = [_text(source) for source in f.dedupe]
    # Parts taken together: a separator no text holds, and a row without any part has no key.
    key = pl.concat_str([p.fill_null("") for p in parts], separator="\x1f")
    return pl.when(sendable & pl.any_horizontal(p.is_not_null() for p in parts)).then(key)


def _with_reason(frame: pl.DataFrame, mapping: Mapping, now: datetime) -> pl.DataFrame:
    """Add REASON (the first rule a row breaks, or null) and MESSAGE, worked out on invalid rows.

    A skipped row gets no reason: it is not an event, so whether it would be valid is moot.
    """
    rules = _rules(now)

    def explain(invalid: pl.DataFrame) -> pl.DataFrame:
        reason: pl.Expr = pl.lit(None, pl.String)
        for condition, code in reversed(rules):
            reason = pl.when(condition).then(pl.lit(code.value)).otherwise(reason)
        invalid = invalid.with_columns(reason.alias(REASON))
        return invalid.with_columns(_message(mapping).alias(MESSAGE))

    broken = pl.any_horizontal(c for c, _ in rules) & pl.col(SKIP).is_null()
    return per_subset(frame, broken, explain)


def _rules(now: datetime) -> list[tuple[pl.Expr, Reason]]:
    """Each rule as (a condition true when a row breaks it, its reason), in Reason's order."""
    limit = now + FUTURE_TOLERANCE
    unwrapped = pl.col(UNWRAPPED)  # trimmed already, so empty means blank
    return [
        (pl.col(MALFORMED).is_not_null(), Reason.MALFORMED_ROW),
        (pl.col(EMBEDDABLE_ID).is_null(), Reason.MISSING_EMBEDDABLE_ID),
        (pl.col(TS_TEXT).is_null(), Reason.MISSING_TIMESTAMP),
        (pl.col(NAME_TEXT).is_null(), Reason.MISSING_CUSTOM_EVENT_NAME),
        (pl.col(IDENTIFIER_KEY).is_null(), Reason.MISSING_IDENTIFIER_KEY),
        (unwrapped.is_null() | (unwrapped == ""), Reason.MISSING_IDENTIFIER_VALUE),
        (pl.col(TIME).is_null(), Reason.BAD_TIMESTAMP),
        (pl.col(TIME) > pl.lit(limit), Reason.FUTURE_TIMESTAMP),
        (pl.col(BAD_NAME), Reason.BAD_EVENT_NAME),
        (pl.col(IDENT).is_null(), Reason.BAD_IDENTIFIER_VALUE),
        (pl.col(BAD_METRIC), Reason.BAD_METRIC),
        (pl.col(BAD_JSON), Reason.BAD_PROPS),
    ]


def _field_name(source: Source) -> str:
    """How a message names a field: its column (or columns and paths), or the constant."""
    return f"column '{source.label}'" if source.column is not None else f"{source.where} constant"


def _quoted(column: str) -> pl.Expr:
    """A value for a message, truncated so a huge cell cannot flood a report."""
    text = pl.col(column).cast(pl.String)
    short = (
        pl.when(text.str.len_chars() > 60)
        .then(text.str.slice(0, 57) + pl.lit("..."))
        .otherwise(text)
    )
    return pl.lit("'") + short + pl.lit("'")


def _message(mapping: Mapping) -> pl.Expr:
    """A one-line explanation of the row's reason, naming the field and value."""
    m = mapping
    texts: dict[Reason, pl.Expr] = {
        Reason.MALFORMED_ROW: pl.col(MALFORMED),
        Reason.MISSING_EMBEDDABLE_ID: pl.lit(f"{_field_name(m.embeddable_id)} is empty"),
        Reason.MISSING_TIMESTAMP: pl.lit(f"{_field_name(m.timestamp)} is empty"),
        Reason.MISSING_CUSTOM_EVENT_NAME: pl.lit(f"{_field_name(m.event_name)} is empty"),
        Reason.MISSING_IDENTIFIER_KEY: _per_alternative(
            m, lambda a: pl.lit(f"{_field_name(a.key)} is empty")
        ),
        Reason.MISSING_IDENTIFIER_VALUE: _empty_identifier(m),
        Reason.BAD_TIMESTAMP: pl.lit(f"{_field_name(m.timestamp)}: cannot read ")
        + _quoted(TS_TEXT)
        + pl.lit(" as a timestamp"),
        Reason.FUTURE_TIMESTAMP: pl.lit(f"{_field_name(m.timestamp)}: ")
        + _quoted(TS_TEXT)
        + pl.lit(" is in the future"),
        Reason.BAD_EVENT_NAME: pl.lit(f"{_field_name(m.event_name)}: ")
        + _quoted(NAME_TEXT)
        + pl.lit(
            " is not snake_case" if m.snake_case == "reject" else " cannot be made snake_case"
        ),
        Reason.BAD_IDENTIFIER_VALUE: _per_alternative(
            m,
            lambda a: (
                pl.lit(f"{_field_name(a.value)}: ")
                + _quoted(VALUE_TEXT)
                + pl.lit(f" is not valid {a.type}")
            ),
        ),
        Reason.BAD_METRIC: _bad_metric_message(m.metrics, m.input.decimal_comma),
        Reason.BAD_PROPS: _bad_props_message(m),
    }
    expr: pl.Expr = pl.lit(None, pl.String)
    for reason, text in texts.items():
        expr = pl.when(pl.col(REASON) == reason.value).then(text).otherwise(expr)
    return expr


def _per_alternative(mapping: Mapping, text: Callable[[Identifier], pl.Expr]) -> pl.Expr:
    """A message about the identifier alternative each row uses."""
    alternatives = mapping.identifiers()
    expr = text(alternatives[0])
    for i, alternative in enumerate(alternatives[1:], start=1):
        expr = pl.when(pl.col(IDENTIFIER_ALT) == i).then(text(alternative)).otherwise(expr)
    return expr


def _empty_identifier(mapping: Mapping) -> pl.Expr:
    """The message of a row without an identifier value: every alternative is empty."""
    alternatives = mapping.identifiers()
    if len(alternatives) == 1:
        return pl.lit(f"{_field_name(alternatives[0].value)} is empty")
    names = "; ".join(_field_name(a.value) for a in alternatives)
    return pl.lit(f"every identifier alternative is empty ({names})")


def _bad_props_message(mapping: Mapping) -> pl.Expr:
    """The json_column source whose cell is not an object, with its value."""
    expr: pl.Expr = pl.lit(None, pl.String)
    for i, source in reversed(list(enumerate(mapping.json_sources()))):
        assert source.column is not None
        text = (
            pl.lit(f"column '{source.label}': ")
            + _quoted(_in(source.column))
            + pl.lit(" is not a JSON object")
        )
        expr = pl.when(pl.col(BAD_SOURCE) == i).then(text).otherwise(expr)
    return expr


def _bad_metric_message(metrics: tuple[str, ...], comma: bool) -> pl.Expr:
    """The first metric column that is not a finite number, with its value."""
    expr: pl.Expr = pl.lit(None, pl.String)
    for column in reversed(metrics):
        # 'inf' and 'NaN' read as floats: saying "not a number" of them would puzzle.
        number = _metric_cell(column, comma).cast(pl.Float64, strict=False)
        what = pl.when(number.is_null()).then(pl.lit(" is not a number"))
        text = (
            pl.lit(f"column '{column}': ")
            + _quoted(_in(column))
            + what.otherwise(pl.lit(" is not a finite number"))
        )
        expr = pl.when(_bad_metric(column, comma)).then(text).otherwise(expr)
    return expr


def _with_body(frame: pl.DataFrame, mapping: Mapping) -> pl.DataFrame:
    """Add PAYLOAD, the exact JSON body of each valid row."""
    frame = _with_props_text(frame, mapping)
    # A string is JSON-stringified exactly once; a number's or JSON's text is sent as it is.
    ident_json = pl.when(SENT_AS_STRING).then(json_literal(pl.col(IDENT))).otherwise(IDENT)
    frame = per_distinct(frame, [EMBEDDABLE_ID], lambda t: _with_literal(t, EMBEDDABLE_ID))
    frame = per_distinct(frame, [IDENTIFIER_KEY], lambda t: _with_literal(t, IDENTIFIER_KEY))
    # The body carries the identifier's JSON text and the props object as JSON strings.
    frame = frame.with_columns(
        json_literal(ident_json).alias(f"{IDENT}__literal"),
        json_literal(pl.col(PROPS)).alias(f"{PROPS}__literal"),
    )
    sendable = pl.col(REASON).is_null() & pl.col(SKIP).is_null()
    return frame.with_columns(pl.when(sendable).then(_body()).alias(PAYLOAD))


def _body() -> pl.Expr:
    """The exact JSON body of a valid row."""
    return pl.concat_str(
        pl.lit('{"embeddable_id":'),
        pl.col(f"{EMBEDDABLE_ID}__literal"),
        pl.lit(',"timestamp":"'),
        pl.col(TIME).dt.strftime(OUTPUT_TIME),
        pl.lit('","custom_event_name":"'),
        pl.col(EVENT_NAME),
        pl.lit('","custom_event_props":'),
        pl.col(f"{PROPS}__literal"),
        pl.lit(',"identifiers":[{"key":'),
        pl.col(f"{IDENTIFIER_KEY}__literal"),
        pl.lit(',"value":'),
        pl.col(f"{IDENT}__literal"),
        pl.lit("}]}"),
    )


def _repair_flags(mapping: Mapping) -> list[pl.Expr]:
    """One boolean column per repair kind, true on valid rows the tool had to change."""
    valid = pl.col(REASON).is_null() & pl.col(SKIP).is_null()
    renamed = pl.col(EVENT_NAME) != pl.col(NAME_TEXT)
    unwrapped = pl.col(UNWRAPPED) != pl.col(VALUE_TEXT)
    if mapping.identifier_type == "json":
        unwrapped = pl.lit(False)
    return [
        (valid & renamed).alias(Repair.EVENT_NAME_CONVERTED.value),
        (valid & unwrapped).alias(Repair.IDENTIFIER_UNWRAPPED.value),
        (valid & pl.col(ASSUMED)).alias(Repair.TIMEZONE_ASSUMED.value),
    ]
