"""Run safety: ordinary mistakes and faults never send a migration twice, hang or lose rows.

Each test is one finding of a user (or an attacker) trying to break that promise, with the
real part where one can be had: a sandbox or a small server on 127.0.0.1, a results file on
a disk that fills up (RLIMIT_FSIZE, the kernel's own limit), signals sent to a real process.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import resource
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

import backfill.results
from backfill.codes import ANSWER_CUT_OFF, SANDBOX_API_KEY
from backfill.sandbox import RunningSandbox
from tests.conftest import PROJECT, Loopback, Run, Write, closed_port, read_records, send_argv

Factory = Callable[..., Any]
pytestmark = pytest.mark.usefixtures("api_env")  # the sandbox's key, no target from outside
SEND = ("send", "events.csv", "-m", "mapping.toml", "-o", "r.jsonl")


def sandbox_rows(sandbox: Any) -> Counter[int]:
    """How many events the sandbox accepted per export row (its user is u{row})."""
    rows = Counter[int]()
    for event in sandbox.state.received:
        email = json.loads(event["identifiers"][0]["value"])
        rows[int(email.removeprefix("u").split("@")[0])] += 1
    return rows


def one_record_per_row(path: str, rows: int) -> dict[int, dict[str, Any]]:
    """The records of a results file by row, checking there is exactly one per row."""
    records = read_records(path)
    keys = Counter(int(r["row"]) for r in records)
    assert [k for k, n in keys.items() if n > 1] == []
    assert sorted(keys) == list(range(1, rows + 1))
    return {int(r["row"]): r for r in records}


def backfill_process(*args: str, limit_file_bytes: int | None = None) -> subprocess.Popen[str]:
    """``backfill ARGS...`` as a process of its own; optionally with a file size limit.

    RLIMIT_FSIZE is the kernel's own: a write past it fails with EFBIG, exactly as a write
    to a full disk fails with ENOSPC, without needing a disk to fill.
    """

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process
        if limit_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    env = {**os.environ, "EMBEDDABLES_API_KEY": SANDBOX_API_KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "backfill", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=limit,
    )


def finish(process: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Wait for a process to end by itself within ``timeout`` (kill it if not, and fail)."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"still running after {timeout} s: it hangs") from None


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll a condition on what another process does, until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def slow_sandbox(loopback: Loopback) -> Callable[[float], RunningSandbox]:
    """A sandbox on 127.0.0.1 that takes ``delay`` seconds per answer."""
    return lambda delay: loopback.sandbox(delay=delay)


def target(url: str) -> list[str]:
    """The options that point a run at a server here."""
    return ["--base-url", url, "--project-id", PROJECT, "--no-progress"]


# --- 1. --resume never starts a new run -----------------------------------------------------


def test_resume_from_another_directory_or_with_a_typo_sends_nothing(
    workdir: Path, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(3000)
    server = sandbox_server()
    assert run(*SEND, *server.target(), "--limit", "2000").exit_code == 0
    (workdir / "elsewhere").mkdir()
    os.chdir(workdir / "elsewhere")

    elsewhere = run("send", "../events.csv", "-m", "../mapping.toml", *server.target(), "--resume")
    os.chdir(workdir)
    typo = run(
        "send", "events.csv", "-m", "mapping.toml", "-o", "r.jsnol", *server.target(), "--resume"
    )

    assert (elsewhere.exit_code, typo.exit_code) == (2, 2)
    assert elsewhere.output.startswith(
        "error: events.results.jsonl: cannot resume: no such results file"
    )
    assert typo.output.startswith("error: r.jsnol: cannot resume: no such results file")
    assert server.state.requests == 2000
    assert list((workdir / "elsewhere").iterdir()) == []
    assert not (workdir / "r.jsnol").exists()


# --- 2 and 13a. One run at a time on a results file ----------------------------------------


def test_a_second_run_on_a_results_file_being_written_is_refused(
    workdir: Path, export: Factory, slow_sandbox: Callable[[float], RunningSandbox], run: Run
) -> None:
    export(300)
    Path("old.jsonl").write_bytes(b"")  # a results file to retry from
    sandbox = slow_sandbox(0.05)
    first = backfill_process(*SEND, *target(sandbox.url), "--concurrency", "4")
    try:
        wait_until(lambda: (workdir / "r.jsonl").exists() and sandbox.state.requests >= 8)
        attempts = {
            "resume": run(*SEND, *target(sandbox.url), "--resume"),
            "overwrite": run(*SEND, *target(sandbox.url), "--overwrite"),
            "plain": run(*SEND, *target(sandbox.url)),
            "retry": run("retry", "old.jsonl", "-o", "r.jsonl", *target(sandbox.url)),
        }
        _out, err = finish(first, 60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    message = (
        f"error: r.jsonl: another run is writing this results file (process {first.pid});"
        " wait for it to end\n"
    )
    assert {name: (r.exit_code, r.output) for name, r in attempts.items()} == {
        "resume": (2, message),
        "overwrite": (2, message),
        "plain": (2, message),
        "retry": (2, message),
    }
    one_record_per_row("r.jsonl", 300)
    assert set(sandbox_rows(sandbox).values()) == {1}  # every event once
    # The lock goes with the run; nothing else is left beside the results file.
    assert sorted(p.name for p in workdir.iterdir()) == [
        "events.csv",
        "mapping.toml",
        "old.jsonl",
        "r.jsonl",
        "r.jsonl.run.json",
    ]


def test_the_lock_of_a_killed_run_is_released_by_the_system(
    workdir: Path, export: Factory, slow_sandbox: Callable[[float], RunningSandbox], run: Run
) -> None:
    export(200)
    sandbox = slow_sandbox(0.02)
    first = backfill_process(*SEND, *target(sandbox.url), "--concurrency", "2")
    wait_until(lambda: (workdir / "r.jsonl").exists() and sandbox.state.requests >= 10)
    first.kill()
    first.communicate()
    assert (workdir / "r.jsonl.lock").exists()  # left behind, but nobody holds it

    resumed = run(*SEND, *target(sandbox.url), "--resume")

    assert resumed.exit_code == 0, resumed.output
    one_record_per_row("r.jsonl", 200)
    assert max(sandbox_rows(sandbox).values()) <= 2  # at most the 2 in flight went twice
    assert not (workdir / "r.jsonl.lock").exists()


# --- 3. A disk that fills up stops the run ---------------------------------------------------


def test_a_full_disk_stops_the_run_in_bounded_time_and_resume_finishes_it(
    workdir: Path, export: Factory, loopback: Loopback, run: Run
) -> None:
    rows = 400
    export(rows)
    sandbox = loopback.sandbox()
    limited = backfill_process(
        *SEND, *target(sandbox.url), "--concurrency", "4", limit_file_bytes=40_000
    )
    out, err = finish(limited, 60)

    assert limited.returncode == 3, (out, err)
    assert "Stopped early: r.jsonl: cannot write: File too large" in out
    assert "Continue it with: backfill send events.csv -o r.jsonl" in out
    written = Path("r.jsonl").read_bytes()
    assert 0 < len(written) <= 40_000
    assert written.endswith(b"\n")  # whole records only: a half line was cut off again
    before = read_records("r.jsonl")
    assert {r["status"] for r in before} == {"sent"}

    resumed = run(*SEND, *target(sandbox.url), "--resume")

    assert resumed.exit_code == 0, resumed.output
    one_record_per_row("r.jsonl", rows)
    twice = [row for row, n in sandbox_rows(sandbox).items() if n > 1]
    assert len(twice) <= 4  # no more than the requests in flight when the disk filled
    assert sorted(sandbox_rows(sandbox)) == list(range(1, rows + 1))


def test_a_failing_sync_stops_the_run(
    workdir: Path,
    export: Factory,
    slow_sandbox: Callable[[float], RunningSandbox],
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    export(60)
    sandbox = slow_sandbox(0.02)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if threading.current_thread().name == "backfill-results-sync":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(backfill.results, "SYNC_EVERY_SECONDS", 0.05)
    monkeypatch.setattr(backfill.results.os, "fsync", fsync)

    result = run(*SEND, *target(sandbox.url), "--concurrency", "1")

    assert result.exit_code == 3
    assert "Stopped early: r.jsonl: cannot write to disk: Input/output error" in result.output
    assert len(read_records("r.jsonl")) < 60
    assert sandbox.state.requests < 60


# --- 4 and 5. What a 200 must be ---------------------------------------------------------------


class RawServer:
    """A TCP server on 127.0.0.1 that answers every request with the same raw bytes, then
    closes the connection: answers no HTTP library would send on purpose."""

    def __init__(self, loopback: Loopback, answer: bytes) -> None:
        self.answer = answer
        self.requests = 0
        self.server = loopback.call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.loopback = loopback
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        self.requests += 1
        writer.write(self.answer)
        await writer.drain()
        writer.close()

    def close(self) -> None:
        self.server.close()
        self.loopback.call(self.server.wait_closed())


@pytest.fixture
def raw_server(loopback: Loopback) -> Iterator[Callable[[bytes], RawServer]]:
    started: list[RawServer] = []

    def start(answer: bytes) -> RawServer:
        started.append(RawServer(loopback, answer))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"entry_id": "en',
            id="short-content-length",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n8\r\n{"entry_\r\n',
            id="chunks-stop",
        ),
    ],
)
def test_a_200_whose_body_breaks_off_is_sent_and_never_retried(
    answer: bytes, raw_server: Callable[[bytes], RawServer], run: Run, events_csv: Factory
) -> None:
    events_csv(20)
    server = raw_server(answer)

    result = run(*send_argv(server.url))

    assert result.exit_code == 0, result.output
    assert server.requests == 20  # one request a row: a 200 means the event exists
    records = read_records("results.jsonl")
    assert {(r["status"], r["http_status"], r["entry_id"], r["attempts"]) for r in records} == {
        ("sent", 200, None, 1)
    }
    assert {r["message"] for r in records} == {ANSWER_CUT_OFF}


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        pytest.param(
            b"<!DOCTYPE html><html><body>Welcome</body></html>", "an HTML page", id="html"
        ),
        pytest.param(b"OK", "a body that is not a JSON object ('OK')", id="text"),
        pytest.param(b"", "an empty body", id="empty"),
        pytest.param(b"[1, 2]", "a body that is not a JSON object ('[1, 2]')", id="array"),
    ],
)
def test_a_200_that_is_not_an_event_object_stops_the_run_and_resume_sends_the_rows(
    body: bytes,
    kind: str,
    loopback: Loopback,
    run: Run,
    events_csv: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events_csv(50)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    url, hits = loopback.serve(lambda request, attempt: web.Response(status=200, body=body))

    stopped = run(*send_argv(url, "--concurrency", "2"))

    assert stopped.exit_code == 3
    assert (
        f"Stopped early: the server answered 200 with {kind}, not the event object of the"
        f" events API: check --base-url ({url})"
    ) in stopped.output
    assert read_records("results.jsonl") == []  # those rows have no record...
    assert len(hits.bodies) <= 2  # ...and only the requests in flight went out
    sandbox = loopback.sandbox()
    resumed = run(*send_argv(sandbox.url, "--resume"))  # ...so the right server gets them all
    assert resumed.exit_code == 0, resumed.output
    assert len(read_records("results.jsonl")) == 50


# --- 6 and 13. Servers that are not the API ------------------------------------------------------


def test_a_redirect_stops_the_run_and_names_where_it_pointed(
    loopback: Loopback, run: Run, events_csv: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(30)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    moved = "https://www.example.com/login"
    url, hits = loopback.serve(
        lambda request, attempt: web.Response(status=301, headers={"Location": moved})
    )

    result = run(*send_argv(url))

    assert result.exit_code == 3
    assert f"the server answered 301 (a redirect to {moved})" in result.output
    assert read_records("results.jsonl") == []
    assert len(hits.bodies) <= 8


def test_a_certificate_that_does_not_verify_stops_the_run_at_once(
    loopback: Loopback,
    run: Run,
    events_csv: Factory,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events_csv(40)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    url, answered = loopback.call(_serve_tls(loopback, context))
    started = time.monotonic()

    result = run(*send_argv(url, "--concurrency", "4"))

    assert time.monotonic() - started < 10  # not six handshakes per row for 40 rows
    assert result.exit_code == 3
    assert "Stopped early: TLS: the server's certificate could not be verified" in result.output
    assert read_records("results.jsonl") == []
    assert answered == []
    trusted = run(*send_argv(url, "--resume", "--ca-bundle", str(certificate[0])))
    assert trusted.exit_code == 0, trusted.output
    assert len(read_records("results.jsonl")) == len(answered) == 40


async def _serve_tls(loopback: Loopback, context: ssl.SSLContext) -> tuple[str, list[bytes]]:
    """An events endpoint over TLS on a free port: its https URL and the bodies it answered."""
    answered: list[bytes] = []

    async def accept(request: web.Request) -> web.Response:
        answered.append(await request.read())
        return web.json_response({"entry_id": f"e{len(answered)}"})

    app = web.Application()
    app.router.add_post("/{tail:.*}", accept)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    loopback.runners.append(runner)  # cleaned up with the loopback servers
    return f"https://127.0.0.1:{runner.addresses[0][1]}", answered


def test_a_dead_proxy_is_named_as_the_proxy(
    run: Run, events_csv: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The target is not on this machine, so the proxy applies; it is a closed loopback port,
    # so nothing leaves this machine.
    events_csv(1)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    result = run(*send_argv("https://api.example.invalid", "--max-retries", "0"))

    assert result.exit_code == 1
    [record] = read_records("results.jsonl")
    assert (record["status"], record["error"]) == ("failed", "CONNECTION_ERROR")
    assert record["message"].startswith("cannot connect to the proxy set in the environment: ")


# --- 7. A second Ctrl-C ----------------------------------------------------------------------


def test_a_second_ctrl_c_exits_130_at_once_without_a_traceback(
    loopback: Loopback, events_csv: Factory
) -> None:
    events_csv(200)
    never = asyncio.Event()

    async def hang(request: web.Request, attempt: int) -> web.Response:
        await never.wait()  # no answer, ever
        return web.Response()

    url, hits = loopback.serve(hang)
    process = backfill_process(*send_argv(url, "--concurrency", "4"))
    try:
        wait_until(lambda: len(hits.bodies) >= 4)
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)  # the first one is taken: the run now waits on the requests in flight
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = finish(process, 10)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert took < 2
    assert "Traceback" not in err and "CancelledError" not in err
    assert "Stopped early: interrupted" in out
    assert read_records("results.jsonl") == []  # the hung requests got no record


# --- 8. An edit in the middle of an input ----------------------------------------------------


def test_rows_swapped_in_the_middle_of_a_big_input_refuse_the_resume(
    workdir: Path, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    rows = 60_000  # about 5 MB: the middle lies well away from the first and last MiB
    export(rows)
    server = sandbox_server()
    assert run(*SEND, *server.target(), "--limit", "10").exit_code == 0
    lines = (workdir / "events.csv").read_bytes().split(b"\n")
    middle = rows // 2
    lines[middle], lines[middle + 1] = lines[middle + 1], lines[middle]  # same size, same ends
    (workdir / "events.csv").write_bytes(b"\n".join(lines))

    resumed = run(*SEND, *server.target(), "--resume")

    assert (resumed.exit_code, resumed.output) == (
        2,
        "error: r.jsonl: cannot resume: input events.csv has changed since the run started\n",
    )
    assert server.state.requests == 10


# --- 11. Keys that would slip past the mask ---------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        pytest.param('rk_abc"def', id="quote"),
        pytest.param("rk_abc\\def", id="backslash"),
        pytest.param("rk_abcdéf", id="non-ascii"),
        pytest.param("rk_abc<def>", id="html"),
    ],
)
def test_a_key_that_an_echo_would_escape_is_refused(
    key: str, run: Run, events_csv: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(1)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", key)

    result = run(*send_argv("http://127.0.0.1:9"))

    assert (result.exit_code, result.output) == (
        2,
        "error: the API key holds a character keys never have (non-ASCII, a quote, a"
        " backslash or <>&): check its source\n",
    )
    assert not Path("results.jsonl").exists()


def test_a_key_file_with_a_byte_order_mark_is_read(
    run: Run, events_csv: Factory, write: Write, loopback: Loopback
) -> None:
    events_csv(2)
    write("key.txt", b"\xef\xbb\xbf" + SANDBOX_API_KEY.encode() + b"\r\n")
    sandbox = loopback.sandbox()

    result = run(*send_argv(sandbox.url, "--api-key-file", "key.txt"))

    assert result.exit_code == 0, result.output
    assert len(read_records("results.jsonl")) == 2


def test_a_key_echoed_json_escaped_or_url_encoded_is_masked(
    run: Run, events_csv: Factory, loopback: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "rk_part/of+the=key"
    events_csv(1)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", key)

    def echo(request: web.Request, attempt: int) -> web.Response:
        sent = request.headers["X-Api-Key"]
        escaped = json.dumps({"key": sent}).replace("/", "\\/")  # as PHP's json_encode writes it
        return web.Response(status=400, text=f"{escaped} {quote(sent, safe='')}")

    url, _hits = loopback.serve(echo)
    result = run(*send_argv(url))

    [record] = read_records("results.jsonl")
    assert record["message"] == '{"key": "[key]"} [key]'
    assert "part" not in result.output + Path("results.jsonl").read_text()


# --- 12. A results file edited by hand ---------------------------------------------------------


def test_a_duplicated_record_is_named_by_report_resume_and_retry(
    workdir: Path, export: Factory, sandbox_server: Factory, run: Run
) -> None:
    export(3000)
    server = sandbox_server()
    assert run(*SEND, *server.target(), "--limit", "2000").exit_code == 0
    lines = (workdir / "r.jsonl").read_bytes().splitlines(keepends=True)
    copied = json.loads(lines[16])
    (workdir / "r.jsonl").write_bytes(b"".join(lines) + lines[16])
    message = (
        f"error: r.jsonl: row {copied['row']} of events.csv has more than one record (lines 17,"
        " 2001); a results file holds one record per row: remove the extra line and check how"
        " it got there (an edit, or two runs writing the same file)\n"
    )

    report = run("report", "r.jsonl")
    resume = run(*SEND, *server.target(), "--resume")
    retry = run("retry", "r.jsonl", "-o", "again.jsonl", *server.target(), "--status", "sent")

    assert {(r.exit_code, r.output) for r in (report, resume, retry)} == {(2, message)}
    assert server.state.requests == 2000


# --- 13. Smaller findings ----------------------------------------------------------------------


def test_a_failed_start_leaves_no_temporary_file(
    workdir: Path, export: Factory, loopback: Loopback
) -> None:
    export(5)
    sandbox = loopback.sandbox()
    # Room for the lock file's process id, not for the run record.
    process = backfill_process(*SEND, *target(sandbox.url), limit_file_bytes=64)
    out, err = finish(process, 30)
    assert process.returncode == 2, (out, err)
    assert err == "error: r.jsonl.run.json: cannot write: File too large\n"
    assert sorted(p.name for p in workdir.iterdir()) == ["events.csv", "mapping.toml"]
    assert sandbox.state.requests == 0


def test_a_read_only_file_system_is_called_that(
    workdir: Path, run: Run, export: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    export(1)
    folder = workdir / "ro"
    folder.mkdir()
    mounted = os.geteuid() == 0 and _mount_read_only(folder)
    if not mounted:  # no privilege to mount: the file system's own flag, as statvfs gives it
        real = os.statvfs
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path).resolve() != folder)
        monkeypatch.setattr(os, "statvfs", lambda path: _read_only_stat(real(path)))
    try:
        result = run("send", "events.csv", "-m", "mapping.toml", "-o", "ro/r.jsonl", "--sandbox")
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
    assert (result.exit_code, result.output) == (
        2,
        "error: ro/r.jsonl: cannot write: Read-only file system\n",
    )


def _mount_read_only(folder: Path) -> bool:
    """Mount an empty read-only tmpfs on folder; False when this machine does not allow it."""
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True
    )
    return done.returncode == 0


def _read_only_stat(real: os.statvfs_result) -> Any:
    """A statvfs result with the read-only flag set."""

    class ReadOnly:
        f_flag = real.f_flag | os.ST_RDONLY

    return ReadOnly()


def test_debug_logs_every_attempt(
    run: Run, events_csv: Factory, loopback: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    events_csv(2)
    monkeypatch.setenv("EMBEDDABLES_API_KEY", SANDBOX_API_KEY)
    sandbox = loopback.sandbox()

    result = run("--debug", *send_argv(sandbox.url, "--concurrency", "1"))

    assert result.exit_code == 0
    assert "backfill.send DEBUG POST events.csv row 1 attempt 1: 200" in result.stderr
    assert "backfill.send DEBUG POST events.csv row 2 attempt 1: 200" in result.stderr
    assert SANDBOX_API_KEY not in result.stderr
