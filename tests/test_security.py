"""Security promises: redirects, TLS, file modes, response limits, the key kept out of output."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import Run, Write

KEY = "rk_SECRET_security_9876543210"
ROW = "flow_1,2024-03-01T12:00:00Z,signed_up,a@example.com\n"
CSV = "flow_id,occurred_at,event,email\n" + ROW
MAPPING = """\
[fields]
embeddable_id = "flow_id"
timestamp = "occurred_at"
custom_event_name = "event"
[identifier]
key = { value = "email" }
value = "email"
"""


class ThreadedApp:
    """An aiohttp app on 127.0.0.1 in a thread; counts the requests it got."""

    def __init__(self, handler: Callable[[web.Request], object], tls: ssl.SSLContext | None = None):
        self.requests: list[dict[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.handler = handler
        self.tls = tls
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.ready.wait()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.headers))
        await request.read()
        response = self.handler(request)
        return await response if asyncio.iscoroutine(response) else response  # type: ignore[return-value]

    def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.tls)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


@pytest.fixture
def app() -> Iterator[Callable[..., ThreadedApp]]:
    started: list[ThreadedApp] = []

    def start(
        handler: Callable[[web.Request], object], tls: ssl.SSLContext | None = None
    ) -> ThreadedApp:
        server = ThreadedApp(handler, tls)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch, write: Write) -> None:
    monkeypatch.setenv("EMBEDDABLES_API_KEY", KEY)
    monkeypatch.delenv("EMBEDDABLES_API_URL", raising=False)
    write("events.csv", CSV)
    write("mapping.toml", MAPPING)


def send(run: Run, url: str, *extra: str) -> tuple[object, list[dict[str, object]]]:
    result = run(
        "send",
        "events.csv",
        "-m",
        "mapping.toml",
        "--base-url",
        url,
        "--project-id",
        "pr_1",
        "--no-progress",
        "--max-retries",
        "0",
        "-o",
        "r.jsonl",
        "--overwrite",
        *extra,
    )
    records = [json.loads(line) for line in Path("r.jsonl").read_text().splitlines()]
    return result, records


def no_key_anywhere(*texts: str) -> None:
    for text in texts:
        assert KEY not in text
    for path in Path(".").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_post_redirects_are_not_followed_and_stop_the_run(
    run: Run, key_env: None, app: Callable[..., ThreadedApp]
) -> None:
    other = app(lambda r: web.json_response({"entry_id": "stolen"}))
    redirecting = app(lambda r: web.Response(status=307, headers={"Location": other.url() + "/x"}))
    result, records = send(run, redirecting.url())
    assert other.requests == []  # the key never reached the other server
    assert records == []  # no record: a resume sends the row once --base-url is right
    assert result.exit_code == 3  # type: ignore[attr-defined]
    assert (
        f"Stopped early: the server answered 307 (a redirect to {other.url()}/x), which the"
        f" events API never does: check --base-url ({redirecting.url()})"
    ) in result.output  # type: ignore[attr-defined]
    no_key_anywhere(result.output)  # type: ignore[attr-defined]


def tls_server(app: Callable[..., ThreadedApp], certificate: tuple[Path, Path]) -> ThreadedApp:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return app(lambda r: web.json_response({"entry_id": "e1"}), tls=context)


def test_tls_is_verified(
    run: Run, key_env: None, app: Callable[..., ThreadedApp], certificate: tuple[Path, Path]
) -> None:
    server = tls_server(app, certificate)
    result, records = send(run, server.url("https"))
    assert records == []  # no record: a resume sends the row once the cause is fixed
    assert result.exit_code == 3  # type: ignore[attr-defined]
    assert "Stopped early: TLS: the server's certificate could not be verified" in (
        result.output  # type: ignore[attr-defined]
    )
    assert "give that authority's certificate with --ca-bundle" in result.output  # type: ignore[attr-defined]
    assert server.requests == []


def test_ca_bundle_trusts_a_corporate_certificate(
    run: Run, key_env: None, app: Callable[..., ThreadedApp], certificate: tuple[Path, Path]
) -> None:
    server = tls_server(app, certificate)
    _result, records = send(run, server.url("https"), "--ca-bundle", str(certificate[0]))
    assert [(r["status"], r["entry_id"]) for r in records] == [("sent", "e1")]


def test_unreadable_ca_bundle(run: Run, key_env: None, write: Write) -> None:
    write("bad.pem", "not a certificate")
    result = run(
        "send", "events.csv", "-m", "mapping.toml", "--project-id", "pr_1", "--ca-bundle", "bad.pem"
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: bad.pem: cannot load CA certificates")


def test_files_are_private(
    run: Run, key_env: None, app: Callable[..., ThreadedApp], write: Write
) -> None:
    server = app(lambda r: web.json_response({"entry_id": "e1"}))
    send(run, server.url())
    write("bad.csv", "flow_id,occurred_at,event,email\n,x,y,z\n")
    run(
        "validate",
        "bad.csv",
        "-m",
        "mapping.toml",
        "--report",
        "rep.json",
        "--invalid-out",
        "inv.csv",
    )
    for name in ("r.jsonl", "r.jsonl.run.json", "rep.json", "inv.csv"):
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600, name


def test_huge_answers_are_read_only_so_far(
    run: Run, key_env: None, app: Callable[..., ThreadedApp]
) -> None:
    server = app(lambda r: web.Response(status=400, body=b"x" * 20_000_000))
    _result, records = send(run, server.url())
    assert records[0]["status"] == "rejected"
    assert len(records[0]["message"]) <= 300


def test_a_server_echoing_the_key_does_not_put_it_in_the_results(
    run: Run, key_env: None, app: Callable[..., ThreadedApp]
) -> None:
    server = app(lambda r: web.Response(status=400, text=f"bad key {r.headers['X-Api-Key']}"))
    result, records = send(run, server.url())
    assert records[0]["message"] == "bad key [key]"
    no_key_anywhere(result.output)  # type: ignore[attr-defined]


def test_debug_logs_and_bug_tracebacks_mask_the_key(
    run: Run, key_env: None, app: Callable[..., ThreadedApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = app(lambda r: web.Response(status=500, text=r.headers["X-Api-Key"]))
    result = run(
        "--debug",
        "send",
        "events.csv",
        "-m",
        "mapping.toml",
        "--base-url",
        server.url(),
        "--project-id",
        "pr_1",
        "--no-progress",
        "--max-retries",
        "1",
        "-o",
        "r.jsonl",
    )
    assert result.exit_code == 1
    no_key_anywhere(result.output)

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"something broke near {KEY}")

    monkeypatch.setattr("backfill.api.send", explode)
    for debug in ([], ["--debug"]):
        result = invoke_raw(
            run,
            *debug,
            "send",
            "events.csv",
            "-m",
            "mapping.toml",
            "--project-id",
            "pr_1",
            "-o",
            "r2.jsonl",
        )
        assert result.exit_code == 2
        assert "error: unexpected RuntimeError: something broke near [key]" in result.stderr
        assert ("Traceback" in result.stderr) == bool(debug)
        no_key_anywhere(result.output)


def invoke_raw(run: Run, *args: str) -> object:
    """Run the CLI without the fixture's no-traceback check (--debug prints one on purpose)."""
    from click.testing import CliRunner

    from backfill.cli import cli

    return CliRunner().invoke(cli, list(args), prog_name="backfill")


def test_mapping_values_are_names_not_code(run: Run, key_env: None, write: Write) -> None:
    write("evil.toml", MAPPING.replace('"flow_id"', "\"__import__('os').system('touch pwned')\""))
    result = run("validate", "events.csv", "-m", "evil.toml")
    assert result.exit_code == 2
    assert "is not in events.csv" in result.stderr
    assert not Path("pwned").exists()


def test_send_refuses_a_placeholder_that_init_left(run: Run, key_env: None, write: Write) -> None:
    write("p.toml", MAPPING.replace('"flow_id"', '{ value = "REPLACE_WITH_EMBEDDABLE_ID" }'))
    result = run("send", "events.csv", "-m", "p.toml", "--project-id", "pr_1", "-o", "r.jsonl")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: p.toml: fields.embeddable_id is still the placeholder"
        " 'REPLACE_WITH_EMBEDDABLE_ID' that init wrote: fill it in before sending\n"
    )
    assert not Path("r.jsonl").exists()
