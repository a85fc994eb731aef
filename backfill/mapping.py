"""Read the TOML mapping file into a typed Mapping, and check it against the inputs' columns."""

from __future__ import annotations

import codecs
import difflib
import math
import tomllib
import zoneinfo
from collections.abc import Iterable, Sequence
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

from backfill.errors import MappingError

SnakeCaseMode = Literal["reject", "convert"]
IdentifierType = Literal["string", "number", "json"]
Normalize = Literal["none", "lowercase", "uppercase"]

TOP_KEYS = ("fields", "identifier", "props", "filter", "input")
INPUT_KEYS = ("delimiter", "encoding", "decimal_comma")
FIELD_KEYS = ("embeddable_id", "timestamp", "custom_event_name")
IDENTIFIER_KEYS = ("key", "value")
PROPS_KEYS = ("metrics", "dimensions", "columns", "json_column", "rename", "drop")
FILTER_KEYS = ("include", "exclude", "since", "until", "dedupe")
SOURCE_KEYS = ("column", "path", "value")
EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "fields.timestamp": ("timezone", "format", "unit"),
    "fields.custom_event_name": ("snake_case", "rename", "strip_prefix"),
    "identifier.value": ("type", "normalize"),
}
# A source's working column, when it is not one plain column of the input: a name no export
# column has (the reader's own names start with "__"; this one with a control character).
DERIVED = "\x1f"
# Keys of the props object that hold the nested metrics and dimensions objects.
NESTED_PROPS = {"payload_metrics": "metrics", "payload_dimensions": "dimensions"}
CHOICES: dict[str, tuple[str, ...]] = {
    "snake_case": ("reject", "convert"),
    "type": ("string", "number", "json"),
    "normalize": ("none", "lowercase", "uppercase"),
    "unit": ("s", "ms", "us", "ns"),
}
TimeUnit = Literal["s", "ms", "us", "ns"]
# A name as written (a column, or a dotted path into one) or an explicit path of keys.
Candidate = str | tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """Where a field's value comes from: columns or paths (the first non-empty), or a constant.

    ``column`` is the working column the payload rules read: the column itself for one plain
    name, else a derived column that ``sources`` adds to each batch from ``candidates``.
    """

    where: str  # "fields.timestamp", for messages
    column: str | None = None
    value: str | None = None
    candidates: tuple[Candidate, ...] = ()  # empty when ``column`` is one plain name

    @property
    def names(self) -> tuple[Candidate, ...]:
        """The names and paths this source reads, in the order they are tried."""
        if self.candidates:
            return self.candidates
        return () if self.column is None else (self.column,)

    @property
    def label(self) -> str:
        """How messages name the source: 'email', or 'context.traits.email or userId'."""
        return " or ".join(written(c) for c in self.names)


def written(candidate: Candidate) -> str:
    """A name or path as a user would write it: an explicit path's dotted keys quoted."""
    if isinstance(candidate, str):
        return candidate
    return ".".join(f'"{key}"' if "." in key else key for key in candidate)


def source_of(where: str, candidates: Sequence[Candidate]) -> Source:
    """A source reading ``candidates``; a lone name is its own working column.

    A lone dotted name may be a column or a path, which only the inputs tell: either way the
    batch has a column of that name by the time the payload rules read it.
    """
    if len(candidates) == 1 and isinstance(candidates[0], str):
        return Source(where, column=candidates[0])
    label = " or ".join(written(c) for c in candidates)
    return Source(where, column=f"{DERIVED}{label}", candidates=tuple(candidates))


@dataclass(frozen=True)
class Identifier:
    """One identifier alternative: its key and value sources and how the value is read."""

    key: Source
    value: Source
    type: IdentifierType = "string"
    normalize: Normalize = "none"

    def describe(self) -> str:
        """The alternative in words, for the report: 'key email, value context.traits.email'."""
        key = self.key.value if self.key.value is not None else f"column {self.key.label}"
        value = self.value.value if self.value.value is not None else self.value.label
        return f"key {key}, value {value}"


@dataclass(frozen=True)
class InputSettings:
    """How delimited exports are written: the [input] table (the command line may override)."""

    delimiter: str | None = None  # None: by the file's kind (, for .csv, tab for .tsv); "auto"
    encoding: str = "utf-8"
    decimal_comma: bool = False  # metric cells like 12,50 and 1.234,50


@dataclass(frozen=True)
class Filter:
    """Which rows are not events to send: raw-value rules, a time window and a dedupe key."""

    include: tuple[tuple[Source, tuple[str, ...]], ...] = ()
    exclude: tuple[tuple[Source, tuple[str, ...]], ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    since_text: str | None = None
    until_text: str | None = None
    dedupe: tuple[Source, ...] = ()  # the key's sources, taken together
    dedupe_payload: bool = False  # dedupe on the whole payload instead

    @property
    def sources(self) -> tuple[Source, ...]:
        """Every source the filter reads."""
        return tuple(s for s, _ in self.include + self.exclude) + self.dedupe


@dataclass(frozen=True)
class Mapping:
    """A checked mapping file: how to build one payload from one row."""

    path: str
    embeddable_id: Source
    timestamp: Source
    event_name: Source
    identifier_key: Source
    identifier_value: Source
    timezone: str = "UTC"
    timestamp_format: str | None = None
    snake_case: SnakeCaseMode = "reject"
    identifier_type: IdentifierType = "string"
    normalize: Normalize = "none"
    metrics: tuple[str, ...] = ()
    dimensions: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    json_column: str | None = None
    rename: dict[str, str] = field(default_factory=dict)
    text: str = ""  # the file's content, remembered so a resumed run can tell it changed
    more_identifiers: tuple[Identifier, ...] = ()  # [[identifier]] alternatives after the first
    more_json_columns: tuple[str, ...] = ()  # json_column sources after the first
    drop: tuple[str, ...] = ()  # props keys left out
    event_rename: dict[str, str] = field(default_factory=dict)
    strip_prefix: tuple[str, ...] = ()
    timestamp_unit: TimeUnit | None = None  # epoch numbers read in this unit, whatever their size
    filter: Filter = field(default_factory=Filter)
    input: InputSettings = field(default_factory=InputSettings)
    prop_keys: dict[str, str] = field(default_factory=dict)  # props entry -> key, once resolved

    def sources(self) -> tuple[Source, ...]:
        """The five payload fields (of the first identifier), in the order rows are checked."""
        return (
            self.embeddable_id,
            self.timestamp,
            self.event_name,
            self.identifier_key,
            self.identifier_value,
        )

    def identifiers(self) -> tuple[Identifier, ...]:
        """The identifier alternatives, in the order they are tried."""
        first = Identifier(
            self.identifier_key, self.identifier_value, self.identifier_type, self.normalize
        )
        return (first, *self.more_identifiers)

    def json_sources(self) -> tuple[Source, ...]:
        """The json_column sources, earlier ones winning a key."""
        names = () if self.json_column is None else (self.json_column, *self.more_json_columns)
        return tuple(source_of("props.json_column", [n]) for n in names)

    def prop_sources(self) -> list[tuple[Source, str]]:
        """Each metric, dimension and column as (source, where), in mapping order."""
        kinds = [("metrics", self.metrics), ("dimensions", self.dimensions)]
        kinds.append(("columns", self.columns))
        return [(source_of(f"props.{k}", [c]), f"props.{k}") for k, cs in kinds for c in cs]

    def all_sources(self) -> list[Source]:
        """Every source the mapping reads from the input, constants left out."""
        fields = [self.embeddable_id, self.timestamp, self.event_name]
        for ident in self.identifiers():
            fields += [ident.key, ident.value]
        fields += [s for s, _ in self.prop_sources()]
        fields += [*self.json_sources(), *self.filter.sources]
        return [s for s in fields if s.column is not None]

    def columns_used(self) -> list[str]:
        """The distinct working columns the payload rules read, in mapping order."""
        return list(dict.fromkeys(s.column for s in self.all_sources() if s.column is not None))

    def prop_name(self, column: str) -> str:
        """The props key an entry is sent under: renamed, else its last path segment."""
        return self.rename.get(column, self.prop_keys.get(column, column))


def load_mapping(path: str | Path) -> Mapping:
    """Read and check a mapping file; every problem is a one-line MappingError."""
    name = str(path)
    try:
        # utf-8-sig: editors on Windows often save UTF-8 with a byte order mark.
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MappingError(f"{name}: no such mapping file", file=name) from None
    except IsADirectoryError:
        raise MappingError(f"{name}: is a directory, not a mapping file", file=name) from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise MappingError(
            f"{name}: the mapping file is not UTF-8 text"
            f" (byte 0x{exc.object[exc.start]:02x} on line {line})",
            file=name,
        ) from None
    except OSError as exc:
        raise MappingError(f"{name}: cannot read mapping file: {exc.strerror}", file=name) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{name}: not valid TOML: {exc}", file=name) from None
    return _parse(doc, name, text)


def _parse(doc: dict[str, Any], name: str, text: str) -> Mapping:
    """Turn a TOML document into a Mapping, checking every key and type."""
    _check_keys(doc, TOP_KEYS, name, "")
    fields = _table(doc, "fields", name, required=True)
    _check_keys(fields, FIELD_KEYS, name, "fields")
    identifiers = _identifiers(doc, name)
    props = _table(doc, "props", name, required=False)
    _check_keys(props, PROPS_KEYS, name, "props")
    ts = _source_table(fields, "timestamp")
    ev = _source_table(fields, "custom_event_name")
    first = identifiers[0]
    json_columns = _names(props, "json_column", name)
    mapping = Mapping(
        path=name,
        text=text,
        embeddable_id=_source(fields, "fields", "embeddable_id", name),
        timestamp=_source(fields, "fields", "timestamp", name),
        event_name=_source(fields, "fields", "custom_event_name", name),
        identifier_key=first.key,
        identifier_value=first.value,
        timezone=_timezone(ts, name),
        timestamp_format=_optional_str(ts, "format", name, "fields.timestamp"),
        timestamp_unit=_unit(ts, name),
        snake_case=_choice(ev, "snake_case", "reject", name, "fields.custom_event_name"),  # type: ignore[arg-type]
        event_rename=_string_table(ev, "rename", name, "fields.custom_event_name"),
        strip_prefix=_prefixes(ev, name),
        identifier_type=first.type,
        normalize=first.normalize,
        more_identifiers=identifiers[1:],
        metrics=_str_list(props, "metrics", name),
        dimensions=_str_list(props, "dimensions", name),
        columns=_str_list(props, "columns", name),
        json_column=json_columns[0] if json_columns else None,
        more_json_columns=json_columns[1:],
        drop=_str_list(props, "drop", name),
        rename=_rename(props, name),
        filter=_filter(doc, name),
        input=_input(doc, name),
    )
    _check_props(mapping)
    return mapping


def _input(doc: dict[str, Any], name: str) -> InputSettings:
    """The [input] table: delimiter, encoding and decimal commas of delimited exports."""
    table = _table(doc, "input", name, required=False)
    _check_keys(table, INPUT_KEYS, name, "input")
    delimiter = table.get("delimiter")  # not trimmed: "\t" is a delimiter
    if delimiter is not None:
        if not isinstance(delimiter, str):
            raise MappingError(f"{name}: input.delimiter must be a string", file=name)
        delimiter = check_delimiter(delimiter, f"{name}: input.delimiter")
    encoding = _optional_str(table, "encoding", name, "input") or "utf-8"
    check_encoding(encoding, f"{name}: input.encoding")
    comma = table.get("decimal_comma", False)
    if not isinstance(comma, bool):
        raise MappingError(f"{name}: input.decimal_comma must be true or false", file=name)
    return InputSettings(delimiter, encoding, comma)


def check_delimiter(delimiter: str, where: str) -> str:
    """A delimiter: one character other than a quote or line end, or "auto"."""
    if delimiter == "auto" or (len(delimiter) == 1 and delimiter not in '"\r\n'):
        return delimiter
    raise MappingError(
        f'{where} must be one character (",", ";", "\\t", "|") or "auto", got {delimiter!r}'
    )


def check_encoding(encoding: str, where: str) -> None:
    """Refuse an encoding Python does not know."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise MappingError(f"{where}: unknown encoding '{encoding}'", file=where) from None


def _identifiers(doc: dict[str, Any], name: str) -> tuple[Identifier, ...]:
    """The [identifier] table, or the [[identifier]] alternatives in the order they are tried."""
    if "identifier" not in doc:
        raise MappingError(f"{name}: missing table [identifier]", file=name)
    tables = doc["identifier"]
    if isinstance(tables, dict):
        tables = [tables]
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise MappingError(f"{name}: [identifier] must be a table or an array of tables", file=name)
    found = []
    for table in tables:
        _check_keys(table, IDENTIFIER_KEYS, name, "identifier")
        value = _source_table(table, "value")
        found.append(
            Identifier(
                key=_source(table, "identifier", "key", name),
                value=_source(table, "identifier", "value", name),
                type=_choice(value, "type", "string", name, "identifier.value"),  # type: ignore[arg-type]
                normalize=_choice(value, "normalize", "none", name, "identifier.value"),  # type: ignore[arg-type]
            )
        )
    return tuple(found)


def _filter(doc: dict[str, Any], name: str) -> Filter:
    """The [filter] table: include/exclude rules, a time window and the dedupe key."""
    table = _table(doc, "filter", name, required=False)
    _check_keys(table, FILTER_KEYS, name, "filter")
    since = _moment(table, "since", name)
    until = _moment(table, "until", name)
    if since is not None and until is not None and since >= until:
        raise MappingError(f"{name}: filter.since must be before filter.until", file=name)
    dedupe = table.get("dedupe")
    payload = dedupe == "payload"
    keys: list[Any] = [] if dedupe is None or payload else _as_list(dedupe)
    if dedupe is not None and not payload and not all(isinstance(k, str | dict) for k in keys):
        raise MappingError(
            f'{name}: filter.dedupe must be a source, a list of them or "payload"', file=name
        )
    return Filter(
        include=_value_rules(table, "include", name),
        exclude=_value_rules(table, "exclude", name),
        since=since,
        until=until,
        since_text=None if since is None else str(table["since"]),
        until_text=None if until is None else str(table["until"]),
        dedupe=tuple(_source({"dedupe": k}, "filter", "dedupe", name) for k in keys),
        dedupe_payload=payload,
    )


def _value_rules(
    table: dict[str, Any], key: str, name: str
) -> tuple[tuple[Source, tuple[str, ...]], ...]:
    """filter.include or filter.exclude: source -> the raw values that match."""
    rules = table.get(key, {})
    if not isinstance(rules, dict):
        raise MappingError(f"{name}: filter.{key} must be a table of source = [values]", file=name)
    found = []
    for source, values in rules.items():
        listed = _as_list(values)
        if not listed or not all(isinstance(v, str | int | float | bool) for v in listed):
            raise MappingError(f"{name}: filter.{key}.{source} must be a list of values", file=name)
        texts = tuple(_raw_text(v) for v in listed)
        found.append((source_of(f"filter.{key}", [_non_empty(source, name, key)]), texts))
    return tuple(found)


def _raw_text(value: object) -> str:
    """A filter value as the text a cell holds (JSON numbers and booleans as JSON writes them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _moment(table: dict[str, Any], key: str, name: str) -> datetime | None:
    """filter.since or filter.until: a date or date-time, UTC unless an offset is given."""
    text = table.get(key)
    if text is None:
        return None
    if isinstance(text, date) and not isinstance(text, datetime):  # a bare TOML date
        text = datetime(text.year, text.month, text.day)
    if isinstance(text, datetime | str):
        try:
            moment = text if isinstance(text, datetime) else datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    raise MappingError(
        f"{name}: filter.{key} must be a date or time like 2023-01-01 or 2023-01-01T00:00:00Z,"
        f" got {text!r}",
        file=name,
    )


def _as_list(value: object) -> list[Any]:
    """A value, or a list of values, as a list."""
    return list(value) if isinstance(value, list) else [value]


def _suggest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_keys(table: AnyMapping[str, Any], allowed: Sequence[str], name: str, where: str) -> None:
    """Refuse keys the mapping format does not know, naming the closest known key."""
    for key in table:
        if key not in allowed:
            place = f"[{where}] " if where else ""
            raise MappingError(
                f"{name}: {place}unknown key '{key}'{_suggest(key, allowed)};"
                f" expected one of: {', '.join(allowed)}",
                file=name,
            )


def _type_name(value: object) -> str:
    """The TOML word for a Python value's type, for messages."""
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}
    return "table" if isinstance(value, dict) else names.get(type(value), type(value).__name__)


def _table(doc: dict[str, Any], key: str, name: str, required: bool) -> dict[str, Any]:
    """A sub-table of the document, checked to be a table."""
    if key not in doc:
        if required:
            raise MappingError(f"{name}: missing table [{key}]", file=name)
        return {}
    value = doc[key]
    if not isinstance(value, dict):
        raise MappingError(f"{name}: [{key}] must be a table, got {_type_name(value)}", file=name)
    return value


def _source_table(table: dict[str, Any], key: str) -> dict[str, Any]:
    """The inline table of a field, or {} when the field is a bare column name."""
    value = table.get(key)
    return value if isinstance(value, dict) else {}


def _source(table: dict[str, Any], where: str, key: str, name: str) -> Source:
    """A field given as a name, a list of names, { column = ... }, { path = [...] } or { value }."""
    place = f"{where}.{key}"
    if key not in table:
        raise MappingError(
            f"{name}: [{where}] missing '{key}' (a column name or {{ value = ... }})", file=name
        )
    spec = table[key]
    if isinstance(spec, str | list):
        return source_of(place, _candidates(spec, name, place))
    if not isinstance(spec, dict):
        raise MappingError(
            f"{name}: {place} must be a column name or a table, got {_type_name(spec)}", file=name
        )
    _check_keys(spec, SOURCE_KEYS + EXTRA_KEYS.get(place, ()), name, place)
    if sum(k in spec for k in SOURCE_KEYS) != 1:
        raise MappingError(
            f"{name}: {place} needs exactly one of 'column', 'path' or 'value'", file=name
        )
    if "value" in spec:
        return Source(place, value=_constant(spec["value"], name, place))
    if "path" in spec:
        return source_of(place, [_path(spec["path"], name, place)])
    return source_of(place, _candidates(spec["column"], name, place))


def _candidates(spec: object, name: str, place: str) -> list[Candidate]:
    """A name, or a list of names and { path = [...] } tables, tried in order."""
    items = spec if isinstance(spec, list) else [spec]
    found: list[Candidate] = []
    for item in items:
        if isinstance(item, str):
            found.append(_non_empty(item, name, place))
        elif isinstance(item, dict) and set(item) == {"path"}:
            found.append(_path(item["path"], name, place))
        else:
            raise MappingError(
                f"{name}: {place} must be a column name, a path or a list of them,"
                f" got {_type_name(item)}",
                file=name,
            )
    if not found:
        raise MappingError(f"{name}: {place} is an empty list", file=name)
    return found


def _path(spec: object, name: str, place: str) -> tuple[str, ...]:
    """An explicit path: a list of keys, the first a column."""
    if not isinstance(spec, list) or not spec or not all(isinstance(k, str) for k in spec):
        raise MappingError(f"{name}: {place}.path must be a list of keys", file=name)
    return tuple(_non_empty(k, name, place) for k in spec)


def _non_empty(text: str, name: str, place: str) -> str:
    """A column name or constant that is not blank."""
    if not text.strip():
        raise MappingError(f"{name}: {place} is empty", file=name)
    return text


def _constant(value: object, name: str, place: str) -> str:
    """A constant value as text; numbers are allowed for identifier values."""
    if isinstance(value, str):
        return _non_empty(value, name, place)
    if (
        place == "identifier.value"
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        if not math.isfinite(value):
            raise MappingError(
                f"{name}: {place}.value must be a finite number, got {value}", file=name
            )
        return str(value)
    raise MappingError(
        f"{name}: {place}.value must be a string, got {_type_name(value)}", file=name
    )


def _optional_str(table: dict[str, Any], key: str, name: str, where: str) -> str | None:
    """An optional string setting."""
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, str):
        raise MappingError(
            f"{name}: {where}.{key} must be a string, got {_type_name(value)}", file=name
        )
    return _non_empty(value, name, f"{where}.{key}")


def _choice(table: dict[str, Any], key: str, default: str, name: str, where: str) -> str:
    """A setting limited to a few words."""
    value = _optional_str(table, key, name, where)
    if value is None:
        return default
    allowed = CHOICES[key]
    if value not in allowed:
        raise MappingError(
            f"{name}: {where}.{key} must be one of {', '.join(repr(a) for a in allowed)},"
            f" got '{value}'{_suggest(value, allowed)}",
            file=name,
        )
    return value


def _timezone(table: dict[str, Any], name: str) -> str:
    """The IANA time zone that naive timestamps are read in."""
    tz = _optional_str(table, "timezone", name, "fields.timestamp") or "UTC"
    if not _usable_zone(tz):
        raise MappingError(
            f"{name}: fields.timestamp.timezone: unknown time zone '{tz}'{_zone_hint(tz)}",
            file=name,
        )
    return tz


def _usable_zone(tz: str) -> bool:
    """Whether both Python and Polars know the zone (Polars refuses 'localtime', 'Factory')."""
    try:
        zoneinfo.ZoneInfo(tz)
        pl.Series([None], dtype=pl.Datetime("us")).dt.replace_time_zone(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, pl.exceptions.PolarsError):
        return False
    return True


def _zone_hint(tz: str) -> str:
    """' (did you mean 'x'?)' for the closest usable zone, ignoring case ('utc' -> 'UTC')."""
    by_lower = {z.lower(): z for z in sorted(zoneinfo.available_timezones())}
    close = difflib.get_close_matches(tz.lower(), list(by_lower), n=5, cutoff=0.6)
    usable = [by_lower[c] for c in close if by_lower[c] != tz and _usable_zone(by_lower[c])]
    return f" (did you mean '{usable[0]}'?)" if usable else ""


def _str_list(table: dict[str, Any], key: str, name: str) -> tuple[str, ...]:
    """A list of column names."""
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MappingError(f"{name}: props.{key} must be a list of column names", file=name)
    for column in value:
        _non_empty(column, name, f"props.{key}")
    return tuple(value)


def _names(table: dict[str, Any], key: str, name: str) -> tuple[str, ...]:
    """A column name or a list of them."""
    value = table.get(key, [])
    names = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in names):
        raise MappingError(
            f"{name}: props.{key} must be a column name or a list of them", file=name
        )
    return tuple(_non_empty(v, name, f"props.{key}") for v in names)


def _string_table(table: dict[str, Any], key: str, name: str, where: str) -> dict[str, str]:
    """A table of string = "string"."""
    value = table.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise MappingError(
            f'{name}: {where}.{key} must be a table of "name" = "new name"', file=name
        )
    return {str(k): v for k, v in value.items()}


def _prefixes(table: dict[str, Any], name: str) -> tuple[str, ...]:
    """custom_event_name.strip_prefix: a prefix or a list of them, tried in order."""
    value = table.get("strip_prefix", [])
    prefixes = value if isinstance(value, list) else [value]
    if not all(isinstance(p, str) and p for p in prefixes):
        raise MappingError(
            f"{name}: fields.custom_event_name.strip_prefix must be a prefix or a list of them",
            file=name,
        )
    return tuple(prefixes)


def _unit(table: dict[str, Any], name: str) -> TimeUnit | None:
    """fields.timestamp.unit: the unit of epoch numbers, when their size must not decide."""
    if "unit" not in table:
        return None
    return _choice(table, "unit", "s", name, "fields.timestamp")  # type: ignore[return-value]


def _rename(table: dict[str, Any], name: str) -> dict[str, str]:
    """The props rename table: column -> props key."""
    value = table.get("rename", {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise MappingError(
            f'{name}: props.rename must be a table of column = "new name"', file=name
        )
    return {str(k): _non_empty(v, name, f"props.rename.{k}") for k, v in value.items()}


def _check_props(mapping: Mapping) -> None:
    """Props columns are used once, and rename only names props columns."""
    props = [*mapping.metrics, *mapping.dimensions, *mapping.columns]
    seen: set[str] = set()
    for column in props:
        if column in seen:
            raise MappingError(
                f"{mapping.path}: props: column '{column}' is listed twice", file=mapping.path
            )
        seen.add(column)
    for column in mapping.rename:
        if column not in seen:
            raise MappingError(
                f"{mapping.path}: props.rename: '{column}' is not a metric, dimension or column"
                f"{_suggest(column, props)}",
                file=mapping.path,
            )
    names = [mapping.prop_name(c) for c in props]
    for prop in names:
        if names.count(prop) > 1:
            raise MappingError(
                f"{mapping.path}: props: two columns are sent as '{prop}'", file=mapping.path
            )
    for column in mapping.columns:
        nested = NESTED_PROPS.get(mapping.prop_name(column))
        if nested is not None:
            raise MappingError(
                f"{mapping.path}: props.columns: '{column}' cannot be sent as"
                f" '{mapping.prop_name(column)}', the key that holds the {nested}",
                file=mapping.path,
            )


def top_column(candidate: Candidate, available: Sequence[str]) -> tuple[str, ...] | None:
    """A name or path as (column, *keys) in an input with these columns, or None if not there.

    A dotted name is a column when the input has a column of exactly that name (PostHog's
    ``person.properties.email``), else a path from the longest dotted prefix that is one.
    """
    if isinstance(candidate, tuple):
        return candidate if candidate[0] in available else None
    if candidate in available:
        return (candidate,)
    parts = candidate.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        column = ".".join(parts[:cut])
        if column in available:
            return (column, *parts[cut:])
    return None


def missing_column_error(
    mapping: Mapping, where: str, candidate: Candidate, source: str, available: Sequence[str]
) -> MappingError:
    """The refusal of a source whose column an input does not have, naming the columns."""
    column = written(candidate)
    head = candidate[0] if isinstance(candidate, tuple) else column
    hint = _suggest(head, available)
    listing = "" if hint else f"; its columns are: {', '.join(available) or '(none)'}"
    return MappingError(
        f"{mapping.path}: {where}: column '{column}' is not in {source}{hint}{listing}"
    )


def check_columns(mapping: Mapping, source: str, available: Sequence[str]) -> None:
    """Refuse a mapping that reads a column this input does not have."""
    for used in mapping.all_sources():
        for candidate in used.names:
            if top_column(candidate, available) is None:
                raise missing_column_error(mapping, used.where, candidate, source, available)
