"""``backfill send`` as a user runs it: credentials, refusals, dry runs, the sandbox, summaries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from backfill.codes import SANDBOX_API_KEY
from backfill.sandbox import parse_event
from tests.conftest import (
    Loopback,
    Run,
    Write,
    closed_port,
    read_records,
    row_email,
    row_flow,
    send_argv,
)

SAMPLE = Path(__file__).parent.parent / "sample_data"
ENV = ("EMBEDDABLES_API_KEY", "EMBEDDABLES_API_URL", "EMBEDDABLES_PROJECT_ID")
SEND = ("send", "events.csv", "-m", "send_mapping.toml", "--no-progress")
OK = {"entry_id": "entry_1"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials or target from the environment unless a test sets them."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def ok_server(loopback: Loopback) -> tuple[str, Any]:
    """A server that accepts every event; returns its URL and what it saw."""
    return loopback.serve(lambda request, attempt: web.json_response(OK))


# --- where the key, the project and the server come from ------------------------------------


def test_key_from_the_environment(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(2)
    sandbox = loopback.sandbox(api_keys=frozenset({"rk_from_env"}))
    monkeypatch.setenv("EMBEDDABLES_API_KEY", "rk_from_env")
    result = run(*SEND, "--base-url", sandbox.url, "--project-id", "pr_1")
    assert result.exit_code == 0, result.output
    assert len(sandbox.state.received) == 2


def test_key_file_wins_over_the_environment_and_is_stripped(
    run: Run,
    loopback: Loopback,
    events_csv: Callable[..., str],
    write: Write,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events_csv(2)
    url, hits = ok_server(loopback)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", "rk_from_env")
    write("key.txt", "rk_from_file\n")
    result = run(*SEND, "--api-key-file", "key.txt", "--base-url", url, "--project-id", "pr_1")
    assert result.exit_code == 0, result.output
    assert [h["X-Api-Key"] for h in hits.headers] == ["rk_from_file"] * 2


def test_project_and_server_from_the_environment(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(1)
    url, hits = ok_server(loopback)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    monkeypatch.setenv("EMBEDDABLES_PROJECT_ID", "pr_env")
    monkeypatch.setenv("EMBEDDABLES_API_URL", url)
    assert run(*SEND).exit_code == 0
    assert hits.paths == ["/projects/pr_env/events"]
    assert hits.headers[0]["Content-Type"] == "application/json"


def test_options_win_over_the_environment(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(1)
    url, hits = ok_server(loopback)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    monkeypatch.setenv("EMBEDDABLES_PROJECT_ID", "pr_env")
    monkeypatch.setenv("EMBEDDABLES_API_URL", f"http://127.0.0.1:{closed_port()}")
    assert run(*SEND, "--project-id", "pr_option", "--base-url", url).exit_code == 0
    assert hits.paths == ["/projects/pr_option/events"]


def test_base_url_with_a_path_and_an_odd_project_id(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(1)
    url, hits = ok_server(loopback)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    assert run(*SEND, "--base-url", url + "/api/", "--project-id", "pr 1/x").exit_code == 0
    assert hits.paths == ["/api/projects/pr%201%2Fx/events"]


@pytest.mark.parametrize(
    ("key", "extra", "message"),
    [
        pytest.param(
            None,
            (),
            "error: no API key: set EMBEDDABLES_API_KEY or give --api-key-file"
            " (keys start with rk_)\n",
            id="no-key",
        ),
        pytest.param(
            "sk_live_1234",
            (),
            "error: the API key does not start with rk_: Embeddables keys are rk_...\n",
            id="not-rk",
        ),
        pytest.param(
            SANDBOX_API_KEY,
            ("--api-key-file", "missing.key"),
            "error: missing.key: cannot read the API key file (FileNotFoundError)\n",
            id="missing-key-file",
        ),
        pytest.param(
            SANDBOX_API_KEY,
            ("--api-key-file", "empty.key"),
            "error: no API key: set EMBEDDABLES_API_KEY or give --api-key-file"
            " (keys start with rk_)\n",
            id="empty-key-file",
        ),
        pytest.param(
            SANDBOX_API_KEY,
            ("--api-key-file", "bearer.key"),
            "error: the API key does not start with rk_: Embeddables keys are rk_...\n",
            id="key-file-not-rk",
        ),
        pytest.param(
            SANDBOX_API_KEY,
            ("--project-id", ""),
            "error: no project id: give --project-id or set EMBEDDABLES_PROJECT_ID\n",
            id="no-project",
        ),
    ],
)
def test_credentials_are_refused_before_any_request(
    key: str | None,
    extra: tuple[str, ...],
    message: str,
    run: Run,
    loopback: Loopback,
    events_csv: Callable[..., str],
    write: Write,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events_csv(3)
    write("empty.key", "\n")
    write("bearer.key", "Bearer rk_abc\n")
    url, hits = ok_server(loopback)
    if key is not None:
        monkeypatch.setenv("EMBEDDABLES_API_KEY", key)
    project = () if "--project-id" in extra else ("--project-id", "pr_1")
    result = run(*SEND, "--base-url", url, *project, *extra)
    assert result.exit_code == 2
    assert result.stderr == message
    assert result.stdout == ""
    assert hits.bodies == []
    assert not Path("events.results.jsonl").exists()


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        pytest.param(
            "http://example.invalid",
            "error: http://example.invalid: plain http would send the key unencrypted; use https"
            " (http is allowed only to this machine)\n",
            id="plain-http",
        ),
        pytest.param(
            "HTTP://example.invalid:8080/api",
            "error: HTTP://example.invalid:8080/api: plain http would send the key unencrypted;"
            " use https (http is allowed only to this machine)\n",
            id="plain-http-upper-case",
        ),
        pytest.param(
            "http://127.0.0.1.example.invalid",
            "error: http://127.0.0.1.example.invalid: plain http would send the key unencrypted;"
            " use https (http is allowed only to this machine)\n",
            id="loopback-lookalike",
        ),
        pytest.param(
            "ftp://127.0.0.1", "error: ftp://127.0.0.1: not an http(s) URL\n", id="not-http"
        ),
        pytest.param(
            "api.embeddables.com",
            "error: api.embeddables.com: not an http(s) URL\n",
            id="no-scheme",
        ),
    ],
)
def test_unsafe_or_malformed_servers_are_refused(
    base_url: str,
    message: str,
    run: Run,
    events_csv: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events_csv(1)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    result = run(*SEND, "--base-url", base_url, "--project-id", "pr_1")
    assert result.exit_code == 2
    assert result.stderr == message
    assert not Path("events.results.jsonl").exists()


def test_a_key_with_a_stray_line_end_from_the_environment(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(1)
    sandbox = loopback.sandbox()
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY + "\r")
    result = run(*SEND, "--base-url", sandbox.url, "--project-id", "pr_1")
    assert "unexpected" not in result.stderr
    if result.exit_code == 2:  # refused up front is as good as stripped
        assert result.stderr.startswith("error: the API key")
        assert sandbox.state.requests == 0
    else:
        assert result.exit_code == 0
        assert len(sandbox.state.received) == 1


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:99999", "https://127.0.0.1:http"])
def test_a_malformed_port_is_refused_before_sending(
    base_url: str, run: Run, events_csv: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(2)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    result = run(*SEND, "--base-url", base_url, "--project-id", "pr_1", "--max-retries", "0")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {base_url}: ")
    assert not Path("events.results.jsonl").exists()


@pytest.mark.parametrize("second", ["events.csv", "./events.csv"])
def test_the_same_input_twice_is_refused(
    second: str,
    run: Run,
    loopback: Loopback,
    events_csv: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events_csv(2)
    url, hits = ok_server(loopback)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    result = run(*send_argv(url, inputs=("events.csv", second), results=None))
    assert result.exit_code == 2, result.output
    assert hits.bodies == []


def test_stdin_is_recorded_as_dash(
    run: Run,
    loopback: Loopback,
    events_csv: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = Path(events_csv(3)).read_text(encoding="utf-8")
    sandbox = loopback.sandbox()
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    result = run(
        "send",
        "-",
        "--format",
        "csv",
        "-m",
        "send_mapping.toml",
        "--base-url",
        sandbox.url,
        "--project-id",
        "pr_1",
        "--no-progress",
        input=text,
    )
    assert result.exit_code == 0, result.output
    records = read_records("stdin.results.jsonl")
    assert sorted((r["source"], r["row"]) for r in records) == [("-", 1), ("-", 2), ("-", 3)]


# --- the results file: refused, overwritten, the retry command ---------------------------------


def test_an_existing_results_file_is_refused_then_overwritten(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(3)
    url, hits = ok_server(loopback)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    Path("results.jsonl").write_text("from an earlier run\n", encoding="utf-8")
    target = ("--base-url", url, "--project-id", "pr_1", "-o", "results.jsonl")
    result = run(*SEND, *target)
    assert result.exit_code == 2
    assert result.stderr == (
        "error: results.jsonl: results file exists; use --resume to continue that run"
        " or --overwrite to start again\n"
    )
    assert hits.bodies == []
    assert Path("results.jsonl").read_text(encoding="utf-8") == "from an earlier run\n"

    assert run(*SEND, *target, "--overwrite").exit_code == 0
    records = read_records("results.jsonl")
    assert sorted(r["row"] for r in records) == [1, 2, 3]  # in the order of the answers
    assert len(hits.bodies) == 3

    both = run(*SEND, *target, "--overwrite", "--resume")
    assert both.exit_code == 2
    assert both.stderr == "error: --resume and --overwrite cannot go together\n"


def test_sandbox_users_without_sandbox_is_refused(
    run: Run, events_csv: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(1)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    result = run(*SEND, "--sandbox-users", "users.csv", "--project-id", "pr_1")
    assert result.exit_code == 2
    assert result.stderr == "error: --sandbox-users goes with --sandbox\n"


def test_the_retry_command_names_the_results_file_quoted(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(2)
    Path("users.csv").write_text(
        f"embeddable_id,key,value\n{row_flow(1)},email,{row_email(1)}\n", encoding="utf-8"
    )
    sandbox = loopback.sandbox(users_path=Path("users.csv"))
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    result = run(*SEND, "--base-url", sandbox.url, "--project-id", "pr_1", "-o", "my run.csv")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == (
        "Re-run what did not go through: backfill retry 'my run.csv' -o 'my run.retry.csv'"
    )
    assert [r["status"] for r in read_records("my run.csv")] == ["sent", "not_found"]


def test_no_retry_command_when_everything_was_sent(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(2)
    sandbox = loopback.sandbox()
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    result = run(*SEND, "--base-url", sandbox.url, "--project-id", "pr_1")
    assert result.exit_code == 0
    assert "Re-run" not in result.stdout
    assert result.stdout.splitlines()[-1] == "Results: events.results.jsonl"


def test_json_summary(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(4, invalid={2})
    sandbox = loopback.sandbox()
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    result = run(*SEND, "--base-url", sandbox.url, "--project-id", "pr_1", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["rows"] == 4
    assert data["by_status"] == {
        "sent": 3,
        "not_found": 0,
        "rejected": 0,
        "failed": 0,
        "invalid": 1,
        "skipped": 0,
    }
    assert data["by_error"] == {"bad_event_name": 1}
    assert (data["requests"], data["retries"], data["stopped"]) == (3, 0, None)
    assert data["retry_command"] is None


def test_limit_takes_the_first_rows(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(10)
    sandbox = loopback.sandbox()
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    result = run(*SEND, "--base-url", sandbox.url, "--project-id", "pr_1", "--limit", "4")
    assert result.exit_code == 0
    assert sorted(r["row"] for r in read_records("events.results.jsonl")) == [1, 2, 3, 4]
    assert sandbox.state.requests == 4


def test_several_inputs_are_recorded_by_source_and_row(
    run: Run,
    loopback: Loopback,
    events_csv: Callable[..., str],
    write: Write,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events_csv(2)
    events_csv(3, name="more/events.csv")
    sandbox = loopback.sandbox()
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    result = run(*send_argv(sandbox.url, inputs=("events.csv", "more/events.csv"), results=None))
    assert result.exit_code == 0
    records = read_records("events.results.jsonl")
    assert sorted((r["source"], r["row"]) for r in records) == [
        ("events.csv", 1),
        ("events.csv", 2),
        ("more/events.csv", 1),
        ("more/events.csv", 2),
        ("more/events.csv", 3),
    ]


# --- dry run and the built-in sandbox ----------------------------------------------------------


def test_dry_run_needs_no_key_and_shows_three_payloads(
    run: Run, loopback: Loopback, events_csv: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(5)
    url, hits = ok_server(loopback)
    monkeypatch.setenv("EMBEDDABLES_API_URL", url)
    result = run(*SEND, "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = lines.index("First 3 payloads, exactly as they would be sent:")
    payloads = lines[start + 1 : start + 4]
    assert [row_email_of(json.loads(p)) for p in payloads] == [row_email(r) for r in (1, 2, 3)]
    for payload in payloads:
        parse_event(payload.encode())  # the sandbox would take it as it is
    assert lines[start + 4 :] == ["", "Dry run: nothing was sent."]
    assert hits.bodies == []
    assert list(Path(".").glob("*.jsonl")) == []


def row_email_of(event: dict[str, Any]) -> str:
    """The email an event body carries."""
    return str(json.loads(event["identifiers"][0]["value"]))


@pytest.fixture
def sample(workdir: Path) -> Path:
    """The sample export, its mapping and its users, copied to the current directory."""
    for name in ("events.csv", "mapping.toml", "users.csv"):
        shutil.copy(SAMPLE / name, workdir / name)
    return workdir


def test_sandbox_run_of_the_sample_export(run: Run, sample: Path) -> None:
    result = run(
        "send",
        "events.csv",
        "-m",
        "mapping.toml",
        "--sandbox",
        "--sandbox-users",
        "users.csv",
        "--no-progress",
    )
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "Rows with a final record: 300",
        "  sent              189",
        "  not_found          98",
        "  invalid            13",
    ]
    assert (
        "404 diagnosis: every one of the 45 rows with embeddable id 'flow_c3d4' was not found:"
        " that embeddable id is the likely mistake (or its users never gave this identifier)"
    ) in lines
    assert lines[-2:] == [
        "Results: events.results.jsonl",
        "Re-run what did not go through:"
        " backfill retry events.results.jsonl -o events.results.retry.jsonl",
    ]
    records = read_records("events.results.jsonl")
    assert len(records) == len({r["row"] for r in records}) == 300


def test_sandbox_subprocess_receives_every_sent_row_once(
    run: Run, events_csv: Callable[..., str], write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(6, invalid={3})
    users = "embeddable_id,key,value\n" + "".join(
        f"{row_flow(r)},email,{row_email(r)}\n" for r in range(1, 6)
    )
    write("users.csv", users)
    command = [sys.executable, "-m", "backfill", "sandbox", "--port", "0"]
    command += ["--users", "users.csv", "--received", "received.jsonl"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        line = server.stderr.readline()  # written once the port listens
        match = re.fullmatch(r"sandbox listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
        result = run(*SEND, "--base-url", match.group(1), "--project-id", "pr_1")
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert result.exit_code == 1
    records = {r["row"]: r["status"] for r in read_records("events.results.jsonl")}
    assert records == {1: "sent", 2: "sent", 3: "invalid", 4: "sent", 5: "sent", 6: "not_found"}
    received = [json.loads(line) for line in Path("received.jsonl").read_text().splitlines()]
    assert sorted(row_email_of(e) for e in received) == [row_email(r) for r in (1, 2, 4, 5)]
