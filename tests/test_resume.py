"""``send --resume``: a killed or stopped run continues to exactly one final record per row.

The kills are real: a ``backfill send`` subprocess gets SIGKILL while it sends to a sandbox
subprocess that logs every event it accepts, so the test sees what reached the server.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

import backfill.runs

Run = Callable[..., Result]
Factory = Callable[..., Any]

KILL_ROWS = 1500
KILL_BAD = (500, 800, 1100, 1400)  # invalid rows: final records the sender writes itself
CONCURRENCY = 8
SEND = ("send", "events.csv", "-m", "mapping.toml", "-o", "r.jsonl")
DISCARDED = "note: {}: discarded an unfinished last line; its row is sent again\n"


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL or CSV results file."""
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def one_per_row(path: Path, rows: int) -> dict[int, dict[str, Any]]:
    """The records by row, checking there is exactly one per input row."""
    records = read_records(path)
    keys = Counter((r["source"], int(r["row"])) for r in records)
    assert [k for k, n in keys.items() if n > 1] == []
    assert sorted(keys) == [("events.csv", row) for row in range(1, rows + 1)]
    return {int(r["row"]): r for r in records}


def event_row(event: dict[str, Any]) -> int:
    """The export row an event received by the sandbox came from (its user is u{row})."""
    email = json.loads(event["identifiers"][0]["value"])
    return int(email.removeprefix("u").split("@")[0])


def line_count(path: Path) -> int:
    """Whole lines in a file so far (0 if it does not exist yet)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def run_record_written(path: Path) -> bool:
    """Whether the run record is whole (a kill while it is written is tested on its own)."""
    return path.exists() and path.read_bytes().endswith(b"}\n")


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll a condition on files another process writes, until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def cut_last_line(path: Path) -> None:
    """Leave the last record half written, as a process killed inside its write would."""
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: start + (len(data) - start) // 2])


# When to kill: each gets the working directory and the sandbox subprocess.
KILL_POINTS = [
    pytest.param(
        lambda work, server: run_record_written(work / "r.jsonl.run.json"),
        id="results-file-empty",
    ),
    pytest.param(
        lambda work, server: line_count(server.received) > 0, id="first-requests-in-flight"
    ),
    pytest.param(
        lambda work, server: line_count(work / "r.jsonl") >= KILL_ROWS * 0.4, id="mid-run"
    ),
    pytest.param(
        lambda work, server: line_count(work / "r.jsonl") >= KILL_ROWS * 0.9, id="last-batch"
    ),
]


@pytest.mark.parametrize("kill_when", KILL_POINTS)
def test_a_send_killed_anywhere_resumes_to_one_record_per_row(
    kill_when: Callable[[Path, Any], bool],
    workdir: Path,
    export: Factory,
    sandbox_subprocess: Factory,
    run: Run,
) -> None:
    export(KILL_ROWS, bad=KILL_BAD)
    server = sandbox_subprocess("--delay", "0.01")
    args = [*SEND, *server.target(), "--concurrency", str(CONCURRENCY)]
    with (workdir / "send.err").open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "backfill", *args], stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        wait_for(lambda: kill_when(workdir, server) or process.poll() is not None)
        assert process.poll() is None, (workdir / "send.err").read_text()
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    results = workdir / "r.jsonl"
    before = read_records(results) if results.exists() else []
    assert len(before) < KILL_ROWS
    sent_before = sum(r["status"] == "sent" for r in before)

    resumed = run(*args, "--resume", "--json")

    assert resumed.exit_code == 1, resumed.output  # the invalid rows
    assert resumed.stderr == ""  # no line was left half written
    summary = json.loads(resumed.stdout)
    assert summary["rows"] == KILL_ROWS
    assert summary["requests"] == KILL_ROWS - len(KILL_BAD) - sent_before
    records = one_per_row(results, KILL_ROWS)
    assert {row for row, r in records.items() if r["status"] == "invalid"} == set(KILL_BAD)
    assert Counter(r["status"] for r in records.values()) == {
        "sent": KILL_ROWS - len(KILL_BAD),
        "invalid": len(KILL_BAD),
    }
    received = Counter(event_row(e) for e in server.events())
    assert set(received) == set(range(1, KILL_ROWS + 1)) - set(KILL_BAD)
    assert received.total() - len(received) <= CONCURRENCY  # only the requests in flight


@pytest.mark.parametrize("results", ["r.jsonl", "r.csv"])
def test_a_half_written_last_line_is_discarded_and_its_row_sent_again(
    results: str, workdir: Path, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(30)
    server = sandbox_server()
    args = ["send", "events.csv", "-m", "mapping.toml", "-o", results, *server.target()]
    assert run(*args).exit_code == 0
    path = workdir / results
    lost = int(read_records(path)[-1]["row"])
    cut_last_line(path)
    received_before = len(server.state.received)

    resumed = run(*args, "--resume")

    assert resumed.exit_code == 0, resumed.output
    assert resumed.stderr == DISCARDED.format(results)
    assert [event_row(e) for e in server.state.received[received_before:]] == [lost]
    records = one_per_row(path, 30)
    assert {r["status"] for r in records.values()} == {"sent"}


def test_a_resume_of_a_partial_run_sends_only_the_rows_without_a_record(
    workdir: Path, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(40, bad=(3,))
    server = sandbox_server()
    first = run(*SEND, *server.target(), "--limit", "10")
    assert first.exit_code == 1, first.output
    assert len(read_records(workdir / "r.jsonl")) == 10

    resumed = run(*SEND, *server.target(), "--resume")

    assert resumed.exit_code == 1, resumed.output
    assert "Rows with a final record: 40" in resumed.stdout
    assert sorted(event_row(e) for e in server.state.received) == [
        row for row in range(1, 41) if row != 3
    ]
    one_per_row(workdir / "r.jsonl", 40)


def test_sends_in_small_batches_keep_every_row_once(
    workdir: Path,
    export: Factory,
    sandbox_server: Factory,
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    export(60, bad=(3, 31))
    monkeypatch.setattr(backfill.runs, "SEND_BATCH_BYTES", 200)  # a few rows a batch
    server = sandbox_server()
    first = run(*SEND, *server.target(), "--limit", "25")
    assert first.exit_code == 1, first.output

    resumed = run(*SEND, *server.target(), "--resume")

    assert resumed.exit_code == 1, resumed.output
    assert sorted(event_row(e) for e in server.state.received) == [
        row for row in range(1, 61) if row not in (3, 31)
    ]
    one_per_row(workdir / "r.jsonl", 60)


def change_mapping(work: Path) -> list[str]:
    """Lower-case the identifier: another mapping."""
    mapping = work / "mapping.toml"
    text = mapping.read_text(encoding="utf-8")
    mapping.write_text(
        text.replace('column = "email"', 'column = "email", normalize = "lowercase"')
    )
    return list(SEND)


def change_input(work: Path) -> list[str]:
    """Rows appended to the export since the run started."""
    with (work / "events.csv").open("a", encoding="utf-8") as handle:
        handle.write("flow_1,2024-03-01T12:00:00Z,signed_up,late@example.com\n")
    return list(SEND)


def other_input(work: Path) -> list[str]:
    """Another export, same content, under another name."""
    (work / "other.csv").write_bytes((work / "events.csv").read_bytes())
    return ["send", "other.csv", *SEND[2:]]


def other_project(work: Path) -> list[str]:
    """The same run, to another project."""
    return list(SEND)


@pytest.mark.parametrize(
    ("change", "project", "message"),
    [
        pytest.param(
            change_mapping,
            "pr_test",
            "r.jsonl: cannot resume: the mapping file has changed since the run started",
            id="mapping-changed",
        ),
        pytest.param(
            change_input,
            "pr_test",
            "r.jsonl: cannot resume: input events.csv has changed since the run started",
            id="input-changed",
        ),
        pytest.param(
            other_input,
            "pr_test",
            "r.jsonl: cannot resume: it was started with inputs ['events.csv'], not ['other.csv']",
            id="other-input",
        ),
        pytest.param(
            other_project,
            "pr_other",
            "r.jsonl: cannot resume: it was started with project_id 'pr_test', not 'pr_other'",
            id="other-project",
        ),
    ],
)
def test_a_resume_of_another_run_is_refused_and_touches_nothing(
    change: Callable[[Path], list[str]],
    project: str,
    message: str,
    workdir: Path,
    export: Factory,
    sandbox_server: Factory,
    run: Run,
) -> None:
    export(20)
    server = sandbox_server()
    assert run(*SEND, *server.target(), "--limit", "8").exit_code == 0
    results, record = workdir / "r.jsonl", workdir / "r.jsonl.run.json"
    cut_last_line(results)  # a broken last line is no excuse to touch the file either
    saved = results.read_bytes(), record.read_bytes()
    requests = server.state.requests
    args = change(workdir)

    refused = run(*args, "--base-url", server.url, "--project-id", project, "--resume")

    assert (refused.exit_code, refused.output) == (2, f"error: {message}\n")
    assert (results.read_bytes(), record.read_bytes()) == saved
    assert server.state.requests == requests


def test_the_same_mapping_under_another_name_resumes(
    workdir: Path, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(20)
    server = sandbox_server()
    assert run(*SEND, *server.target(), "--limit", "8").exit_code == 0
    (workdir / "copy.toml").write_bytes((workdir / "mapping.toml").read_bytes())

    resumed = run(
        "send", "events.csv", "-m", "copy.toml", "-o", "r.jsonl", *server.target(), "--resume"
    )

    assert resumed.exit_code == 0, resumed.output
    assert server.state.requests == 20
    one_per_row(workdir / "r.jsonl", 20)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["send", "-", "--format", "csv", *SEND[2:], "--resume"],
            "--resume needs input files: stdin cannot be read again",
            id="stdin",
        ),
        pytest.param(
            [*SEND, "--resume", "--overwrite"],
            "--resume and --overwrite cannot go together",
            id="resume-and-overwrite",
        ),
    ],
)
def test_resume_usage_errors(
    args: list[str], message: str, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(5)
    server = sandbox_server()
    result = run(*args, *server.target(), input="")
    assert (result.exit_code, result.output) == (2, f"error: {message}\n")
    assert server.state.requests == 0


def test_a_resume_of_a_results_file_that_does_not_exist_is_refused(
    workdir: Path, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    # Starting a new run in its place would send again what a run elsewhere already sent.
    export(5)
    server = sandbox_server()

    resumed = run(*SEND, *server.target(), "--resume")

    assert (resumed.exit_code, resumed.output) == (
        2,
        "error: r.jsonl: cannot resume: no such results file (is the path or the working"
        " directory the first run's?); leave out --resume to start a new run\n",
    )
    assert server.state.requests == 0
    assert sorted(p.name for p in workdir.iterdir()) == ["events.csv", "mapping.toml"]


def test_a_resume_without_its_run_record_is_refused(
    workdir: Path, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(5)
    server = sandbox_server()
    assert run(*SEND, *server.target(), "--limit", "2").exit_code == 0
    (workdir / "r.jsonl.run.json").unlink()
    saved = (workdir / "r.jsonl").read_bytes()

    refused = run(*SEND, *server.target(), "--resume")

    assert (refused.exit_code, refused.output) == (
        2,
        "error: r.jsonl: cannot resume: its run record r.jsonl.run.json is missing,"
        " so the inputs and mapping it was started with are unknown\n",
    )
    assert (workdir / "r.jsonl").read_bytes() == saved
    assert server.state.requests == 2


def test_an_empty_results_file_without_a_run_record_resumes_from_the_start(
    workdir: Path, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(5)
    server = sandbox_server()
    (workdir / "r.jsonl").write_bytes(b"")  # killed right after creating it

    resumed = run(*SEND, *server.target(), "--resume")

    assert resumed.exit_code == 0, resumed.output
    one_per_row(workdir / "r.jsonl", 5)


def test_a_run_record_cut_short_by_a_kill_still_lets_the_run_resume(
    workdir: Path, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(5)
    server = sandbox_server()
    (workdir / "r.jsonl").write_bytes(b"")
    (workdir / "r.jsonl.run.json").write_bytes(b"")  # killed inside write_run_record

    resumed = run(*SEND, *server.target(), "--resume")

    assert resumed.exit_code == 0, resumed.output
    one_per_row(workdir / "r.jsonl", 5)


@pytest.mark.parametrize(
    ("missing", "bad", "code"),
    [
        pytest.param((), (), 0, id="all-sent"),
        pytest.param((2, 5, 7), (), 1, id="some-not-found"),
        pytest.param((), (4,), 1, id="some-invalid"),
    ],
)
def test_resuming_a_finished_run_sends_nothing_and_exits_as_it_did(
    missing: tuple[int, ...],
    bad: tuple[int, ...],
    code: int,
    workdir: Path,
    export: Factory,
    users: Factory,
    sandbox_server: Factory,
    run: Run,
) -> None:
    export(12, bad=bad)
    server = sandbox_server(users=users(r for r in range(1, 13) if r not in missing))
    first = run(*SEND, *server.target(), "--json")
    assert first.exit_code == code, first.output
    saved = (workdir / "r.jsonl").read_bytes()
    requests = server.state.requests

    resumed = run(*SEND, *server.target(), "--resume", "--json")

    assert resumed.exit_code == code, resumed.output
    assert server.state.requests == requests
    assert (workdir / "r.jsonl").read_bytes() == saved
    before, after = json.loads(first.stdout), json.loads(resumed.stdout)
    assert after["requests"] == 0
    for field in ("rows", "by_status", "by_error", "diagnosis", "retry_command"):
        assert after[field] == before[field], field


@pytest.mark.parametrize(
    ("line", "why"),
    [
        pytest.param(b'{"source": "events.csv", "row": 3, "sta\n', "not valid JSON", id="cut"),
        pytest.param(
            b'{"source": "events.csv", "row": 3, "status": "done"}\n',
            "missing source, row or status",
            id="unknown-status",
        ),
        pytest.param(b"[3]\n", "not a JSON object", id="not-an-object"),
    ],
)
def test_a_corrupt_middle_line_is_an_error_even_with_resume(
    line: bytes,
    why: str,
    workdir: Path,
    export: Factory,
    sandbox_server: Factory,
    run: Run,
) -> None:
    export(10)
    server = sandbox_server()
    assert run(*SEND, *server.target(), "--limit", "6").exit_code == 0
    results = workdir / "r.jsonl"
    lines = results.read_bytes().splitlines(keepends=True)
    lines[2] = line
    results.write_bytes(b"".join(lines))

    refused = run(*SEND, *server.target(), "--resume")

    assert (refused.exit_code, refused.output) == (
        2,
        f"error: r.jsonl: line 3 is not a results record ({why})\n",
    )
    assert results.read_bytes() == b"".join(lines)
    assert server.state.requests == 6


def test_a_run_stopped_by_an_outage_resumes_and_its_failed_rows_retry(
    workdir: Path, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(60)
    down = sandbox_server(fail_rate=1.0)
    stopped = run(
        *SEND,
        *down.target(),
        "--max-retries",
        "0",
        "--max-consecutive-failures",
        "3",
        "--concurrency",
        "2",
    )
    assert stopped.exit_code == 3, stopped.output
    failed = {int(r["row"]) for r in read_records(workdir / "r.jsonl")}
    assert failed and all(r["status"] == "failed" for r in read_records(workdir / "r.jsonl"))

    up = sandbox_server()
    resumed = run(*SEND, *up.target(), "--resume")
    assert resumed.exit_code == 1, resumed.output  # the failed rows are final: retry them
    assert sorted(event_row(e) for e in up.state.received) == sorted(set(range(1, 61)) - failed)
    retried = run("retry", "r.jsonl", "-o", "r.retry.jsonl", *up.target())
    assert retried.exit_code == 0, retried.output
    assert sorted(event_row(e) for e in up.state.received) == list(range(1, 61))


def test_a_run_stopped_by_an_outage_names_the_command_that_resumes_it(
    export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(30)
    down = sandbox_server(fail_rate=1.0)
    stopped = run(*SEND, *down.target(), "--max-retries", "0", "--max-consecutive-failures", "3")
    assert stopped.exit_code == 3, stopped.output
    assert "--resume" in stopped.output


def test_a_send_stopped_by_sigterm_records_its_requests_in_flight(
    workdir: Path, export: Factory, sandbox_subprocess: Factory, run: Run
) -> None:
    export(KILL_ROWS, bad=KILL_BAD)
    server = sandbox_subprocess("--delay", "0.01")
    args = [*SEND, *server.target(), "--concurrency", str(CONCURRENCY)]
    process = subprocess.Popen(
        [sys.executable, "-m", "backfill", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: line_count(workdir / "r.jsonl") >= KILL_ROWS * 0.4)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 130
    finally:
        process.kill()
        process.wait()
    assert len(read_records(workdir / "r.jsonl")) < KILL_ROWS

    resumed = run(*args, "--resume")

    assert resumed.exit_code == 1, resumed.output
    one_per_row(workdir / "r.jsonl", KILL_ROWS)
    received = Counter(event_row(e) for e in server.events())
    assert received == Counter(set(range(1, KILL_ROWS + 1)) - set(KILL_BAD))  # each once


def test_a_send_stopped_by_a_rejected_key_resumes_every_unrecorded_row(
    workdir: Path, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(30)
    wrong = sandbox_server(api_keys=frozenset({"rk_another"}))
    stopped = run(*SEND, *wrong.target())
    assert stopped.exit_code == 3, stopped.output
    assert "the key was rejected" in stopped.stdout
    assert read_records(workdir / "r.jsonl") == []  # rows that got 401 get no record

    right = sandbox_server()
    resumed = run(*SEND, *right.target(), "--resume")

    assert resumed.exit_code == 0, resumed.output
    assert sorted(event_row(e) for e in right.state.received) == list(range(1, 31))
    one_per_row(workdir / "r.jsonl", 30)
