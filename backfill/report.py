"""The validation report: what validation found, counted batch by batch, and its JSON.

Identifier values are personal data: wherever one could show in a report (the message of a
``bad_identifier_value`` example, an email address inside another message) the report shows
the masked form (``a***@example.com``, ``masking.py``) unless the caller asks for them in
full. Its terminal text is ``text.py``'s, its page ``html.py``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from backfill.codes import Reason, Repair
from backfill.errors import UsageError
from backfill.inputs import ROW
from backfill.masking import mask_message
from backfill.payloads import (
    EMBEDDABLE_ID,
    EVENT_NAME,
    IDENTIFIER_ALT,
    MESSAGE,
    REASON,
    SKIP,
    SKIP_RULE,
    TIME,
)
from backfill.tables import open_private, writing

EXAMPLES_PER_REASON = 5
MAX_DISTINCT = 10_000  # beyond this many distinct names, counts go to OTHER to bound memory
OTHER = "(other)"
MAX_DAYS = 40_000  # distinct UTC days counted (over a century); rows of further days go to OTHER
TOP = 10
REPAIR_WORDS = {
    Repair.EVENT_NAME_CONVERTED: "event names converted to snake_case",
    Repair.IDENTIFIER_UNWRAPPED: "identifier values unwrapped (already JSON-stringified)",
    Repair.TIMEZONE_ASSUMED: "timestamps without offset read in the mapping's time zone",
}


@dataclass(frozen=True)
class Example:
    """Where a rule was broken, with the row's message (identifier values in full)."""

    source: str
    row: int
    message: str


@dataclass
class ValidationReport:
    """What validation found: counts, reasons with examples, repairs, names and time range."""

    sources: list[str] = field(default_factory=list)
    rows: int = 0
    valid: int = 0
    invalid_by_reason: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[Example]] = field(default_factory=dict)  # the first few per reason
    repairs: Counter[str] = field(default_factory=Counter)
    event_names: Counter[str] = field(default_factory=Counter)
    embeddable_ids: Counter[str] = field(default_factory=Counter)
    first_time: datetime | None = None
    last_time: datetime | None = None
    valid_per_day: Counter[str] = field(default_factory=Counter)
    skipped_by_rule: Counter[str] = field(default_factory=Counter)
    alternatives: list[str] = field(default_factory=list)  # [[identifier]] alternatives, described
    by_alternative: Counter[int] = field(default_factory=Counter)  # valid rows per alternative

    @property
    def skipped(self) -> int:
        """Rows that are not events to send (filtered out, or duplicates)."""
        return sum(self.skipped_by_rule.values())

    @property
    def invalid(self) -> int:
        """Rows that break a rule."""
        return self.rows - self.valid - self.skipped

    def add(self, source: str, checked: pl.DataFrame) -> None:
        """Count one checked batch (the output of build_payloads)."""
        self.rows += checked.height
        # Only the columns counted are copied: a batch's payloads can be large.
        counted = [EVENT_NAME, EMBEDDABLE_ID, TIME, IDENTIFIER_ALT, *(r.value for r in Repair)]
        kept = checked.select(REASON, SKIP, SKIP_RULE, *counted)
        valid = kept.filter(pl.col(REASON).is_null() & pl.col(SKIP).is_null())
        self.valid += valid.height
        for rule, count in kept[SKIP_RULE].drop_nulls().value_counts().iter_rows():
            self.skipped_by_rule[rule] += count
        for alternative, count in valid[IDENTIFIER_ALT].value_counts().iter_rows():
            self.by_alternative[alternative] += count
        self._add_reasons(source, checked.filter(pl.col(REASON).is_not_null()))
        for repair in Repair:
            self.repairs[repair.value] += int(valid[repair.value].sum())
        _count_into(self.event_names, valid[EVENT_NAME])
        _count_into(self.embeddable_ids, valid[EMBEDDABLE_ID])
        self._add_times(valid[TIME])
        self._add_days(valid[TIME])

    def _add_reasons(self, source: str, invalid: pl.DataFrame) -> None:
        """Count invalid rows by reason and keep the first few examples of each."""
        if invalid.is_empty():
            return
        for reason, count in invalid[REASON].value_counts().iter_rows():
            self.invalid_by_reason[reason] += count
        firsts = invalid.group_by(REASON, maintain_order=True).head(EXAMPLES_PER_REASON)
        message = pl.col(MESSAGE) if MESSAGE in firsts.columns else pl.lit(None, pl.String)
        for reason, row, text in firsts.select(REASON, ROW, message).iter_rows():
            kept = self.examples.setdefault(reason, [])
            if len(kept) < EXAMPLES_PER_REASON:
                kept.append(Example(source, row, text or ""))

    def _add_days(self, times: pl.Series) -> None:
        """Count a batch's valid rows per UTC day, each distinct day written out once."""
        days = times.drop_nulls().dt.date().value_counts()
        named = days.with_columns(days.to_series(0).dt.strftime("%Y-%m-%d"))
        _fold_into(self.valid_per_day, named, MAX_DAYS)

    def _add_times(self, times: pl.Series) -> None:
        """Widen the time range with a batch's valid timestamps."""
        low, high = times.min(), times.max()
        if isinstance(low, datetime) and isinstance(high, datetime):
            self.first_time = low if self.first_time is None else min(self.first_time, low)
            self.last_time = high if self.last_time is None else max(self.last_time, high)

    def reason_counts(self) -> dict[str, int]:
        """Invalid rows per reason, in the order the rules are checked."""
        return {
            r.value: self.invalid_by_reason[r.value]
            for r in Reason
            if self.invalid_by_reason[r.value]
        }

    def skipped_counts(self) -> dict[str, int]:
        """Skipped rows per rule, commonest first."""
        return by_count(self.skipped_by_rule)

    def alternative_counts(self) -> dict[str, int]:
        """Valid rows per [[identifier]] alternative, in the mapping's order."""
        return {name: self.by_alternative[i] for i, name in enumerate(self.alternatives)}

    def repair_counts(self) -> dict[str, int]:
        """Valid rows per kind of repair, every kind named."""
        return {r.value: self.repairs[r.value] for r in Repair}

    def event_name_counts(self) -> dict[str, int]:
        """Valid rows per event name, commonest first."""
        return by_count(self.event_names)

    def embeddable_id_counts(self) -> dict[str, int]:
        """Valid rows per embeddable id, commonest first."""
        return by_count(self.embeddable_ids)

    def days(self) -> dict[str, int]:
        """Valid rows per UTC day (YYYY-MM-DD), in date order."""
        return by_day(self.valid_per_day)

    def first_timestamp(self) -> str | None:
        """The earliest valid timestamp, as the API writes times."""
        return _iso(self.first_time)

    def last_timestamp(self) -> str | None:
        """The latest valid timestamp, as the API writes times."""
        return _iso(self.last_time)

    def example_messages(self, show_identifiers: bool = False) -> dict[str, list[str]]:
        """The examples' messages per reason; identifier values masked unless asked for."""
        return {
            reason: [
                e.message if show_identifiers else mask_message(reason, e.message) for e in kept
            ]
            for reason, kept in self.examples.items()
        }

    def to_dict(self, show_identifiers: bool = False) -> dict[str, Any]:
        """The report as plain JSON-ready data; identifier values masked unless asked for."""
        return {
            "sources": self.sources,
            "rows": self.rows,
            "valid": self.valid,
            "invalid": self.invalid,
            "invalid_by_reason": self.reason_counts(),
            "skipped": self.skipped,
            "skipped_by_rule": self.skipped_counts(),
            "identifier_alternatives": self.alternative_counts(),
            "examples": {
                reason: [{"source": e.source, "row": e.row} for e in kept]
                for reason, kept in self.examples.items()
            },
            "repairs": self.repair_counts(),
            "event_names": self.event_name_counts(),
            "embeddable_ids": self.embeddable_id_counts(),
            "first_timestamp": self.first_timestamp(),
            "last_timestamp": self.last_timestamp(),
            "valid_per_day": self.days(),
            "example_messages": self.example_messages(show_identifiers),
        }


def _count_into(counter: Counter[str], values: pl.Series, limit: int = MAX_DISTINCT) -> None:
    """Add a batch's value counts, folding new names into OTHER past ``limit`` distinct ones.

    A batch's values are taken in order, so which ones fold is the same on every run.
    """
    _fold_into(counter, values.value_counts(), limit)


def _fold_into(counter: Counter[str], counts: pl.DataFrame, limit: int) -> None:
    """Add (value, count) rows in value order, folding new names into OTHER past ``limit``."""
    for value, count in counts.sort(counts.columns[0], nulls_last=True).iter_rows():
        name = str(value)
        if name not in counter and len(counter) >= limit:
            name = OTHER
        counter[name] += count


def by_day(counts: dict[str, Any]) -> dict[str, Any]:
    """Counts keyed by YYYY-MM-DD in date order, OTHER (days past the limit) last."""
    return dict(sorted(counts.items(), key=lambda item: (item[0] == OTHER, item[0])))


def by_count(counts: Counter[str]) -> dict[str, int]:
    """Commonest first; ties by name, so the same data always reads the same."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _iso(moment: datetime | None) -> str | None:
    """A UTC time as the API writes it."""
    return (
        None
        if moment is None
        else moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def write_json(report: dict[str, Any], path: str) -> None:
    """Write a report as indented JSON, readable by its owner only (it names personal data)."""
    with writing(path, UsageError), open_private(path, "w", UsageError) as out:
        keep_private(out.fileno())
        json.dump(report, out, indent=2)
        out.write("\n")


def keep_private(fd: int) -> None:
    """Make a report file that existed before owner-only too (a new one is created so)."""
    # Not ours to change (another owner's file we may write): leave it as it was.
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o600)
