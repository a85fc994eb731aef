"""Run a command as a child process; report its wall time and its own peak RSS.

    python bench/measure.py [--ok-codes 0,1] [--repeat N] -- python -c "import polars"

Why a wrapper process: on Linux a child's ``ru_maxrss`` starts from the RSS high-water mark of
the process that spawned it (``exec`` records the old address space's peak, and
fork/vfork/posix_spawn hand over the parent's), so a benchmark driver that once held 300 MiB
would report at least 300 MiB for ``true``. Every measurement therefore goes through a fresh,
bare interpreter (``python -I -S``, under 10 MiB) that spawns the command with
``os.posix_spawnp`` and reaps it with ``os.wait4``: the figure is the command's own peak (and
its waited-for descendants'), floored at the wrapper's few MiB, whatever the driver did before.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import IO, NamedTuple

# Runs as: python -I -S -c WRAPPER RESULT_PATH QUIET COMMAND...; writes "code wall maxrss".
# Kept to os/sys/time so that the wrapper's own RSS (the floor of every figure) stays tiny.
WRAPPER = """
import os, sys, time
result_path, quiet, argv = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
actions = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)] if quiet else []
started = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(result_path, "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {wall!r} {usage.ru_maxrss}")
"""

# How much of a failed command's stderr goes into the error message.
STDERR_TAIL_CHARS = 2000


class Measurement(NamedTuple):
    wall_s: float
    peak_rss_mib: float


class CommandFailed(RuntimeError):
    """The measured command exited with a code it was not allowed to."""

    def __init__(self, command: Sequence[str], returncode: int, stderr_tail: str) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        shown = " ".join(self.command)
        super().__init__(f"exit {returncode}: {shown}\n{stderr_tail}".rstrip())


def maxrss_mib(ru_maxrss: int) -> float:
    """ru_maxrss is KiB on Linux and the BSDs, bytes on macOS."""
    factor = 1 if sys.platform == "darwin" else 1024
    return ru_maxrss * factor / 2**20


def stderr_tail(stream: IO[bytes]) -> str:
    stream.seek(0, os.SEEK_END)
    stream.seek(max(0, stream.tell() - STDERR_TAIL_CHARS))
    return stream.read().decode("utf-8", "replace")


def run_wrapped(
    command: Sequence[str],
    quiet: bool,
    stderr: int,
    cwd: Path | str | None,
    env: Mapping[str, str] | None,
) -> tuple[int, float, float] | None:
    """(exit code, wall seconds, peak RSS MiB) of the command; None if it never started."""
    fd, result_path = tempfile.mkstemp(prefix="measure-", suffix=".txt")
    os.close(fd)
    try:
        wrapper = [sys.executable, "-I", "-S", "-c", WRAPPER, result_path, "1" if quiet else "0"]
        # The wrapper is cheap and not timed; cwd and env pass on to the command through it.
        subprocess.run([*wrapper, *command], stderr=stderr, cwd=cwd, env=env, check=False)
        fields = Path(result_path).read_text().split()
    finally:
        os.unlink(result_path)
    if len(fields) != 3:
        return None  # posix_spawnp failed (no such program): the traceback is on stderr
    return int(fields[0]), float(fields[1]), maxrss_mib(int(fields[2]))


def measure(
    command: Sequence[str],
    *,
    ok_codes: Collection[int] = (0,),
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    show_output: bool = False,
) -> Measurement:
    """Run ``command`` (an argv list, no shell) and measure it.

    Output goes to /dev/null unless ``show_output``; stderr is kept in a temporary file so a
    failure (an exit code not in ``ok_codes``) raises CommandFailed with its tail.
    """
    with tempfile.TemporaryFile() as stderr:
        outcome = run_wrapped(command, not show_output, stderr.fileno(), cwd, env)
        tail = stderr_tail(stderr)
    if show_output:
        sys.stderr.write(tail)
    if outcome is None:
        raise CommandFailed(command, 127, tail)
    code, wall, rss = outcome
    if code not in ok_codes:
        raise CommandFailed(command, code, tail)
    return Measurement(wall, rss)


def best_of(
    repeat: int,
    command: Sequence[str],
    *,
    ok_codes: Collection[int] = (0,),
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> Measurement:
    """The fastest wall time and the smallest peak RSS over ``repeat`` runs."""
    runs = [measure(command, ok_codes=ok_codes, cwd=cwd, env=env) for _ in range(repeat)]
    return Measurement(min(r.wall_s for r in runs), min(r.peak_rss_mib for r in runs))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ok-codes", default="0", help="comma-separated accepted exit codes")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ok_codes = {int(code) for code in args.ok_codes.split(",")}
    try:
        if args.repeat == 1:
            result = measure(args.command, ok_codes=ok_codes, show_output=True)
        else:
            result = best_of(args.repeat, args.command, ok_codes=ok_codes)
    except CommandFailed as failure:
        print(failure, file=sys.stderr)
        return 1
    print(f"wall {result.wall_s:.3f} s, peak RSS {result.peak_rss_mib:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
