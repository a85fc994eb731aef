"""``backfill retry``: the rows that did not go through, sent again to a new results file."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

import backfill.inputs

Run = Callable[..., Result]
Factory = Callable[..., Any]

SEND = ("send", "events.csv", "-m", "mapping.toml", "-o", "r.jsonl")
STATUSES = "sent, not_found, rejected, failed, invalid, skipped"


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL results file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_row(path: Path) -> dict[int, dict[str, Any]]:
    """The records of a results file by row, checking each row (of events.csv) is there once."""
    records = read_records(path)
    assert {r["source"] for r in records} <= {"events.csv"}
    rows = Counter(r["row"] for r in records)
    assert [row for row, n in rows.items() if n > 1] == []
    return {r["row"]: r for r in records}


def rows_with(path: Path, *statuses: str) -> set[int]:
    """The rows of a results file that have one of the statuses."""
    return {row for row, r in by_row(path).items() if r["status"] in statuses}


def event_rows(events: list[dict[str, Any]]) -> list[int]:
    """The export rows of events the sandbox received, sorted (user u{row} is row row)."""
    emails = [json.loads(e["identifiers"][0]["value"]) for e in events]
    return sorted(int(email.removeprefix("u").split("@")[0]) for email in emails)


@pytest.fixture
def not_found_run(
    workdir: Path, export: Factory, users: Factory, sandbox_server: Factory, run: Run
) -> set[int]:
    """r.jsonl of a 30-row export where the users of some rows did not exist yet (row 4 invalid)."""
    missing = {2, 5, 9, 11, 20}
    export(30, bad=(4,))
    server = sandbox_server(users=users(r for r in range(1, 31) if r not in missing))
    assert run(*SEND, *server.target()).exit_code == 1
    assert rows_with(workdir / "r.jsonl", "not_found") == missing
    return missing


def test_retry_after_the_users_exist_sends_only_the_not_found_rows(
    not_found_run: set[int], workdir: Path, users: Factory, sandbox_server: Factory, run: Run
) -> None:
    original = (workdir / "r.jsonl").read_bytes()
    server = sandbox_server(users=users(range(1, 31), name="all.csv"))

    result = run("retry", "r.jsonl", "-o", "r.retry.jsonl", *server.target())

    assert result.exit_code == 0, result.output
    assert server.state.requests == len(not_found_run)
    assert event_rows(server.state.received) == sorted(not_found_run)
    retried = by_row(workdir / "r.retry.jsonl")
    assert set(retried) == not_found_run
    before = by_row(workdir / "r.jsonl")
    for row, record in retried.items():
        assert (record["status"], record["http_status"], record["attempts"]) == ("sent", 200, 1)
        assert record["payload"] == before[row]["payload"]
        assert record["entry_id"]
    assert (workdir / "r.jsonl").read_bytes() == original


def test_a_retry_of_a_retry_goes_on_where_it_left_off(
    not_found_run: set[int], workdir: Path, users: Factory, sandbox_server: Factory, run: Run
) -> None:
    still_missing = {9, 20}
    some = sandbox_server(users=users((r for r in range(1, 31) if r not in still_missing), "b.csv"))
    first = run("retry", "r.jsonl", "-o", "r.retry.jsonl", *some.target())
    assert first.exit_code == 1, first.output
    assert some.state.requests == len(not_found_run)
    assert rows_with(workdir / "r.retry.jsonl", "not_found") == still_missing
    assert rows_with(workdir / "r.retry.jsonl", "sent") == not_found_run - still_missing
    assert "backfill retry r.retry.jsonl -o r.retry.retry.jsonl" in first.stdout

    everyone = sandbox_server(users=users(range(1, 31), name="all.csv"))
    second = run("retry", "r.retry.jsonl", "-o", "r.retry.retry.jsonl", *everyone.target())

    assert second.exit_code == 0, second.output
    assert everyone.state.requests == len(still_missing)
    assert rows_with(workdir / "r.retry.retry.jsonl", "sent") == still_missing
    assert len(read_records(workdir / "r.retry.retry.jsonl")) == len(still_missing)


@pytest.mark.parametrize("out", ["r.jsonl", "./r.jsonl"])
def test_retry_never_writes_over_its_input(
    out: str, not_found_run: set[int], workdir: Path, sandbox_server: Factory, run: Run
) -> None:
    server = sandbox_server()
    saved = [(workdir / name).read_bytes() for name in ("r.jsonl", "r.jsonl.run.json")]

    result = run("retry", "r.jsonl", "-o", out, *server.target())

    assert (result.exit_code, result.output) == (
        2,
        f"error: {out}: retry never writes over the results file it reads\n",
    )
    assert [(workdir / name).read_bytes() for name in ("r.jsonl", "r.jsonl.run.json")] == saved
    assert server.state.requests == 0


@pytest.fixture
def mixed_run(
    workdir: Path, export: Factory, users: Factory, sandbox_server: Factory, run: Run
) -> dict[str, set[int]]:
    """r.jsonl with sent, not_found, failed and invalid rows: a flaky server, missing users."""
    export(40, bad=(7, 8))
    flaky = sandbox_server(users=users(range(1, 31)), fail_rate=0.3, seed=3)
    result = run(*SEND, *flaky.target(), "--max-retries", "0")
    assert result.exit_code == 1, result.output
    rows = {s: rows_with(workdir / "r.jsonl", s) for s in ("sent", "not_found", "failed")}
    assert all(rows.values()), rows  # the seed gives some of each
    return rows


@pytest.mark.parametrize(
    ("statuses", "chosen"),
    [
        pytest.param(None, ("not_found", "failed"), id="default"),
        pytest.param("failed", ("failed",), id="failed"),
        pytest.param("not_found", ("not_found",), id="not_found"),
        pytest.param(" sent , failed ", ("sent", "failed"), id="spaces"),
    ],
)
def test_status_selects_the_records_sent_again(
    statuses: str | None,
    chosen: tuple[str, ...],
    mixed_run: dict[str, set[int]],
    workdir: Path,
    users: Factory,
    sandbox_server: Factory,
    run: Run,
) -> None:
    server = sandbox_server(users=users(range(1, 41), name="all.csv"))
    option = [] if statuses is None else ["--status", statuses]

    result = run("retry", "r.jsonl", "-o", "r.retry.jsonl", *option, *server.target())

    assert result.exit_code == 0, result.output
    expected = set().union(*(mixed_run[s] for s in chosen))
    assert event_rows(server.state.received) == sorted(expected)
    assert rows_with(workdir / "r.retry.jsonl", "sent") == expected
    assert len(read_records(workdir / "r.retry.jsonl")) == len(expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--status", "sending"],
            f"--status: unknown status 'sending'; use {STATUSES}",
            id="unknown",
        ),
        pytest.param(
            ["--status", "failed,Sent"],
            f"--status: unknown status 'Sent'; use {STATUSES}",
            id="case",
        ),
        pytest.param(
            ["--status", "invalid"],
            "invalid rows were never sent and have no payload: give -m MAPPING INPUT... to"
            " rebuild them",
            id="invalid-without-mapping",
        ),
        pytest.param(
            ["-m", "mapping.toml"],
            "-m MAPPING and INPUT... go together: give both or neither",
            id="mapping-without-inputs",
        ),
        pytest.param(
            ["events.csv"],
            "-m MAPPING and INPUT... go together: give both or neither",
            id="inputs-without-mapping",
        ),
        pytest.param(
            ["./events.csv", "-m", "mapping.toml"],
            "r.jsonl has rows of events.csv, which is not among the inputs given; give the inputs"
            " exactly as the first run did",
            id="inputs-named-otherwise",
        ),
        pytest.param(
            ["-o", "r.jsonl.run.json"],
            "r.jsonl.run.json: results file exists; use --resume to continue that run or"
            " --overwrite to start again",
            id="output-exists",
        ),
    ],
)
def test_retry_usage_errors(
    args: list[str],
    message: str,
    not_found_run: set[int],
    workdir: Path,
    sandbox_server: Factory,
    run: Run,
) -> None:
    server = sandbox_server()
    out = [] if "-o" in args else ["-o", "r.retry.jsonl"]

    result = run("retry", "r.jsonl", *args, *out, *server.target())

    assert (result.exit_code, result.output) == (2, f"error: {message}\n")
    assert server.state.requests == 0
    assert not (workdir / "r.retry.jsonl").exists()


def test_retry_with_a_corrected_mapping_sends_the_rows_that_were_not_found(
    workdir: Path, export: Factory, users: Factory, sandbox_server: Factory, run: Run, write: Any
) -> None:
    export(20, bad=(6,), key="mail")  # the users gave their "email", the mapping says "mail"
    server = sandbox_server(users=users(range(1, 21)))
    first = run(*SEND, *server.target())
    assert first.exit_code == 1, first.output
    not_found = rows_with(workdir / "r.jsonl", "not_found")
    assert not_found == set(range(1, 21)) - {6}
    assert {r["error"] for r in read_records(workdir / "r.jsonl")} == {
        "ENTRY_NOT_FOUND",
        "bad_timestamp",
    }
    assert "identifier key 'mail'" in first.stdout
    mapping = (workdir / "mapping.toml").read_text(encoding="utf-8")
    write("fixed.toml", mapping.replace('value = "mail"', 'value = "email"'))
    requests = server.state.requests

    fixed = run("retry", "r.jsonl", "-o", "fixed.jsonl", "-m", "fixed.toml", "events.csv",
                *server.target())  # fmt: skip

    assert fixed.exit_code == 0, fixed.output
    assert server.state.requests - requests == len(not_found)
    records = by_row(workdir / "fixed.jsonl")
    assert set(records) == not_found
    for record in records.values():
        assert record["status"] == "sent"
        assert json.loads(record["payload"])["identifiers"][0]["key"] == "email"


def test_retry_resumes_like_send(
    not_found_run: set[int], workdir: Path, users: Factory, sandbox_server: Factory, run: Run
) -> None:
    server = sandbox_server(users=users(range(1, 31), name="all.csv"))
    args = ("retry", "r.jsonl", "-o", "r.retry.jsonl", *server.target())
    assert run(*args, "--limit", "2").exit_code == 0
    assert len(read_records(workdir / "r.retry.jsonl")) == 2

    resumed = run(*args, "--resume")

    assert resumed.exit_code == 0, resumed.output
    assert server.state.requests == len(not_found_run)
    assert event_rows(server.state.received) == sorted(not_found_run)
    assert rows_with(workdir / "r.retry.jsonl", "sent") == not_found_run
    assert len(read_records(workdir / "r.retry.jsonl")) == len(not_found_run)

    again = run(*args, "--resume")
    assert again.exit_code == 0, again.output
    assert server.state.requests == len(not_found_run)


def test_a_retry_resume_with_other_statuses_is_refused(
    not_found_run: set[int], workdir: Path, sandbox_server: Factory, run: Run
) -> None:
    server = sandbox_server()
    args = ("retry", "r.jsonl", "-o", "r.retry.jsonl", *server.target())
    assert run(*args, "--limit", "2").exit_code == 0
    saved = (workdir / "r.retry.jsonl").read_bytes()

    refused = run(*args, "--status", "not_found", "--resume")

    assert (refused.exit_code, refused.output) == (
        2,
        "error: r.retry.jsonl: cannot resume: it was started with statuses"
        " ['failed', 'not_found'], not ['not_found']\n",
    )
    assert (workdir / "r.retry.jsonl").read_bytes() == saved
    assert server.state.requests == 2


def test_a_retry_resume_after_its_results_file_changed_says_so(
    not_found_run: set[int], workdir: Path, sandbox_server: Factory, run: Run
) -> None:
    server = sandbox_server()
    args = ("retry", "r.jsonl", "-o", "r.retry.jsonl", *server.target())
    assert run(*args, "--limit", "2").exit_code == 0
    lines = (workdir / "r.jsonl").read_bytes().splitlines(keepends=True)
    (workdir / "r.jsonl").write_bytes(b"".join(lines[:-1]))

    refused = run(*args, "--resume")

    assert refused.exit_code == 2
    assert refused.output.startswith("error: r.retry.jsonl: cannot resume: ")
    assert "r.jsonl" in refused.output.removeprefix("error: r.retry.jsonl")
    assert "sha256" not in refused.output


CORRUPT = [
    pytest.param(
        -1, b'{"source":"events.csv","row":', "not valid JSON", False,
        id="truncated-last-stored-payloads",
    ),
    pytest.param(
        -1, b'{"source":"events.csv","row":', "not valid JSON", True,
        id="truncated-last-with-mapping",
    ),
    pytest.param(
        2, b'{"source":"events.csv","ro\n', "not valid JSON", False,
        id="broken-middle-stored-payloads",
    ),
    pytest.param(
        2, b'{"source":"events.csv","ro\n', "not valid JSON", True,
        id="broken-middle-with-mapping",
    ),
    pytest.param(
        2, b'{"source":"events.csv","row":3}\n', "missing source, row or status", False,
        id="no-status",
    ),
    pytest.param(
        2, b'{"source":"events.csv","row":"three","status":"sent"}\n',
        "missing source, row or status", True, id="row-not-a-number",
    ),
]  # fmt: skip


def corrupt(path: Path, index: int, line: bytes) -> int:
    """Put a broken line into a results file at ``index``; its 1-based line number."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[index] = line
    path.write_bytes(b"".join(lines))
    return index + 1 if index >= 0 else len(lines)


@pytest.mark.parametrize(("index", "line", "why", "remap"), CORRUPT)
def test_a_corrupt_results_file_is_refused_naming_the_line(
    index: int,
    line: bytes,
    why: str,
    remap: bool,
    not_found_run: set[int],
    workdir: Path,
    sandbox_server: Factory,
    run: Run,
) -> None:
    number = corrupt(workdir / "r.jsonl", index, line)
    server = sandbox_server()
    mapping = ["-m", "mapping.toml", "events.csv"] if remap else []

    result = run("retry", "r.jsonl", "-o", "r.retry.jsonl", *mapping, *server.target())

    assert (result.exit_code, result.output) == (
        2,
        f"error: r.jsonl: line {number} is not a results record ({why})\n",
    )
    assert server.state.requests == 0


def test_a_refused_retry_creates_no_results_file(
    not_found_run: set[int], workdir: Path, sandbox_server: Factory, run: Run
) -> None:
    corrupt(workdir / "r.jsonl", 2, b"{broken\n")
    server = sandbox_server()

    result = run("retry", "r.jsonl", "-o", "r.retry.jsonl", *server.target())

    assert result.exit_code == 2
    assert sorted(p.name for p in workdir.glob("r.retry*")) == []


def test_a_corrupt_line_in_a_later_batch_stops_the_retry_before_anything_is_sent(
    workdir: Path,
    export: Factory,
    users: Factory,
    sandbox_server: Factory,
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    export(40)
    assert run(*SEND, *sandbox_server(users=users([])).target()).exit_code == 1
    number = corrupt(workdir / "r.jsonl", 35, b"{broken\n")
    monkeypatch.setattr(backfill.inputs, "BATCH_BYTES", 2048)  # a few records a batch
    server = sandbox_server()

    result = run("retry", "r.jsonl", "-o", "r.retry.jsonl", *server.target())

    assert (result.exit_code, result.output) == (
        2,
        f"error: r.jsonl: line {number} is not a results record (not valid JSON)\n",
    )
    assert server.state.requests == 0


def test_a_retry_with_nothing_to_send_sends_nothing(
    workdir: Path, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(5)
    server = sandbox_server()
    assert run(*SEND, *server.target()).exit_code == 0

    result = run("retry", "r.jsonl", "-o", "r.retry.jsonl", *server.target())

    assert result.exit_code == 0, result.output
    assert server.state.requests == 5
    assert (workdir / "r.retry.jsonl").read_bytes() == b""


def test_retry_reads_a_csv_results_file_and_writes_csv(
    workdir: Path, export: Factory, users: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(12, bad=(3,))
    first = sandbox_server(users=users(range(1, 9)))
    args = ("send", "events.csv", "-m", "mapping.toml", "-o", "r.csv", *first.target())
    assert run(*args).exit_code == 1
    server = sandbox_server(users=users(range(1, 13), name="all.csv"))

    result = run("retry", "r.csv", "-o", "r.retry.csv", *server.target())

    assert result.exit_code == 0, result.output
    assert event_rows(server.state.received) == [9, 10, 11, 12]
    with (workdir / "r.retry.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["source"], int(r["row"]), r["status"]) for r in rows) == [
        ("events.csv", row, "sent") for row in (9, 10, 11, 12)
    ]


def test_retry_with_a_mapping_rebuilds_invalid_rows(
    workdir: Path, export: Factory, sandbox_server: Factory, run: Run, write: Any
) -> None:
    export(10)
    mapping = (workdir / "mapping.toml").read_text(encoding="utf-8")
    write("number.toml", mapping.replace('column = "email"', 'column = "email", type = "number"'))
    server = sandbox_server()
    first = run("send", "events.csv", "-m", "number.toml", "-o", "r.jsonl", *server.target())
    assert first.exit_code == 1, first.output
    invalid = rows_with(workdir / "r.jsonl", "invalid")
    assert invalid == set(range(1, 11))  # an e-mail address is no number
    requests = server.state.requests

    fixed = run("retry", "r.jsonl", "-o", "fixed.jsonl", "--status", "invalid",
                "-m", "mapping.toml", "events.csv", *server.target())  # fmt: skip

    assert fixed.exit_code == 0, fixed.output
    assert server.state.requests - requests == len(invalid)
    assert rows_with(workdir / "fixed.jsonl", "sent") == invalid


def test_retry_with_a_mapping_refuses_an_input_that_changed_since_the_run(
    workdir: Path, export: Factory, users: Factory, sandbox_server: Factory, run: Run, write: Any
) -> None:
    export(10, key="mail")
    server = sandbox_server(users=users(range(0, 11)))
    assert run(*SEND, *server.target()).exit_code == 1
    mapping = (workdir / "mapping.toml").read_text(encoding="utf-8")
    write("fixed.toml", mapping.replace('value = "mail"', 'value = "email"'))
    lines = (workdir / "events.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(1, "flow_0,2024-03-01T12:00:00Z,signed_up,u0@example.com\n")  # rows shift
    write("events.csv", "".join(lines))
    requests = server.state.requests

    result = run("retry", "r.jsonl", "-o", "fixed.jsonl", "-m", "fixed.toml", "events.csv",
                 *server.target())  # fmt: skip

    assert result.exit_code == 2, result.output
    assert "events.csv" in result.output
    assert server.state.requests == requests
