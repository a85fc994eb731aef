"""The API key is never printed, logged or written: every run outcome, every output, DEBUG logs."""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from backfill.cli import cli
from backfill.codes import Status
from backfill.errors import CredentialsError
from backfill.plans import SendOptions, Target, check_target
from backfill.results import ResultsWriter
from backfill.sender import Job, send
from backfill.summary import ResultsSummary
from tests.conftest import Loopback, Write, closed_port, row_email, row_flow, send_argv

KEY = "rk_SECRET_1234567890"
SECRET = KEY.removeprefix("rk_")  # what must not show, whatever prefix a wrong key has
ECHO_STATUSES = (400, 404, 500)


@pytest.fixture(autouse=True)
def debug_logging(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Everything logged, aiohttp's and asyncio's debug records included, is captured."""
    names = ("aiohttp", "aiohttp.client", "aiohttp.server", "aiohttp.access", "asyncio", "backfill")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    caplog.set_level(logging.DEBUG)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    for handler in root.handlers[:]:  # --debug replaces the root handlers (basicConfig force)
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(root_level)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key in the environment; no other target settings from outside."""
    monkeypatch.setenv("EMBEDDABLES_API_KEY", KEY)
    monkeypatch.delenv("EMBEDDABLES_API_URL", raising=False)
    monkeypatch.delenv("EMBEDDABLES_PROJECT_ID", raising=False)


def invoke(*args: str) -> Result:
    """Run the CLI as a user does, keeping whatever it raised."""
    return CliRunner().invoke(cli, list(args), prog_name="backfill")


def send_args(url: str, *extra: str) -> list[str]:
    """``send events.csv`` to ``url``."""
    return send_argv(url, *extra)


def assert_no_secret(result: Result, caplog: pytest.LogCaptureFixture, *texts: str) -> None:
    """The secret is in no output, exception, traceback, log record or file of the run."""
    outputs = [result.stdout, result.stderr, result.output, *texts]
    if result.exc_info is not None:
        outputs.append("".join(traceback.format_exception(*result.exc_info)))
    outputs.append(caplog.text)
    outputs += [record.getMessage() for record in caplog.records]
    for text in outputs:
        assert SECRET not in text
    for path in Path(".").rglob("*"):
        if path.is_file() and path.name != "key.txt":  # the user's own key file
            assert SECRET.encode() not in path.read_bytes(), path


def echo_key(request: web.Request, attempt: int) -> web.Response:
    """A server that puts the key it got into its answer, as some debug pages do."""
    status = ECHO_STATUSES[(len(request.headers["X-Api-Key"]) + attempt) % 3]
    return web.json_response({"echo": dict(request.headers)}, status=status)


Scenario = Callable[[Loopback], list[str]]


def successful(loopback: Loopback) -> list[str]:
    """Every row sent."""
    return send_args(loopback.sandbox(api_keys=frozenset({KEY})).url)


def rejected_key(loopback: Loopback) -> list[str]:
    """A 401 stops the run."""
    return send_args(loopback.sandbox(api_keys=frozenset({"rk_another"})).url)


def refused_connections(loopback: Loopback) -> list[str]:
    """Nothing listens."""
    return send_args(f"http://127.0.0.1:{closed_port()}", "--max-retries", "1")


def timeouts(loopback: Loopback) -> list[str]:
    """Answers come too late."""
    url = loopback.sandbox(api_keys=frozenset({KEY}), delay=0.3).url
    return send_args(url, "--timeout", "0.05", "--max-retries", "0")


def echoing_server(loopback: Loopback) -> list[str]:
    """Error answers that quote the request headers back."""
    url, _hits = loopback.serve(echo_key)
    return send_args(url, "--max-retries", "0")


def json_summary(loopback: Loopback) -> list[str]:
    """The summary as JSON."""
    return [*successful(loopback), "--json"]


def debug_flag(loopback: Loopback) -> list[str]:
    """--debug logs everything."""
    url, _hits = loopback.serve(echo_key)
    return ["--debug", *send_args(url, "--max-retries", "0")]


@pytest.mark.parametrize(
    "scenario",
    [
        successful,
        rejected_key,
        refused_connections,
        timeouts,
        echoing_server,
        json_summary,
        debug_flag,
    ],
)
def test_no_run_outcome_shows_the_key(
    scenario: Scenario,
    loopback: Loopback,
    events_csv: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    events_csv(4, invalid={2})
    result = invoke(*scenario(loopback))
    assert result.exit_code in (0, 1, 3), result.output
    assert Path("results.jsonl").exists()
    report = invoke("report", "results.jsonl", "--json")
    assert report.exit_code == 0, report.output
    assert_no_secret(result, caplog, report.stdout, report.stderr)


@pytest.mark.parametrize(
    ("key", "key_file", "extra"),
    [
        pytest.param("sk_SECRET_1234567890", None, (), id="not-rk-key"),
        pytest.param(None, "Bearer " + KEY, (), id="not-rk-key-file"),
        pytest.param(None, None, ("--api-key-file", "no/such/key.txt"), id="bad-key-file-path"),
        pytest.param(KEY, None, ("--base-url", "http://example.invalid"), id="plain-http"),
        pytest.param(KEY, None, ("-o", "missing/results.jsonl"), id="unwritable-results"),
    ],
)
def test_no_refusal_shows_the_key(
    key: str | None,
    key_file: str | None,
    extra: tuple[str, ...],
    loopback: Loopback,
    events_csv: Callable[..., str],
    write: Write,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events_csv(2)
    url, hits = loopback.serve(lambda request, attempt: web.json_response({"entry_id": "e"}))
    if key is None:
        monkeypatch.delenv("EMBEDDABLES_API_KEY")
    else:
        monkeypatch.setenv("EMBEDDABLES_API_KEY", key)
    if key_file is not None:
        write("key.txt", key_file + "\n")
        extra = ("--api-key-file", "key.txt", *extra)
    result = invoke(*send_args(url), *extra)  # a later --base-url or -o wins
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert hits.bodies == []
    assert_no_secret(result, caplog)


def test_credentials_errors_and_targets_never_hold_the_key_in_text() -> None:
    target = Target("https://api.embeddables.com", "pr_1", KEY)
    assert SECRET not in repr(target)
    assert SECRET not in str(target)
    for base_url, key in [
        ("http://example.invalid", KEY),
        ("ftp://127.0.0.1", KEY),
        ("https://api.embeddables.com", "sk_SECRET_1234567890"),
    ]:
        with pytest.raises(CredentialsError) as caught:
            check_target(base_url, "pr_1", key)
        assert SECRET not in str(caught.value)
        assert SECRET not in repr(caught.value)


def core_send(url: str, key: str, results: Path) -> dict[str, Any]:
    """One row through the sender core with a Target built directly, as a library user does."""
    body = json.dumps(
        {
            "embeddable_id": row_flow(1),
            "timestamp": "2024-03-01T12:00:00.000Z",
            "custom_event_name": "signed_up",
            "custom_event_props": "{}",
            "identifiers": [{"key": "email", "value": json.dumps(row_email(1))}],
        }
    )
    summary = ResultsSummary(str(results))
    with ResultsWriter(str(results)) as writer:
        send(
            iter([[Job("core", 1, body, row_flow(1), "email")]]),
            Target(url, "pr_1", key),
            SendOptions(max_retries=0),
            writer,
            summary,
        )
    [line] = results.read_text(encoding="utf-8").splitlines()
    record: dict[str, Any] = json.loads(line)
    assert record["status"] == Status.REJECTED
    return record


def test_the_core_masks_the_key_of_any_target(loopback: Loopback, tmp_path: Path) -> None:
    key = f"rk_SECRET_core_{uuid.uuid4().hex}"  # never registered by an earlier test
    url, _hits = loopback.serve(
        lambda request, attempt: web.Response(status=400, text=request.headers["X-Api-Key"])
    )
    record = core_send(url, key, tmp_path / "r.jsonl")
    assert key not in record["message"]
    assert key.encode() not in (tmp_path / "r.jsonl").read_bytes()
