"""Shared fixtures: files in a scratch directory, and the CLI run the way a user runs it."""

from __future__ import annotations

import asyncio
import csv
import gc
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from backfill.cli import cli
from backfill.sandbox import RunningSandbox, SandboxConfig, SandboxState

DATA = Path(__file__).parent / "data"

Write = Callable[[str, str | bytes], str]
Run = Callable[..., Result]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory, so paths in messages are as short as a user types them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def write(workdir: Path) -> Write:
    """Write a file in the current directory (text is written as UTF-8 bytes, as is)."""

    def write(name: str, content: str | bytes) -> str:
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return name

    return write


@pytest.fixture
def data(workdir: Path) -> Path:
    """The files of tests/data, copied to the current directory."""
    shutil.copytree(DATA, workdir, dirs_exist_ok=True)
    return workdir


@pytest.fixture
def run(workdir: Path) -> Iterator[Run]:
    """Run ``backfill ARGS...``; whatever happens, the user never sees a traceback.

    Files the run left open are collected when the test ends, so the ResourceWarning is
    reported by the test that caused it, not by whichever test the garbage collector runs in.
    """

    def run(*args: str, input: str | bytes | None = None) -> Result:
        result = CliRunner().invoke(cli, list(args), input=input, prog_name="backfill")
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        assert not crashed, f"uncaught {result.exception!r}\n{result.output}"
        assert "Traceback" not in result.output
        return result

    yield run
    gc.collect()


# --- Sandboxes and generated exports for the send, resume, retry and report tests ---------

SANDBOX_KEY = "rk_sandbox"
PROJECT = "pr_test"
EXPORT_MAPPING = """\
[fields]
embeddable_id     = "flow_id"
timestamp         = "occurred_at"
custom_event_name = "event"

[identifier]
key   = {{ value = "{key}" }}
value = {{ column = "email" }}
"""


def export_email(row: int) -> str:
    """The identifier of row ``row`` of a generated export: one user per row."""
    return f"u{row}@example.com"


def export_flow(row: int) -> str:
    """The embeddable id of row ``row`` of a generated export."""
    return f"flow_{row % 3}"


@pytest.fixture
def export(write: Write) -> Callable[..., str]:
    """Write a CSV export of ``rows`` rows (row i is user u{i}) and mapping.toml for it.

    Rows in ``bad`` have an unreadable timestamp, so they end ``invalid``; ``key`` is the
    identifier key the mapping sends.
    """

    def export(
        rows: int, bad: Collection[int] = (), name: str = "events.csv", key: str = "email"
    ) -> str:
        lines = ["flow_id,occurred_at,event,email"]
        for row in range(1, rows + 1):
            when = "yesterday" if row in bad else "2024-03-01T12:00:00Z"
            lines.append(f"{export_flow(row)},{when},signed_up,{export_email(row)}")
        write("mapping.toml", EXPORT_MAPPING.format(key=key))
        return write(name, "\n".join(lines) + "\n")

    return export


@pytest.fixture
def users(write: Write) -> Callable[..., str]:
    """Write a users file with an entry (key 'email') for each of the given export rows."""

    def users(rows: Iterable[int], name: str = "users.csv") -> str:
        lines = ["embeddable_id,key,value"]
        lines += [f"{export_flow(row)},email,{export_email(row)}" for row in rows]
        return write(name, "\n".join(lines) + "\n")

    return users


@pytest.fixture
def api_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox's key in the environment, and no other target settings from outside."""
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_KEY)
    monkeypatch.delenv("EMBEDDABLES_API_URL", raising=False)
    monkeypatch.delenv("EMBEDDABLES_PROJECT_ID", raising=False)


class ThreadedSandbox:
    """A RunningSandbox on its own event loop in a thread, so CLI runs here can reach it."""

    def __init__(self, config: SandboxConfig) -> None:
        self.sandbox = RunningSandbox(config)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name="test-sandbox", daemon=True)
        self.thread.start()
        self.ready.wait()  # set once the port listens (or starting failed)
        if self.error is not None:
            self.thread.join()
            raise self.error

    def _serve(self) -> None:
        """Start, serve until stopped, close."""
        try:
            self.loop.run_until_complete(self.sandbox.start())
        except BaseException as exc:
            self.error = exc
            self.loop.close()
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.sandbox.close())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    @property
    def url(self) -> str:
        """The base URL."""
        return self.sandbox.url

    @property
    def state(self) -> SandboxState:
        """Counters and received events (read them between runs)."""
        return self.sandbox.state

    def target(self) -> list[str]:
        """The send options that point a CLI run here."""
        return ["--base-url", self.url, "--project-id", PROJECT, "--no-progress"]

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()


@pytest.fixture
def sandbox_server(api_env: None) -> Iterator[Callable[..., ThreadedSandbox]]:
    """Start in-process sandboxes (SandboxConfig keywords; ``users`` a path) on free ports."""
    started: list[ThreadedSandbox] = []

    def start(users: str | None = None, **config: Any) -> ThreadedSandbox:
        if users is not None:
            config["users_path"] = Path(users)
        server = ThreadedSandbox(SandboxConfig(**config))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@dataclass
class SandboxProcess:
    """A ``backfill sandbox`` subprocess: its URL and its log of received events."""

    url: str
    received: Path
    process: subprocess.Popen[bytes]
    drain: threading.Thread

    def events(self) -> list[dict[str, Any]]:
        """The events it accepted so far, in order."""
        if not self.received.exists():
            return []
        text = self.received.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line]

    def target(self) -> list[str]:
        """The send options that point a CLI run here."""
        return ["--base-url", self.url, "--project-id", PROJECT, "--no-progress"]


@pytest.fixture
def sandbox_subprocess(api_env: None, tmp_path: Path) -> Iterator[Callable[..., SandboxProcess]]:
    """Start ``backfill sandbox --port 0 --received FILE OPTIONS...`` and wait until it listens."""
    started: list[SandboxProcess] = []

    def start(*options: str) -> SandboxProcess:
        received = tmp_path / f"received-{len(started)}.jsonl"
        command = [sys.executable, "-m", "backfill", "sandbox", "--port", "0"]
        process = subprocess.Popen(
            [*command, "--received", str(received), *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        line = process.stderr.readline().decode()  # the sandbox says so once it listens
        match = re.search(r"listening on (\S+)", line)
        drain = threading.Thread(target=process.stderr.read, daemon=True)
        drain.start()
        server = SandboxProcess(match.group(1) if match else "", received, process, drain)
        started.append(server)
        assert match, f"the sandbox did not start: {line!r}"
        return server

    yield start
    for server in started:
        server.process.terminate()
        server.process.wait(timeout=30)
        server.drain.join()
        if server.process.stderr is not None:
            server.process.stderr.close()


# --- Loopback servers and exports for the sender, send CLI, results and secrets tests -----


@dataclass
class Hits:
    """What a test server saw, request by request, in arrival order."""

    times: list[float]
    bodies: list[bytes]
    headers: list[dict[str, str]]
    paths: list[str]
    in_flight: int = 0
    max_in_flight: int = 0

    def seen(self, body: bytes) -> int:
        """How many times this body came in so far."""
        return self.bodies.count(body)


Handler = Callable[..., Any]  # (request, attempt) -> response or awaitable response


class Loopback:
    """One event loop in a thread serving sandboxes and test apps on 127.0.0.1 free ports.

    Servers run here so that a CLI run (or the sender core) on the test's main thread can
    reach them; ``call`` returns once the port listens, so nothing waits by sleeping.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="loopback", daemon=True)
        self.thread.start()
        self.sandboxes: list[RunningSandbox] = []
        self.runners: list[Any] = []

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the server loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def sandbox(self, **config: Any) -> RunningSandbox:
        """A real sandbox (SandboxConfig keywords), listening on a free port."""
        return self.start(RunningSandbox(SandboxConfig(**config)))

    def start(self, sandbox: RunningSandbox) -> RunningSandbox:
        """Start a sandbox built by the test (to hook its app first) on a free port."""
        self.call(sandbox.start())
        self.sandboxes.append(sandbox)
        return sandbox

    def serve(self, handler: Handler) -> tuple[str, Hits]:
        """Answer every POST with ``handler(request, attempt)``, attempt counting per body."""
        from aiohttp import web

        hits = Hits([], [], [], [])

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            hits.times.append(time.monotonic())
            hits.bodies.append(body)
            hits.headers.append(dict(request.headers))
            hits.paths.append(request.raw_path)
            hits.in_flight += 1
            hits.max_in_flight = max(hits.max_in_flight, hits.in_flight)
            try:
                answer = handler(request, hits.seen(body))
                return await answer if asyncio.iscoroutine(answer) else answer
            finally:
                hits.in_flight -= 1

        async def start() -> str:
            app = web.Application()
            app.router.add_route("POST", "/{tail:.*}", handle)
            runner = web.AppRunner(app, shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.runners.append(runner)
            return f"http://127.0.0.1:{runner.addresses[0][1]}"

        return self.call(start()), hits

    def close(self) -> None:
        """Stop every server, then the loop."""
        for sandbox in self.sandboxes:
            self.call(sandbox.close())
        for runner in self.runners:
            self.call(runner.cleanup())
        self.call(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    """Servers on 127.0.0.1 in a background thread, stopped when the test ends."""
    servers = Loopback()
    yield servers
    servers.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


SEND_MAPPING = """\
[fields]
embeddable_id     = "flow_id"
timestamp         = "occurred_at"
custom_event_name = "event"

[identifier]
key   = { value = "email" }
value = { column = "email" }
"""


def send_argv(
    url: str,
    *extra: str,
    inputs: Sequence[str] = ("events.csv",),
    results: str | None = "results.jsonl",
    project: str = "pr_1",
) -> list[str]:
    """``send`` of the ``events_csv`` export with send_mapping.toml to ``url``, no progress bar.

    ``results=None`` leaves the results file at its default path.
    """
    argv = ["send", *inputs, "-m", "send_mapping.toml", "--base-url", url]
    argv += ["--project-id", project, "--no-progress"]
    if results is not None:
        argv += ["-o", results]
    return [*argv, *extra]


def row_email(row: int) -> str:
    """The user of row ``row`` of a generated export (one user per row)."""
    return f"user{row}@example.com"


def row_flow(row: int) -> str:
    """The embeddable id of row ``row`` of a generated export."""
    return f"flow_{row % 3}"


@pytest.fixture
def events_csv(write: Write) -> Callable[..., str]:
    """Write ``rows`` export rows (row i is user{i}) and send_mapping.toml for them.

    Rows in ``invalid`` carry a bad event name, so they end ``invalid`` (bad_event_name).
    """

    def events_csv(rows: int, invalid: Collection[int] = (), name: str = "events.csv") -> str:
        lines = ["flow_id,occurred_at,event,email"]
        for row in range(1, rows + 1):
            event = "Not Snake" if row in invalid else "signed_up"
            lines.append(f"{row_flow(row)},2024-03-01T12:00:00Z,{event},{row_email(row)}")
        write("send_mapping.toml", SEND_MAPPING)
        return write(name, "\n".join(lines) + "\n")

    return events_csv


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a results file, JSONL or CSV by extension, as dicts of text/values."""
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".csv"):
        return list(csv.DictReader(io.StringIO(text, newline="")))
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
