"""Read the TOML mapping file into a typed Mapping, and check it against the inputs' columns."""

from __future__ import annotations

import difflib
import math
import tomllib
import zoneinfo
from collections.abc import Iterable, Sequence
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from backfill.errors import MappingError

SnakeCaseMode = Literal["reject", "convert"]
IdentifierType = Literal["string", "number", "json"]
Normalize = Literal["none", "lowercase", "uppercase"]

TOP_KEYS = ("fields", "identifier", "props")
FIELD_KEYS = ("embeddable_id", "timestamp", "custom_event_name")
IDENTIFIER_KEYS = ("key", "value")
PROPS_KEYS = ("metrics", "dimensions", "columns", "json_column", "rename")
SOURCE_KEYS = ("column", "value")
EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "fields.timestamp": ("timezone", "format"),
    "fields.custom_event_name": ("snake_case",),
    "identifier.value": ("type", "normalize"),
}
# Keys of the props object that hold the nested metrics and dimensions objects.
NESTED_PROPS = {"payload_metrics": "metrics", "payload_dimensions": "dimensions"}
CHOICES: dict[str, tuple[str, ...]] = {
    "snake_case": ("reject", "convert"),
    "type": ("string", "number", "json"),
    "normalize": ("none", "lowercase", "uppercase"),
}


@dataclass(frozen=True)
class Source:
    """Where a field's value comes from: a column of the input, or a constant."""

    where: str  # "fields.timestamp", for messages
    column: str | None = None
    value: str | None = None


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

    def sources(self) -> tuple[Source, ...]:
        """The five payload fields, in the order SPEC.md checks them."""
        return (
            self.embeddable_id,
            self.timestamp,
            self.event_name,
            self.identifier_key,
            self.identifier_value,
        )

    def column_uses(self) -> list[tuple[str, str]]:
        """Every (column, where in the mapping) pair the mapping reads."""
        uses = [(s.column, s.where) for s in self.sources() if s.column is not None]
        uses += [(c, "props.metrics") for c in self.metrics]
        uses += [(c, "props.dimensions") for c in self.dimensions]
        uses += [(c, "props.columns") for c in self.columns]
        if self.json_column is not None:
            uses.append((self.json_column, "props.json_column"))
        return uses

    def columns_used(self) -> list[str]:
        """The distinct input columns the mapping reads, in mapping order."""
        return list(dict.fromkeys(column for column, _ in self.column_uses()))

    def prop_name(self, column: str) -> str:
        """The props key a column is sent under."""
        return self.rename.get(column, column)


def load_mapping(path: str | Path) -> Mapping:
    """Read and check a mapping file; every problem is a one-line MappingError."""
    name = str(path)
    try:
        # utf-8-sig: editors on Windows often save UTF-8 with a byte order mark.
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MappingError(f"{name}: no such mapping file") from None
    except IsADirectoryError:
        raise MappingError(f"{name}: is a directory, not a mapping file") from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise MappingError(
            f"{name}: the mapping file is not UTF-8 text"
            f" (byte 0x{exc.object[exc.start]:02x} on line {line})"
        ) from None
    except OSError as exc:
        raise MappingError(f"{name}: cannot read mapping file: {exc.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{name}: not valid TOML: {exc}") from None
    return _parse(doc, name, text)


def _parse(doc: dict[str, Any], name: str, text: str) -> Mapping:
    """Turn a TOML document into a Mapping, checking every key and type."""
    _check_keys(doc, TOP_KEYS, name, "")
    fields = _table(doc, "fields", name, required=True)
    _check_keys(fields, FIELD_KEYS, name, "fields")
    ident = _table(doc, "identifier", name, required=True)
    _check_keys(ident, IDENTIFIER_KEYS, name, "identifier")
    props = _table(doc, "props", name, required=False)
    _check_keys(props, PROPS_KEYS, name, "props")
    ts = _source_table(fields, "timestamp")
    ev = _source_table(fields, "custom_event_name")
    val = _source_table(ident, "value")
    mapping = Mapping(
        path=name,
        text=text,
        embeddable_id=_source(fields, "fields", "embeddable_id", name),
        timestamp=_source(fields, "fields", "timestamp", name),
        event_name=_source(fields, "fields", "custom_event_name", name),
        identifier_key=_source(ident, "identifier", "key", name),
        identifier_value=_source(ident, "identifier", "value", name),
        timezone=_timezone(ts, name),
        timestamp_format=_optional_str(ts, "format", name, "fields.timestamp"),
        snake_case=_choice(ev, "snake_case", "reject", name, "fields.custom_event_name"),  # type: ignore[arg-type]
        identifier_type=_choice(val, "type", "string", name, "identifier.value"),  # type: ignore[arg-type]
        normalize=_choice(val, "normalize", "none", name, "identifier.value"),  # type: ignore[arg-type]
        metrics=_str_list(props, "metrics", name),
        dimensions=_str_list(props, "dimensions", name),
        columns=_str_list(props, "columns", name),
        json_column=_optional_str(props, "json_column", name, "props"),
        rename=_rename(props, name),
    )
    _check_props(mapping)
    return mapping


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
                f" expected one of: {', '.join(allowed)}"
            )


def _type_name(value: object) -> str:
    """The TOML word for a Python value's type, for messages."""
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}
    return "table" if isinstance(value, dict) else names.get(type(value), type(value).__name__)


def _table(doc: dict[str, Any], key: str, name: str, required: bool) -> dict[str, Any]:
    """A sub-table of the document, checked to be a table."""
    if key not in doc:
        if required:
            raise MappingError(f"{name}: missing table [{key}]")
        return {}
    value = doc[key]
    if not isinstance(value, dict):
        raise MappingError(f"{name}: [{key}] must be a table, got {_type_name(value)}")
    return value


def _source_table(table: dict[str, Any], key: str) -> dict[str, Any]:
    """The inline table of a field, or {} when the field is a bare column name."""
    value = table.get(key)
    return value if isinstance(value, dict) else {}


def _source(table: dict[str, Any], where: str, key: str, name: str) -> Source:
    """A field given as a bare column name, { column = ... } or { value = ... }."""
    place = f"{where}.{key}"
    if key not in table:
        raise MappingError(
            f"{name}: [{where}] missing '{key}' (a column name or {{ value = ... }})"
        )
    spec = table[key]
    if isinstance(spec, str):
        return Source(place, column=_non_empty(spec, name, place))
    if not isinstance(spec, dict):
        raise MappingError(
            f"{name}: {place} must be a column name or a table, got {_type_name(spec)}"
        )
    _check_keys(spec, SOURCE_KEYS + EXTRA_KEYS.get(place, ()), name, place)
    if ("column" in spec) == ("value" in spec):
        raise MappingError(f"{name}: {place} needs exactly one of 'column' or 'value'")
    if "column" in spec:
        column = spec["column"]
        if not isinstance(column, str):
            raise MappingError(f"{name}: {place}.column must be a string, got {_type_name(column)}")
        return Source(place, column=_non_empty(column, name, place))
    return Source(place, value=_constant(spec["value"], name, place))


def _non_empty(text: str, name: str, place: str) -> str:
    """A column name or constant that is not blank."""
    if not text.strip():
        raise MappingError(f"{name}: {place} is empty")
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
            raise MappingError(f"{name}: {place}.value must be a finite number, got {value}")
        return str(value)
    raise MappingError(f"{name}: {place}.value must be a string, got {_type_name(value)}")


def _optional_str(table: dict[str, Any], key: str, name: str, where: str) -> str | None:
    """An optional string setting."""
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, str):
        raise MappingError(f"{name}: {where}.{key} must be a string, got {_type_name(value)}")
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
            f" got '{value}'{_suggest(value, allowed)}"
        )
    return value


def _timezone(table: dict[str, Any], name: str) -> str:
    """The IANA time zone that naive timestamps are read in."""
    tz = _optional_str(table, "timezone", name, "fields.timestamp") or "UTC"
    if not _usable_zone(tz):
        raise MappingError(
            f"{name}: fields.timestamp.timezone: unknown time zone '{tz}'{_zone_hint(tz)}"
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
        raise MappingError(f"{name}: props.{key} must be a list of column names")
    for column in value:
        _non_empty(column, name, f"props.{key}")
    return tuple(value)


def _rename(table: dict[str, Any], name: str) -> dict[str, str]:
    """The props rename table: column -> props key."""
    value = table.get("rename", {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise MappingError(f'{name}: props.rename must be a table of column = "new name"')
    return {str(k): _non_empty(v, name, f"props.rename.{k}") for k, v in value.items()}


def _check_props(mapping: Mapping) -> None:
    """Props columns are used once, and rename only names props columns."""
    props = [*mapping.metrics, *mapping.dimensions, *mapping.columns]
    seen: set[str] = set()
    for column in props:
        if column in seen:
            raise MappingError(f"{mapping.path}: props: column '{column}' is listed twice")
        seen.add(column)
    for column in mapping.rename:
        if column not in seen:
            raise MappingError(
                f"{mapping.path}: props.rename: '{column}' is not a metric, dimension or column"
                f"{_suggest(column, props)}"
            )
    names = [mapping.prop_name(c) for c in props]
    for prop in names:
        if names.count(prop) > 1:
            raise MappingError(f"{mapping.path}: props: two columns are sent as '{prop}'")
    for column in mapping.columns:
        nested = NESTED_PROPS.get(mapping.prop_name(column))
        if nested is not None:
            raise MappingError(
                f"{mapping.path}: props.columns: '{column}' cannot be sent as"
                f" '{mapping.prop_name(column)}', the key that holds the {nested}"
            )


def check_columns(mapping: Mapping, source: str, available: Sequence[str]) -> None:
    """Refuse a mapping that reads a column this input does not have."""
    for column, where in mapping.column_uses():
        if column in available:
            continue
        hint = _suggest(column, available)
        listing = "" if hint else f"; its columns are: {', '.join(available) or '(none)'}"
        raise MappingError(
            f"{mapping.path}: {where}: column '{column}' is not in {source}{hint}{listing}"
        )
