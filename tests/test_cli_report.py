"""``backfill report``: the summary of a results file, as text and as JSON, read in batches."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

import backfill.inputs
import backfill.results
from backfill.commands import retry_command
from backfill.results import read_results
from backfill.summary import summarise
from backfill.text import summary_text

Run = Callable[..., Result]
Factory = Callable[..., Any]

SAMPLE = Path(__file__).parent.parent / "sample_data"
SAMPLE_RESULTS = "events.results.jsonl"
SEND = ("send", "events.csv", "-m", "mapping.toml", "-o", "r.jsonl")
# What a results file says about itself, whoever reads it (timing aside).
SAME = ("rows", "by_status", "by_error", "requests", "retries", "diagnosis", "retry_command")


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL results file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def sample_results(workdir: Path, run: Run) -> dict[str, Any]:
    """The README's sample run, in the working directory; its printed summary as data."""
    for name in ("events.csv", "mapping.toml", "users.csv"):
        shutil.copy(SAMPLE / name, workdir / name)
    result = run(
        "send", "events.csv", "-m", "mapping.toml", "--sandbox", "--sandbox-users", "users.csv",
        "--json", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert (workdir / SAMPLE_RESULTS).exists()
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_report_of_the_sample_run_names_flow_c3d4(
    sample_results: dict[str, Any], workdir: Path, run: Run
) -> None:
    records = read_records(workdir / SAMPLE_RESULTS)
    statuses = Counter(r["status"] for r in records)
    missing = [r for r in records if r["status"] == "not_found"]
    c3d4 = sum('"embeddable_id":"flow_c3d4"' in r["payload"] for r in missing)
    assert c3d4 > 1

    result = run("report", SAMPLE_RESULTS)

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"Rows with a final record: {len(records)}"
    for status, count in statuses.items():
        assert f"  {status:<10} {count:>10,}" in lines
    assert "By error:" in lines
    assert ["ENTRY_NOT_FOUND", f"{len(missing):,}"] in [line.split() for line in lines]
    assert (
        f"404 diagnosis: every one of the {c3d4} rows with embeddable id 'flow_c3d4' was not"
        " found: that embeddable id is the likely mistake (or its users never gave this"
        " identifier)"
    ) in lines
    assert f"Results: {SAMPLE_RESULTS}" in lines
    assert lines[-1] == (
        "Re-run what did not go through:"
        " backfill retry events.results.jsonl -o events.results.retry.jsonl"
    )


def test_report_json_is_the_same_data_as_the_text_and_the_send_summary(
    sample_results: dict[str, Any], workdir: Path, run: Run
) -> None:
    text = run("report", SAMPLE_RESULTS)
    as_json = run("report", SAMPLE_RESULTS, "--json")

    assert (text.exit_code, as_json.exit_code) == (0, 0)
    data = json.loads(as_json.stdout)
    summary = summarise(str(workdir / SAMPLE_RESULTS))
    summary.results_path = SAMPLE_RESULTS  # as the command was given it
    assert summary_text(summary, retry_command=retry_command(SAMPLE_RESULTS)) + "\n" == text.stdout
    records = read_records(workdir / SAMPLE_RESULTS)
    assert data["by_status"] == {
        s: sum(r["status"] == s for r in records)
        for s in ("sent", "not_found", "rejected", "failed", "invalid", "skipped")
    }
    assert data["by_error"] == dict(Counter(r["error"] for r in records if r["error"]))
    assert data["requests"] == sum(r["attempts"] for r in records)
    assert data["results"] == SAMPLE_RESULTS
    assert any("flow_c3d4" in line for line in data["diagnosis"])
    for field in SAME:
        assert data[field] == sample_results[field], field


def test_report_reads_in_batches_and_sums_the_same(
    sample_results: dict[str, Any], workdir: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = run("report", SAMPLE_RESULTS, "--json")
    monkeypatch.setattr(backfill.inputs, "BATCH_BYTES", 4096)
    monkeypatch.setattr(backfill.results, "READ_BLOCK_BYTES", 4096)  # JSONL files this tool wrote
    assert len(list(read_results(SAMPLE_RESULTS))) > 10

    batched = run("report", SAMPLE_RESULTS, "--json")

    assert (whole.exit_code, batched.exit_code) == (0, 0)
    assert json.loads(batched.stdout) == json.loads(whole.stdout)


def test_report_of_a_run_that_sent_everything_has_no_retry_command(
    export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(6, bad=(2,))
    assert run(*SEND, *sandbox_server().target()).exit_code == 1

    result = run("report", "r.jsonl", "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["by_status"]["sent"] == 5
    assert data["by_status"]["invalid"] == 1
    assert data["by_error"] == {"bad_timestamp": 1}
    assert (data["diagnosis"], data["retry_command"]) == ([], None)


def test_report_of_an_empty_results_file(write: Any, run: Run) -> None:
    write("r.jsonl", "")

    result = run("report", "r.jsonl", "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["rows"], data["requests"], data["retry_command"]) == (0, 0, None)


def test_report_of_a_csv_results_file_is_the_same_as_of_jsonl(
    export: Factory, users: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(12, bad=(3,))
    server = sandbox_server(users=users(range(1, 10)))
    for results in ("r.jsonl", "r.csv"):
        args = ("send", "events.csv", "-m", "mapping.toml", "-o", results, *server.target())
        assert run(*args).exit_code == 1

    jsonl, csv = (json.loads(run("report", name, "--json").stdout) for name in ("r.jsonl", "r.csv"))

    assert csv["by_error"] == {"ENTRY_NOT_FOUND": 3, "bad_timestamp": 1}
    for field in ("rows", "by_status", "by_error", "requests", "diagnosis"):
        assert csv[field] == jsonl[field], field


def corrupt(path: Path, index: int, line: bytes) -> int:
    """Put a broken line into a results file at ``index``; its 1-based line number."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[index] = line
    path.write_bytes(b"".join(lines))
    return index + 1 if index >= 0 else len(lines)


@pytest.mark.parametrize(
    ("results", "index", "line", "why"),
    [
        pytest.param(
            "r.jsonl", -1, b'{"source":"events.csv","row":6,"sta', "not valid JSON",
            id="jsonl-truncated-last",
        ),
        pytest.param("r.jsonl", 1, b"{oops\n", "not valid JSON", id="jsonl-broken-middle"),
        pytest.param("r.jsonl", 1, b'"row"\n', "not a JSON object", id="jsonl-not-an-object"),
        pytest.param(
            "r.jsonl", 3, b'{"source":"events.csv","row":4,"status":"done"}\n',
            "missing source, row or status", id="jsonl-unknown-status",
        ),
        pytest.param(
            "r.jsonl", 3, b'{"row":4,"status":"sent"}\n', "missing source, row or status",
            id="jsonl-no-source",
        ),
        pytest.param(
            "r.csv", -1, b'events.csv,6,sent,200,,,1,entry_x,"{""embeddable_id',
            "a quote opened in this row is never closed", id="csv-truncated-last",
        ),
        pytest.param(
            "r.csv", 2, b"events.csv,2,sent\n", "expected 9 fields, found 3",
            id="csv-short-middle",
        ),
    ],
)  # fmt: skip
def test_report_of_a_corrupt_results_file_names_the_line(
    results: str,
    index: int,
    line: bytes,
    why: str,
    workdir: Path,
    export: Factory,
    sandbox_server: Factory,
    run: Run,
) -> None:
    export(6)
    args = ("send", "events.csv", "-m", "mapping.toml", "-o", results)
    assert run(*args, *sandbox_server().target()).exit_code == 0
    number = corrupt(workdir / results, index, line)

    result = run("report", results)

    assert (result.exit_code, result.output) == (
        2,
        f"error: {results}: line {number} is not a results record ({why})\n",
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param("nope.jsonl", None, "nope.jsonl: no such file", id="missing"),
        pytest.param(
            "r.csv", "source,row,status\nevents.csv,1,sent\n",
            "r.csv: not a results file (no column http_status)", id="csv-without-columns",
        ),
        pytest.param(
            "r.txt", "source,row\n", "r.txt: line 1 is not a results record (not a JSON object)",
            id="other-extensions-are-jsonl",
        ),
    ],
)  # fmt: skip
def test_report_refuses_what_is_not_a_results_file(
    name: str, content: str | None, message: str, write: Any, run: Run
) -> None:
    if content is not None:
        write(name, content)

    result = run("report", name)

    assert (result.exit_code, result.output) == (2, f"error: {message}\n")


def test_the_report_of_a_retry_diagnoses_as_the_retry_summary_did(
    sample_results: dict[str, Any], run: Run
) -> None:
    # Only 404s are retried and none of them is found again: no embeddable id or key had a row
    # sent, so the data cannot single one out, whatever the first run showed.
    retry = run(
        "retry", SAMPLE_RESULTS, "-o", "r2.jsonl", "--sandbox", "--sandbox-users", "users.csv",
        "--json", "--no-progress",
    )  # fmt: skip
    assert retry.exit_code == 1, retry.output
    summary = json.loads(retry.stdout)

    report = json.loads(run("report", "r2.jsonl", "--json").stdout)

    assert report["by_status"]["not_found"] == report["rows"] == 98
    for field in ("diagnosis", "not_found_by_embeddable_id", "not_found_by_identifier_key"):
        assert report[field] == summary[field], field
    assert report["diagnosis"] == [
        "404 ENTRY_NOT_FOUND: no user entry matches these identifiers for their embeddable id;"
        " the users may not exist yet (retry them later) or gave another identifier, or the"
        " value is wrong",
        "no row was sent, so a wrong embeddable id or identifier key cannot be ruled out: check"
        " embeddable ids 'flow_c3d4', 'flow_9f2c', 'flow_a1b2'; identifier key 'email'",
    ]
    tables = report["not_found_by_embeddable_id"] + report["not_found_by_identifier_key"]
    assert {e["likely_cause"] for e in tables} == {
        "no user entry found and nothing else sent to compare with: the users may not exist"
        " yet, or the embeddable id, identifier key or value is wrong"
    }
