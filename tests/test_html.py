"""``backfill.html`` and the report data it renders: escaping, masking, charts, private files."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from collections import Counter
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from backfill import html
from backfill.codes import Reason, Status
from backfill.commands import retry_command
from backfill.inputs import MALFORMED, ROW
from backfill.mapping import load_mapping
from backfill.masking import HIDDEN, mask_identifier, mask_message
from backfill.payloads import build_payloads
from backfill.report import Example, ValidationReport
from backfill.summary import ProblemExample, ResultsSummary

EVIL = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, and its text."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str, **wanted: str) -> list[dict[str, str]]:
        """The attributes of every ``tag`` element having the wanted attribute values."""
        return [
            a
            for t, a in self.tags
            if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in wanted.items())
        ]


def counts(elements: list[dict[str, str]], key: str) -> dict[str, int]:
    """data-<key> -> data-count of chart elements."""
    return {e[f"data-{key}"]: int(e["data-count"]) for e in elements}


def bar_classes(page: Elements, key: str) -> dict[str, str]:
    """data-<key> of each bar of a bar chart -> the class (the colour) of its rect."""
    classes, name = {}, None
    for tag, attrs in page.tags:
        if tag == "g" and attrs.get("class") == "bar":
            name = attrs.get(f"data-{key}")
        elif tag == "rect" and name is not None:
            classes[name], name = attrs["class"], None
    return classes


class Page(HTMLParser):
    """A page's headline cards as (label, value, tone) and the cell texts of its tables.

    ``tables`` maps each section heading (h2) to the rows of the tables under it, head rows
    included.
    """

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.cards: list[tuple[str, str, str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.headings: list[str] = []
        self._tone = ""
        self._card = ""
        self._text: list[str] | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "div" and a.get("class", "").split()[:1] == ["card"]:
            self._tone = a["class"].removeprefix("card").strip()
        elif tag == "div" and "data-card" in a:
            self._card, self._text = a["data-card"], []
        elif tag in ("h2", "td", "th"):
            self._text = []
        elif tag == "tr":
            self.tables.setdefault(self.headings[-1], []).append([])

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._text is None or tag not in ("h2", "td", "th", "div"):
            return  # a <code> inside a cell ends, not the cell
        text, self._text = "".join(self._text), None
        if tag == "h2":
            self.headings.append(text)
        elif tag == "div":
            self.cards.append((self._card, text, self._tone))
        else:
            self.tables[self.headings[-1]][-1].append(text)


# --- Masking identifier values --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        pytest.param("ada@example.com", "a***@example.com", id="email"),
        pytest.param('"ada@example.com"', "a***@example.com", id="stringified"),
        pytest.param('"\\"ada@mail.example.co.uk\\""', "a***@mail.example.co.uk", id="double"),
        pytest.param("12345", "1***", id="number"),
        pytest.param("ada@localhost", "a***", id="not-a-domain"),
        pytest.param("ada@ex<ample.com", "a***", id="odd-domain"),
        pytest.param("  ", "***", id="blank"),
    ],
)
def test_mask_identifier(value: str, masked: str) -> None:
    assert mask_identifier(value) == masked


def test_bad_identifier_value_messages_are_masked_as_payloads_words_them(tmp_path: Path) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        '[fields]\nembeddable_id = "flow_id"\ntimestamp = "at"\ncustom_event_name = "event"\n'
        '[identifier]\nkey = { value = "customer_id" }\n'
        'value = { column = "id", type = "number" }\n'
    )
    batch = pl.DataFrame(
        {
            ROW: [1, 2],
            MALFORMED: pl.Series([None, None], dtype=pl.String),
            "flow_id": ["flow_1", "flow_1"],
            "at": ["2024-03-01T12:00:00Z"] * 2,
            "event": ["signed_up"] * 2,
            "id": ["ada@example.com", "it's 12' is not valid"],
        }
    )
    checked = build_payloads(batch, load_mapping(str(mapping)), datetime.now(UTC), bodies=False)
    messages = checked["message"].to_list()
    assert messages[0] == "column 'id': 'ada@example.com' is not valid number"
    masked = [mask_message(Reason.BAD_IDENTIFIER_VALUE, m) for m in messages]
    assert masked == [
        "column 'id': 'a***@example.com' is not valid number",
        "column 'id': 'i***' is not valid number",
    ]
    assert mask_message(Reason.BAD_IDENTIFIER_VALUE, "worded otherwise") == HIDDEN


def test_emails_and_given_values_are_masked_in_any_message() -> None:
    message = '{"error": "ENTRY_NOT_FOUND", "value": "\\"ada@example.com\\"", "id": "cust-991"}'
    assert mask_message("ENTRY_NOT_FOUND", message, ["cust-991"]) == (
        '{"error": "ENTRY_NOT_FOUND", "value": "\\"a***@example.com\\"", "id": "c***"}'
    )
    assert mask_message(Reason.BAD_PROPS, "column 'extra': '{\"to\": \"bo@x.org\"}' is not") == (
        "column 'extra': '{\"to\": \"b***@x.org\"}' is not"
    )


# --- The report data behind the pages -------------------------------------------------------


def checked_batch(rows: list[tuple[str | None, str | None, str]]) -> pl.DataFrame:
    """A batch as build_payloads returns it: (reason, message, time) per row."""
    return pl.DataFrame(
        {
            ROW: list(range(1, len(rows) + 1)),
            "reason": [r for r, _, _ in rows],
            "message": [m for _, m, _ in rows],
            "payload": pl.Series([None] * len(rows), dtype=pl.String),
            "embeddable_id": ["flow_1"] * len(rows),
            "event_name": ["signed_up"] * len(rows),
            "identifier_key": ["email"] * len(rows),
            "identifier_alternative": [0] * len(rows),
            "skip": pl.Series([None] * len(rows), dtype=pl.String),
            "skip_rule": pl.Series([None] * len(rows), dtype=pl.String),
            "skip_message": pl.Series([None] * len(rows), dtype=pl.String),
            "dedupe_key": pl.Series([None] * len(rows), dtype=pl.String),
            "time": pl.Series([datetime.fromisoformat(t) for _, _, t in rows]).dt.replace_time_zone(
                "UTC"
            ),
            "event_name_converted": [False] * len(rows),
            "identifier_unwrapped": [False] * len(rows),
            "timezone_assumed": [False] * len(rows),
        }
    )


def test_validation_report_counts_valid_rows_per_utc_day_and_keeps_messages() -> None:
    report = ValidationReport(sources=["a.csv"])
    bad = "column 'id': 'ada@example.com' is not valid number"
    report.add(
        "a.csv",
        checked_batch(
            [
                (None, None, "2024-03-01T23:59:59"),
                (None, None, "2024-03-01T00:00:00"),
                (None, None, "2024-03-03T12:00:00"),
                ("bad_identifier_value", bad, "2024-03-02T12:00:00"),
            ]
        ),
    )
    report.add("b.csv", checked_batch([(None, None, "2024-03-03T01:00:00")]))
    data = report.to_dict()
    assert data["valid_per_day"] == {"2024-03-01": 2, "2024-03-03": 2}
    assert data["examples"] == {"bad_identifier_value": [{"source": "a.csv", "row": 4}]}
    assert data["example_messages"] == {
        "bad_identifier_value": ["column 'id': 'a***@example.com' is not valid number"]
    }
    assert report.to_dict(show_identifiers=True)["example_messages"]["bad_identifier_value"] == [
        bad
    ]


def test_days_past_the_limit_are_counted_as_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("backfill.report.MAX_DAYS", 2)
    report = ValidationReport()
    days = ["2024-03-01T00:00:00", "2024-03-02T00:00:00", "2024-03-05T00:00:00"]
    report.add("a.csv", checked_batch([(None, None, t) for t in days]))
    assert report.to_dict()["valid_per_day"] == {"2024-03-01": 1, "2024-03-02": 1, "(other)": 1}


def record(
    row: int, status: str, when: str = "2024-03-01T12:00:00.000Z", **fields: Any
) -> dict[str, Any]:
    """A results record (a 404 by default, for ada@example.com of flow_1)."""
    flow = fields.pop("flow", "flow_1")
    value = fields.pop("value", '"\\"ada@example.com\\""')
    payload = json.dumps(
        {
            "embeddable_id": flow,
            "timestamp": when,
            "custom_event_name": "signed_up",
            "custom_event_props": "{}",
            "identifiers": [{"key": "email", "value": json.loads(value)}],
        }
    )
    base = {
        "source": "a.csv",
        "row": row,
        "status": status,
        "http_status": None,
        "error": None,
        "message": None,
        "attempts": 1,
        "entry_id": None,
        "payload": None if status == Status.INVALID else payload,
    }
    return {**base, **fields}


def records_frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    """Records as read_results yields them."""
    schema = {"row": pl.Int64, "http_status": pl.Int64, "attempts": pl.Int64}
    return pl.DataFrame(
        records,
        schema={k: schema.get(k, pl.String) for k in records[0]},
    )


def test_summary_of_records_has_days_names_examples_and_not_found_tables() -> None:
    found = "no user entry for ada@example.com"
    records = [
        record(1, "sent", "2024-03-01T12:00:00.000Z", error=None),
        record(2, "not_found", "2024-03-01T13:00:00.000Z", error="ENTRY_NOT_FOUND", message=found),
        record(3, "not_found", "2024-03-04T00:00:00.000Z", error="ENTRY_NOT_FOUND", flow="flow_x"),
        record(4, "not_found", "2024-03-04T00:00:00.000Z", error="ENTRY_NOT_FOUND", flow="flow_x"),
        record(
            5, "not_found", error="ENTRY_NOT_FOUND", value='"\\"\\\\\\"bo@example.org\\\\\\"\\""'
        ),
        record(6, "invalid", error="bad_timestamp", message="column 'at': cannot read 'x'"),
    ]
    summary = ResultsSummary("r.jsonl")
    summary.add_records(records_frame(records[:3]))
    summary.add_records(records_frame(records[3:]))
    data = summary.to_dict()
    assert data["records_per_day"] == {
        "2024-03-01": {"sent": 1, "not_found": 2},
        "2024-03-04": {"not_found": 2},
    }
    assert data["event_names"] == {"signed_up": 5}
    assert data["embeddable_ids"] == {"flow_1": 3, "flow_x": 2}
    assert data["not_found_double_escaped"] == 1
    by_id = {e["name"]: e for e in data["not_found_by_embeddable_id"]}
    assert by_id["flow_x"] == {
        "name": "flow_x",
        "answered": 2,
        "not_found": 2,
        "likely_cause": (
            "likely a wrong embeddable id (other embeddable ids had rows sent),"
            " or its users never gave this identifier"
        ),
    }
    assert by_id["flow_1"]["likely_cause"].startswith("some users not found")
    first = data["examples"]["ENTRY_NOT_FOUND"][0]
    assert first == {
        "source": "a.csv",
        "row": 2,
        "status": "not_found",
        "message": "no user entry for a***@example.com",
        "key": "email",
        "value": "a***@example.com",
    }
    assert [e["row"] for e in data["examples"]["ENTRY_NOT_FOUND"]] == [2, 3, 4, 5]
    assert data["examples"]["bad_timestamp"][0]["value"] is None
    shown = summary.to_dict(show_identifiers=True)["examples"]["ENTRY_NOT_FOUND"][0]
    assert (shown["message"], shown["value"]) == (found, '"ada@example.com"')


def test_a_resumed_runs_seed_counts_take_no_details() -> None:
    summary = ResultsSummary("r.jsonl")
    summary.add_records(records_frame([record(1, "sent")]), count_requests=False)
    data = summary.to_dict()
    assert (data["records_per_day"], data["examples"], data["event_names"]) == ({}, {}, {})


# --- Pages --------------------------------------------------------------------------------


def validation_data(**changes: Any) -> ValidationReport:
    """A validation report, described in the shape of its JSON (ValidationReport.to_dict())."""
    data = {
        "sources": ["a.csv"],
        "rows": 5,
        "valid": 3,
        "invalid_by_reason": {"bad_timestamp": 1, "bad_event_name": 1},
        "skipped_by_rule": {},
        "identifier_alternatives": {"key email, value email": 3},
        "examples": {
            "bad_timestamp": [{"source": "a.csv", "row": 2}],
            "bad_event_name": [{"source": "a.csv", "row": 4}],
        },
        "repairs": {"event_name_converted": 1, "identifier_unwrapped": 0, "timezone_assumed": 0},
        "event_names": {"signed_up": 3},
        "embeddable_ids": {"flow_1": 2, "flow_2": 1},
        "first_timestamp": "2024-03-01T12:00:00.000Z",
        "last_timestamp": "2024-03-03T12:00:00.000Z",
        "valid_per_day": {"2024-03-01": 2, "2024-03-03": 1},
        "example_messages": {
            "bad_timestamp": ["column 'at': cannot read 'x' as a timestamp"],
            "bad_event_name": ["column 'event': 'A!' cannot be made snake_case"],
        },
        **changes,
    }
    messages = data["example_messages"]
    alternatives = data["identifier_alternatives"]
    return ValidationReport(
        sources=data["sources"],
        rows=data["rows"],
        valid=data["valid"],
        invalid_by_reason=Counter(data["invalid_by_reason"]),
        examples={
            reason: [
                Example(e["source"], e["row"], messages[reason][i]) for i, e in enumerate(kept)
            ]
            for reason, kept in data["examples"].items()
        },
        repairs=Counter(data["repairs"]),
        event_names=Counter(data["event_names"]),
        embeddable_ids=Counter(data["embeddable_ids"]),
        first_time=_moment(data["first_timestamp"]),
        last_time=_moment(data["last_timestamp"]),
        valid_per_day=Counter(data["valid_per_day"]),
        skipped_by_rule=Counter(data["skipped_by_rule"]),
        alternatives=list(alternatives),
        by_alternative=Counter({i: n for i, n in enumerate(alternatives.values())}),
    )


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def results_data(**changes: Any) -> ResultsSummary:
    """A results summary of four records, with ``changes`` to its fields."""
    summary = ResultsSummary("r.jsonl")
    summary.add_records(
        records_frame(
            [
                record(1, "sent"),
                record(2, "not_found", error="ENTRY_NOT_FOUND", flow="flow_x"),
                record(3, "not_found", "2024-03-05T00:00:00.000Z", error="ENTRY_NOT_FOUND"),
                record(4, "invalid", error="bad_timestamp", message="cannot read"),
            ]
        )
    )
    return dataclasses.replace(summary, **changes)


def test_validation_page_charts_carry_the_report_counts() -> None:
    page = Elements(html.validation_page(validation_data()))
    chart = page.all("svg", data_chart="per-day")
    assert [c["data-unit"] for c in chart] == ["day"]
    days = counts(page.all("g", **{"class": "bucket"}), "bucket")
    assert days == {"2024-03-01": 2, "2024-03-02": 0, "2024-03-03": 1}  # zero days drawn too
    assert counts(page.all("g", **{"class": "bar"}), "reason") == {
        "bad_timestamp": 1,
        "bad_event_name": 1,
    }
    text = " ".join(page.text)
    assert "a.csv:2" in text and "cannot read 'x' as a timestamp" in text
    assert {c["data-card"] for c in page.all("div", **{"class": "value"})} == {
        "Rows read",
        "Valid",
        "Invalid",
        "Repairs",
    }


def test_results_page_charts_carry_the_summary_counts() -> None:
    summary = results_data()
    data = summary.to_dict(retry_command=retry_command("r.jsonl"))
    page = Elements(html.results_page(summary, retry_command=retry_command("r.jsonl")))
    bars = [a for a in page.all("g", **{"class": "bar"}) if "data-status" in a]
    assert counts(bars, "status") == data["by_status"]
    errors = [a for a in page.all("g", **{"class": "bar"}) if "data-error" in a]
    assert counts(errors, "error") == data["by_error"]
    days = counts(page.all("g", **{"class": "bucket"}), "bucket")
    assert {d: c for d, c in days.items() if c} == {"2024-03-01": 2, "2024-03-05": 1}
    rects = page.all("rect", data_series="not_found")
    assert sum(int(r["data-count"]) for r in rects) == 2
    text = " ".join(page.text)
    assert data["retry_command"] in text
    assert "wrong embeddable id" in text and "flow_x" in text
    assert "1 invalid rows have no payload" in text


def test_a_long_range_is_drawn_per_week_month_or_year() -> None:
    for span_days, unit in ((300, "day"), (2000, "week"), (10_000, "month"), (100_000, "year")):
        start = datetime(1800, 1, 1).date()
        last = start.fromordinal(start.toordinal() + span_days)
        data = validation_data(valid_per_day={start.isoformat(): 2, last.isoformat(): 1})
        page = Elements(html.validation_page(data))
        assert [c["data-unit"] for c in page.all("svg", data_chart="per-day")] == [unit]
        columns = page.all("g", **{"class": "bucket"})
        assert len(columns) <= html.MAX_BARS or unit == "year"
        assert sum(int(c["data-count"]) for c in columns) == 3


def test_no_timestamps_no_chart() -> None:
    page = html.results_page(results_data(records_per_day={}))
    assert "No record has a payload timestamp" in page
    assert 'data-chart="per-day"' not in page
    assert 'data-chart="per-day"' not in html.validation_page(validation_data(valid_per_day={}))


def evil_validation() -> ValidationReport:
    """A validation report with markup in every string an export or a path can put there."""
    return validation_data(
        sources=[EVIL],
        invalid_by_reason={"bad_timestamp": 2},
        examples={"bad_timestamp": [{"source": EVIL, "row": 1}]},
        example_messages={"bad_timestamp": [EVIL]},
        event_names={EVIL: 3},
        embeddable_ids={EVIL: 3},
        rows=6,
        skipped_by_rule={EVIL: 1},
        identifier_alternatives={EVIL: 2, "key user_id, value id": 1},
        valid_per_day={"2024-01-01": 2},
    )


def evil_results() -> ResultsSummary:
    """A results summary with markup in every string a results file can put there."""
    example = ProblemExample(EVIL, 1, EVIL, EVIL, EVIL, EVIL)
    skipped = ProblemExample(EVIL, 1, "skipped", EVIL, None, None)
    return results_data(
        results_path=EVIL,
        by_error=Counter({EVIL: 1, "filtered": 1}),
        stopped=EVIL,
        answered_by_id=Counter({EVIL: 2, "flow_1": 3}),
        not_found_by_id=Counter({EVIL: 2}),
        answered_by_key=Counter({EVIL: 2}),
        not_found_by_key=Counter({EVIL: 2}),
        event_names=Counter({EVIL: 1}),
        embeddable_ids=Counter({EVIL: 1}),
        examples={EVIL: [example], "filtered": [skipped]},
    )


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(lambda: html.validation_page(evil_validation()), id="validation"),
        pytest.param(lambda: html.results_page(evil_results(), retry_command=EVIL), id="results"),
    ],
)
def test_every_value_is_escaped(page: Any) -> None:
    text = page()
    elements = Elements(text)
    assert not [t for t, _ in elements.tags if t in ("script", "img")]
    assert not [a for _, a in elements.tags for name in a if name.startswith("on")]
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&gt;&lt;img" in text
    assert EVIL in " ".join(elements.text)  # shown as text, as it is


def test_the_escaped_values_include_the_skipped_and_alternatives_tables() -> None:
    validation = Page(html.validation_page(evil_validation()))
    assert validation.tables["Rows skipped (not events to send), by rule"][1] == [
        EVIL,
        "1",
        "100.0%",
    ]
    assert validation.tables["Valid rows by identifier alternative"][1] == [EVIL, "2", "66.7%"]
    results = Page(html.results_page(evil_results(), retry_command=EVIL))
    skipped = results.tables["Examples of rows skipped (not events to send)"]
    assert skipped[1] == ["filtered", f"{EVIL}:1", EVIL]


def test_the_page_is_self_contained() -> None:
    for text in (html.validation_page(validation_data()), html.results_page(results_data())):
        assert re.findall(r"""(?:src|href)\s*=""", text) == []
        assert "url(" not in text and "@import" not in text
        assert "Content-Security-Policy" in text and "default-src 'none'" in text
        assert "@media print" in text


@pytest.mark.parametrize(
    ("path", "is_html"),
    [("r.html", True), ("R.HTM", True), ("r.json", False), ("report", False)],
)
def test_the_extension_decides(path: str, is_html: bool) -> None:
    assert html.is_html(path) is is_html


def test_pages_are_written_owner_only_even_over_an_open_file(tmp_path: Path) -> None:
    path = tmp_path / "r.html"
    path.write_text("old")
    path.chmod(0o644)
    html.write_html("<p>new</p>", str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text() == "<p>new</p>"
    fresh = tmp_path / "fresh.html"
    html.write_html("x", str(fresh))
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o600


def test_counter_of_statuses_is_plain_data() -> None:
    # to_dict() is JSON data: no Counter leaks into the per-day statuses.
    days = results_data().to_dict()["records_per_day"]
    assert all(type(c) is dict for c in days.values())


def test_payloads_written_otherwise_are_read_by_json_path() -> None:
    odd = (
        '{"custom_event_name" : "paid", "timestamp" : "2024-03-09T23:00:00Z", "embeddable_id": "f"}'
    )
    summary = ResultsSummary("r.jsonl")
    summary.add_records(records_frame([record(1, "sent"), record(2, "sent", payload=odd)]))
    data = summary.to_dict()
    assert data["records_per_day"] == {"2024-03-01": {"sent": 1}, "2024-03-09": {"sent": 1}}
    assert data["event_names"] == {"paid": 1, "signed_up": 1}
    assert data["embeddable_ids"] == {"f": 1, "flow_1": 1}


def test_pages_of_nothing() -> None:
    empty = html.validation_page(ValidationReport(sources=["h.csv"]))
    assert "No timestamps: there is no chart." in empty and "No invalid rows." in empty
    none = html.results_page(ResultsSummary("r.jsonl"))
    assert "No record has a payload timestamp" in none and "Nothing to retry" in none
    assert "No row came back 404 ENTRY_NOT_FOUND." in none


# --- Skipped rows and identifier alternatives -----------------------------------------------

SKIPPED_SECTION = "Rows skipped (not events to send), by rule"
ALTERNATIVES_SECTION = "Valid rows by identifier alternative"
SKIPPED_EXAMPLES = "Examples of rows skipped (not events to send)"
NO_PAYLOAD = "have no payload, so no timestamp: they are not in this chart."


def skipping_validation() -> ValidationReport:
    """A validation of a mapping with a [filter] and two [[identifier]] alternatives."""
    return validation_data(
        rows=11,
        skipped_by_rule={"exclude event": 3, "since": 2, "dedupe": 1},
        identifier_alternatives={
            "key email, value context.traits.email or properties.email": 2,
            "key user_id, value userId": 1,
        },
    )


def test_skipped_rows_are_counted_apart_from_invalid_ones_by_rule() -> None:
    batch = checked_batch(
        [(None, None, "2024-03-01T12:00:00")] * 3
        + [("bad_timestamp", "cannot read", "2024-03-01T12:00:00")]
        + [(None, None, "2024-03-01T12:00:00")] * 3
    )
    skips = [None] * 4 + ["filtered", "filtered", "duplicate"]
    rules = [None] * 4 + ["exclude event", "since", "dedupe"]
    report = ValidationReport(
        sources=["a.csv"], alternatives=["key email, value email", "key user_id, value id"]
    )
    report.add(
        "a.csv",
        batch.with_columns(
            pl.Series("skip", skips, dtype=pl.String),
            pl.Series("skip_rule", rules, dtype=pl.String),
            pl.Series("identifier_alternative", [0, 1, 1, 0, 0, 0, 0]),
        ),
    )
    data = report.to_dict()
    assert (data["rows"], data["valid"], data["invalid"], data["skipped"]) == (7, 3, 1, 3)
    assert data["skipped_by_rule"] == {"dedupe": 1, "exclude event": 1, "since": 1}
    assert data["identifier_alternatives"] == {
        "key email, value email": 1,
        "key user_id, value id": 2,
    }
    page = Page(html.validation_page(report))
    assert page.cards == [
        ("Rows read", "7", ""),
        ("Valid", "3", "good"),
        ("Invalid", "1", "bad"),
        ("Skipped (not events to send)", "3", ""),
        ("Repairs", "0", ""),
    ]
    assert page.tables[SKIPPED_SECTION][1:] == [
        ["dedupe", "1", "33.3%"],
        ["exclude event", "1", "33.3%"],
        ["since", "1", "33.3%"],
    ]


def test_validation_page_shows_skipped_rows_by_rule_in_a_neutral_tone() -> None:
    text = html.validation_page(skipping_validation())
    page = Page(text)
    assert page.cards == [
        ("Rows read", "11", ""),
        ("Valid", "3", "good"),
        ("Invalid", "2", "bad"),
        ("Skipped (not events to send)", "6", ""),
        ("Repairs", "1", "warn"),
    ]
    assert page.tables[SKIPPED_SECTION] == [
        ["Rule", "Rows", "Share"],
        ["exclude event", "3", "50.0%"],
        ["since", "2", "33.3%"],
        ["dedupe", "1", "16.7%"],
    ]
    # Skipped rows are not invalid: the reasons chart still counts the invalid rows only.
    elements = Elements(text)
    assert counts(elements.all("g", **{"class": "bar"}), "reason") == {
        "bad_timestamp": 1,
        "bad_event_name": 1,
    }
    assert "they are not invalid, and send makes no request for them." in "".join(elements.text)
    headings = page.headings
    assert headings.index("Invalid rows by reason") < headings.index(SKIPPED_SECTION)


def test_validation_page_shows_identifier_alternatives_when_there_are_two_or_more() -> None:
    page = Page(html.validation_page(skipping_validation()))
    assert page.tables[ALTERNATIVES_SECTION] == [
        ["Alternative", "Valid rows", "Share"],
        ["key email, value context.traits.email or properties.email", "2", "66.7%"],
        ["key user_id, value userId", "1", "33.3%"],
    ]
    one = Page(html.validation_page(validation_data()))
    assert ALTERNATIVES_SECTION not in one.headings


def test_validation_page_without_skipped_rows_is_as_before() -> None:
    for data in (validation_data(), ValidationReport(sources=["h.csv"])):
        text = html.validation_page(data)
        page = Page(text)
        assert [label for label, _, _ in page.cards] == [
            "Rows read",
            "Valid",
            "Invalid",
            "Repairs",
        ]
        assert SKIPPED_SECTION not in page.headings
        assert ALTERNATIVES_SECTION not in page.headings
        assert "skipped" not in text.lower()


def skipping_results() -> ResultsSummary:
    """A results summary of a run whose mapping skipped three rows."""
    summary = ResultsSummary("r.jsonl")
    skipped = {"status": "skipped", "attempts": 0, "payload": None}
    summary.add_records(
        records_frame(
            [
                record(1, "sent"),
                record(2, "invalid", error="bad_timestamp", message="cannot read", attempts=0),
                record(3, **skipped, error="filtered", message="exclude event = '$identify'"),
                record(4, **skipped, error="filtered", message="before since 2023-01-01"),
                record(5, **skipped, error="duplicate", message="same messageId as row 1"),
            ]
        )
    )
    return summary


def test_results_page_shows_skipped_rows_apart_in_a_neutral_colour() -> None:
    summary = skipping_results()
    data = summary.to_dict()
    assert data["by_status"]["skipped"] == 3
    assert data["by_error"] == {"filtered": 2, "bad_timestamp": 1, "duplicate": 1}
    text = html.results_page(summary)
    page, elements = Page(text), Elements(text)
    assert page.cards[:8] == [
        ("Rows", "5", ""),
        ("Sent", "1", "good"),
        ("Not found", "0", ""),
        ("Rejected", "0", ""),
        ("Failed", "0", ""),
        ("Invalid", "1", "bad"),
        ("Skipped (not events to send)", "3", ""),
        ("Requests", "1", ""),
    ]
    bars = [a for a in elements.all("g", **{"class": "bar"}) if "data-status" in a]
    assert counts(bars, "status") == data["by_status"]
    assert bar_classes(elements, "status")["skipped"] == "s-skip"
    assert bar_classes(elements, "error") == {
        "filtered": "s-skip",
        "bad_timestamp": "s-grey",
        "duplicate": "s-skip",
    }
    notes = " ".join(elements.text)
    assert f"1 invalid rows {NO_PAYLOAD}" in notes
    assert f"3 skipped rows (not events to send) {NO_PAYLOAD}" in notes
    assert "Nothing to retry: every row was sent, is invalid or was skipped." in notes


def test_results_page_gives_skipped_examples_apart_from_problems() -> None:
    page = Page(html.results_page(skipping_results()))
    assert page.tables["Examples of each problem"][1:] == [
        ["bad_timestamp", "invalid", "a.csv:2", "", "cannot read"],
    ]
    assert page.tables[SKIPPED_EXAMPLES] == [
        ["Why", "Where", "Message"],
        ["filtered", "a.csv:3", "exclude event = '$identify'"],
        ["filtered", "a.csv:4", "before since 2023-01-01"],
        ["duplicate", "a.csv:5", "same messageId as row 1"],
    ]
    only_skipped = skipping_results()
    only_skipped.examples.pop("bad_timestamp")
    assert "No problems: every record is sent or skipped." in html.results_page(only_skipped)


def test_results_page_without_skipped_rows_is_as_before() -> None:
    text = html.results_page(results_data())
    page = Page(text)
    assert ("Skipped (not events to send)", "0", "") in page.cards
    assert SKIPPED_EXAMPLES not in page.headings
    assert "skipped rows" not in text
    none = html.results_page(ResultsSummary("r.jsonl"))
    assert "No problems: every record is sent." in none


def test_a_skipped_series_in_the_time_chart_is_drawn_and_named() -> None:
    # Skipped records have no payload today; one that had would still draw, in its colour.
    data = results_data(records_per_day={"2024-03-01": Counter({"sent": 2, "skipped": 1})})
    elements = Elements(html.results_page(data))
    assert [(r["class"], r["data-count"]) for r in elements.all("rect", data_series="skipped")] == [
        ("s-skip", "1")
    ]
    assert "skipped (not events to send): 1" in elements.text
