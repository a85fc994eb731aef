"""The terminal text of a validation report and of a results summary; ``style`` colours it.

The command line prints these; the JSON of both is their ``to_dict()``, the pages ``html.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from backfill.codes import Repair, Status
from backfill.report import REPAIR_WORDS, TOP, ValidationReport
from backfill.summary import ResultsSummary

# (text, role) -> the text as shown, role one of "heading", "good", "bad", "note".
Style = Callable[[str, str], str]


def plain(text: str, role: str) -> str:
    """No styling: the text as it is."""
    return text


def validation_text(report: ValidationReport, style: Style = plain) -> str:
    """The validation report for a terminal; ``style`` colours parts (none by default)."""
    valid, invalid = report.valid, report.invalid
    lines = [
        f"Rows read:  {report.rows:,}  ({', '.join(report.sources)})",
        f"Valid:      {style(f'{valid:,}', 'good')}",
        f"Invalid:    {style(f'{invalid:,}', 'bad' if invalid else 'good')}",
    ]
    if report.skipped:
        lines.append(f"Skipped:    {style(f'{report.skipped:,}', 'note')}  (not events to send)")
        for rule, count in report.skipped_counts().items():
            lines.append(f"  {count:>9,}  {rule}")
    alternatives = report.alternative_counts()
    if len(alternatives) > 1:
        lines.append("")
        lines.append(style("Valid rows by identifier alternative:", "heading"))
        for name, count in alternatives.items():
            lines.append(f"  {count:>9,}  {name}")
    reasons = report.reason_counts()
    if reasons:
        lines.append("")
        lines.append(style("Invalid rows by reason:", "heading"))
        width = max(len(r) for r in reasons)
        for reason, count in reasons.items():
            where = ", ".join(f"{e.source}:{e.row}" for e in report.examples.get(reason, []))
            lines.append(f"  {reason:<{width}}  {style(f'{count:>9,}', 'bad')}  e.g. {where}")
    repairs = {k: v for k, v in report.repair_counts().items() if v}
    if repairs:
        lines.append("")
        lines.append(style("Repairs made:", "heading"))
        for kind, count in repairs.items():
            lines.append(f"  {style(f'{count:>9,}', 'note')}  {REPAIR_WORDS[Repair(kind)]}")
    lines += _top("Event names", report.event_name_counts(), style)
    lines += _top("Embeddable ids", report.embeddable_id_counts(), style)
    if report.first_time is not None:
        lines.append("")
        lines.append(f"Timestamps: {report.first_timestamp()} .. {report.last_timestamp()} (UTC)")
    return "\n".join(lines)


def _top(title: str, counts: dict[str, int], style: Style = plain) -> list[str]:
    """A titled table of the commonest names with their counts."""
    if not counts:
        return []
    shown = list(counts.items())[:TOP]
    width = max(len(name) for name, _ in shown)
    lines = ["", style(f"{title} ({len(counts):,} distinct, valid rows):", "heading")]
    lines += [f"  {name:<{width}}  {count:>9,}" for name, count in shown]
    if len(counts) > TOP:
        lines.append(f"  ... and {len(counts) - TOP:,} more")
    return lines


def _settled_lines(summary: ResultsSummary) -> list[str]:
    """What --concurrency auto settled on, and how long Retry-After paused the run."""
    assert summary.settled is not None
    in_flight, rate = round(summary.settled[0], 1), round(summary.settled[1], 1)
    if summary.rate_paced:
        line = (
            f"Concurrency auto settled on {rate:,.1f} requests/s (paced: the server answered"
            f" 429), about {in_flight:,.1f} requests in flight"
        )
    else:
        line = (
            f"Concurrency auto settled on {in_flight:,.1f} requests in flight"
            f" ({rate:,.0f} requests/s over the last seconds; no 429, no pacing)"
        )
    lines = [line]
    if summary.pauses:
        pauses = summary.pauses
        lines.append(
            f"Paused {round(summary.paused_seconds, 1):,.1f} s in all by Retry-After"
            f" ({pauses:,} pause{'s' if pauses != 1 else ''} of the whole run)"
        )
    return lines


def summary_text(
    summary: ResultsSummary,
    style: Style = plain,
    resume_command: str | None = None,
    retry_command: str | None = None,
) -> str:
    """The summary for a terminal; ``style`` colours parts (none by default)."""
    lines = [f"Rows with a final record: {summary.rows:,}"]
    for status, count in summary.status_counts().items():
        if count:
            tone = "good" if status == Status.SENT else "bad"
            lines.append(f"  {status:<10} {style(f'{count:>10,}', tone)}")
    errors = summary.error_counts()
    if errors:
        lines.append(style("By error:", "heading"))
        width = max(len(e) for e in errors)
        lines += [f"  {e:<{width}} {c:>10,}" for e, c in errors.items()]
    rate = summary.requests_per_second()
    elapsed = round(summary.elapsed, 3)
    took = f" in {elapsed:.1f} s" if elapsed else ""
    lines.append(
        f"Requests: {summary.requests:,}{took}"
        + (f" ({round(rate, 1):,.0f}/s)" if rate else "")
        + f"; retries: {summary.retries:,}; ambiguous retries: {summary.ambiguous_retries:,}"
    )
    if summary.settled and round(summary.settled[0], 1):
        lines += _settled_lines(summary)
    if summary.ambiguous_retries:
        lines.append(
            "  (an ambiguous retry follows a timeout or dropped connection after the request was"
            " sent: that event may exist twice)"
        )
    lines += [f"{style('404 diagnosis:', 'note')} {line}" for line in summary.diagnosis()]
    if summary.stopped:
        lines.append(f"{style('Stopped early:', 'bad')} {summary.stopped}")
        if resume_command:
            lines.append(f"Continue it with: {style(resume_command, 'heading')}")
    lines.append(f"Results: {summary.results_path}")
    if retry_command and summary.retryable():
        lines.append(f"Re-run what did not go through: {style(retry_command, 'heading')}")
    return "\n".join(lines)
