"""Send runs from start to end: ``send`` (with --resume) and ``retry`` from a results file.

Everything that can be refused is refused before the first request: options, outputs,
credentials, the inputs and mapping, and on --resume the run record beside the results file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import ssl
import tomllib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import polars as pl

from backfill import pipeline
from backfill.codes import LAST_UNANSWERED, Status
from backfill.errors import ExitCode, MappingError, ResultsFileError, UsageError
from backfill.inputs import InputFile
from backfill.locate import fingerprint, fingerprint_argument
from backfill.mapping import Mapping
from backfill.results import (
    ResultsLock,
    ResultsWriter,
    RowSet,
    check_run_record,
    discard_broken_tail,
    exists_error,
    final_rows,
    read_results,
    read_run_record,
    write_run_record,
)
from backfill.sandbox import SandboxConfig
from backfill.sender import Item, Job, SendOptions, Target, is_loopback, items_of, send
from backfill.summary import Summary

Progress = Callable[[Summary], None] | None
PLACEHOLDER_PREFIX = "REPLACE_WITH_"  # what init writes where it could not guess
RETRY_BATCH = 10_000
# Sending goes at network speed, so small batches cost little and keep memory flat: the
# pipeline holds a few batches (read ahead, being validated, being sent) of about 18,000 rows
# each, whatever the size of the export. validate keeps the larger default, for speed.
SEND_BATCH_BYTES = 2 << 20


@dataclass
class SendRun:
    """Everything a send needs, as the command line gave it."""

    inputs: Sequence[str]
    mapping: Mapping | None
    fmt: str | None
    results_path: str
    target: Target
    options: SendOptions
    sandbox: SandboxConfig | None = None
    resume: bool = False
    overwrite: bool = False
    notes: list[str] = field(default_factory=list)  # what the run did that the user should know
    ssl_context: ssl.SSLContext | None = None


@dataclass
class RetryRun(SendRun):
    """A re-run of the records of a results file with the chosen statuses."""

    from_results: str = ""
    statuses: tuple[str, ...] = (Status.NOT_FOUND, Status.FAILED)


def run_send(run: SendRun, on_progress: Progress = None) -> tuple[Summary, ExitCode]:
    """Send every row of the inputs that has no final record yet."""
    assert run.mapping is not None
    if not run.inputs:
        raise UsageError("no input given")
    _refuse_placeholders(run.mapping)
    if "-" in run.inputs and run.resume:
        raise UsageError("--resume needs input files: stdin cannot be read again")
    _check_outputs(run)
    with ResultsLock(run.results_path):
        identity = {
            "command": "send",
            "inputs": [fingerprint_argument(p) for p in run.inputs],
            **_common_identity(run),
        }
        summary = Summary(run.results_path)
        done = _prepare(run, identity, summary)
        inputs = pipeline.open_inputs(run.inputs, run.mapping, run.fmt)
        keep = None if done is None else _not_in(done)
        return _send(run, identity, summary, inputs, keep, on_progress)


def run_retry(run: RetryRun, on_progress: Progress = None) -> tuple[Summary, ExitCode]:
    """Send again the records of a results file with the chosen statuses, to a new file."""
    source = Path(run.from_results)
    if not source.is_file():
        raise ResultsFileError(f"{run.from_results}: no such results file", file=run.from_results)
    if Path(run.results_path).exists() and source.samefile(run.results_path):
        raise UsageError(
            f"{run.results_path}: retry never writes over the results file it reads",
            file=run.results_path,
        )
    _refuse_placeholders(run.mapping)
    unsent = [s for s in (Status.INVALID, Status.SKIPPED) if s in run.statuses]
    if unsent and run.mapping is None:
        raise UsageError(
            f"{unsent[0]} rows were never sent and have no payload: give -m MAPPING INPUT... to"
            " rebuild them"
        )
    _check_outputs(run)
    with ResultsLock(run.results_path):
        return _retry_locked(run, on_progress)


def _retry_locked(run: RetryRun, on_progress: Progress) -> tuple[Summary, ExitCode]:
    """A retry, once its results file is locked."""
    identity = {
        "command": "retry",
        "from": fingerprint(run.from_results),
        "statuses": sorted(run.statuses),
        "inputs": [fingerprint_argument(p) for p in run.inputs],
        **_common_identity(run),
    }
    summary = Summary(run.results_path)
    done = _prepare(run, identity, summary)
    selected = _selected_rows(run, done)  # reads the whole file: a bad line stops us here
    if run.mapping is None:
        items = _stored_jobs(run, done)
        return _send_items(run, identity, summary, items, on_progress, [])
    _check_inputs_unchanged(run, cast(list[dict[str, object]], identity["inputs"]))
    inputs = pipeline.open_inputs(run.inputs, run.mapping, run.fmt)
    names = {inp.name for inp in inputs}  # files, archive members and objects, as read
    missing = [s for s in selected.sources() if s not in names]
    if missing:
        for inp in inputs:
            inp.close()
        raise UsageError(
            f"{run.from_results} has rows of {missing[0]}, which is not among the inputs given;"
            " give the inputs exactly as the first run did"
        )
    return _send(run, identity, summary, inputs, selected.mask, on_progress)


def _refuse_placeholders(mapping: Mapping | None) -> None:
    """A mapping that init left a placeholder in would send every row to nobody."""
    if mapping is None:
        return
    for source in mapping.sources():
        if source.value is not None and source.value.startswith(PLACEHOLDER_PREFIX):
            raise MappingError(
                f"{mapping.path}: {source.where} is still the placeholder '{source.value}'"
                " that init wrote: fill it in before sending",
                file=mapping.path,
            )


def _common_identity(run: SendRun) -> dict[str, object]:
    """What a resumed run must share with the run that started the file, besides inputs.

    The mapping counts by its meaning (the parsed TOML), so a new comment is no change.
    """
    digest = None
    if run.mapping is not None:
        meaning = json.dumps(tomllib.loads(run.mapping.text), sort_keys=True, default=str)
        digest = hashlib.sha256(meaning.encode()).hexdigest()
    dialect = None if run.mapping is None else dataclasses.asdict(run.mapping.input)
    return {
        "mapping_sha256": digest,
        "input": dialect,  # the CSV dialect, which the command line may set
        "project_id": run.target.project_id,
        "target": _target_kind(run),
    }


def _target_kind(run: SendRun) -> str:
    """Where a run sends, as far as a resume must agree: a rehearsal never resumes for real.

    The sandbox and this machine are told apart from a remote host; a local port may change.
    """
    if run.sandbox is not None:
        return "the built-in sandbox"
    host = urlsplit(run.target.base_url).hostname or ""
    return "a server on this machine" if is_loopback(host) else host


def _check_outputs(run: SendRun) -> None:
    """Refuse option combinations and results paths that cannot work, before any lock."""
    if run.resume and run.overwrite:
        raise UsageError("--resume and --overwrite cannot go together")
    pipeline.check_outputs([run.results_path], list(run.inputs))
    if run.resume and not Path(run.results_path).exists():
        # Starting afresh here would send again every row a run elsewhere already sent.
        raise ResultsFileError(
            f"{run.results_path}: cannot resume: no such results file (is the path or the"
            " working directory the first run's?); leave out --resume to start a new run",
            file=run.results_path,
        )


def _prepare(run: SendRun, identity: dict[str, object], summary: Summary) -> RowSet | None:
    """On --resume, check the run record and read the rows already done (None otherwise)."""
    if not run.resume:
        return None
    if os.path.getsize(run.results_path) == 0 and _no_usable_record(run.results_path):
        # Killed before its first record: nothing to keep, nothing to check against.
        run.notes.append(f"{run.results_path}: empty, so the run starts from the beginning")
        run.resume, run.overwrite = False, True
        return None
    check_run_record(run.results_path, identity)
    if discard_broken_tail(run.results_path):
        run.notes.append(
            f"{run.results_path}: discarded an unfinished last line; its row is sent again"
        )
    records = _counted(summary, read_results(run.results_path), count_requests=False)
    return final_rows(run.results_path, records)


def _counted(
    summary: Summary, records: Iterator[pl.DataFrame], count_requests: bool = True
) -> Iterator[pl.DataFrame]:
    """The batches of records, counted into a summary as they pass."""
    for batch in records:
        summary.add_records(batch, count_requests)
        yield batch


def _no_usable_record(results_path: str) -> bool:
    """Whether a results file has no readable run record beside it."""
    try:
        return read_run_record(results_path) is None
    except ResultsFileError:
        return True


def _not_in(done: RowSet) -> Callable[[str, pl.Series], pl.Series]:
    """A row filter that leaves out the rows already done."""
    return lambda source, rows: ~done.mask(source, rows)


def _selected_rows(run: RetryRun, done: RowSet | None) -> RowSet:
    """The (source, row) pairs a retry sends again, less those already done on --resume."""
    selected = RowSet()

    def choosing(records: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        for batch in records:
            chosen = batch.filter(pl.col("status").is_in(run.statuses))
            for (source,), frame in chosen.group_by("source"):
                name = str(source)
                rows = frame["row"]
                if done is not None:
                    rows = rows.filter(~done.mask(name, rows))
                selected.add(name, rows)
            yield batch

    final_rows(run.from_results, choosing(read_results(run.from_results)))
    return selected.finish()


def _check_inputs_unchanged(run: RetryRun, now: list[dict[str, object]]) -> None:
    """Refuse inputs that changed since the run that wrote the results file: rows would shift.

    ``now`` is the inputs' fingerprints as this retry took them (hashing is the costly part).
    """
    saved = read_run_record(run.from_results)
    recorded = saved.get("inputs") if saved else None
    if not isinstance(recorded, list):
        run.notes.append(
            f"{run.from_results} has no run record: the inputs cannot be checked against it"
        )
        return
    before = {i.get("path"): i for i in recorded if isinstance(i, dict)}
    for path, found in zip(run.inputs, now, strict=True):
        if path in before and path != "-" and found != before[path]:
            raise UsageError(
                f"{path} has changed since the run that wrote {run.from_results}:"
                " its row numbers may no longer be the same rows"
            )


def _stored_jobs(run: RetryRun, done: RowSet | None) -> Iterator[list[Item]]:
    """Jobs from the payloads stored in a results file, batch by batch."""
    for records in read_results(run.from_results):
        chosen = records.filter(pl.col("status").is_in(run.statuses))
        if done is not None:
            kept = [
                frame.filter(~done.mask(str(source), frame["row"]))
                for (source,), frame in chosen.group_by("source", maintain_order=True)
            ]
            chosen = pl.concat(kept) if kept else chosen.clear()
        names = chosen.select(
            "source",
            "row",
            "payload",
            pl.col("payload").str.json_path_match("$.embeddable_id").fill_null("").alias("id"),
            pl.col("payload")
            .str.json_path_match("$.identifiers[0].key")
            .fill_null("")
            .alias("key"),
            pl.col("message").fill_null("").str.contains(LAST_UNANSWERED, literal=True),
        )
        yield [Job(*values) for values in names.iter_rows()]


def _send(
    run: SendRun,
    identity: dict[str, object],
    summary: Summary,
    inputs: list[InputFile],
    keep: Callable[[str, pl.Series], pl.Series] | None,
    on_progress: Progress,
) -> tuple[Summary, ExitCode]:
    """Send the rows of opened inputs that ``keep`` picks."""
    assert run.mapping is not None
    # A generator: closing it stops its read-ahead thread when the run stops early.
    batches = cast(
        Generator[pipeline.CheckedBatch, None, None],
        pipeline.checked_batches(inputs, run.mapping, True, keep, SEND_BATCH_BYTES),
    )
    try:
        return _send_items(run, identity, summary, map(items_of, batches), on_progress, inputs)
    finally:
        batches.close()


def _send_items(
    run: SendRun,
    identity: dict[str, object],
    summary: Summary,
    items: Iterator[Sequence[Item]],
    on_progress: Progress,
    inputs: list[InputFile],
) -> tuple[Summary, ExitCode]:
    """Open the results file (appending on --resume) and send."""
    try:
        if not run.resume:
            if os.path.exists(run.results_path) and not run.overwrite:
                raise exists_error(run.results_path)
            write_run_record(run.results_path, identity)  # first: a kill leaves no orphan
        summary.resume_command = resume_command(run)
        with ResultsWriter(run.results_path, overwrite=run.overwrite, append=run.resume) as writer:
            send(
                items,
                run.target,
                run.options,
                writer,
                summary,
                on_progress,
                run.ssl_context,
                run.sandbox,
            )
    finally:
        for inp in inputs:
            inp.close()
    return summary, exit_code(summary)


def resume_command(run: SendRun) -> str:
    """The command that continues this run if it stops early."""
    words = ["backfill"]
    if isinstance(run, RetryRun):
        words += ["retry", run.from_results, *run.inputs, "-o", run.results_path]
        words += ["--status", ",".join(run.statuses)]
    else:
        words += ["send", *run.inputs, "-o", run.results_path]
    if run.mapping is not None:
        words += ["-m", run.mapping.path]
    if run.sandbox is not None:
        words += ["--sandbox"]
    else:
        words += ["--project-id", run.target.project_id, "--base-url", run.target.base_url]
    return shlex.join([*words, "--resume"])


def exit_code(summary: Summary) -> ExitCode:
    """0 when every row was sent; 1 when some were not; 3 aborted; 130 interrupted."""
    if summary.stopped == "interrupted":
        return ExitCode.INTERRUPTED
    if summary.stopped:
        return ExitCode.ABORTED
    if summary.rows == summary.by_status[Status.SENT] + summary.by_status[Status.SKIPPED]:
        return ExitCode.OK
    return ExitCode.PROBLEMS


def summarise(results_path: str) -> Summary:
    """The summary of a results file, read in batches; a row with two records is refused."""
    summary = Summary(results_path)
    final_rows(results_path, _counted(summary, read_results(results_path)))
    return summary
