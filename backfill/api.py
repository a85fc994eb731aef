"""The library: what the CLI does, as typed functions that print nothing and never exit.

Errors are the exception tree of ``backfill.errors``. Sending imports aiohttp only when a
send or a retry runs, so that ``import backfill`` stays light for a pipeline that validates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from backfill import guess, pipeline
from backfill.errors import UsageError
from backfill.guess import Guessed
from backfill.mapping import Mapping
from backfill.mapping import load_mapping as _load_mapping
from backfill.plans import RetryPlan, SendPlan
from backfill.report import ValidationReport
from backfill.summary import ResultsSummary, RunOutcome
from backfill.summary import summarise as _summarise

OnProgress = Callable[[ResultsSummary], None] | None


def load_mapping(path: str) -> Mapping:
    """Read and check a mapping file (TOML); a problem is a MappingError naming the key."""
    return _load_mapping(path)


def validate(
    inputs: Sequence[str],
    mapping: Mapping,
    *,
    input_format: str | None = None,
    invalid_out: str | None = None,
) -> ValidationReport:
    """Check every row of the inputs against the mapping; nothing is sent.

    ``invalid_out`` also writes the invalid rows (CSV or JSONL by its extension) with the
    reason for each. The report counts valid, invalid and skipped rows, each reason with
    examples, the repairs made, the event names, embeddable ids and the time range.
    """
    if not inputs:
        raise UsageError("no input given")
    return pipeline.validate(list(inputs), mapping, input_format, invalid_out)


def send(
    plan: SendPlan, on_progress: OnProgress = None, *, handle_signals: bool = False
) -> RunOutcome:
    """Send every row of the plan's inputs that has no final record in its results file.

    ``on_progress`` is called a few times a second with the counts so far. With
    ``handle_signals`` (the main thread only), SIGINT and SIGTERM stop the run cleanly: the
    outcome is then ``interrupted``, and a resume sends the rest. Otherwise a
    KeyboardInterrupt ends it as one ends any call; rows in flight get no record either way.
    """
    from backfill import runs

    return runs.run_send(plan, on_progress, handle_signals)


def retry(
    plan: RetryPlan, on_progress: OnProgress = None, *, handle_signals: bool = False
) -> RunOutcome:
    """Send again the rows of a results file with the plan's statuses, into a new file."""
    from backfill import runs

    return runs.run_retry(plan, on_progress, handle_signals)


def summarise(results: str) -> ResultsSummary:
    """The counts, the 404 diagnosis and examples of a results file."""
    return _summarise(results)


def guess_mapping(
    source: str,
    output: str | None = None,
    *,
    input_format: str | None = None,
    preset: str | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    sample_rows: int = guess.SAMPLE_ROWS,
    replace: bool = False,
) -> Guessed:
    """Guess a mapping from the first rows of an export; its TOML text is ``.text``.

    With ``output`` the mapping is written there too (an existing file only with
    ``replace``). ``preset`` takes one tool's mapping without recognising it first.
    """
    if output is not None:
        return guess.init(
            source, output, input_format, replace, sample_rows, preset, delimiter, encoding
        )
    sample = guess.read_sample(source, input_format, sample_rows, delimiter, encoding)
    guess.refuse_one_column(sample)
    return guess.guess_any(sample, source, guess.DEFAULT_OUTPUT, preset)
