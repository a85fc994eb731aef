"""The command line: parse options, call one core function, render its outcome.

This is the only module that knows about click and the terminal; errors from the core are
turned into one-line messages and exit codes here and nowhere else.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from backfill import pipeline
from backfill.errors import BackfillError, ExitCode
from backfill.mapping import load_mapping
from backfill.payloads import PAYLOAD, REASON
from backfill.report import render_text, write_json

F = TypeVar("F", bound=Callable[..., Any])
DRY_RUN_PAYLOADS = 3


def main() -> None:
    """Entry point of the ``backfill`` command."""
    cli(prog_name="backfill")


def reports_errors(func: F) -> F:
    """Turn a BackfillError into 'error: ...' on stderr and its exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BackfillError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backfill")
def cli() -> None:
    """Move historical events from CSV/JSONL exports into the Embeddables events API."""


def input_options(func: F) -> F:
    """The options every command that reads exports shares."""
    func = click.option(
        "--format",
        "fmt",
        type=click.Choice(["csv", "tsv", "jsonl"]),
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
    help="Write the report as JSON to PATH.json.",
)
@click.option(
    "--invalid-out",
    type=click.Path(dir_okay=False),
    help="Write invalid rows (CSV or JSONL by extension).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of text.")
@reports_errors
def validate(
    inputs: tuple[str, ...],
    mapping_path: str,
    fmt: str | None,
    report_path: str | None,
    invalid_out: str | None,
    as_json: bool,
) -> None:
    """Check exports against a mapping and report what is wrong, without sending anything.

    \b
    Example:
      backfill validate events.csv -m mapping.toml --report report.json --invalid-out bad.csv

    Exit code 0 when every row is valid, 1 when some are invalid, 2 when nothing could be read.
    """
    mapping = load_mapping(mapping_path)
    pipeline.check_outputs([report_path], inputs)
    report = pipeline.validate(inputs, mapping, fmt, invalid_out).to_dict()
    if report_path:
        write_json(report, report_path)
    click.echo(json.dumps(report, indent=2) if as_json else render_text(report))
    sys.exit(ExitCode.OK if report["invalid"] == 0 else ExitCode.PROBLEMS)


@cli.command()
@input_options
@click.option("--dry-run", is_flag=True, help="Validate and show the first payloads; send nothing.")
@reports_errors
def send(inputs: tuple[str, ...], mapping_path: str, fmt: str | None, dry_run: bool) -> None:
    """Send every valid row of the exports to the Embeddables events API.

    \b
    Example:
      backfill send events.csv -m mapping.toml --dry-run
    """
    mapping = load_mapping(mapping_path)
    if not dry_run:
        raise BackfillError("sending is not available yet; use --dry-run")
    samples: list[str] = []

    def keep_samples(batch: pipeline.CheckedBatch) -> None:
        if len(samples) < DRY_RUN_PAYLOADS:
            valid = batch.checked.filter(batch.checked[REASON].is_null())
            samples.extend(valid[PAYLOAD].head(DRY_RUN_PAYLOADS - len(samples)).to_list())

    report = pipeline.validate(inputs, mapping, fmt, on_batch=keep_samples, bodies=True).to_dict()
    click.echo(render_text(report))
    click.echo(f"\nFirst {len(samples)} payloads, exactly as they would be sent:")
    for body in samples:
        click.echo(body)
    click.echo("\nDry run: nothing was sent.")
    sys.exit(ExitCode.OK if report["invalid"] == 0 else ExitCode.PROBLEMS)
