"""A plain, row-by-row Python version of ``backfill validate``: the baseline a user would write.

    python bench/reference_validate.py INPUT... -m MAPPING [--report PATH] [--show N]

Standard library only: csv.DictReader (or json per line for .jsonl), datetime for timestamps,
re for event names, json.dumps for the identifier, the props and the payload. It applies the
rules of SPEC.md in the order of ``backfill.codes.Reason`` and prints (or writes) a report with
``rows``, ``valid``, ``invalid``, ``invalid_by_reason`` and ``repairs``. Written the ordinary
way, neither tuned nor slowed down: it is the yardstick for the vectorised implementation, and
a second opinion on its counts.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
NOT_ALNUM = re.compile(r"[^a-z0-9]+")
EPOCH = re.compile(r"^-?\d+(\.\d+)?$")
NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
# Epoch values at or above this are milliseconds: as seconds they would be after year 5000.
EPOCH_MS_THRESHOLD = 100_000_000_000
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(minutes=5)

Row = dict[str, str]


class Invalid(Exception):
    """A row breaks a rule; the argument is the reason code."""


@dataclass(frozen=True)
class Source:
    """Where a field comes from: a column, or a constant."""

    column: str | None = None
    value: str | None = None

    def get(self, row: Row) -> str:
        if self.column is None:
            return self.value or ""
        return row.get(self.column, "").strip()


@dataclass(frozen=True)
class Mapping:
    embeddable_id: Source
    timestamp: Source
    timezone: ZoneInfo
    timestamp_format: str | None
    event_name: Source
    convert_event_name: bool
    key: Source
    value: Source
    value_type: str
    lowercase: bool
    metrics: list[str] = field(default_factory=list)
    dimensions: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    json_column: str | None = None
    rename: dict[str, str] = field(default_factory=dict)


def source(spec: str | dict[str, Any]) -> Source:
    """A bare string names a column; a table has ``column`` or ``value``."""
    if isinstance(spec, str):
        return Source(column=spec)
    if "value" in spec:
        return Source(value=str(spec["value"]))
    return Source(column=spec["column"])


def load_mapping(path: Path) -> Mapping:
    config = tomllib.loads(path.read_text(encoding="utf-8"))
    fields, identifier, props = config["fields"], config["identifier"], config.get("props", {})
    timestamp, event = fields["timestamp"], fields["custom_event_name"]
    value = identifier["value"]
    return Mapping(
        embeddable_id=source(fields["embeddable_id"]),
        timestamp=source(timestamp),
        timezone=ZoneInfo(
            timestamp.get("timezone", "UTC") if isinstance(timestamp, dict) else "UTC"
        ),
        timestamp_format=timestamp.get("format") if isinstance(timestamp, dict) else None,
        event_name=source(event),
        convert_event_name=isinstance(event, dict) and event.get("snake_case") == "convert",
        key=source(identifier["key"]),
        value=source(value),
        value_type=value.get("type", "string") if isinstance(value, dict) else "string",
        lowercase=isinstance(value, dict) and value.get("normalize") == "lowercase",
        metrics=props.get("metrics", []),
        dimensions=props.get("dimensions", []),
        columns=props.get("columns", []),
        json_column=props.get("json_column"),
        rename=props.get("rename", {}),
    )


def parse_epoch(text: str) -> datetime:
    if "." in text:
        micros = int(Decimal(text) * 1_000_000)
        if abs(micros) >= EPOCH_MS_THRESHOLD * 1_000_000:
            micros //= 1000
    else:
        number = int(text)
        millis = number if abs(number) >= EPOCH_MS_THRESHOLD else number * 1000
        micros = millis * 1000
    return UNIX_EPOCH + timedelta(microseconds=micros)


def parse_timestamp(text: str, mapping: Mapping, repairs: Counter[str]) -> datetime:
    """An aware datetime, or Invalid("bad_timestamp")."""
    try:
        if EPOCH.match(text):
            return parse_epoch(text)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            if mapping.timestamp_format is None:
                raise
            moment = datetime.strptime(text, mapping.timestamp_format)
    except (ValueError, OverflowError, InvalidOperation) as error:
        raise Invalid("bad_timestamp") from error
    if moment.tzinfo is None:
        repairs["timezone_assumed"] += 1
        moment = moment.replace(tzinfo=mapping.timezone)
    return moment


def format_timestamp(moment: datetime) -> str:
    """UTC with milliseconds, finer digits truncated."""
    # isoformat's timespec truncates, as the API contract wants; the offset is always +00:00.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def event_name(name: str, mapping: Mapping, repairs: Counter[str]) -> str:
    if SNAKE_CASE.match(name):
        return name
    if mapping.convert_event_name:
        converted = NOT_ALNUM.sub("_", CAMEL_BOUNDARY.sub("_", name).lower()).strip("_")
        if SNAKE_CASE.match(converted):
            repairs["event_name_converted"] += 1
            return converted
    raise Invalid("bad_event_name")


def identifier_value(cell: str, mapping: Mapping, repairs: Counter[str]) -> str:
    """The identifier as JSON text, stringified exactly once."""
    if mapping.value_type == "number":
        if not NUMBER.match(cell):
            raise Invalid("bad_identifier_value")
        return json.dumps(json.loads(cell))
    if mapping.value_type == "json":
        try:
            json.loads(cell)
        except ValueError as error:
            raise Invalid("bad_identifier_value") from error
        return cell
    value, unwrapped = cell, False
    # Undo any number of earlier stringifications: "x", "\"x\"", ...
    while len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            inner = json.loads(value)
        except ValueError:
            break
        if not isinstance(inner, str):
            break
        value, unwrapped = inner, True
    if unwrapped:
        repairs["identifier_unwrapped"] += 1
    if not value.strip():
        raise Invalid("missing_identifier_value")
    return json.dumps(value.lower() if mapping.lowercase else value)


def metric(cell: str) -> int | float:
    if not NUMBER.match(cell):
        raise Invalid("bad_metric")
    number = float(cell)
    if not math.isfinite(number):
        raise Invalid("bad_metric")
    return int(cell) if cell.lstrip("+-").isdigit() else number


def json_object(cell: str) -> dict[str, Any]:
    """A JSON object, or JSON text of one (as JSONL exports sometimes nest it)."""
    try:
        value = json.loads(cell)
        if isinstance(value, str):
            value = json.loads(value)
    except ValueError as error:
        raise Invalid("bad_props") from error
    if not isinstance(value, dict):
        raise Invalid("bad_props")
    return value


def build_props(row: Row, mapping: Mapping) -> dict[str, Any]:
    rename = mapping.rename
    metrics = {}
    for column in mapping.metrics:
        cell = row.get(column, "").strip()
        if cell:
            metrics[rename.get(column, column)] = metric(cell)
    dimensions = {}
    for column in mapping.dimensions:
        cell = row.get(column, "").strip()
        if cell:
            dimensions[rename.get(column, column)] = cell
    props: dict[str, Any] = {}
    if metrics:
        props["payload_metrics"] = metrics
    if dimensions:
        props["payload_dimensions"] = dimensions
    for column in mapping.columns:
        cell = row.get(column, "")
        if cell.strip():
            props[rename.get(column, column)] = cell
    if mapping.json_column:
        cell = row.get(mapping.json_column, "").strip()
        if cell:
            for key, value in json_object(cell).items():
                props[rename.get(key, key)] = value
    return props


MISSING = [
    ("embeddable_id", "missing_embeddable_id"),
    ("timestamp", "missing_timestamp"),
    ("event_name", "missing_custom_event_name"),
    ("key", "missing_identifier_key"),
    ("value", "missing_identifier_value"),
]


def build_payload(row: Row, mapping: Mapping, latest: datetime, repairs: Counter[str]) -> str:
    """The request body for one row, or Invalid(reason) for the first rule it breaks."""
    values = {}
    for name, reason in MISSING:
        values[name] = getattr(mapping, name).get(row)
        if not values[name]:
            raise Invalid(reason)
    moment = parse_timestamp(values["timestamp"], mapping, repairs)
    if moment > latest:
        raise Invalid("future_timestamp")
    name = event_name(values["event_name"], mapping, repairs)
    value = identifier_value(values["value"], mapping, repairs)
    props = build_props(row, mapping)
    return json.dumps(
        {
            "embeddable_id": values["embeddable_id"],
            "timestamp": format_timestamp(moment),
            "custom_event_name": name,
            "custom_event_props": json.dumps(props, separators=(",", ":")),
            "identifiers": [{"key": values["key"], "value": value}],
        }
    )


def csv_rows(path: Path) -> Iterator[Row | None]:
    """Rows as dicts of text; None for a row with too many or too few fields."""
    with path.open(encoding="utf-8", newline="") as stream:
        for row in csv.DictReader(stream):
            if None in row or None in row.values():
                yield None
            else:
                yield row


def as_text(value: object) -> str:
    """A JSON value as the text a CSV export would have held."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def jsonl_rows(path: Path) -> Iterator[Row | None]:
    """One record per non-blank line; None for a line that is not a JSON object."""
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                yield None
                continue
            if isinstance(record, dict):
                yield {key: as_text(value) for key, value in record.items()}
            else:
                yield None


def read_rows(path: Path) -> Iterator[Row | None]:
    suffix = path.suffix.lower()
    return jsonl_rows(path) if suffix in {".jsonl", ".ndjson"} else csv_rows(path)


@dataclass
class Report:
    rows: int = 0
    valid: int = 0
    invalid_by_reason: Counter[str] = field(default_factory=Counter)
    repairs: Counter[str] = field(default_factory=Counter)
    payloads: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "valid": self.valid,
            "invalid": self.rows - self.valid,
            "invalid_by_reason": dict(sorted(self.invalid_by_reason.items())),
            "repairs": dict(sorted(self.repairs.items())),
        }


def validate(paths: Sequence[Path], mapping: Mapping, keep_payloads: int = 0) -> Report:
    report = Report()
    latest = datetime.now(UTC) + FUTURE_SLACK  # anything later is future_timestamp
    for path in paths:
        for row in read_rows(path):
            report.rows += 1
            if row is None:
                report.invalid_by_reason["malformed_row"] += 1
                continue
            # Repairs count only for rows that end up valid, so collect them per row.
            repairs: Counter[str] = Counter()
            try:
                payload = build_payload(row, mapping, latest, repairs)
            except Invalid as invalid:
                report.invalid_by_reason[str(invalid)] += 1
                continue
            report.valid += 1
            report.repairs.update(repairs)
            if len(report.payloads) < keep_payloads:
                report.payloads.append(payload)
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("-m", "--mapping", type=Path, required=True)
    parser.add_argument("--report", type=Path, help="write the report here as JSON")
    parser.add_argument("--show", type=int, default=0, help="print the first N payloads")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = validate(args.inputs, load_mapping(args.mapping), keep_payloads=args.show)
    text = json.dumps(report.as_dict(), indent=2)
    if args.report:
        args.report.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    for payload in report.payloads:
        print(payload)
    # Same exit codes as backfill validate: 1 when any row is invalid.
    return 0 if report.valid == report.rows else 1


if __name__ == "__main__":
    sys.exit(main())
