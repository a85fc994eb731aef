"""Real exports of six analytics tools, validated and sent with a hand-written mapping each.

``tests/data/exports/<tool>/`` holds an export in the tool's documented shape (awkward parts
included), its ``mapping.toml`` and ``expected.json``: for every row, the outcome worked out by
hand from the mapping rules: ``skipped`` (with the rule), ``invalid`` (the reason) or the
exact payload fields. ``validate`` must count the rows as expected, and ``send --sandbox``
must give every row exactly its expected record, field by field.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run, read_records

EXPORTS = Path(__file__).parent / "data" / "exports"
TOOLS = ["mixpanel", "amplitude", "segment", "posthog", "ga4", "heap"]


def expected(tool: str) -> dict[str, Any]:
    """The hand-worked outcome of every row of a tool's export."""
    doc: dict[str, Any] = json.loads((EXPORTS / tool / "expected.json").read_text("utf-8"))
    return doc


def copy_export(tool: str, workdir: Path) -> dict[str, Any]:
    """The export, its mapping and expected.json in the current directory."""
    shutil.copytree(EXPORTS / tool, workdir, dirs_exist_ok=True)
    return expected(tool)


def by_status(doc: dict[str, Any], status: str) -> list[dict[str, Any]]:
    """The expected rows of one status."""
    return [r for r in doc["rows"] if r["status"] == status]


def write_users(doc: dict[str, Any], path: Path) -> None:
    """A sandbox users file with exactly the identifiers the sent rows must carry."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["embeddable_id", "key", "value"])
        seen = set()
        for row in by_status(doc, "sent"):
            ident = row["identifier"]
            entry = (doc["embeddable_id"], ident["key"], json.loads(ident["value"]))
            if entry not in seen:
                seen.add(entry)
                writer.writerow(entry)


@pytest.mark.parametrize("tool", TOOLS)
def test_the_expected_outcomes_cover_every_row(tool: str) -> None:
    # The fixture itself: one outcome per line (JSONL) or record (CSV), numbered from 1.
    doc = expected(tool)
    source = EXPORTS / tool / doc["input"]
    with source.open(newline="", encoding="utf-8") as f:
        records = len(list(csv.reader(f))) - 1 if source.suffix == ".csv" else None
    if records is None:
        records = len(source.read_text("utf-8").splitlines())
    assert [r["row"] for r in doc["rows"]] == list(range(1, records + 1))
    assert {r["status"] for r in doc["rows"]} <= {"sent", "skipped", "invalid"}


@pytest.mark.parametrize("tool", TOOLS)
def test_validate_counts_every_row(tool: str, workdir: Path, run: Run) -> None:
    doc = copy_export(tool, workdir)
    result = run("validate", doc["input"], "-m", "mapping.toml", "--report", "report.json")
    invalid = by_status(doc, "invalid")
    assert result.exit_code == (1 if invalid else 0), result.output
    report = json.loads((workdir / "report.json").read_text("utf-8"))
    counts = {key: report[key] for key in ("rows", "valid", "invalid", "skipped")}
    assert counts == {
        "rows": len(doc["rows"]),
        "valid": len(by_status(doc, "sent")),
        "invalid": len(invalid),
        "skipped": len(by_status(doc, "skipped")),
    }
    assert report["invalid_by_reason"] == dict(Counter(r["error"] for r in invalid))
    assert sum(report["skipped_by_rule"].values()) == counts["skipped"]


@pytest.mark.parametrize("tool", TOOLS)
def test_send_gives_every_row_its_expected_record(tool: str, workdir: Path, run: Run) -> None:
    doc = copy_export(tool, workdir)
    write_users(doc, workdir / "users.csv")
    result = run(
        "send", doc["input"], "-m", "mapping.toml", "-o", "results.jsonl", "--no-progress",
        "--sandbox", "--sandbox-users", "users.csv",
    )  # fmt: skip
    assert result.exit_code == (1 if by_status(doc, "invalid") else 0), result.output
    records = read_records(workdir / "results.jsonl")
    assert sorted(r["row"] for r in records) == [r["row"] for r in doc["rows"]]
    found = {r["row"]: r for r in records}
    problems = [
        f"row {want['row']}: {problem}"
        for want in doc["rows"]
        for problem in differences(want, found[want["row"]], doc["embeddable_id"])
    ]
    assert not problems, "\n".join(problems)


def differences(want: dict[str, Any], record: dict[str, Any], embeddable: str) -> list[str]:
    """How a results record differs from the expected outcome of its row, field by field."""
    if record["status"] != want["status"]:
        got = f"{record['status']} ({record['error']}: {record['message']})"
        return [f"status {got}, expected {want['status']} ({want.get('error', '')})"]
    if want["status"] == "sent":
        return payload_differences(want, json.loads(record["payload"]), embeddable)
    found = []
    if record["error"] != want["error"]:
        found.append(f"error {record['error']!r}, expected {want['error']!r}")
    if want["status"] == "skipped":
        found += skip_differences(want, record)
    return found


def skip_differences(want: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """A skipped row names its rule and got no request."""
    found = []
    message = record["message"] or ""
    if "message" in want and message != want["message"]:
        found.append(f"message {message!r}, expected {want['message']!r}")
    if "message_contains" in want and want["message_contains"] not in message:
        found.append(f"message {message!r} does not name {want['message_contains']!r}")
    if record["attempts"] != 0 or record["http_status"] not in (None, ""):
        found.append(f"a request was made: {record['attempts']} attempts")
    return found


def payload_differences(want: dict[str, Any], body: dict[str, Any], embeddable: str) -> list[str]:
    """The payload sent, against the expected fields."""
    fields = {
        "embeddable_id": embeddable,
        "timestamp": want["timestamp"],
        "custom_event_name": want["custom_event_name"],
        "identifiers": [want["identifier"]],
    }
    found = [
        f"{name} {body.get(name)!r}, expected {value!r}"
        for name, value in fields.items()
        if body.get(name) != value
    ]
    props_text = body.get("custom_event_props")
    if not isinstance(props_text, str):
        return [*found, f"custom_event_props is not JSON text: {props_text!r}"]
    props = json.loads(props_text)
    want_props = want["custom_event_props"]
    for key in sorted(set(props) | set(want_props)):
        if props.get(key, "<absent>") != want_props.get(key, "<absent>"):
            got, expect = props.get(key, "<absent>"), want_props.get(key, "<absent>")
            found.append(f"custom_event_props[{key!r}] {got!r}, expected {expect!r}")
    return found
