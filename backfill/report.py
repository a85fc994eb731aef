"""The validation report as data, accumulated batch by batch, and its text and JSON renderings."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from backfill.codes import Reason, Repair
from backfill.errors import UsageError
from backfill.inputs import ROW
from backfill.payloads import EMBEDDABLE_ID, EVENT_NAME, REASON, TIME
from backfill.tables import open_private

EXAMPLES_PER_REASON = 5
MAX_DISTINCT = 10_000  # beyond this many distinct names, counts go to OTHER to bound memory
OTHER = "(other)"
TOP = 10
REPAIR_WORDS = {
    Repair.EVENT_NAME_CONVERTED: "event names converted to snake_case",
    Repair.IDENTIFIER_UNWRAPPED: "identifier values unwrapped (already JSON-stringified)",
    Repair.TIMEZONE_ASSUMED: "timestamps without offset read in the mapping's time zone",
}


@dataclass
class ValidationReport:
    """What validation found: counts, reasons with examples, repairs, names and time range."""

    sources: list[str] = field(default_factory=list)
    rows: int = 0
    valid: int = 0
    invalid_by_reason: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    repairs: Counter[str] = field(default_factory=Counter)
    event_names: Counter[str] = field(default_factory=Counter)
    embeddable_ids: Counter[str] = field(default_factory=Counter)
    first_time: datetime | None = None
    last_time: datetime | None = None

    @property
    def invalid(self) -> int:
        """Rows that break a rule."""
        return self.rows - self.valid

    def add(self, source: str, checked: pl.DataFrame) -> None:
        """Count one checked batch (the output of build_payloads)."""
        self.rows += checked.height
        valid = checked.filter(pl.col(REASON).is_null())
        self.valid += valid.height
        self._add_reasons(source, checked.filter(pl.col(REASON).is_not_null()))
        for repair in Repair:
            self.repairs[repair.value] += int(valid[repair.value].sum())
        _count_into(self.event_names, valid[EVENT_NAME])
        _count_into(self.embeddable_ids, valid[EMBEDDABLE_ID])
        self._add_times(valid[TIME])

    def _add_reasons(self, source: str, invalid: pl.DataFrame) -> None:
        """Count invalid rows by reason and keep the first few examples of each."""
        if invalid.is_empty():
            return
        for reason, count in invalid[REASON].value_counts().iter_rows():
            self.invalid_by_reason[reason] += count
        firsts = invalid.group_by(REASON, maintain_order=True).head(EXAMPLES_PER_REASON)
        for reason, row in firsts.select(REASON, ROW).iter_rows():
            kept = self.examples.setdefault(reason, [])
            if len(kept) < EXAMPLES_PER_REASON:
                kept.append({"source": source, "row": row})

    def _add_times(self, times: pl.Series) -> None:
        """Widen the time range with a batch's valid timestamps."""
        low, high = times.min(), times.max()
        if isinstance(low, datetime) and isinstance(high, datetime):
            self.first_time = low if self.first_time is None else min(self.first_time, low)
            self.last_time = high if self.last_time is None else max(self.last_time, high)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return {
            "sources": self.sources,
            "rows": self.rows,
            "valid": self.valid,
            "invalid": self.invalid,
            "invalid_by_reason": _ordered_reasons(self.invalid_by_reason),
            "examples": self.examples,
            "repairs": {r.value: self.repairs[r.value] for r in Repair},
            "event_names": _by_count(self.event_names),
            "embeddable_ids": _by_count(self.embeddable_ids),
            "first_timestamp": _iso(self.first_time),
            "last_timestamp": _iso(self.last_time),
        }


def _count_into(counter: Counter[str], values: pl.Series) -> None:
    """Add a batch's value counts, folding new names into OTHER past MAX_DISTINCT."""
    for value, count in values.value_counts().iter_rows():
        name = str(value)
        if name not in counter and len(counter) >= MAX_DISTINCT:
            name = OTHER
        counter[name] += count


def _by_count(counts: Counter[str]) -> dict[str, int]:
    """Commonest first; ties by name, so the same data always reads the same."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _ordered_reasons(counts: Counter[str]) -> dict[str, int]:
    """Reason counts in the order the rules are checked."""
    return {r.value: counts[r.value] for r in Reason if counts[r.value]}


def _iso(moment: datetime | None) -> str | None:
    """A UTC time as the API writes it."""
    return (
        None
        if moment is None
        else moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def write_json(report: dict[str, Any], path: str) -> None:
    """Write a report as indented JSON, readable by its owner only (it names personal data)."""
    with open_private(path, "w", UsageError) as out:
        json.dump(report, out, indent=2)
        out.write("\n")


def render_text(data: dict[str, Any]) -> str:
    """The validation report for a terminal."""
    lines = [
        f"Rows read:  {data['rows']:,}  ({', '.join(data['sources'])})",
        f"Valid:      {data['valid']:,}",
        f"Invalid:    {data['invalid']:,}",
    ]
    if data["invalid_by_reason"]:
        lines.append("")
        lines.append("Invalid rows by reason:")
        width = max(len(r) for r in data["invalid_by_reason"])
        for reason, count in data["invalid_by_reason"].items():
            where = ", ".join(f"{e['source']}:{e['row']}" for e in data["examples"].get(reason, []))
            lines.append(f"  {reason:<{width}}  {count:>9,}  e.g. {where}")
    repairs = {k: v for k, v in data["repairs"].items() if v}
    if repairs:
        lines.append("")
        lines.append("Repairs made:")
        for kind, count in repairs.items():
            lines.append(f"  {count:>9,}  {REPAIR_WORDS[Repair(kind)]}")
    lines += _top("Event names", data["event_names"])
    lines += _top("Embeddable ids", data["embeddable_ids"])
    if data["first_timestamp"]:
        lines.append("")
        lines.append(f"Timestamps: {data['first_timestamp']} .. {data['last_timestamp']} (UTC)")
    return "\n".join(lines)


def _top(title: str, counts: dict[str, int]) -> list[str]:
    """A titled table of the commonest names with their counts."""
    if not counts:
        return []
    shown = list(counts.items())[:TOP]
    width = max(len(name) for name, _ in shown)
    lines = ["", f"{title} ({len(counts):,} distinct, valid rows):"]
    lines += [f"  {name:<{width}}  {count:>9,}" for name, count in shown]
    if len(counts) > TOP:
        lines.append(f"  ... and {len(counts) - TOP:,} more")
    return lines
