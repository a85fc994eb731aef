"""What a send run (or a results file) came to: counts by status and error, and its JSON.

Read back from a results file (``report``) it also holds what only the records tell: records
per day of the payload timestamp, the top event names and embeddable ids, and a few examples
of each problem, with identifier values masked unless asked for in full. The 404 diagnosis
is ``diagnosis.py``'s, the shell commands ``commands.py``'s, the terminal text ``text.py``'s.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from backfill.codes import RETRY_STATUSES, Status
from backfill.diagnosis import NotFoundGroup, diagnosis_lines, not_found_groups
from backfill.masking import mask_identifier, mask_message
from backfill.plans import Existing
from backfill.report import EXAMPLES_PER_REASON, MAX_DAYS, OTHER, by_count, by_day
from backfill.results import final_rows, read_results

AMBIGUOUS_NOTE = r"retried (\d+)x after no answer"
MAX_DISTINCT = 10_000  # ids and keys tracked for the diagnosis; more are not a diagnosis
MAX_PROBLEMS = 100  # kinds of problem (error codes) with examples kept
# Top-level fields of a payload as this tool writes it (a nested one would be escaped: \").
DAY_IN_PAYLOAD = r'"timestamp":\s*"(\d{4}-\d{2}-\d{2})'
EVENT_IN_PAYLOAD = r'"custom_event_name":\s*"([^"\\]*)"'


@dataclass
class ResultsSummary:
    """Counts of final records by status and error, and what the 404s have in common."""

    results_path: str
    by_status: Counter[str] = field(default_factory=Counter)
    by_error: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    retries: int = 0
    ambiguous_retries: int = 0
    elapsed: float = 0.0
    stopped: str | None = None  # why the run stopped early, if it did
    settled: tuple[float, float] | None = None  # --concurrency auto: (in flight, requests/s)
    rate_paced: bool = False  # --concurrency auto paced requests by rate (a 429 engaged it)
    paused_seconds: float = 0.0  # the whole run held by Retry-After, overlaps counted once
    pauses: int = 0
    answered_by_id: Counter[str] = field(default_factory=Counter)
    not_found_by_id: Counter[str] = field(default_factory=Counter)
    answered_by_key: Counter[str] = field(default_factory=Counter)
    not_found_by_key: Counter[str] = field(default_factory=Counter)
    # Filled from records read back (add_records with count_requests), for the report:
    records_per_day: dict[str, Counter[str]] = field(default_factory=dict)  # day -> status
    event_names: Counter[str] = field(default_factory=Counter)
    embeddable_ids: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[ProblemExample]] = field(default_factory=dict)  # problem -> first
    double_escaped: int = 0  # 404s whose identifier value is double-escaped

    @property
    def rows(self) -> int:
        """Rows with a final record."""
        return sum(self.by_status.values())

    def add(self, status: str, error: str | None, embeddable_id: str, key: str) -> None:
        """Count one final record."""
        self.by_status[status] += 1
        if error:
            self.by_error[error] += 1
        if status in (Status.SENT, Status.NOT_FOUND):
            _bump(self.answered_by_id, embeddable_id)
            _bump(self.answered_by_key, key)
            if status == Status.NOT_FOUND:
                _bump(self.not_found_by_id, embeddable_id)
                _bump(self.not_found_by_key, key)

    def add_records(self, records: pl.DataFrame, count_requests: bool = True) -> None:
        """Count a batch of records read back from a results file.

        ``count_requests`` is false when the records only seed a resumed run's counts; true
        (a results file read for a report), the batch's details are taken too.
        """
        for status, count in records["status"].value_counts().iter_rows():
            self.by_status[status] += count
        for error, count in records["error"].drop_nulls().value_counts().iter_rows():
            self.by_error[error] += count
        if count_requests:
            attempts = records["attempts"].fill_null(0)
            self.requests += int(attempts.sum())
            self.retries += int((attempts - 1).clip(lower_bound=0).sum())
            ambiguous = records["message"].str.extract(AMBIGUOUS_NOTE, 1).cast(pl.Int64)
            self.ambiguous_retries += int(ambiguous.fill_null(0).sum())
        named = records.with_columns(
            pl.col("payload").str.json_path_match("$.embeddable_id").fill_null("").alias("__id"),
            pl.col("payload")
            .str.json_path_match("$.identifiers[0].key")
            .fill_null("")
            .alias("__key"),
        )
        answered = named.filter(pl.col("status").is_in([Status.SENT, Status.NOT_FOUND]))
        names = answered.select(
            pl.col("__id").alias("id"),
            pl.col("__key").alias("key"),
            (pl.col("status") == Status.NOT_FOUND).alias("missing"),
        )
        for column, seen, missing in (
            ("id", self.answered_by_id, self.not_found_by_id),
            ("key", self.answered_by_key, self.not_found_by_key),
        ):
            counts = names.group_by(column).agg(pl.len(), pl.col("missing").sum())
            for name, answered_count, missing_count in counts.iter_rows():
                _bump(seen, name, answered_count)
                if missing_count:
                    _bump(missing, name, missing_count)
        if count_requests:
            self._add_details(named)

    def _add_details(self, records: pl.DataFrame) -> None:
        """Records per day and status, top names, double-escaped 404s, examples of problems."""
        with_payload = records.filter(pl.col("payload").is_not_null())
        details = _with_day_and_event(with_payload)
        for day, status, count in details.group_by("day", "status").len().drop_nulls().iter_rows():
            if day not in self.records_per_day and len(self.records_per_day) >= MAX_DAYS:
                day = OTHER
            self.records_per_day.setdefault(day, Counter())[status] += count
        for column, counter in (("event", self.event_names), ("__id", self.embeddable_ids)):
            for name, count in details[column].drop_nulls().value_counts().iter_rows():
                _bump(counter, name, count)
        missing = with_payload.filter(pl.col("status") == Status.NOT_FOUND)["payload"]
        value = missing.str.json_path_match("$.identifiers[0].value")
        self.double_escaped += int(value.str.json_path_match("$").str.starts_with('"').sum())
        self._add_examples(records.filter(pl.col("status") != Status.SENT))

    def _add_examples(self, problems: pl.DataFrame) -> None:
        """Keep the first few records of each problem (error code, or status without one)."""
        problems = problems.with_columns(pl.coalesce("error", "status").alias("problem"))
        firsts = problems.group_by("problem", maintain_order=True).head(EXAMPLES_PER_REASON)
        firsts = firsts.with_columns(
            pl.col("payload").str.json_path_match("$.identifiers[0].key").alias("key"),
            pl.col("payload").str.json_path_match("$.identifiers[0].value").alias("value"),
        )
        for record in firsts.iter_rows(named=True):
            problem = record["problem"]
            if problem not in self.examples and len(self.examples) >= MAX_PROBLEMS:
                continue
            kept = self.examples.setdefault(problem, [])
            if len(kept) < EXAMPLES_PER_REASON:
                kept.append(
                    ProblemExample(
                        record["source"],
                        record["row"],
                        record["status"],
                        record["message"] or "",
                        record["key"],
                        record["value"],
                    )
                )

    def not_found_groups(self) -> dict[str, list[NotFoundGroup]]:
        """The 404s by embeddable id and by identifier key, each with its cause."""
        return {
            "embeddable id": not_found_groups(
                "embeddable id", self.answered_by_id, self.not_found_by_id
            ),
            "identifier key": not_found_groups(
                "identifier key", self.answered_by_key, self.not_found_by_key
            ),
        }

    def retryable(self) -> bool:
        """Whether any row ended not_found or failed: what a retry sends again."""
        return any(self.by_status[s] for s in RETRY_STATUSES)

    def status_counts(self) -> dict[str, int]:
        """Rows per status, every status named, in the order of the statuses."""
        return {s.value: self.by_status[s.value] for s in Status}

    def error_counts(self) -> dict[str, int]:
        """Rows per error code, commonest first."""
        return by_count(self.by_error)

    def requests_per_second(self) -> float | None:
        """Requests a second over the run, when it was timed."""
        return self.requests / self.elapsed if self.elapsed else None

    def diagnosis(self) -> list[str]:
        """The 404 diagnosis as sentences."""
        return diagnosis_lines(self.not_found_groups(), self.by_status[Status.NOT_FOUND])

    def days(self) -> dict[str, dict[str, int]]:
        """Records per UTC day of the payload timestamp and status, in date order."""
        return by_day(
            {
                day: {s.value: counts[s] for s in Status if counts[s]}
                for day, counts in self.records_per_day.items()
            }
        )

    def event_name_counts(self) -> dict[str, int]:
        """Records with a payload per event name, commonest first."""
        return by_count(self.event_names)

    def embeddable_id_counts(self) -> dict[str, int]:
        """Records with a payload per embeddable id, commonest first."""
        return by_count(self.embeddable_ids)

    def shown_examples(self, show_identifiers: bool = False) -> dict[str, list[ProblemExample]]:
        """The examples of each problem, commonest first; identifiers masked unless asked for."""
        order = {error: i for i, error in enumerate(self.error_counts())}
        shown: dict[str, list[ProblemExample]] = {}
        for problem in sorted(self.examples, key=lambda p: order.get(p, len(order))):
            for example in self.examples[problem]:
                shown.setdefault(problem, []).append(
                    example if show_identifiers else example.masked(problem)
                )
        return shown

    def to_dict(
        self,
        show_identifiers: bool = False,
        resume_command: str | None = None,
        retry_command: str | None = None,
    ) -> dict[str, Any]:
        """The summary as JSON-ready data; identifier values masked unless asked for.

        ``resume_command`` continues the run that made it (shown when it stopped early),
        ``retry_command`` sends again what did not go through (shown when anything did not).
        """
        groups = self.not_found_groups()
        rate = self.requests_per_second()
        examples = {
            problem: [dataclasses.asdict(e) for e in kept]
            for problem, kept in self.shown_examples(show_identifiers).items()
        }
        return {
            "results": self.results_path,
            "rows": self.rows,
            "by_status": self.status_counts(),
            "by_error": self.error_counts(),
            "requests": self.requests,
            "retries": self.retries,
            "ambiguous_retries": self.ambiguous_retries,
            "elapsed_seconds": round(self.elapsed, 3),
            "requests_per_second": None if rate is None else round(rate, 1),
            "stopped": self.stopped,
            "settled_concurrency": round(self.settled[0], 1) if self.settled else None,
            "settled_rate": round(self.settled[1], 1) if self.settled else None,
            "rate_paced": self.rate_paced if self.settled else None,
            "paused_seconds": round(self.paused_seconds, 1) if self.settled else None,
            "pauses": self.pauses if self.settled else None,
            "diagnosis": self.diagnosis(),
            "retry_command": retry_command if self.retryable() else None,
            "resume_command": resume_command if self.stopped else None,
            "not_found_by_embeddable_id": [g.to_dict() for g in groups["embeddable id"]],
            "not_found_by_identifier_key": [g.to_dict() for g in groups["identifier key"]],
            "not_found_double_escaped": self.double_escaped,
            "records_per_day": self.days(),
            "event_names": self.event_name_counts(),
            "embeddable_ids": self.embeddable_id_counts(),
            "examples": examples,
        }


@dataclass(frozen=True)
class ProblemExample:
    """One record of a problem: where it is, how it ended, and the identifier it carried."""

    source: str
    row: int
    status: str
    message: str
    key: str | None
    value: str | None  # the identifier value as the payload holds it (JSON text)

    def masked(self, problem: str) -> ProblemExample:
        """The example with its identifier value masked, in the message too."""
        value = self.value
        values = [value, *_decoded(value)] if value else []
        message = mask_message(problem, self.message, values)
        return dataclasses.replace(
            self, message=message, value=mask_identifier(value) if value else value
        )


@dataclass(frozen=True)
class RunOutcome:
    """How a send or a retry ended: its counts, why it stopped early, what to know."""

    summary: ResultsSummary
    existing: Existing  # what was done with the results file: refuse (a new file), resume...
    notes: tuple[str, ...] = ()  # what the run did that the user should know

    @property
    def results(self) -> str:
        """The results file written."""
        return self.summary.results_path

    @property
    def interrupted(self) -> bool:
        """Stopped by SIGINT/SIGTERM (or the caller's stop)."""
        return self.summary.stopped == "interrupted"

    @property
    def stopped(self) -> str | None:
        """Why the run stopped before every row was final (not an interruption), or None."""
        return None if self.interrupted else self.summary.stopped

    @property
    def complete(self) -> bool:
        """Every row went through: sent, or skipped by the mapping's filter."""
        by = self.summary.by_status
        done = by[Status.SENT] + by[Status.SKIPPED]
        return self.summary.stopped is None and self.summary.rows == done


def summarise(results_path: str) -> ResultsSummary:
    """The summary of a results file, read in batches; a row with two records is refused."""
    summary = ResultsSummary(results_path)
    final_rows(results_path, counted(summary, read_results(results_path)))
    return summary


def counted(
    summary: ResultsSummary, records: Iterator[pl.DataFrame], count_requests: bool = True
) -> Iterator[pl.DataFrame]:
    """The batches of records, counted into a summary as they pass."""
    for batch in records:
        summary.add_records(batch, count_requests)
        yield batch


def _with_day_and_event(records: pl.DataFrame) -> pl.DataFrame:
    """Add each payload's UTC day and event name ("day", "event"), null when it has none.

    Payloads as this tool writes them are read by pattern, several times faster than by
    JSON path; any other payload falls back to the JSON path (a null input costs nothing).
    """
    payload = pl.col("payload")
    found = records.with_columns(
        payload.str.extract(DAY_IN_PAYLOAD, 1).alias("day"),
        payload.str.extract(EVENT_IN_PAYLOAD, 1).alias("event"),
    )
    other = pl.when(pl.col("day").is_null() | pl.col("event").is_null()).then(payload)
    day = other.str.json_path_match("$.timestamp").str.extract(r"^(\d{4}-\d{2}-\d{2})", 1)
    event = other.str.json_path_match("$.custom_event_name")
    return found.with_columns(
        pl.coalesce("day", day).alias("day"), pl.coalesce("event", event).alias("event")
    )


def _decoded(value: str) -> list[str]:
    """An identifier's JSON text decoded, as a message may quote it (none if not a string)."""
    try:
        decoded = json.loads(value)
    except ValueError:
        return []
    return [decoded] if isinstance(decoded, str) else []


def _bump(counter: Counter[str], name: str, count: int = 1) -> None:
    """Count a name, unless too many distinct names are tracked already."""
    if name in counter or len(counter) < MAX_DISTINCT:
        counter[name] += count
