"""Rows that are not events to send (filters, duplicates), identifier alternatives, event
names renamed and stripped, epoch units, and props merged from several JSON sources."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Run, Write, read_records

MAPPING = """\
[fields]
embeddable_id = { value = "flow_1" }
timestamp = "time"

[fields.custom_event_name]
column = "event"
snake_case = "convert"
rename = { "$pageview" = "page_viewed", "[Amplitude] Page Viewed" = "page_viewed" }
strip_prefix = ["$", "[Amplitude] "]

[[identifier]]
key = { value = "email" }
value = { column = ["traits.email", "email"], normalize = "lowercase" }

[[identifier]]
key = { value = "user_id" }
value = { column = "userId", type = "number" }
"""


def export(write: Write, rows: list[dict[str, Any]], name: str = "e.jsonl") -> str:
    """A JSON Lines export of the given rows, each with a userId (null when not given)."""
    return write(name, "".join(json.dumps({"userId": None, **r}) + "\n" for r in rows))


def sent(run: Run, *args: str) -> tuple[int, list[dict[str, Any]]]:
    """send --sandbox the inputs with m.toml: the exit code and the records by row."""
    result = run("send", *args, "-m", "m.toml", "--sandbox", "-o", "r.jsonl", "--overwrite")
    records = sorted(read_records("r.jsonl"), key=lambda r: (r["source"], r["row"]))
    return result.exit_code, records


def body(record: dict[str, Any]) -> dict[str, Any]:
    """A record's payload, with its props decoded."""
    payload = json.loads(record["payload"])
    payload["custom_event_props"] = json.loads(payload["custom_event_props"])
    return payload


def test_filtered_rows_are_skipped_before_validation_and_cost_no_request(
    write: Write, run: Run
) -> None:
    rows = [
        {"type": "track", "event": "Signed Up", "time": "2024-03-01T12:00:00Z", "email": "a@x"},
        {"type": "identify", "time": "2024-03-01T12:00:00Z"},  # no email, no event: skipped
        {"type": "track", "event": "$identify", "time": "2024-03-01T12:00:00Z", "email": "b@x"},
        {"type": "track", "event": "Bad Name!", "time": "2019-12-31T23:59:59Z", "email": "c@x"},
        {"type": "track", "event": "late", "time": "2024-01-01T00:00:00Z", "email": "d@x"},
        {"type": "track", "event": "Bad Name!", "time": "2023-06-01T00:00:00Z", "email": "e@x"},
    ]
    export(write, rows)
    filters = """
[filter]
include = { type = ["track"] }
exclude = { event = ["$identify", "$autocapture"] }
since = "2020-01-01"
until = "2024-01-01T00:00:00Z"
"""
    write("m.toml", MAPPING + filters)

    code, records = sent(run, "e.jsonl")

    assert code == 1  # row 6 is invalid; the skipped rows do not make it 1
    assert [(r["status"], r["error"], r["message"], r["attempts"]) for r in records] == [
        ("skipped", "filtered", "not before until 2024-01-01T00:00:00Z", 0),
        ("skipped", "filtered", "include type: 'identify' is not listed", 0),
        ("skipped", "filtered", "exclude event = '$identify'", 0),
        ("skipped", "filtered", "before since 2020-01-01", 0),  # whatever else is wrong
        ("skipped", "filtered", "not before until 2024-01-01T00:00:00Z", 0),
        ("invalid", "bad_event_name", "column 'event': 'Bad Name!' cannot be made snake_case", 0),
    ]
    assert all(r["http_status"] is None and r["payload"] is None for r in records)

    report = json.loads(run("validate", "e.jsonl", "-m", "m.toml", "--json").output)
    assert (report["rows"], report["valid"], report["invalid"], report["skipped"]) == (6, 0, 1, 5)
    assert report["skipped_by_rule"] == {
        "until": 2,
        "exclude event": 1,
        "include type": 1,
        "since": 1,
    }


def test_only_skipped_and_sent_rows_exit_0(write: Write, run: Run) -> None:
    rows = [
        {"event": "a", "time": "2024-03-01T12:00:00Z", "email": "a@x"},
        {"event": "$identify", "time": "2024-03-01T12:00:00Z", "email": "a@x"},
    ]
    export(write, rows)
    write("m.toml", MAPPING + '[filter]\nexclude = { event = ["$identify"] }\n')
    code, records = sent(run, "e.jsonl")
    assert code == 0
    assert [r["status"] for r in records] == ["sent", "skipped"]


def test_a_malformed_row_stays_invalid_whatever_the_filter(write: Write, run: Run) -> None:
    line = '{"event": "a", "time": "2024-03-01T12:00:00Z", "email": "a@x", "userId": null}'
    write("e.jsonl", line + "\n{not json\n")
    write("m.toml", MAPPING + '[filter]\ninclude = { event = ["a"] }\n')
    _code, records = sent(run, "e.jsonl")
    assert [(r["status"], r["error"]) for r in records] == [
        ("sent", None),
        ("invalid", "malformed_row"),
    ]


def test_duplicates_are_skipped_naming_the_first_row(write: Write, run: Run) -> None:
    one = {"event": "a", "time": "2024-03-01T12:00:00Z", "email": "a@x"}
    export(write, [{**one, "id": "k1"}, {**one, "id": "k2"}, {**one, "id": "k1"}, {**one}])
    export(write, [{**one, "id": "k2"}], name="more.jsonl")
    write("m.toml", MAPPING + '[filter]\ndedupe = "id"\n')

    code, records = sent(run, "e.jsonl", "more.jsonl")

    assert code == 0
    assert [(r["source"], r["row"], r["status"], r["message"]) for r in records] == [
        ("e.jsonl", 1, "sent", None),
        ("e.jsonl", 2, "sent", None),
        ("e.jsonl", 3, "skipped", "same id as row 1"),
        ("e.jsonl", 4, "sent", None),  # no key: never a duplicate
        ("more.jsonl", 1, "skipped", "same id as e.jsonl row 2"),
    ]
    assert {r["error"] for r in records if r["status"] == "skipped"} == {"duplicate"}


def test_dedupe_on_the_payload(write: Write, run: Run) -> None:
    one = {"event": "a", "time": "2024-03-01T12:00:00Z", "email": "a@x"}
    export(write, [one, {**one, "email": "A@X"}, {**one, "email": "b@x"}])
    write("m.toml", MAPPING + '[filter]\ndedupe = "payload"\n')
    _code, records = sent(run, "e.jsonl")
    assert [r["message"] for r in records] == [None, "same payload as row 1", None]
    report = json.loads(run("validate", "e.jsonl", "-m", "m.toml", "--json").output)
    assert report["skipped_by_rule"] == {"dedupe": 1}


def test_a_resumed_run_skips_the_duplicates_the_first_run_would_have(
    write: Write, run: Run
) -> None:
    one = {"event": "a", "time": "2024-03-01T12:00:00Z", "email": "a@x"}
    export(write, [{**one, "id": f"k{i % 3}"} for i in range(9)])
    write("m.toml", MAPPING + '[filter]\ndedupe = "id"\n')
    args = ("send", "e.jsonl", "-m", "m.toml", "--sandbox", "-o", "r.jsonl")
    assert run(*args, "--limit", "2").exit_code == 0

    assert run(*args, "--resume").exit_code == 0

    records = sorted(read_records("r.jsonl"), key=lambda r: r["row"])
    assert [r["status"] for r in records] == ["sent"] * 3 + ["skipped"] * 6
    assert records[3]["message"] == "same id as row 1"


def test_identifier_alternatives_take_the_first_with_a_value(write: Write, run: Run) -> None:
    rows = [
        {"event": "a", "time": "2024-03-01T12:00:00Z", "traits": {"email": "A@X"}, "userId": 7},
        {"event": "a", "time": "2024-03-01T12:00:00Z", "email": "", "userId": 8},
        {"event": "a", "time": "2024-03-01T12:00:00Z", "userId": "x9"},
        {"event": "a", "time": "2024-03-01T12:00:00Z"},
    ]
    export(write, rows)
    write("m.toml", MAPPING)
    _code, records = sent(run, "e.jsonl")
    identifiers = [body(r)["identifiers"] if r["payload"] else r["message"] for r in records]
    assert identifiers == [
        [{"key": "email", "value": '"a@x"'}],
        [{"key": "user_id", "value": "8"}],
        "column 'userId': 'x9' is not valid number",
        "every identifier alternative is empty (column 'traits.email or email'; column 'userId')",
    ]
    report = json.loads(run("validate", "e.jsonl", "-m", "m.toml", "--json").output)
    assert report["identifier_alternatives"] == {
        "key email, value traits.email or email": 1,
        "key user_id, value userId": 1,
    }


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("$pageview", "page_viewed"),  # renamed first, on the raw name
        ("[Amplitude] Page Viewed", "page_viewed"),
        ("$mp_web_page_view", "mp_web_page_view"),  # then the prefix stripped
        ("[Amplitude] Start Session", "start_session"),  # then converted
        ("Signed Up", "signed_up"),  # no rule: converted
    ],
)
def test_event_names_are_renamed_stripped_then_converted(
    raw: str, name: str, write: Write, run: Run
) -> None:
    export(write, [{"event": raw, "time": "2024-03-01T12:00:00Z", "email": "a@x"}])
    write("m.toml", MAPPING)
    _code, [record] = sent(run, "e.jsonl")
    assert body(record)["custom_event_name"] == name


@pytest.mark.parametrize(
    ("time", "unit", "expected"),
    [
        ("1709296496", None, "2024-03-01T12:34:56.000Z"),
        ("1709296496789", None, "2024-03-01T12:34:56.789Z"),
        ("1709296496789999", None, "2024-03-01T12:34:56.789Z"),  # microseconds, truncated
        ("1709296496789999999", None, "2024-03-01T12:34:56.789Z"),  # nanoseconds
        ("170929649", "s", "1975-06-02T08:27:29.000Z"),
        ("1709296496789", "us", "1970-01-20T18:48:16.496Z"),
    ],
)
def test_epoch_units_by_digits_or_as_the_mapping_says(
    time: str, unit: str | None, expected: str, write: Write, run: Run
) -> None:
    export(write, [{"event": "a", "time": time, "email": "a@x"}])
    timestamp = '"time"' if unit is None else f'{{ column = "time", unit = "{unit}" }}'
    write("m.toml", MAPPING.replace('timestamp = "time"', f"timestamp = {timestamp}"))
    _code, [record] = sent(run, "e.jsonl")
    assert body(record)["timestamp"] == expected


def test_props_merge_json_sources_ga4_pairs_drop_and_nulls(write: Write, run: Run) -> None:
    params = [
        {"key": "value", "value": {"string_value": None, "int_value": None, "double_value": 9.5}},
        {"key": "count", "value": {"int_value": "3"}},
        {"key": "currency", "value": {"string_value": "EUR"}},
        {"key": "coupon", "value": "FROM_PARAMS"},
    ]
    rows = [
        {
            "event": "a",
            "time": "2024-03-01T12:00:00Z",
            "email": "a@x",
            "event_params": params,
            "properties": json.dumps({"$user_id": "pii", "currency": "USD", "n": None, "x": 1}),
            "coupon": "MAPPED",
        },
        {"event": "a", "time": "2024-03-01T12:00:00Z", "email": "a@x", "properties": "[1]"},
    ]
    export(write, rows)
    props = """
[props]
columns = ["coupon"]
json_column = ["event_params", "properties"]
drop = ["$user_id"]
"""
    write("m.toml", MAPPING + props)
    _code, records = sent(run, "e.jsonl")
    assert body(records[0])["custom_event_props"] == {
        "value": 9.5,
        "count": 3,
        "currency": "EUR",  # the earlier source wins
        "x": 1,
        "coupon": "MAPPED",  # a mapped column wins over all
    }
    assert (records[1]["status"], records[1]["error"]) == ("invalid", "bad_props")
    assert records[1]["message"] == "column 'properties': '[1]' is not a JSON object"
