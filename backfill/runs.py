"""A send run from start to end: check everything, open the inputs and the results file, send,
and decide the exit code. Used by ``send`` (and by ``retry`` for re-runs)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import cast

from backfill import pipeline
from backfill.codes import Status
from backfill.errors import ExitCode, UsageError
from backfill.mapping import Mapping
from backfill.results import ResultsWriter
from backfill.sandbox import SandboxConfig
from backfill.sender import SendOptions, Target, items_of, send
from backfill.summary import Summary


@dataclass
class SendRun:
    """Everything a send needs, as the command line gave it."""

    inputs: Sequence[str]
    mapping: Mapping
    fmt: str | None
    results_path: str
    target: Target
    options: SendOptions
    sandbox: SandboxConfig | None = None
    resume: bool = False
    overwrite: bool = False


def run_send(
    run: SendRun, on_progress: Callable[[Summary], None] | None = None
) -> tuple[Summary, ExitCode]:
    """Send a whole run; every check that can fail does so before the first request."""
    if run.resume and run.overwrite:
        raise UsageError("--resume and --overwrite cannot go together")
    if run.resume:
        raise UsageError("--resume is not available yet; use --overwrite to start again")
    pipeline.check_outputs([run.results_path], run.inputs)
    inputs = pipeline.open_inputs(run.inputs, run.mapping, run.fmt)
    summary = Summary(run.results_path)
    try:
        with ResultsWriter(run.results_path, overwrite=run.overwrite) as writer:
            # A generator: closing it stops its read-ahead thread when the run stops early.
            batches = cast(
                Generator[pipeline.CheckedBatch, None, None],
                pipeline.checked_batches(inputs, run.mapping, bodies=True),
            )
            try:
                send(
                    map(items_of, batches),
                    run.target,
                    run.options,
                    writer,
                    summary,
                    on_progress,
                    None,
                    run.sandbox,
                )
            finally:
                batches.close()
    finally:
        for inp in inputs:
            inp.close()
    return summary, exit_code(summary)


def exit_code(summary: Summary) -> ExitCode:
    """0 when every row was sent; 1 when some were not; 3 aborted; 130 interrupted."""
    if summary.stopped == "interrupted":
        return ExitCode.INTERRUPTED
    if summary.stopped:
        return ExitCode.ABORTED
    if summary.rows == summary.by_status[Status.SENT]:
        return ExitCode.OK
    return ExitCode.PROBLEMS
