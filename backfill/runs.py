"""Send runs from start to end: a send (continuing a run on resume) and a retry.

Everything that can be refused is refused before the first request: options, outputs,
credentials, the inputs and mapping, and on resume the run record beside the results file.
Plans are taken as they are and never changed; what a run found out (an empty results file
started afresh, a discarded half line) comes back in its outcome's notes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import ssl
import tomllib
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import polars as pl

from backfill import pipeline
from backfill.codes import LAST_UNANSWERED, SANDBOX_API_KEY, SANDBOX_HOST, Status
from backfill.errors import Hint, MappingError, ResultsFileError, UsageError
from backfill.inputs import InputFile
from backfill.locate import fingerprint, fingerprint_argument
from backfill.mapping import Mapping
from backfill.plans import (
    Destination,
    Existing,
    RetryPlan,
    Sandbox,
    SendOptions,
    SendPlan,
    Target,
    is_loopback,
)
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
from backfill.sender import Item, Job, items_of, send
from backfill.summary import ResultsSummary, RunOutcome, counted

OnProgress = Callable[[ResultsSummary], None] | None
PLACEHOLDER_PREFIX = "REPLACE_WITH_"  # what init writes where it could not guess
# Sending goes at network speed, so small batches cost little and keep memory flat: the
# pipeline holds a few batches (read ahead, being validated, being sent) of about 18,000 rows
# each, whatever the size of the export. validate keeps the larger default, for speed.
SEND_BATCH_BYTES = 2 << 20


@dataclass
class _Run:
    """One send's working settings, shared by send and retry."""

    results: str
    destination: Destination
    options: SendOptions
    existing: Existing  # resume may become overwrite: an empty results file starts afresh
    ssl_context: ssl.SSLContext
    mapping: Mapping | None  # None: a retry of the stored payloads
    inputs: tuple[str, ...]
    input_format: str | None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, plan: SendPlan | RetryPlan) -> _Run:
        """A plan's run; a bad CA bundle is refused here, before anything is read or written."""
        context = _ssl_context(plan.ca_bundle)
        head = (plan.results, plan.destination, plan.options, plan.existing, context)
        if isinstance(plan, SendPlan):
            return cls(*head, plan.mapping, plan.inputs, plan.input_format)
        rebuild = plan.rebuild
        if rebuild is None:
            return cls(*head, None, (), None)
        return cls(*head, rebuild.mapping, rebuild.inputs, rebuild.input_format)


def run_send(
    plan: SendPlan, on_progress: OnProgress = None, handle_signals: bool = False
) -> RunOutcome:
    """Send every row of the inputs that has no final record yet."""
    _refuse_placeholders(plan.mapping)
    run = _Run.of(plan)
    _check_outputs(run)
    with ResultsLock(run.results):
        identity = {
            "command": "send",
            "inputs": [fingerprint_argument(p) for p in run.inputs],
            **_common_identity(run),
        }
        summary = ResultsSummary(run.results)
        done = _prepare(run, identity, summary)
        inputs = pipeline.open_inputs(run.inputs, plan.mapping, run.input_format)
        keep = None if done is None else _not_in(done)
        return _send(run, identity, summary, inputs, keep, on_progress, handle_signals)


def run_retry(
    plan: RetryPlan, on_progress: OnProgress = None, handle_signals: bool = False
) -> RunOutcome:
    """Send again the records of a results file with the chosen statuses, to a new file."""
    source = Path(plan.from_results)
    if not source.is_file():
        raise ResultsFileError(f"{plan.from_results}: no such results file", file=plan.from_results)
    if Path(plan.results).exists() and source.samefile(plan.results):
        raise UsageError(
            f"{plan.results}: retry never writes over the results file it reads", file=plan.results
        )
    rebuild = plan.rebuild
    _refuse_placeholders(None if rebuild is None else rebuild.mapping)
    unsent = [s for s in (Status.INVALID, Status.SKIPPED) if s in plan.statuses]
    if unsent and rebuild is None:
        raise UsageError(
            f"{unsent[0].value} rows were never sent and have no payload: rebuild them from the"
            " inputs with a mapping",
            hint=Hint.REBUILD,
        )
    run = _Run.of(plan)
    _check_outputs(run)
    with ResultsLock(run.results):
        return _retry_locked(plan, run, on_progress, handle_signals)


def _retry_locked(
    plan: RetryPlan, run: _Run, on_progress: OnProgress, handle_signals: bool
) -> RunOutcome:
    """A retry, once its results file is locked."""
    identity = {
        "command": "retry",
        "from": fingerprint(plan.from_results),
        "statuses": sorted(s.value for s in plan.statuses),
        "inputs": [fingerprint_argument(p) for p in run.inputs],
        **_common_identity(run),
    }
    summary = ResultsSummary(run.results)
    done = _prepare(run, identity, summary)
    selected = _selected_rows(plan, done)  # reads the whole file: a bad line stops us here
    if run.mapping is None:
        items = _stored_jobs(plan, done)
        return _send_items(run, identity, summary, items, on_progress, handle_signals)
    _check_inputs_unchanged(plan, run, cast(list[dict[str, object]], identity["inputs"]))
    inputs = pipeline.open_inputs(run.inputs, run.mapping, run.input_format)
    names = {inp.name for inp in inputs}  # files, archive members and objects, as read
    missing = [s for s in selected.sources() if s not in names]
    if missing:
        for inp in inputs:
            inp.close()
        raise UsageError(
            f"{plan.from_results} has rows of {missing[0]}, which is not among the inputs given;"
            " give the inputs exactly as the first run did",
            file=plan.from_results,
        )
    return _send(run, identity, summary, inputs, selected.mask, on_progress, handle_signals)


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


def _common_identity(run: _Run) -> dict[str, object]:
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
        "project_id": _project_id(run),
        "target": _target_kind(run),
    }


def _project_id(run: _Run) -> str:
    """The project the run sends to."""
    return run.destination.project_id


def _target_kind(run: _Run) -> str:
    """Where a run sends, as far as a resume must agree: a rehearsal never resumes for real.

    The sandbox and this machine are told apart from a remote host; a local port may change.
    """
    if isinstance(run.destination, Sandbox):
        return "the built-in sandbox"
    host = urlsplit(run.destination.base_url).hostname or ""
    return "a server on this machine" if is_loopback(host) else host


def _check_outputs(run: _Run) -> None:
    """Refuse results paths that cannot work, before any lock."""
    pipeline.check_outputs([run.results], list(run.inputs))
    if run.existing == "resume" and not Path(run.results).exists():
        # Starting afresh here would send again every row a run elsewhere already sent.
        raise ResultsFileError(
            f"{run.results}: cannot resume: no such results file (is the path or the working"
            " directory the first run's?); start a new run instead",
            file=run.results,
            hint=Hint.NEW_RUN,
        )


def _prepare(run: _Run, identity: dict[str, object], summary: ResultsSummary) -> RowSet | None:
    """On resume, check the run record and read the rows already done (None otherwise)."""
    if run.existing != "resume":
        return None
    if os.path.getsize(run.results) == 0 and _no_usable_record(run.results):
        # Killed before its first record: nothing to keep, nothing to check against.
        run.notes.append(f"{run.results}: empty, so the run starts from the beginning")
        run.existing = "overwrite"
        return None
    check_run_record(run.results, identity)
    if discard_broken_tail(run.results):
        run.notes.append(f"{run.results}: discarded an unfinished last line; its row is sent again")
    records = counted(summary, read_results(run.results), count_requests=False)
    return final_rows(run.results, records)


def _no_usable_record(results_path: str) -> bool:
    """Whether a results file has no readable run record beside it."""
    try:
        return read_run_record(results_path) is None
    except ResultsFileError:
        return True


def _not_in(done: RowSet) -> Callable[[str, pl.Series], pl.Series]:
    """A row filter that leaves out the rows already done."""
    return lambda source, rows: ~done.mask(source, rows)


def _selected_rows(plan: RetryPlan, done: RowSet | None) -> RowSet:
    """The (source, row) pairs a retry sends again, less those already done on resume."""
    selected = RowSet()

    def choosing(records: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        for batch in records:
            chosen = batch.filter(pl.col("status").is_in(plan.statuses))
            for (source,), frame in chosen.group_by("source"):
                name = str(source)
                rows = frame["row"]
                if done is not None:
                    rows = rows.filter(~done.mask(name, rows))
                selected.add(name, rows)
            yield batch

    final_rows(plan.from_results, choosing(read_results(plan.from_results)))
    return selected.finish()


def _check_inputs_unchanged(plan: RetryPlan, run: _Run, now: list[dict[str, object]]) -> None:
    """Refuse inputs that changed since the run that wrote the results file: rows would shift.

    ``now`` is the inputs' fingerprints as this retry took them (hashing is the costly part).
    """
    saved = read_run_record(plan.from_results)
    recorded = saved.get("inputs") if saved else None
    if not isinstance(recorded, list):
        run.notes.append(
            f"{plan.from_results} has no run record: the inputs cannot be checked against it"
        )
        return
    before = {i.get("path"): i for i in recorded if isinstance(i, dict)}
    for path, found in zip(run.inputs, now, strict=True):
        if path in before and path != "-" and found != before[path]:
            raise UsageError(
                f"{path} has changed since the run that wrote {plan.from_results}:"
                " its row numbers may no longer be the same rows",
                file=path,
            )


def _stored_jobs(plan: RetryPlan, done: RowSet | None) -> Iterator[list[Item]]:
    """Jobs from the payloads stored in a results file, batch by batch."""
    for records in read_results(plan.from_results):
        chosen = records.filter(pl.col("status").is_in(plan.statuses))
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
    run: _Run,
    identity: dict[str, object],
    summary: ResultsSummary,
    inputs: list[InputFile],
    keep: Callable[[str, pl.Series], pl.Series] | None,
    on_progress: OnProgress,
    handle_signals: bool,
) -> RunOutcome:
    """Send the rows of opened inputs that ``keep`` picks."""
    assert run.mapping is not None
    # A generator: closing it stops its read-ahead thread when the run stops early.
    batches = cast(
        Generator[pipeline.CheckedBatch, None, None],
        pipeline.checked_batches(inputs, run.mapping, True, keep, SEND_BATCH_BYTES),
    )
    try:
        items = map(items_of, batches)
        return _send_items(run, identity, summary, items, on_progress, handle_signals)
    finally:
        batches.close()  # first: its read-ahead thread may still be reading an input
        for inp in inputs:
            inp.close()


def _send_items(
    run: _Run,
    identity: dict[str, object],
    summary: ResultsSummary,
    items: Iterator[Sequence[Item]],
    on_progress: OnProgress,
    handle_signals: bool,
) -> RunOutcome:
    """Open the results file (appending on resume) and send."""
    resume, overwrite = run.existing == "resume", run.existing == "overwrite"
    if not resume:
        if os.path.exists(run.results) and not overwrite:
            raise exists_error(run.results)
        write_run_record(run.results, identity)  # first: a kill leaves no orphan
    with ResultsWriter(run.results, overwrite=overwrite, append=resume) as writer:
        if isinstance(run.destination, Sandbox):
            sandbox = run.destination
            # serve() gives the sandbox's URL, once it listens on a free port
            target = Target(f"http://{SANDBOX_HOST}", sandbox.project_id, SANDBOX_API_KEY)
            serve = _sandbox_server(sandbox)
        else:
            target, serve = run.destination, None
        send(
            items,
            target,
            run.options,
            writer,
            summary,
            on_progress,
            run.ssl_context,
            serve,
            handle_signals,
        )
    return RunOutcome(summary, run.existing, tuple(run.notes))


def _ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """A verifying TLS context, trusting ``ca_bundle`` too when given."""
    context = ssl.create_default_context()
    if ca_bundle:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"{ca_bundle}: cannot load CA certificates ({exc})", file=ca_bundle
            ) from None
    return context


def _sandbox_server(sandbox: Sandbox) -> Callable[[], contextlib.AbstractAsyncContextManager[str]]:
    """Start the built-in sandbox in the run's event loop; it yields the URL to send to."""

    @contextlib.asynccontextmanager
    async def serve() -> AsyncIterator[str]:
        from backfill.sandbox import RunningSandbox, SandboxConfig

        users = None if sandbox.users is None else Path(sandbox.users)
        async with RunningSandbox(SandboxConfig(users_path=users, keep_received=False)) as local:
            yield local.url

    return serve
