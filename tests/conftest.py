"""Shared fixtures: files in a scratch directory, and the CLI run the way a user runs it."""

from __future__ import annotations

import gc
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from backfill.cli import cli

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
