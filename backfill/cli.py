"""The command line: parse options, call one core function, render its outcome.

This is the only module that knows about click and the terminal; errors from the core are
turned into one-line messages and exit codes here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import os
import select
import stat
import sys
import traceback
from collections.abc import Callable
from dataclasses import replace
from functools import wraps
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from backfill import api, html, pipeline
from backfill.codes import SANDBOX_API_KEY, SANDBOX_HOST, SANDBOX_PORT, Status
from backfill.commands import resume_command, retry_command
from backfill.errors import BackfillError, CredentialsError, ExitCode, Hint, UsageError
from backfill.mapping import Mapping, check_delimiter, check_encoding, load_mapping
from backfill.payloads import PAYLOAD
from backfill.plans import (
    SANDBOX_PROJECT,
    Destination,
    Existing,
    Rebuild,
    RetryPlan,
    Sandbox,
    SendOptions,
    SendPlan,
    check_target,
)
from backfill.redact import RedactingFilter, redact, register
from backfill.report import write_json
from backfill.results import default_results_path
from backfill.summary import RunOutcome
from backfill.text import summary_text, validation_text

F = TypeVar("F", bound=Callable[..., Any])
DRY_RUN_PAYLOADS = 3
FORMAT_CHOICES = ["csv", "tsv", "jsonl", "json", "parquet"]
DEFAULT_BASE_URL = "https://api.embeddables.com"
# (the core's words for the setting that fixes an error, the command line's)
HINT_WORDS: dict[Hint, tuple[tuple[str, str], ...]] = {
    Hint.FORMAT: (("or name its format", "or give --format"),),
    Hint.FORMAT_FOR_STDIN: (("needs its format: ", "needs --format "),),
    Hint.DELIMITER: (
        ("with the delimiter", "with --delimiter"),
        ("name the delimiter", "give --delimiter"),
    ),
    Hint.REPLACE: (("ask to replace it to write over it", "give --force to write over it"),),
    Hint.RESUME_OR_OVERWRITE: (
        (
            "resume it to continue that run, or overwrite it to start again",
            "use --resume to continue that run or --overwrite to start again",
        ),
    ),
    Hint.NEW_RUN: (("start a new run instead", "leave out --resume to start a new run"),),
    Hint.RESUME_NEEDS_FILES: (("a resumed run needs", "--resume needs"),),
    Hint.REBUILD: (
        ("rebuild them from the inputs with a mapping", "give -m MAPPING INPUT... to rebuild them"),
    ),
}
# The settings a stop reason names (outcome.stopped), as the command line names them.
STOP_WORDS = (
    ("(or the API key file)", "(or --api-key-file)"),
    (
        "that the project id and the base URL are right",
        "that --project-id and --base-url are right",
    ),
    ("check the base URL", "check --base-url"),
    ("certificate as the CA bundle", "certificate with --ca-bundle"),
)
HINT_MESSAGES = {
    Hint.API_KEY: (
        "no API key: set EMBEDDABLES_API_KEY or give --api-key-file (keys start with rk_)"
    ),
    Hint.PROJECT_ID: "no project id: give --project-id or set EMBEDDABLES_PROJECT_ID",
}


def main() -> None:
    """Entry point of the ``backfill`` command."""
    register(os.environ.get("EMBEDDABLES_API_KEY"))
    cli(prog_name="backfill")


def reports_errors(func: F) -> F:
    """Turn a BackfillError into 'error: ...' on stderr and its exit code.

    Anything else is a bug: one line (or with --debug the traceback), the key masked.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BackfillError as exc:
            click.echo(f"error: {redact(cli_message(exc))}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # Ctrl-C outside a send, which handles its own
            click.echo("error: interrupted", err=True)
            sys.exit(ExitCode.INTERRUPTED)
        except Exception as exc:
            if isinstance(exc, BrokenPipeError) and _output_closed():
                # Whoever read our output has gone (| head): stop quietly, as Unix tools
                # do. Output still buffered goes nowhere, or Python's exit would fail on it.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                sys.exit(ExitCode.OUTPUT_CLOSED)
            if click.get_current_context().find_root().params.get("debug"):
                click.echo(redact(traceback.format_exc()), err=True, nl=False)
            line = redact(f"{type(exc).__name__}: {exc}")
            click.echo(f"error: unexpected {line} (a bug: --debug shows where)", err=True)
            sys.exit(ExitCode.NOTHING_SENT)

    return wrapper  # type: ignore[return-value]


def _output_closed() -> bool:
    """Whether standard output is a pipe nobody reads any more (poll says POLLERR), rather
    than some other pipe or FIFO the command was writing (a --report path, say)."""
    poll = getattr(select, "poll", None)
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # no file descriptor (a test runner's buffer)
        return False
    if poll is None or not stat.S_ISFIFO(os.fstat(fd).st_mode):
        return False
    watch = poll()
    watch.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in watch.poll(0))


def _cli_words(text: str, words: tuple[tuple[str, str], ...]) -> str:
    """Text of the core with the command line's names for the settings it names."""
    for core, flags in words:
        text = text.replace(core, flags)
    return text


def cli_message(exc: BackfillError) -> str:
    """An error's message with the flag that fixes it named, where the core names a setting."""
    if exc.hint is None:
        return str(exc)
    if exc.hint in HINT_MESSAGES:
        return HINT_MESSAGES[exc.hint]
    return _cli_words(str(exc), HINT_WORDS[exc.hint])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backfill")
@click.option("--debug", is_flag=True, help="Log everything (the key masked), tracebacks on bugs.")
def cli(debug: bool) -> None:
    """Move historical events from CSV/JSONL exports into the Embeddables events API.

    \b
    Example:
      backfill validate events.csv -m mapping.toml
    """
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(RedactingFilter())
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.basicConfig(level=logging.DEBUG, handlers=[handler], force=True)


def dialect_options(func: F) -> F:
    """--delimiter and --encoding: the CSV dialect, over the mapping's [input] table."""
    func = click.option(
        "--encoding",
        help="Text encoding of CSV inputs (utf-8, cp1252, latin-1, utf-16, ...); default the"
        " mapping's [input] encoding, else utf-8.",
    )(func)
    return click.option(
        "--delimiter",
        help='CSV delimiter: one character, "\\t" for tab, or "auto" to sniff it from the'
        " header; default the mapping's [input] delimiter, else by extension.",
    )(func)


def input_options(func: F) -> F:
    """The options every command that reads exports shares."""
    func = dialect_options(func)
    func = click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMAT_CHOICES),
        help="Input format, needed for stdin (-); overrides the file extension.",
    )(func)
    func = click.option(
        "-m",
        "--mapping",
        "mapping_path",
        required=True,
        type=click.Path(dir_okay=False),
        help="The TOML mapping file.",
    )(func)
    return click.argument("inputs", nargs=-1, required=True)(func)


@cli.command()
@input_options
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    help="Also write the report: PATH.html as a page with charts, any other name as JSON.",
)
@click.option(
    "--invalid-out",
    type=click.Path(dir_okay=False),
    help="Write invalid rows (CSV or JSONL by extension).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of text.")
@click.option(
    "--show-identifiers",
    is_flag=True,
    help="Show identifier values in reports in full (default: masked).",
)
@reports_errors
def validate(
    inputs: tuple[str, ...],
    mapping_path: str,
    fmt: str | None,
    delimiter: str | None,
    encoding: str | None,
    report_path: str | None,
    invalid_out: str | None,
    as_json: bool,
    show_identifiers: bool,
) -> None:
    """Check exports against a mapping and report what is wrong, without sending anything.

    \b
    Examples:
      backfill validate events.csv -m mapping.toml --report report.json --invalid-out bad.csv
      backfill validate events.csv -m mapping.toml --report report.html

    Exit code 0 when every row is valid, 1 when some are invalid, 2 when nothing could be read.
    """
    mapping = _load_mapping(mapping_path, delimiter, encoding)
    pipeline.check_outputs([report_path], inputs)
    report = pipeline.validate(inputs, mapping, fmt, invalid_out)
    if report_path and html.is_html(report_path):
        html.write_html(html.validation_page(report, show_identifiers), report_path)
    elif report_path:
        write_json(report.to_dict(show_identifiers), report_path)
    if as_json:
        click.echo(json.dumps(report.to_dict(show_identifiers), indent=2))
    else:
        click.echo(validation_text(report, _terminal_style()))
    sys.exit(ExitCode.OK if report.invalid == 0 else ExitCode.PROBLEMS)


def _load_mapping(path: str, delimiter: str | None, encoding: str | None) -> Mapping:
    """The mapping, with the command line's CSV dialect over its [input] table."""
    mapping = load_mapping(path)
    if delimiter is None and encoding is None:
        return mapping
    if delimiter == "\\t":
        delimiter = "\t"
    settings = mapping.input
    if delimiter is not None:
        settings = replace(settings, delimiter=check_delimiter(delimiter, "--delimiter"))
    if encoding is not None:
        check_encoding(encoding, "--encoding")
        settings = replace(settings, encoding=encoding)
    return replace(mapping, input=settings)


def _terminal_style() -> Callable[[str, str], str]:
    """Colours for report roles on a terminal; none when stdout is not one or NO_COLOR is set."""
    if not sys.stdout.isatty() or os.environ.get("NO_COLOR"):
        return lambda text, role: text

    def paint(text: str, role: str) -> str:
        if role == "heading":
            return click.style(text, bold=True)
        return click.style(text, fg={"good": "green", "bad": "red"}.get(role, "yellow"))

    return paint


class ConcurrencyType(click.ParamType[int | str]):
    """A number of requests in flight, or 'auto'."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "auto" or isinstance(value, int):
            return value
        try:
            number = int(value)
        except ValueError:
            self.fail(f"'{value}' is not a whole number or 'auto'", param, ctx)
        if not 1 <= number <= 1024:
            self.fail(f"{number} is not between 1 and 1024", param, ctx)
        return number


def send_options(func: F) -> F:
    """The options of every command that sends: target, pool, retries, run control."""
    options = [
        click.option(
            "--project-id",
            envvar="EMBEDDABLES_PROJECT_ID",
            help="Project id (pr_...); env EMBEDDABLES_PROJECT_ID.",
        ),
        click.option(
            "--base-url",
            envvar="EMBEDDABLES_API_URL",
            default=DEFAULT_BASE_URL,
            show_default=True,
            help="API server; env EMBEDDABLES_API_URL.",
        ),
        click.option(
            "--api-key-file",
            type=click.Path(dir_okay=False),
            help="File holding the rk_ key (otherwise env EMBEDDABLES_API_KEY).",
        ),
        click.option(
            "--sandbox",
            "use_sandbox",
            is_flag=True,
            help="Send to a local sandbox started in-process.",
        ),
        click.option(
            "--sandbox-users",
            type=click.Path(dir_okay=False),
            help="User entries for --sandbox (CSV/JSONL).",
        ),
        click.option(
            "--concurrency",
            type=ConcurrencyType(),
            default="auto",
            show_default=True,
            help="Requests in flight at most, or 'auto': find the concurrency and rate the"
            " server takes.",
        ),
        click.option(
            "--max-concurrency",
            type=click.IntRange(1, 1024),
            default=1024,
            show_default=True,
            help="The most requests in flight --concurrency auto may reach (workers, pool).",
        ),
        click.option(
            "--rate",
            type=click.FloatRange(min=0, min_open=True),
            help="Requests per second at most.",
        ),
        click.option(
            "--max-retries",
            type=click.IntRange(0, 100),
            default=5,
            show_default=True,
            help="Retries of a row on 408/429/5xx/timeouts/connection errors.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=30.0,
            show_default=True,
            help="Seconds per request.",
        ),
        click.option(
            "--max-consecutive-failures",
            type=click.IntRange(1),
            default=100,
            show_default=True,
            help="Stop the run (exit 3) after this many rows in a row end failed.",
        ),
        click.option(
            "--resume", is_flag=True, help="Continue the run of an existing results file."
        ),
        click.option(
            "--overwrite", is_flag=True, help="Start again, writing over an existing results file."
        ),
        click.option(
            "--limit", type=click.IntRange(1), help="Take only the first N rows (a trial run)."
        ),
        click.option(
            "--ca-bundle",
            type=click.Path(dir_okay=False),
            help="Extra CA certificates (PEM) to trust, e.g. a corporate proxy's.",
        ),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.command()
@input_options
@click.option(
    "-o",
    "--results",
    "results_path",
    type=click.Path(dir_okay=False),
    help="Results file (JSONL, or CSV by extension). Default: INPUT.results.jsonl.",
)
@click.option("--dry-run", is_flag=True, help="Validate and show the first payloads; send nothing.")
@send_options
@reports_errors
def send(
    inputs: tuple[str, ...],
    mapping_path: str,
    fmt: str | None,
    delimiter: str | None,
    encoding: str | None,
    results_path: str | None,
    dry_run: bool,
    project_id: str | None,
    base_url: str,
    api_key_file: str | None,
    use_sandbox: bool,
    sandbox_users: str | None,
    concurrency: int | Literal["auto"],
    max_concurrency: int,
    rate: float | None,
    max_retries: int,
    timeout: float,
    max_consecutive_failures: int,
    resume: bool,
    overwrite: bool,
    limit: int | None,
    ca_bundle: str | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Send every valid row of the exports to the Embeddables events API.

    Every row ends in the results file as sent, not_found, rejected, failed or invalid.

    \b
    Examples:
      backfill send events.csv -m mapping.toml --dry-run
      EMBEDDABLES_API_KEY=rk_... backfill send events.csv -m mapping.toml --project-id pr_123
      backfill send events.csv -m mapping.toml --project-id pr_123 --resume
      backfill send sample_data/events.csv -m sample_data/mapping.toml --sandbox \\
          --sandbox-users sample_data/users.csv

    Exit code 0 when every row was sent, 1 when some were not, 2 when nothing was sent,
    3 when the run stopped early (continue it with --resume), 130 when interrupted.
    """
    mapping = _load_mapping(mapping_path, delimiter, encoding)
    if dry_run:
        _dry_run(inputs, mapping, fmt)
    options = SendOptions(
        concurrency=concurrency,
        max_concurrency=max_concurrency,
        rate=rate,
        max_retries=max_retries,
        timeout=timeout,
        max_consecutive_failures=max_consecutive_failures,
        limit=limit,
    )
    plan = SendPlan(
        inputs=inputs,
        mapping=mapping,
        results=results_path or default_results_path(inputs[0]),
        destination=_destination(use_sandbox, sandbox_users, project_id, base_url, api_key_file),
        options=options,
        existing=_existing(resume, overwrite),
        input_format=fmt,
        ca_bundle=ca_bundle,
    )
    _run_and_exit(plan, no_progress, as_json)


@cli.command()
@click.argument("results")
@click.argument("inputs", nargs=-1)
@click.option(
    "-o",
    "--results-out",
    "results_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The new results file.",
)
@click.option(
    "--status",
    "statuses",
    default="not_found,failed",
    show_default=True,
    help="Statuses to send again, comma-separated.",
)
@click.option(
    "-m",
    "--mapping",
    "mapping_path",
    type=click.Path(dir_okay=False),
    help="Rebuild the payloads from INPUT... with this mapping.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_CHOICES),
    help="Input format for stdin; overrides the file extension.",
)
@dialect_options
@send_options
@reports_errors
def retry(
    results: str,
    inputs: tuple[str, ...],
    results_path: str,
    statuses: str,
    mapping_path: str | None,
    fmt: str | None,
    delimiter: str | None,
    encoding: str | None,
    project_id: str | None,
    base_url: str,
    api_key_file: str | None,
    use_sandbox: bool,
    sandbox_users: str | None,
    concurrency: int | Literal["auto"],
    max_concurrency: int,
    rate: float | None,
    max_retries: int,
    timeout: float,
    max_consecutive_failures: int,
    resume: bool,
    overwrite: bool,
    limit: int | None,
    ca_bundle: str | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Send again the rows of a results file that did not go through, to a new results file.

    By default the stored payloads are sent again; with -m MAPPING INPUT... the payloads of
    those rows are rebuilt from the original inputs with the new mapping.

    \b
    Examples:
      backfill retry events.results.jsonl -o events.retry.jsonl
      backfill retry events.results.jsonl -o fixed.jsonl -m fixed_mapping.toml events.csv
      backfill retry events.retry.jsonl -o events.retry2.jsonl --status failed
    """
    if bool(mapping_path) != bool(inputs):
        raise UsageError("-m MAPPING and INPUT... go together: give both or neither")
    chosen = tuple(s.strip() for s in statuses.split(",") if s.strip())
    unknown = [s for s in chosen if s not in {status.value for status in Status}]
    if unknown or not chosen:
        raise UsageError(
            f"--status: unknown status '{unknown[0] if unknown else ''}'; use"
            f" {', '.join(s.value for s in Status)}"
        )
    rebuild = None
    if mapping_path:
        rebuild = Rebuild(_load_mapping(mapping_path, delimiter, encoding), inputs, fmt)
    options = SendOptions(
        concurrency=concurrency,
        max_concurrency=max_concurrency,
        rate=rate,
        max_retries=max_retries,
        timeout=timeout,
        max_consecutive_failures=max_consecutive_failures,
        limit=limit,
    )
    plan = RetryPlan(
        from_results=results,
        results=results_path,
        destination=_destination(use_sandbox, sandbox_users, project_id, base_url, api_key_file),
        statuses=tuple(Status(s) for s in chosen),
        rebuild=rebuild,
        options=options,
        existing=_existing(resume, overwrite),
        ca_bundle=ca_bundle,
    )
    _run_and_exit(plan, no_progress, as_json)


@cli.command()
@click.argument("results")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    help="Also write the summary as a page with charts to PATH.",
)
@click.option(
    "--show-identifiers",
    is_flag=True,
    help="Show identifier values in reports in full (default: masked).",
)
@reports_errors
def report(results: str, as_json: bool, html_path: str | None, show_identifiers: bool) -> None:
    """Summarise a results file: counts by status and error, the 404 diagnosis, the retry command.

    \b
    Examples:
      backfill report events.results.jsonl --json
      backfill report events.results.jsonl --html report.html
    """
    pipeline.check_outputs([html_path], [results])
    summary = api.summarise(results)
    retry = retry_command(results)
    if html_path:
        html.write_html(html.results_page(summary, show_identifiers, retry), html_path)
    if as_json:
        data = summary.to_dict(show_identifiers, retry_command=retry)
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(summary_text(summary, _terminal_style(), retry_command=retry))


def _existing(resume: bool, overwrite: bool) -> Existing:
    """What to do with an existing results file, from --resume and --overwrite."""
    if resume and overwrite:
        raise UsageError("--resume and --overwrite cannot go together")
    return "resume" if resume else "overwrite" if overwrite else "refuse"


def _run_and_exit(plan: SendPlan | RetryPlan, no_progress: bool, as_json: bool) -> None:
    """Run a send with a progress bar, print notes and the summary, exit with its code."""
    from backfill.progress import progress_bar

    with progress_bar(no_progress, plan) as on_progress:
        if isinstance(plan, RetryPlan):
            outcome = api.retry(plan, on_progress, handle_signals=True)
        else:
            outcome = api.send(plan, on_progress, handle_signals=True)
    for note in outcome.notes:
        click.echo(f"note: {note}", err=True)
    summary, resume, retry = outcome.summary, resume_command(plan), retry_command(plan.results)
    if summary.stopped:
        summary = replace(summary, stopped=_cli_words(summary.stopped, STOP_WORDS))
    if as_json:
        data = summary.to_dict(resume_command=resume, retry_command=retry)
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(summary_text(summary, resume_command=resume, retry_command=retry))
    sys.exit(exit_code(outcome))


def exit_code(outcome: RunOutcome) -> ExitCode:
    """0 when every row was sent; 1 when some were not; 3 stopped early; 130 interrupted."""
    if outcome.interrupted:
        return ExitCode.INTERRUPTED
    if outcome.stopped:
        return ExitCode.ABORTED
    return ExitCode.OK if outcome.complete else ExitCode.PROBLEMS


def _dry_run(inputs: tuple[str, ...], mapping: Mapping, fmt: str | None) -> None:
    """Validate, print the report and the first payloads exactly as they would be sent; exit."""
    samples: list[str] = []

    def keep_samples(batch: pipeline.CheckedBatch) -> None:
        if len(samples) < DRY_RUN_PAYLOADS:
            valid = batch.checked.filter(batch.checked[PAYLOAD].is_not_null())
            samples.extend(valid[PAYLOAD].head(DRY_RUN_PAYLOADS - len(samples)).to_list())

    report = pipeline.validate(inputs, mapping, fmt, on_batch=keep_samples, bodies=True)
    click.echo(validation_text(report))
    click.echo(f"\nFirst {len(samples)} payloads, exactly as they would be sent:")
    for body in samples:
        click.echo(body)
    click.echo("\nDry run: nothing was sent.")
    sys.exit(ExitCode.OK if report.invalid == 0 else ExitCode.PROBLEMS)


def _destination(
    use_sandbox: bool,
    sandbox_users: str | None,
    project_id: str | None,
    base_url: str,
    api_key_file: str | None,
) -> Destination:
    """The API target from the options and environment, or the built-in sandbox."""
    if use_sandbox:
        return Sandbox(sandbox_users, project_id or SANDBOX_PROJECT)
    if sandbox_users:
        raise UsageError("--sandbox-users goes with --sandbox")
    key = os.environ.get("EMBEDDABLES_API_KEY")
    if api_key_file:
        try:
            # utf-8-sig: an editor's byte order mark is not part of the key
            key = Path(api_key_file).read_text(encoding="utf-8-sig").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialsError(
                f"{api_key_file}: cannot read the API key file ({type(exc).__name__})"
            ) from None
    return check_target(base_url, project_id, key)


def _rate_limit_schedule(value: str | None) -> tuple[tuple[float, float], ...]:
    """--rate-limit-schedule as steps; a malformed one is a usage error naming it."""
    from backfill.sandbox import parse_schedule

    try:
        return parse_schedule(value) if value else ()
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--rate-limit-schedule") from None


@cli.command()
@click.option(
    "--host", default=SANDBOX_HOST, show_default=True, help="Loopback address to listen on."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=SANDBOX_PORT,
    show_default=True,
    help="Port to listen on; 0 picks a free one (the URL is printed).",
)
@click.option(
    "--users",
    type=click.Path(dir_okay=False),
    help="User entries: CSV/JSONL of embeddable_id,key,value.",
)
@click.option(
    "--received",
    type=click.Path(dir_okay=False),
    help="Append every accepted event to this JSONL file.",
)
@click.option(
    "--api-key", "api_keys", multiple=True, help="Accepted key (repeatable); default rk_sandbox."
)
@click.option(
    "--fail-rate", type=click.FloatRange(0, 1), default=0.0, help="Share of 500/503 answers."
)
@click.option(
    "--throttle-rate", type=click.FloatRange(0, 1), default=0.0, help="Share of 429 answers."
)
@click.option(
    "--drop-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of connections closed before processing.",
)
@click.option(
    "--drop-after-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of connections closed after processing (the event exists).",
)
@click.option(
    "--delay", type=click.FloatRange(min=0), default=0.0, help="Seconds added to every answer."
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0, min_open=True),
    help="Requests per second above which answers are 429.",
)
@click.option(
    "--rate-limit-schedule",
    callback=lambda ctx, param, value: _rate_limit_schedule(value),
    help="Change --rate-limit mid-run: '30:100,60:200' is 100/s after 30 s, 200/s after 60 s.",
)
@click.option(
    "--retry-after",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Retry-After seconds of 429 answers.",
)
@click.option("--seed", type=int, help="Seed of the random faults.")
@reports_errors
def sandbox(
    host: str,
    port: int,
    users: str | None,
    received: str | None,
    api_keys: tuple[str, ...],
    fail_rate: float,
    throttle_rate: float,
    drop_rate: float,
    drop_after_rate: float,
    delay: float,
    rate_limit: float | None,
    rate_limit_schedule: tuple[tuple[float, float], ...],
    retry_after: float,
    seed: int | None,
) -> None:
    """Serve a local Embeddables-compatible events API for rehearsals and tests.

    \b
    Example:
      backfill sandbox --users sample_data/users.csv --received received.jsonl --fail-rate 0.1
    """
    from backfill.sandbox import SandboxConfig, serve

    config = SandboxConfig(
        api_keys=frozenset(api_keys or {SANDBOX_API_KEY}),
        users_path=Path(users) if users else None,
        received_path=Path(received) if received else None,
        keep_received=False,
        fail_rate=fail_rate,
        throttle_rate=throttle_rate,
        drop_rate=drop_rate,
        drop_after_rate=drop_after_rate,
        delay=delay,
        rate_limit=rate_limit,
        rate_limit_schedule=rate_limit_schedule,
        retry_after=retry_after,
        seed=seed,
    )
    serve(
        config, host, port, on_ready=lambda url: click.echo(f"sandbox listening on {url}", err=True)
    )


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    default="mapping.toml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The mapping file to write.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_CHOICES),
    metavar="FORMAT",
    help="Input format (csv, tsv, jsonl, json or parquet), needed for stdin (-); overrides"
    " the file extension.",
)
@click.option(
    "--delimiter",
    help='CSV delimiter: one character, or "\\t" for tab; default sniffed from the header.',
)
@click.option(
    "--encoding",
    help="Text encoding of a CSV input (utf-8, cp1252, latin-1, utf-16, ...); default sniffed.",
)
@click.option(
    "--sample",
    "sample_rows",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="Rows read to guess from.",
)
@click.option("--force", is_flag=True, help="Write over an existing mapping file.")
@click.option(
    "--preset",
    type=click.Choice(["mixpanel", "amplitude", "segment", "posthog", "ga4", "heap"]),
    metavar="NAME",
    help="Map the export as this tool's (mixpanel, amplitude, segment, posthog, ga4 or heap),"
    " without recognising it first.",
)
@reports_errors
def init(
    input_path: str,
    output: str,
    fmt: str | None,
    delimiter: str | None,
    encoding: str | None,
    sample_rows: int,
    force: bool,
    preset: str | None,
) -> None:
    """Guess a mapping file from the first rows of an export, each guess commented.

    Exports of Mixpanel (raw export), Amplitude (export API), Segment (S3
    archive), PostHog (events), GA4 (BigQuery) and Heap are recognised by their
    columns: init says which tool and why, and writes that tool's mapping
    (--preset forces one). Anything else is guessed column by column. Prints
    each guess and why it was made. Columns for the embeddable id or the event
    name that cannot be found get a placeholder to fill in (and a warning);
    without a timestamp or a user identifier column nothing is written (exit 2).

    A CSV's delimiter, encoding and decimal commas are sniffed and written to the
    mapping's [input] table when they are not the defaults. A directory, a zip
    archive or a bucket prefix is guessed from its first export in name order.

    \b
    Example:
      backfill init events.csv -o mapping.toml
      backfill init mixpanel_export.jsonl --preset mixpanel
      backfill init amplitude_export.zip
      backfill validate events.csv -m mapping.toml
    """
    if delimiter is not None:
        delimiter = check_delimiter("\t" if delimiter == "\\t" else delimiter, "--delimiter")
    if encoding is not None:
        check_encoding(encoding, "--encoding")
    guessed = api.guess_mapping(
        input_path,
        output,
        input_format=fmt,
        preset=preset,
        delimiter=delimiter,
        encoding=encoding,
        sample_rows=sample_rows,
        replace=force,
    )
    click.echo(guessed.heading())
    for line in guessed.guesses:
        click.echo(f"  {line.line()}")
    for warning in guessed.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"Wrote {output}. Check it, then run: backfill validate {input_path} -m {output}")
