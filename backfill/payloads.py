"""Validation rules and payload building, as Polars expressions over a batch of rows.

``build_payloads`` turns a batch from ``inputs`` into one row per input row with its reason
code (null when valid), a message, the exact JSON body to send, and the columns the report
counts. Every rule is a column expression: no per-row Python.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl

from backfill.codes import Reason, Repair
from backfill.inputs import MALFORMED, ROW
from backfill.mapping import Mapping, Source

SNAKE_CASE = r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"
JSON_NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
EPOCH = r"^[0-9]{9,13}(\.[0-9]+)?$"
CONVERTIBLE_NAME = r"^[A-Za-z0-9 _\-./]+$"
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
TIME = "time"
REPAIRS = tuple(r.value for r in Repair)


TS_TEXT = "__ts_text"
NAME_TEXT = "__name_text"
VALUE_TEXT = "__value_text"
UNWRAPPED = "__unwrapped"
IDENT = "__ident"
PROPS = "__props"
BAD_METRIC = "__bad_metric"
BAD_JSON = "__bad_json"
ASSUMED = Repair.TIMEZONE_ASSUMED.value

# Each stage below adds columns computed from columns of the previous stage. Referring to
# materialised columns by name keeps every expression small: nesting the expressions instead
# makes Polars evaluate the shared parts again for every use.


def build_payloads(
    batch: pl.DataFrame, mapping: Mapping, now: datetime | None = None
) -> pl.DataFrame:
    """Validate every row of a batch and build its payload: one output row per input row."""
    now = now or datetime.now(UTC)
    frame = batch.with_columns(
        _text(mapping.embeddable_id).alias(EMBEDDABLE_ID),
        _text(mapping.timestamp).alias(TS_TEXT),
        _text(mapping.event_name).alias(NAME_TEXT),
        _text(mapping.identifier_key).alias(IDENTIFIER_KEY),
        _text(mapping.identifier_value).alias(VALUE_TEXT),
    )
    frame = _with_time(frame, mapping)
    frame = per_distinct(frame, NAME_TEXT, {EVENT_NAME: _event_name(pl.col(NAME_TEXT), mapping)})
    frame = _with_identifier(frame, mapping, _quoted_levels(batch, mapping))
    frame = _with_props(frame, mapping)
    frame = frame.with_columns(_reason(mapping, now).alias(REASON))
    return frame.select(
        ROW,
        REASON,
        _message(mapping).alias(MESSAGE),
        pl.when(pl.col(REASON).is_null()).then(_body()).alias(PAYLOAD),
        EMBEDDABLE_ID,
        EVENT_NAME,
        IDENTIFIER_KEY,
        TIME,
        *_repair_flags(mapping),
    )


def per_distinct(frame: pl.DataFrame, column: str, outputs: dict[str, pl.Expr]) -> pl.DataFrame:
    """Add columns computed once per distinct value of ``column`` and joined back.

    Event names, embeddable ids, dimensions and the like repeat across millions of rows, so
    computing on the few distinct values is far cheaper than computing on every row.
    """
    table = frame.select(pl.col(column).unique()).with_columns(**outputs)
    return frame.join(table, on=column, how="left", nulls_equal=True, maintain_order="left")


def _quoted_levels(batch: pl.DataFrame, mapping: Mapping) -> int:
    """How many rounds of unquoting identifier values may need: none when no value is quoted."""
    column = mapping.identifier_value.column
    if mapping.identifier_type == "json":
        return 0
    if column is None:
        return UNWRAP_LEVELS if (mapping.identifier_value.value or "").startswith('"') else 0
    quoted = batch.select(
        pl.col(column).cast(pl.String).str.strip_chars().str.starts_with('"').any()
    )
    return UNWRAP_LEVELS if quoted.item() else 0


def _text(source: Source) -> pl.Expr:
    """A field's value as trimmed text, null when blank."""
    expr = pl.col(source.column) if source.column is not None else pl.lit(source.value)
    text = expr.cast(pl.String).str.strip_chars()
    return pl.when(text != "").then(text)


def json_literal(expr: pl.Expr) -> pl.Expr:
    """The JSON string literal of a text expression; null stays null."""
    encoded = pl.struct(expr.alias("v")).struct.json_encode()
    literal = encoded.str.strip_prefix('{"v":').str.strip_suffix("}")
    return pl.when(expr.is_not_null()).then(literal)


def _with_time(frame: pl.DataFrame, mapping: Mapping) -> pl.DataFrame:
    """Add TIME (UTC, or null when unreadable) and whether the mapping's time zone was assumed.

    Formats are tried in turn on the rows still unread, so each row is parsed only until a
    format fits.
    """
    text = pl.col(TS_TEXT)
    dated_t = pl.when(text.str.slice(10, 1) == " ").then(
        text.str.slice(0, 10) + pl.lit("T") + text.str.slice(11)
    )
    iso = pl.coalesce(dated_t, text).str.replace(r"[zZ]$", "+00:00")
    frame = frame.with_columns(
        iso.alias("__iso"), pl.lit(None, pl.Datetime("us", "UTC")).alias(TIME)
    )
    fmt = mapping.timestamp_format
    attempts: list[tuple[str, str, bool]] = []
    if fmt is not None:
        attempts.append((TS_TEXT, fmt, "%z" in fmt))
    attempts += [("__iso", f, True) for f in AWARE_FORMATS]
    for column, pattern, aware in attempts:
        frame = _try_format(frame, column, pattern, aware, mapping.timezone)
    frame = frame.with_columns(_epoch(text).alias("__epoch"))
    frame = frame.with_columns(pl.coalesce(TIME, "__epoch").alias(TIME))
    frame = frame.with_columns(pl.col(TIME).is_null().alias(ASSUMED))
    for pattern in NAIVE_FORMATS:
        frame = _try_format(frame, "__iso", pattern, False, mapping.timezone)
    return frame.with_columns((pl.col(ASSUMED) & pl.col(TIME).is_not_null()).alias(ASSUMED)).drop(
        "__iso", "__epoch"
    )


def _try_format(
    frame: pl.DataFrame, column: str, pattern: str, aware: bool, zone: str
) -> pl.DataFrame:
    """Fill TIME for still-unread rows that match one strftime pattern."""
    pending = pl.when(pl.col(TIME).is_null()).then(pl.col(column))
    if aware:
        parsed = pending.str.to_datetime(pattern, time_unit="us", time_zone="UTC", strict=False)
        return frame.with_columns(pl.coalesce(TIME, parsed).alias(TIME))
    local = pending.str.to_datetime(pattern, time_unit="us", strict=False).dt.replace_time_zone(
        zone, ambiguous="earliest", non_existent="null"
    )
    return frame.with_columns(pl.coalesce(TIME, local.dt.convert_time_zone("UTC")).alias(TIME))


def _epoch(text: pl.Expr) -> pl.Expr:
    """Epoch seconds or milliseconds (told apart by size) as a UTC datetime."""
    number = pl.when(text.str.contains(EPOCH)).then(text.cast(pl.Float64, strict=False))
    millis = pl.when(number >= 1e11).then(number).otherwise(number * 1000).cast(pl.Int64)
    return pl.from_epoch(millis, time_unit="ms").dt.cast_time_unit("us").dt.replace_time_zone("UTC")


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


def _with_identifier(frame: pl.DataFrame, mapping: Mapping, levels: int) -> pl.DataFrame:
    """Add UNWRAPPED (quoting undone) and IDENT (the JSON text to send, or null when bad)."""
    frame = frame.with_columns(pl.col(VALUE_TEXT).alias(UNWRAPPED))
    if mapping.identifier_type == "json":
        valid = pl.col(VALUE_TEXT).str.json_path_match("$").is_not_null()
        return frame.with_columns(pl.when(valid).then(pl.col(VALUE_TEXT)).alias(IDENT))
    for _ in range(levels):
        value = pl.col(UNWRAPPED)
        quoted = (
            value.str.starts_with('"') & value.str.ends_with('"') & (value.str.len_chars() >= 2)
        )
        decoded = pl.when(quoted).then(value).str.json_path_match("$").str.strip_chars()
        frame = frame.with_columns(pl.coalesce(decoded, value).alias(UNWRAPPED))
    value = pl.col(UNWRAPPED)
    if mapping.normalize == "lowercase":
        value = value.str.to_lowercase()
    elif mapping.normalize == "uppercase":
        value = value.str.to_uppercase()
    if mapping.identifier_type == "number":
        return frame.with_columns(pl.when(value.str.contains(JSON_NUMBER)).then(value).alias(IDENT))
    return frame.with_columns(json_literal(value).alias(IDENT))


def _with_props(frame: pl.DataFrame, mapping: Mapping) -> pl.DataFrame:
    """Add PROPS (the props object's JSON text), BAD_METRIC and BAD_JSON."""
    metrics = [f"__metric{i}" for i in range(len(mapping.metrics))]
    frame = frame.with_columns(
        *[_metric(c).alias(n) for c, n in zip(mapping.metrics, metrics, strict=True)],
        *[_bad_metric(c).alias(f"__bad{n}") for c, n in zip(mapping.metrics, metrics, strict=True)],
    )
    text_props = [*mapping.dimensions, *mapping.columns]
    for i, column in enumerate(text_props):
        member = _member(mapping.prop_name(column), json_literal(_cell(column)))
        frame = per_distinct(frame, column, {f"__text{i}": member})
    dims = [pl.col(f"__text{i}") for i in range(len(mapping.dimensions))]
    cols = [pl.col(f"__text{i}") for i in range(len(mapping.dimensions), len(text_props))]
    members = [
        _nested(
            "payload_metrics",
            _object(
                [
                    _member(mapping.prop_name(c), pl.col(n))
                    for c, n in zip(mapping.metrics, metrics, strict=True)
                ]
            ),
        ),
        _nested("payload_dimensions", _object(dims)),
    ]
    frame = frame.with_columns(
        pl.lit(None, pl.String).alias("__json"), pl.lit(False).alias(BAD_JSON)
    )
    if mapping.json_column is not None:
        frame = per_distinct(
            frame.drop("__json", BAD_JSON), mapping.json_column, _json_object(mapping.json_column)
        )
    bad = [pl.col(f"__bad{n}") for n in metrics]
    return frame.with_columns(
        (
            pl.lit("{") + _object([pl.col("__json"), *members, *cols]).fill_null("") + pl.lit("}")
        ).alias(PROPS),
        (pl.any_horizontal(bad) if bad else pl.lit(False)).alias(BAD_METRIC),
    )


def _json_object(column: str) -> dict[str, pl.Expr]:
    """The members of a JSON-object cell without its braces, and whether the cell is bad.

    The JSON column's members come first in the props object, so the explicitly mapped
    columns win a duplicate key.
    """
    text = _cell(column)
    compact = text.str.json_path_match("$")
    is_object = (compact.str.starts_with("{") & text.str.starts_with("{")).fill_null(False)
    inner = compact.str.slice(1, compact.str.len_chars() - 2)
    return {
        "__json": pl.when(is_object & (inner != "")).then(inner),
        BAD_JSON: text.is_not_null() & ~is_object,
    }


def _metric(column: str) -> pl.Expr:
    """A metric cell as JSON number text, or null when blank or not a number."""
    text = _cell(column)
    number = text.cast(pl.Float64, strict=False)
    as_json = pl.when(text.str.contains(JSON_NUMBER)).then(text).otherwise(number.cast(pl.String))
    return pl.when(number.is_finite()).then(as_json)


def _bad_metric(column: str) -> pl.Expr:
    """Whether a metric cell is present but not a finite number."""
    text = _cell(column)
    return text.is_not_null() & ~text.cast(pl.Float64, strict=False).is_finite().fill_null(False)


def _member(name: str, value: pl.Expr) -> pl.Expr:
    """'"name":value' for a present value, else null."""
    return pl.lit(json.dumps(name) + ":") + value


def _object(members: list[pl.Expr]) -> pl.Expr:
    """The members of a JSON object joined, or null when there are none."""
    if not members:
        return pl.lit(None, pl.String)
    joined = pl.concat_str(members, separator=",", ignore_nulls=True)
    return pl.when(joined != "").then(joined)


def _cell(column: str) -> pl.Expr:
    """A props cell as trimmed text, null when blank (empty cells are left out)."""
    text = pl.col(column).cast(pl.String).str.strip_chars()
    return pl.when(text != "").then(text)


def _nested(name: str, members: pl.Expr) -> pl.Expr:
    """'"name":{members}' when there are members, else null."""
    return pl.lit(json.dumps(name) + ":{") + members + pl.lit("}")


def _reason(mapping: Mapping, now: datetime) -> pl.Expr:
    """The first rule a row breaks, in SPEC.md's order, or null."""
    limit = now + FUTURE_TOLERANCE
    rules: list[tuple[pl.Expr, Reason]] = [
        (pl.col(MALFORMED).is_not_null(), Reason.MALFORMED_ROW),
        (pl.col(EMBEDDABLE_ID).is_null(), Reason.MISSING_EMBEDDABLE_ID),
        (pl.col(TS_TEXT).is_null(), Reason.MISSING_TIMESTAMP),
        (pl.col(NAME_TEXT).is_null(), Reason.MISSING_CUSTOM_EVENT_NAME),
        (pl.col(IDENTIFIER_KEY).is_null(), Reason.MISSING_IDENTIFIER_KEY),
        (_blank(pl.col(UNWRAPPED)), Reason.MISSING_IDENTIFIER_VALUE),
        (pl.col(TIME).is_null(), Reason.BAD_TIMESTAMP),
        (pl.col(TIME) > pl.lit(limit), Reason.FUTURE_TIMESTAMP),
        (~pl.col(EVENT_NAME).str.contains(SNAKE_CASE), Reason.BAD_EVENT_NAME),
        (pl.col(IDENT).is_null(), Reason.BAD_IDENTIFIER_VALUE),
        (pl.col(BAD_METRIC), Reason.BAD_METRIC),
        (pl.col(BAD_JSON), Reason.BAD_PROPS),
    ]
    expr: pl.Expr = pl.lit(None, pl.String)
    for condition, reason in reversed(rules):
        expr = pl.when(condition).then(pl.lit(reason.value)).otherwise(expr)
    return expr


def _blank(expr: pl.Expr) -> pl.Expr:
    """Null or empty after trimming."""
    return expr.is_null() | (expr.str.strip_chars() == "")


def _field_name(source: Source) -> str:
    """How a message names a field: its column, or the mapping's constant."""
    return f"column '{source.column}'" if source.column is not None else f"{source.where} constant"


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
    metric_cols = ", ".join(m.metrics)
    texts: dict[Reason, pl.Expr] = {
        Reason.MALFORMED_ROW: pl.col(MALFORMED),
        Reason.MISSING_EMBEDDABLE_ID: pl.lit(f"{_field_name(m.embeddable_id)} is empty"),
        Reason.MISSING_TIMESTAMP: pl.lit(f"{_field_name(m.timestamp)} is empty"),
        Reason.MISSING_CUSTOM_EVENT_NAME: pl.lit(f"{_field_name(m.event_name)} is empty"),
        Reason.MISSING_IDENTIFIER_KEY: pl.lit(f"{_field_name(m.identifier_key)} is empty"),
        Reason.MISSING_IDENTIFIER_VALUE: pl.lit(f"{_field_name(m.identifier_value)} is empty"),
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
        Reason.BAD_IDENTIFIER_VALUE: pl.lit(f"{_field_name(m.identifier_value)}: ")
        + _quoted(VALUE_TEXT)
        + pl.lit(f" is not valid {m.identifier_type}"),
        Reason.BAD_METRIC: pl.lit(f"a metric ({metric_cols}) is not a number"),
        Reason.BAD_PROPS: pl.lit(f"column '{m.json_column}': ")
        + _quoted(m.json_column or MALFORMED)
        + pl.lit(" is not a JSON object"),
    }
    expr: pl.Expr = pl.lit(None, pl.String)
    for reason, text in texts.items():
        expr = pl.when(pl.col(REASON) == reason.value).then(text).otherwise(expr)
    return expr


def _body() -> pl.Expr:
    """The exact JSON body of a valid row."""
    return pl.concat_str(
        pl.lit('{"embeddable_id":'),
        json_literal(pl.col(EMBEDDABLE_ID)),
        pl.lit(',"timestamp":"'),
        pl.col(TIME).dt.strftime(OUTPUT_TIME),
        pl.lit('","custom_event_name":"'),
        pl.col(EVENT_NAME),
        pl.lit('","custom_event_props":'),
        json_literal(pl.col(PROPS)),
        pl.lit(',"identifiers":[{"key":'),
        json_literal(pl.col(IDENTIFIER_KEY)),
        pl.lit(',"value":'),
        json_literal(pl.col(IDENT)),
        pl.lit("}]}"),
    )


def _repair_flags(mapping: Mapping) -> list[pl.Expr]:
    """One boolean column per repair kind, true on valid rows the tool had to change."""
    valid = pl.col(REASON).is_null()
    renamed = pl.col(EVENT_NAME) != pl.col(NAME_TEXT)
    unwrapped = pl.col(UNWRAPPED) != pl.col(VALUE_TEXT)
    if mapping.identifier_type == "json":
        unwrapped = pl.lit(False)
    return [
        (valid & renamed).alias(Repair.EVENT_NAME_CONVERTED.value),
        (valid & unwrapped).alias(Repair.IDENTIFIER_UNWRAPPED.value),
        (valid & pl.col(ASSUMED)).alias(Repair.TIMEZONE_ASSUMED.value),
    ]
