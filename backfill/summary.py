"""What a send run (or a results file) came to: counts, the 404 diagnosis, the retry command."""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from backfill.codes import Status

AMBIGUOUS_NOTE = r"retried (\d+)x after no answer"
MAX_DISTINCT = 10_000  # ids and keys tracked for the diagnosis; more are not a diagnosis
RETRY_STATUSES = (Status.NOT_FOUND, Status.FAILED)


@dataclass
class Summary:
    """Counts of final records by status and error, and what the 404s have in common."""

    results_path: str
    by_status: Counter[str] = field(default_factory=Counter)
    by_error: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    retries: int = 0
    ambiguous_retries: int = 0
    elapsed: float = 0.0
    stopped: str | None = None  # why the run stopped early, if it did
    settled: tuple[float, float] | None = None  # --concurrency auto: (limit, requests/s)
    answered_by_id: Counter[str] = field(default_factory=Counter)
    not_found_by_id: Counter[str] = field(default_factory=Counter)
    answered_by_key: Counter[str] = field(default_factory=Counter)
    not_found_by_key: Counter[str] = field(default_factory=Counter)

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
        """Count a batch of records read back from a results file."""
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
        answered = records.filter(pl.col("status").is_in([Status.SENT, Status.NOT_FOUND]))
        names = answered.select(
            pl.col("payload").str.json_path_match("$.embeddable_id").fill_null("").alias("id"),
            pl.col("payload")
            .str.json_path_match("$.identifiers[0].key")
            .fill_null("")
            .alias("key"),
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

    def diagnosis(self) -> list[str]:
        """Likely causes of 404s, in the terms of API.md: a wrong embeddable id or key."""
        lines = []
        for what, answered, missing in (
            ("embeddable id", self.answered_by_id, self.not_found_by_id),
            ("identifier key", self.answered_by_key, self.not_found_by_key),
        ):
            for name, count in sorted(missing.items(), key=lambda kv: (-kv[1], kv[0])):
                if count == answered[name] and count > 1:
                    lines.append(
                        f"every one of the {count:,} rows with {what} '{name}' was not found:"
                        f" that {what} is the likely mistake"
                        + (
                            " (no user entry of this Embeddable has it)"
                            if what == "identifier key"
                            else " (or its users never gave this identifier)"
                        )
                    )
        if not lines and self.by_status[Status.NOT_FOUND]:
            lines.append(
                "404 ENTRY_NOT_FOUND: no user entry matches these identifiers for their embeddable"
                " id; the users may not exist yet (retry them later) or gave another identifier"
            )
        return lines

    def retry_command(self) -> str | None:
        """The command that sends again what did not go through, if anything."""
        if not any(self.by_status[s] for s in RETRY_STATUSES):
            return None
        path = self.results_path
        stem = path.removesuffix(".csv").removesuffix(".jsonl")
        ext = ".csv" if path.endswith(".csv") else ".jsonl"
        return f"backfill retry {shlex.quote(path)} -o {shlex.quote(stem + '.retry' + ext)}"

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        return {
            "results": self.results_path,
            "rows": self.rows,
            "by_status": {s.value: self.by_status[s.value] for s in Status},
            "by_error": dict(sorted(self.by_error.items(), key=lambda kv: (-kv[1], kv[0]))),
            "requests": self.requests,
            "retries": self.retries,
            "ambiguous_retries": self.ambiguous_retries,
            "elapsed_seconds": round(self.elapsed, 3),
            "requests_per_second": round(self.requests / self.elapsed, 1) if self.elapsed else None,
            "stopped": self.stopped,
            "settled_concurrency": round(self.settled[0], 1) if self.settled else None,
            "settled_rate": round(self.settled[1], 1) if self.settled else None,
            "diagnosis": self.diagnosis(),
            "retry_command": self.retry_command(),
        }


def _bump(counter: Counter[str], name: str, count: int = 1) -> None:
    """Count a name, unless too many distinct names are tracked already."""
    if name in counter or len(counter) < MAX_DISTINCT:
        counter[name] += count


def render_text(data: dict[str, Any]) -> str:
    """The summary for a terminal."""
    lines = [f"Rows with a final record: {data['rows']:,}"]
    for status, count in data["by_status"].items():
        if count:
            lines.append(f"  {status:<10} {count:>10,}")
    if data["by_error"]:
        lines.append("By error:")
        width = max(len(e) for e in data["by_error"])
        lines += [f"  {e:<{width}} {c:>10,}" for e, c in data["by_error"].items()]
    rate = data["requests_per_second"]
    lines.append(
        f"Requests: {data['requests']:,} in {data['elapsed_seconds']:.1f} s"
        + (f" ({rate:,.0f}/s)" if rate else "")
        + f"; retries: {data['retries']:,}; ambiguous retries: {data['ambiguous_retries']:,}"
    )
    if data.get("settled_concurrency"):
        lines.append(
            f"Concurrency auto settled on {data['settled_concurrency']:.1f} requests in flight"
            f" ({data['settled_rate']:,.0f} requests/s over the last seconds)"
        )
    if data["ambiguous_retries"]:
        lines.append(
            "  (an ambiguous retry follows a timeout or dropped connection after the request was"
            " sent: that event may exist twice)"
        )
    lines += [f"404 diagnosis: {line}" for line in data["diagnosis"]]
    if data["stopped"]:
        lines.append(f"Stopped early: {data['stopped']}")
    lines.append(f"Results: {data['results']}")
    if data["retry_command"]:
        lines.append(f"Re-run what did not go through: {data['retry_command']}")
    return "\n".join(lines)
