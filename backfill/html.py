"""HTML renderings of the validation report and of a results file's summary.

Each page is one self-contained file: inline CSS (with a print stylesheet) and inline SVG
charts, no script and nothing fetched (a Content-Security-Policy says so to the browser).
Pages are rendered from the same objects as the text output (a ValidationReport, a results
summary), and every value taken from them is escaped, in text and attributes alike: an export
is untrusted input. Chart bars carry ``data-count`` attributes, so the numbers can be checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import date, timedelta
from html import escape
from importlib.metadata import PackageNotFoundError, version

from backfill.codes import ENTRY_NOT_FOUND, Reason, Repair, Skip, Status
from backfill.commands import rebuild_command
from backfill.diagnosis import NotFoundGroup
from backfill.errors import UsageError
from backfill.report import OTHER, REPAIR_WORDS, TOP, ValidationReport, keep_private
from backfill.summary import ProblemExample, ResultsSummary
from backfill.tables import open_private, writing

MAX_BARS = 400  # a time chart with more days than this counts per week, month or year
LABEL_CHARS = 40
WIDTH = 960
UNITS = ("day", "week", "month", "year")
SERIES_CLASS = {
    "valid": "s-good",
    Status.SENT.value: "s-good",
    Status.NOT_FOUND.value: "s-warn",
    Status.REJECTED.value: "s-bad",
    Status.FAILED.value: "s-fail",
    Status.INVALID.value: "s-grey",
    Status.SKIPPED.value: "s-skip",
}
# Skipped rows are not a failure: they are shown apart from invalid ones, in a neutral colour.
SKIPPED_WORDS = "skipped (not events to send)"
SKIPPED_ROWS = "skipped rows (not events to send)"
STATUS_WORDS = {
    Status.SENT.value: "sent (200)",
    Status.NOT_FOUND.value: "not found (404)",
    Status.REJECTED.value: "rejected (other 4xx)",
    Status.FAILED.value: "failed (retries exhausted)",
    Status.INVALID.value: "invalid (never sent)",
    Status.SKIPPED.value: SKIPPED_WORDS,
}
API_404 = (
    "A 404 <code>ENTRY_NOT_FOUND</code> means that no user entry matches the identifier for that"
    " embeddable id: a wrong embeddable id, a wrong key, a wrong or double-escaped value, or the"
    " user never gave that identifier. It is permanent for that payload: sending it again as it"
    " is only helps once the user entry exists."
)
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'"
CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --panel: #f6f8fa;
  --good: #1a7f37; --bad: #cf222e; --warn: #9a6700; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 16px 0 6px; }
.sub, .note { color: var(--muted); overflow-wrap: anywhere; }
.sub { margin: 0; }
.note { font-size: 13px; }
section { margin: 28px 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 12px;
  margin: 20px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
  background: var(--panel); display: flex; flex-direction: column;
  justify-content: space-between; }
.card .label { color: var(--muted); font-size: 13px; }
.card .value { font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card.good .value { color: var(--good); }
.card.bad .value { color: var(--bad); }
.card.warn .value { color: var(--warn); }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 24px; }
@media (max-width: 800px) { .two { grid-template-columns: 1fr; } }
table { border-collapse: collapse; width: 100%; font-size: 14px; table-layout: fixed; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; overflow-wrap: anywhere; }
th { font-weight: 600; background: var(--panel); }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
  padding: 10px 12px; white-space: pre-wrap; overflow-wrap: anywhere; }
.box { border-left: 4px solid var(--warn); background: #fff8c5; padding: 8px 12px; margin: 8px 0; }
.box.bad { border-color: var(--bad); background: #ffebe9; }
.box.good { border-color: var(--good); background: #dafbe1; }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart text { font: 12px system-ui, sans-serif; fill: #59636e; }
svg.chart text.label { fill: #1f2328; }
svg.chart .grid { stroke: #d1d9e0; stroke-width: 1; }
.s-good { fill: #2da44e; background: #2da44e; }
.s-warn { fill: #d4a72c; background: #d4a72c; }
.s-bad { fill: #cf222e; background: #cf222e; }
.s-fail { fill: #8250df; background: #8250df; }
.s-grey { fill: #8c959f; background: #8c959f; }
.s-skip { fill: #54aeff; background: #54aeff; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; font-size: 13px; color: var(--muted);
  margin: 4px 0 0; padding: 0; list-style: none; }
.legend .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 5px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
@media print {
  @page { margin: 14mm; }
  body { font-size: 10.5pt; }
  main { max-width: none; padding: 0; }
  .card, .box, tr, svg { break-inside: avoid; }
  h2 { break-after: avoid; }
  .cards { grid-template-columns: repeat(5, 1fr); }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def _e(value: object) -> str:
    """A value from the data, escaped for HTML text and attribute values alike."""
    return escape(str(value), quote=True)


def _n(count: int) -> str:
    """A count with thousands separators."""
    return f"{count:,}"


def is_html(path: str) -> bool:
    """Whether a report path asks for HTML (by its extension) rather than JSON."""
    return path.lower().endswith((".html", ".htm"))


def write_html(page: str, path: str) -> None:
    """Write a page, readable by its owner only (it names files and may hold personal data)."""
    with writing(path, UsageError), open_private(path, "w", UsageError) as out:
        keep_private(out.fileno())
        out.write(page)


# --- The pages -----------------------------------------------------------------------------


def validation_page(report: ValidationReport, show_identifiers: bool = False) -> str:
    """The validation report as a page; identifier values masked unless asked for."""
    sections = [
        _cards(_validation_cards(report)),
        _time_range(report.first_timestamp(), report.last_timestamp()),
        _section(
            "Valid rows per day (UTC)",
            _time_chart(_single(report.days(), "valid"), ["valid"], "valid rows"),
        ),
        _section("Invalid rows by reason", _reasons(report, show_identifiers)),
        _skipped_rules(report.skipped_counts()),
        _alternatives(report.alternative_counts()),
        _section("Repairs made", _repairs(report.repair_counts())),
        _names(report.event_name_counts(), report.embeddable_id_counts(), "valid rows"),
    ]
    return _page("Validation report", ", ".join(report.sources), sections)


def results_page(
    summary: ResultsSummary, show_identifiers: bool = False, retry_command: str | None = None
) -> str:
    """The summary of a results file as a page; identifier values masked unless asked for."""
    examples = summary.shown_examples(show_identifiers)
    sections = [
        _cards(_results_cards(summary)),
        _stopped(summary.stopped),
        _next_steps(summary, retry_command),
        _section("404 diagnosis", _diagnosis(summary)),
        _section("Records per day of the payload timestamp (UTC)", _results_days(summary)),
        _section("Results by status and error", _status_charts(summary)),
        _section("Examples of each problem", _problem_examples(summary, examples)),
        _skipped_examples(examples),
        _names(summary.event_name_counts(), summary.embeddable_id_counts(), "rows with a payload"),
    ]
    return _page("Results report", summary.results_path, sections)


def _page(title: str, subject: str, sections: Iterable[str]) -> str:
    """The whole document around the sections."""
    body = "\n".join(s for s in sections if s)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{_e(title)}: {_e(subject)}</title>\n<style>{CSS}</style>\n</head>\n"
        "<body>\n<main>\n"
        f'<header><h1>{_e(title)}</h1><p class="sub">{_e(subject)}</p></header>\n'
        f"{body}\n"
        f"<footer>Made by backfill {_e(_version())}.</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


def _version() -> str:
    """The installed backfill version."""
    try:
        return version("backfill")
    except PackageNotFoundError:
        return "(unknown version)"


def _section(title: str, content: str) -> str:
    """A titled section."""
    return f"<section>\n<h2>{_e(title)}</h2>\n{content}\n</section>"


def _cards(cards: Sequence[tuple[str, str, str]]) -> str:
    """The headline counts."""
    items = "".join(
        f'<div class="card {tone}"><div class="label">{_e(label)}</div>'
        f'<div class="value" data-card="{_e(label)}">{_e(value)}</div></div>'
        for label, value, tone in cards
    )
    return f'<div class="cards">{items}</div>'


def _time_range(first: str | None, last: str | None) -> str:
    """The time range of the valid rows."""
    if not first:
        return ""
    return f'<p class="note">Timestamps of the valid rows: {_e(first)} .. {_e(last)} (UTC)</p>'


def _stopped(why: str | None) -> str:
    """Why the run stopped early, if it did."""
    if not why:
        return ""
    return (
        f'<div class="box bad">Stopped early: {_e(why)}. <code>--resume</code> continues it.</div>'
    )


# --- Validation sections ------------------------------------------------------------------


def _validation_cards(report: ValidationReport) -> list[tuple[str, str, str]]:
    """The headline counts of a validation: rows read, valid, invalid, skipped (if any), repairs."""
    invalid = report.invalid
    repairs = report.repair_counts().values()
    cards = [
        ("Rows read", _n(report.rows), ""),
        ("Valid", _n(report.valid), "good"),
        ("Invalid", _n(invalid), "bad" if invalid else "good"),
    ]
    if report.skipped:
        cards.append((SKIPPED_WORDS.capitalize(), _n(report.skipped), ""))
    return [*cards, ("Repairs", _n(sum(repairs)), "warn" if any(repairs) else "")]


def _single(per_day: dict[str, int], series: str) -> dict[str, dict[str, int]]:
    """Counts per day as one series of a time chart."""
    return {day: {series: count} for day, count in per_day.items()}


def _reasons(report: ValidationReport, show_identifiers: bool) -> str:
    """The reason chart and, per reason, the examples with file:row and message."""
    reasons = list(report.reason_counts().items())
    if not reasons:
        return '<p class="box good">No invalid rows.</p>'
    chart = _bar_chart(reasons, "reason", "invalid rows by reason", lambda _: "s-bad")
    messages = report.example_messages(show_identifiers)
    rows = [
        (reason, f"{example.source}:{example.row}", message)
        for reason, _count in reasons
        for example, message in zip(
            report.examples.get(reason, []), messages.get(reason, []), strict=True
        )
    ]
    table = _table(
        ["Reason", "Where", "Message"],
        [[f"<code>{_e(r)}</code>", _e(w), _e(m)] for r, w, m in rows],
        (26, 18, 56),
    )
    return chart + "<h3>Examples</h3>" + table


def _skipped_rules(by_rule: dict[str, int]) -> str:
    """The skipped rows by the rule that skipped them, or nothing when none was skipped."""
    total = sum(by_rule.values())
    if not total:
        return ""
    rows = [
        [f"<code>{_e(rule)}</code>", _e(_n(count)), _e(_share(count, total))]
        for rule, count in by_rule.items()
    ]
    table = _table(["Rule", "Rows", "Share"], rows, (60, 20, 20), numeric=(1, 2))
    note = (
        '<p class="note">The mapping\'s [filter] leaves these rows out: they are not invalid,'
        " and <code>send</code> makes no request for them.</p>"
    )
    return _section(f"Rows {SKIPPED_WORDS}, by rule", table + note)


def _alternatives(counts: dict[str, int]) -> str:
    """Valid rows per [[identifier]] alternative, when the mapping has more than one."""
    if len(counts) < 2:
        return ""
    total = sum(counts.values())
    rows = [[_e(name), _e(_n(count)), _e(_share(count, total))] for name, count in counts.items()]
    table = _table(["Alternative", "Valid rows", "Share"], rows, (60, 20, 20), numeric=(1, 2))
    note = '<p class="note">Each row sends the first alternative that has a value in it.</p>'
    return _section("Valid rows by identifier alternative", table + note)


def _repairs(repairs: dict[str, int]) -> str:
    """The repairs made to valid rows."""
    rows = [[_e(_n(c)), _e(_repair_words(k))] for k, c in repairs.items() if c]
    if not rows:
        return '<p class="note">No value needed repairing.</p>'
    return _table(["Rows", "Repair"], rows, (12, 88), numeric=(0,))


def _repair_words(kind: str) -> str:
    """What a repair kind means."""
    try:
        return REPAIR_WORDS[Repair(kind)]
    except ValueError:
        return kind


# --- Results sections ---------------------------------------------------------------------


def _results_cards(summary: ResultsSummary) -> list[tuple[str, str, str]]:
    """The headline counts of a results file: rows by status, requests and retries."""
    cards = [("Rows", _n(summary.rows), "")]
    for status, count in summary.status_counts().items():
        if status == Status.SKIPPED:
            cards.append((SKIPPED_WORDS.capitalize(), _n(count), ""))
            continue
        tone = "good" if status == Status.SENT else ("bad" if count else "")
        cards.append((status.replace("_", " ").capitalize(), _n(count), tone))
    ambiguous = summary.ambiguous_retries
    cards += [
        ("Requests", _n(summary.requests), ""),
        ("Retries", _n(summary.retries), ""),
        ("Ambiguous retries", _n(ambiguous), "warn" if ambiguous else ""),
    ]
    return cards


def _status_charts(summary: ResultsSummary) -> str:
    """Records by status, then by error."""
    by_status = list(summary.status_counts().items())
    errors = list(summary.error_counts().items())
    html = _bar_chart(by_status, "status", "results by status", SERIES_CLASS.get)
    if errors:
        html += "<h3>By error</h3>" + _bar_chart(errors, "error", "records by error", _error_class)
    return html


def _results_days(summary: ResultsSummary) -> str:
    """The records-per-day chart, stacked by status, or a note when there is nothing to show."""
    per_day = summary.days()
    without = (("invalid rows", Status.INVALID), (SKIPPED_ROWS, Status.SKIPPED))
    note = "".join(
        f'<p class="note">{_e(_n(count))} {_e(words)} have no payload, so no timestamp:'
        " they are not in this chart.</p>"
        for words, status in without
        if (count := summary.by_status[status.value])
    )
    if not any(day != OTHER for day in per_day):
        return '<p class="note">No record has a payload timestamp: there is no chart.</p>' + note
    series = [s.value for s in Status if any(s.value in c for c in per_day.values())]
    return _time_chart(per_day, series, "records") + note


def _next_steps(summary: ResultsSummary, command: str | None) -> str:
    """The command that sends again what did not go through."""
    if not command or not summary.retryable():
        return (
            '<div class="box good">Nothing to retry: every row was sent, is invalid or was'
            " skipped.</div>"
        )
    return (
        '<div class="box">Re-run what did not go through (the stored payloads of the'
        f" not_found and failed rows):<pre>{_e(command)}</pre>"
        "If the mapping was wrong (an embeddable id or identifier key), fix it and rebuild"
        " those rows from the original inputs:"
        f"<pre>{_e(rebuild_command(summary.results_path))}</pre></div>"
    )


def _diagnosis(summary: ResultsSummary) -> str:
    """What the 404s have in common, by embeddable id and by identifier key."""
    if not summary.by_status[Status.NOT_FOUND.value]:
        return '<p class="note">No row came back 404 ENTRY_NOT_FOUND.</p>'
    parts = [f'<div class="box">{_e(line)}</div>' for line in summary.diagnosis()]
    parts.append(f'<p class="note">{API_404}</p>')
    escaped = summary.double_escaped
    if escaped:
        parts.append(
            f'<div class="box bad">{_e(_n(escaped))} of the 404s carry a double-escaped'
            " identifier value, which never matches a user.</div>"
        )
    groups = summary.not_found_groups()
    for title, kind in (
        ("By embeddable id", "embeddable id"),
        ("By identifier key", "identifier key"),
    ):
        parts.append(f"<h3>{_e(title)}</h3>" + _not_found_table(groups[kind]))
    return "\n".join(parts)


def _not_found_table(groups: list[NotFoundGroup]) -> str:
    """Names with 404s: answered, not found, the share and the cause the data points to."""
    rows = [
        [
            f"<code>{_e(g.name)}</code>",
            _e(_n(g.answered)),
            _e(_n(g.not_found)),
            _e(_share(g.not_found, g.answered)),
            _e(g.cause),
        ]
        for g in groups[:TOP]
    ]
    more = len(groups) - TOP
    heads = ["Name", "Answered", "Not found", "Share", "Cause"]
    table = _table(heads, rows, (22, 11, 11, 9, 47), numeric=(1, 2, 3))
    return table + (f'<p class="note">... and {_e(_n(more))} more</p>' if more > 0 else "")


def _examples(
    examples: dict[str, list[ProblemExample]], skipped: bool
) -> list[tuple[str, ProblemExample]]:
    """(problem, example) of the examples, in their order: the skipped ones or the others."""
    return [
        (problem, example)
        for problem, kept in examples.items()
        for example in kept
        if (example.status == Status.SKIPPED) is skipped
    ]


def _problem_examples(summary: ResultsSummary, examples: dict[str, list[ProblemExample]]) -> str:
    """The first records of each problem (commonest first) with file:row, identifier, message."""
    rows = []
    for problem, example in _examples(examples, skipped=False):
        who = f"{example.key} = {example.value}" if example.key else ""
        rows.append(
            [
                f"<code>{_e(problem)}</code>",
                _e(example.status),
                _e(f"{example.source}:{example.row}"),
                _e(who),
                _e(example.message),
            ]
        )
    if not rows:
        skipped = " or skipped" if summary.by_status[Status.SKIPPED.value] else ""
        return f'<p class="box good">No problems: every record is sent{skipped}.</p>'
    heads = ["Problem", "Status", "Where", "Identifier", "Message"]
    return _table(heads, rows, (20, 10, 15, 20, 35))


def _skipped_examples(examples: dict[str, list[ProblemExample]]) -> str:
    """The first skipped records of each kind with file:row and the rule, apart from problems."""
    rows = [
        [f"<code>{_e(kind)}</code>", _e(f"{e.source}:{e.row}"), _e(e.message)]
        for kind, e in _examples(examples, skipped=True)
    ]
    if not rows:
        return ""
    table = _table(["Why", "Where", "Message"], rows, (20, 25, 55))
    return _section(f"Examples of rows {SKIPPED_WORDS}", table)


# --- Shared pieces ------------------------------------------------------------------------


def _names(event_names: dict[str, int], ids: dict[str, int], counted: str) -> str:
    """The top event names and embeddable ids, side by side."""
    return _section(
        "Top event names and embeddable ids",
        '<div class="two">'
        + f"<div><h3>Event names</h3>{_top_table('Event name', event_names, counted)}</div>"
        + f"<div><h3>Embeddable ids</h3>{_top_table('Embeddable id', ids, counted)}</div>"
        + "</div>",
    )


def _top_table(title: str, counts: dict[str, int], counted: str) -> str:
    """The commonest names with their counts and shares."""
    if not counts:
        return '<p class="note">None.</p>'
    total = sum(counts.values())
    rows = [
        [f"<code>{_e(name)}</code>", _e(_n(count)), _e(_share(count, total))]
        for name, count in list(counts.items())[:TOP]
    ]
    more = len(counts) - TOP
    note = f"{_n(len(counts))} distinct, {counted}" + (
        f"; {_n(more)} more not shown" if more > 0 else ""
    )
    table = _table([title, "Rows", "Share"], rows, (60, 20, 20), numeric=(1, 2))
    return table + f'<p class="note">{_e(note)}</p>'


def _share(part: int, whole: int) -> str:
    """A percentage."""
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _table(
    heads: Sequence[str],
    rows: Sequence[Sequence[str]],
    widths: Sequence[int],
    numeric: Sequence[int] = (),
) -> str:
    """A table of cells that are already escaped HTML; column widths in percent."""

    def cls(i: int) -> str:
        return ' class="num"' if i in numeric else ""

    cols = "".join(f'<col style="width: {w}%">' for w in widths)
    head = "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(heads))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{cell}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return (
        f"<table><colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _error_class(error: str) -> str:
    """The bar colour of an error code."""
    if error in {r.value for r in Reason}:
        return "s-grey"
    if error in {s.value for s in Skip}:
        return SERIES_CLASS[Status.SKIPPED.value]
    return "s-warn" if error == ENTRY_NOT_FOUND else "s-bad"


def _short(label: str) -> str:
    """A label cut to fit beside a bar (the full text is in the bar's title)."""
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "\u2026"


def _bar_chart(
    items: Sequence[tuple[str, int]], kind: str, title: str, colour: Callable[[str], str | None]
) -> str:
    """A horizontal bar chart of named counts; each bar carries data-<kind> and data-count."""
    if not items:
        return '<p class="note">Nothing to show.</p>'
    label_w = min(300, 20 + 7 * max(len(_short(name)) for name, _ in items))
    bar_w = WIDTH - label_w - 90
    top = max(count for _, count in items) or 1
    row_h = 26
    height = row_h * len(items) + 8
    bars = []
    for i, (name, count) in enumerate(items):
        y = 4 + i * row_h
        w = bar_w * count / top
        bars.append(
            f'<g class="bar" data-{kind}="{_e(name)}" data-count="{_e(count)}">'
            f"<title>{_e(name)}: {_e(_n(count))}</title>"
            f'<text class="label" x="{label_w - 8}" y="{y + 17}" text-anchor="end">'
            f"{_e(_short(name))}</text>"
            f'<rect class="{_e(colour(name) or "s-grey")}" x="{label_w}" y="{y + 4}"'
            f' width="{w:.1f}" height="18" rx="2"></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 17}">{_e(_n(count))}</text></g>'
        )
    return (
        f'<svg class="chart" data-chart="{_e(kind)}" viewBox="0 0 {WIDTH} {height}"'
        f' role="img" aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(bars)
        + "</svg>"
    )


# --- The time chart -----------------------------------------------------------------------


def _time_chart(per_day: dict[str, dict[str, int]], series: Sequence[str], what: str) -> str:
    """Counts per day as stacked columns from the first day to the last, zero days included.

    Over a long range the columns count per week, month or year instead, so there are never
    more than a few hundred. Each column carries data-bucket (its first day) and data-count.
    """
    days = _parse_days(per_day)
    if not days:
        return '<p class="note">No timestamps: there is no chart.</p>'
    first, last = min(days), max(days)
    unit = next(u for u in UNITS if _bucket_count(first, last, u) <= MAX_BARS or u == "year")
    buckets: dict[date, dict[str, int]] = {b: {} for b in _buckets(first, last, unit)}
    for day, counts in days.items():
        into = buckets[_bucket(day, unit)]
        for name, count in counts.items():
            into[name] = into.get(name, 0) + count
    other = sum(per_day.get(OTHER, {}).values())
    note = (
        f'<p class="note">{_e(_n(other))} {_e(what)} on further days are not shown'
        " (too many distinct days).</p>"
        if other
        else ""
    )
    return _columns(buckets, series, unit, what) + _legend(series, days) + note


def _parse_days(per_day: dict[str, dict[str, int]]) -> dict[date, dict[str, int]]:
    """The days that are dates (OTHER and anything else left out)."""
    days = {}
    for key, counts in per_day.items():
        try:
            days[date.fromisoformat(key)] = counts
        except (TypeError, ValueError):
            continue
    return days


def _bucket(day: date, unit: str) -> date:
    """The first day of the bucket a day falls in."""
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    if unit == "year":
        return day.replace(month=1, day=1)
    return day


def _bucket_count(first: date, last: date, unit: str) -> int:
    """How many buckets the range covers."""
    if unit == "day":
        return (last - first).days + 1
    if unit == "week":
        return (_bucket(last, "week") - _bucket(first, "week")).days // 7 + 1
    if unit == "month":
        return (last.year - first.year) * 12 + last.month - first.month + 1
    return last.year - first.year + 1


def _buckets(first: date, last: date, unit: str) -> list[date]:
    """The first day of every bucket from the first day's to the last day's."""
    out = []
    current = _bucket(first, unit)
    while current <= last:
        out.append(current)
        if unit == "day":
            current += timedelta(days=1)
        elif unit == "week":
            current += timedelta(days=7)
        elif unit == "month":
            current = date(current.year + current.month // 12, current.month % 12 + 1, 1)
        elif current.year == date.max.year:
            break
        else:
            current = date(current.year + 1, 1, 1)
    return out


def _nice_step(top: int) -> int:
    """A round gridline step giving about four lines up to ``top``."""
    rough = max(1.0, top / 4)
    magnitude = 10 ** math.floor(math.log10(rough))
    return int(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= rough))


def _columns(
    buckets: dict[date, dict[str, int]], series: Sequence[str], unit: str, what: str
) -> str:
    """The SVG of stacked columns with gridlines and a few dates along the bottom."""
    left, right, top_pad, bottom, height = 56, 12, 10, 34, 260
    plot_w, plot_h = WIDTH - left - right, height - top_pad - bottom
    highest = max((sum(c.values()) for c in buckets.values()), default=0)
    step = _nice_step(highest)
    ceiling = max(step, step * math.ceil(highest / step))
    parts = _gridlines(ceiling, step, left, WIDTH - right, top_pad, plot_h)
    width = plot_w / len(buckets)
    gap = width * 0.15 if width >= 4 else 0.0
    labelled = _labelled(list(buckets), unit)
    scale = plot_h / ceiling
    for i, (start, counts) in enumerate(buckets.items()):
        x = left + i * width
        column = _column(start, counts, series, unit, what, x, width - gap, top_pad + plot_h, scale)
        parts.append(column)
        if start in labelled:
            parts.append(
                f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top_pad + plot_h}"'
                f' y2="{top_pad + plot_h + 5}"></line>'
                f'<text x="{x:.1f}" y="{height - 12}" text-anchor="middle">'
                f"{_e(labelled[start])}</text>"
            )
    return (
        f'<svg class="chart" data-chart="per-day" data-unit="{_e(unit)}"'
        f' viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{_e(what)} per {_e(unit)}"'
        ' xmlns="http://www.w3.org/2000/svg">' + "".join(parts) + "</svg>"
        f'<p class="note">One column per {_e(unit)} (UTC); hover a column for its counts.</p>'
    )


def _labelled(starts: list[date], unit: str) -> dict[date, str]:
    """Which columns get a date under them: month starts for days, else every few; at most 12."""
    if unit == "day" and len(starts) > 45:
        months = [d for d in starts if d.day == 1]
        every = max(1, math.ceil(len(months) / 12))
        return {d: d.strftime("%Y-%m") for d in months[::every]}
    every = max(1, math.ceil(len(starts) / 8))
    return {d: _bucket_label(d, unit) for d in starts[::every]}


def _gridlines(
    ceiling: int, step: int, x0: float, x1: float, top: float, plot_h: float
) -> list[str]:
    """Horizontal gridlines with their values."""
    lines = []
    for value in range(0, ceiling + 1, step):
        y = top + plot_h - plot_h * value / ceiling
        lines.append(
            f'<line class="grid" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}"></line>'
            f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(_n(value))}</text>'
        )
    return lines


def _column(
    start: date,
    counts: dict[str, int],
    series: Sequence[str],
    unit: str,
    what: str,
    x: float,
    width: float,
    base: float,
    scale: float,
) -> str:
    """One column: a group with its total, one rect per series stacked from the bottom."""
    total = sum(counts.values())
    detail = ", ".join(f"{_n(counts[s])} {s}" for s in series if counts.get(s))
    rects, y = [], base
    for name in series:
        count = counts.get(name, 0)
        if not count:
            continue
        h = count * scale
        y -= h
        rects.append(
            f'<rect class="{SERIES_CLASS.get(name, "s-grey")}" data-series="{_e(name)}"'
            f' data-count="{_e(count)}" x="{x:.2f}" y="{y:.2f}" width="{width:.2f}"'
            f' height="{h:.2f}"></rect>'
        )
    label = _bucket_label(start, unit)
    title = f"{label}: {_n(total)} {what}" + (f" ({detail})" if len(series) > 1 and total else "")
    return (
        f'<g class="bucket" data-bucket="{_e(start.isoformat())}" data-count="{_e(total)}">'
        f"<title>{_e(title)}</title>{''.join(rects)}</g>"
    )


def _bucket_label(start: date, unit: str) -> str:
    """How a bucket is named along the axis."""
    if unit == "month":
        return start.strftime("%Y-%m")
    if unit == "year":
        return str(start.year)
    return start.isoformat()


def _legend(series: Sequence[str], days: dict[date, dict[str, int]]) -> str:
    """The series with their totals, when there is more than one."""
    if len(series) < 2:
        return ""
    items = []
    for name in series:
        total = sum(counts.get(name, 0) for counts in days.values())
        items.append(
            f'<li><span class="swatch {_e(SERIES_CLASS.get(name, "s-grey"))}"></span>'
            f"{_e(STATUS_WORDS.get(name, name))}: {_e(_n(total))}</li>"
        )
    return f'<ul class="legend">{"".join(items)}</ul>'
