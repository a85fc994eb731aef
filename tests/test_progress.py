"""The send progress bar: a total (marked while it is an estimate), a percentage and an ETA,
a resumed run's rows already done, and a send through a terminal that still works."""

from __future__ import annotations

import fcntl
import io
import os
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tqdm import tqdm

from backfill import progress
from backfill.codes import Status
from backfill.counting import Count, RowCount
from backfill.progress import RowsBar, progress_bar
from backfill.summary import ResultsSummary
from tests.conftest import SANDBOX_KEY


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def summary_of(sent: int, failed: int = 0, invalid: int = 0) -> ResultsSummary:
    """A run's summary with these final records."""
    summary = ResultsSummary("r.jsonl")
    summary.by_status.update({Status.SENT: sent, Status.FAILED: failed, Status.INVALID: invalid})
    return summary


@pytest.fixture
def screen() -> Iterator[tuple[Any, io.StringIO]]:
    """A tqdm bar drawn on every update, and what it drew."""
    out = io.StringIO()
    with tqdm(unit=" rows", file=out, mininterval=0, miniters=1, ncols=120) as bar:
        yield bar, out


def last_line(out: io.StringIO) -> str:
    """The bar as last drawn."""
    return out.getvalue().rsplit("\r", 1)[-1]


def test_estimate_then_exact_total(screen: tuple[Any, io.StringIO]) -> None:
    bar, out = screen
    count = RowCount()
    view = RowsBar(bar, count)
    view.update(summary_of(0))  # the sender calls once before any record
    view.update(summary_of(10))
    assert "10 rows [" in last_line(out)  # no total yet: the old layout
    count.publish(Count(200, False))
    view.update(summary_of(40, failed=5, invalid=5))
    line = last_line(out)
    assert " 25%|" in line and "50/~200 [" in line and "sent=40" in line and "failed=5" in line
    count.publish(Count(100, True))
    view.update(summary_of(60))
    line = last_line(out)
    assert " 60%|" in line and "60/100 [" in line and "~" not in line


def test_total_never_below_rows_done_and_a_finished_run_is_whole(
    screen: tuple[Any, io.StringIO],
) -> None:
    bar, out = screen
    count = RowCount()
    count.publish(Count(90, False))
    view = RowsBar(bar, count)
    view.update(summary_of(0))  # the sender calls once before any record
    view.update(summary_of(95))
    assert "100%|" in last_line(out)
    count.publish(Count(200, False))
    view.update(summary_of(120))
    view.finish()
    line = last_line(out)
    assert "100%|" in line and "120/120 [" in line


def test_resumed_run_starts_at_its_rows_done(screen: tuple[Any, io.StringIO]) -> None:
    bar, out = screen
    count = RowCount(limit=100)
    count.publish(Count(1000, True))
    view = RowsBar(bar, count)
    view.update(summary_of(500))  # the sender's first call: the first run's 500 rows
    view.update(summary_of(501))  # and this run's first record
    assert (bar.initial, bar.n) == (500, 501)
    line = last_line(out)
    assert " 84%|" in line and "501/600 [" in line  # --limit 100 more after the 500


def test_stopped_run_keeps_its_total(screen: tuple[Any, io.StringIO]) -> None:
    bar, out = screen
    count = RowCount()
    count.publish(Count(100, True))
    view = RowsBar(bar, count)
    view.update(summary_of(0))  # the sender calls once before any record
    stopped = summary_of(30)
    stopped.stopped = "interrupted"
    view.update(stopped)
    view.finish()
    assert "30/100 [" in last_line(out)


def send_run(inputs: list[str]) -> Any:
    """What progress_bar reads of a send plan."""
    return SimpleNamespace(
        inputs=inputs,
        input_format=None,
        mapping=None,
        existing="refuse",
        options=SimpleNamespace(limit=None),
    )


def test_bar_on_a_terminal_counts_the_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "e.csv").write_text("a,b\n" + "1,2\n" * 8)
    started: list[RowCount] = []

    def start(run: Any) -> RowCount:
        started.append(progress.counting.count_rows(run.inputs))
        return started[-1]

    monkeypatch.setattr(progress, "start_count", start)
    terminal = Terminal()
    with progress_bar(False, send_run([str(tmp_path / "e.csv")]), terminal) as update:
        assert update is not None and started[0].finished.wait(10)
        update(summary_of(2))
        shown = str(update.__self__.bar)  # type: ignore[attr-defined]  # as drawn when due
        assert " 25%|" in shown and "2/8 [" in shown
    assert "2/2 [" in last_line(terminal)  # a run gone to its end did all the rows there were
    assert started[0].stopping.is_set()


@pytest.mark.parametrize("disabled, stream", [(True, Terminal()), (False, io.StringIO())])
def test_no_bar_and_no_count_off_a_terminal_or_with_no_progress(
    monkeypatch: pytest.MonkeyPatch, disabled: bool, stream: io.StringIO
) -> None:
    monkeypatch.setattr(progress, "start_count", lambda run: pytest.fail("counted"))
    with progress_bar(disabled, send_run(["e.csv"]), stream) as update:
        assert update is None
    assert stream.getvalue() == ""


def test_send_on_a_terminal_shows_total_and_percentage(tmp_path: Path) -> None:
    rows = "".join(f"flow_1,2024-03-01T12:00:00Z,signed_up,u{i}@example.com\n" for i in range(5))
    (tmp_path / "events.csv").write_text("flow_id,occurred_at,event,email\n" + rows)
    (tmp_path / "users.csv").write_text("embeddable_id,key,value\nflow_1,email,u1@example.com\n")
    (tmp_path / "mapping.toml").write_text(
        '[fields]\nembeddable_id = "flow_id"\ntimestamp = "occurred_at"\n'
        'custom_event_name = "event"\n\n[identifier]\nkey = { value = "email" }\n'
        'value = { column = "email" }\n'
    )
    argv = ["send", "events.csv", "-m", "mapping.toml", "--sandbox", "--sandbox-users"]
    code, drawn = run_on_a_terminal([*argv, "users.csv", "-o", "r.jsonl"], tmp_path)
    assert code == 1, drawn  # 4 of the 5 users have no entry
    assert "100%|" in drawn and "5/5 [" in drawn and "not_found=4" in drawn
    assert (tmp_path / "r.jsonl").read_text().count("\n") == 5


def run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run backfill with stderr on a pseudo-terminal 120 columns wide: its exit code and what
    it drew there."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    env = {**os.environ, "EMBEDDABLES_API_KEY": SANDBOX_KEY}
    code = "from backfill.cli import main; main()"
    with subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        stderr=follower,
        stdout=subprocess.DEVNULL,
        env=env,
    ) as child:
        os.close(follower)
        drawn = b""
        while True:
            try:
                block = os.read(leader, 65536)
            except OSError:  # the terminal's other end closed
                break
            if not block:
                break
            drawn += block
        code = child.wait(60)
    os.close(leader)
    return code, drawn.decode(errors="replace")
