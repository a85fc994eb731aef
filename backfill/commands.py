"""The shell commands backfill suggests: to continue a run, and to send again what failed.

The one place their text is built; the CLI and the pages it writes show them.
"""

from __future__ import annotations

import shlex

from backfill.mapping import InputSettings
from backfill.plans import SANDBOX_PROJECT, RetryPlan, Sandbox, SendPlan

DEFAULT_ENCODING = InputSettings().encoding


def resume_command(plan: SendPlan | RetryPlan) -> str:
    """The command that continues a run if it stops early.

    It gives every setting a resume checks against the run record (inputs, mapping and its
    dialect, project, target) and those the run needs again (format, users, CA bundle).
    """
    words = ["backfill"]
    if isinstance(plan, RetryPlan):
        rebuild = plan.rebuild
        inputs = () if rebuild is None else rebuild.inputs
        words += ["retry", plan.from_results, *inputs, "-o", plan.results]
        words += ["--status", ",".join(s.value for s in plan.statuses)]
        mapping = None if rebuild is None else rebuild.mapping
        input_format = None if rebuild is None else rebuild.input_format
    else:
        words += ["send", *plan.inputs, "-o", plan.results]
        mapping, input_format = plan.mapping, plan.input_format
    if mapping is not None:
        words += ["-m", mapping.path]
        dialect = mapping.input
        if dialect.delimiter is not None:
            words += ["--delimiter", dialect.delimiter]
        if dialect.encoding != DEFAULT_ENCODING:
            words += ["--encoding", dialect.encoding]
    if input_format is not None:
        words += ["--format", input_format]
    destination = plan.destination
    if isinstance(destination, Sandbox):
        words += ["--sandbox"]
        if destination.users is not None:
            words += ["--sandbox-users", destination.users]
        if destination.project_id != SANDBOX_PROJECT:
            words += ["--project-id", destination.project_id]
    else:
        words += ["--project-id", destination.project_id, "--base-url", destination.base_url]
    if plan.ca_bundle is not None:
        words += ["--ca-bundle", plan.ca_bundle]
    return shlex.join([*words, "--resume"])


def retry_command(results_path: str) -> str:
    """The command that sends again the rows of a results file that did not go through."""
    stem = results_path.removesuffix(".csv").removesuffix(".jsonl")
    ext = ".csv" if results_path.endswith(".csv") else ".jsonl"
    return f"backfill retry {shlex.quote(results_path)} -o {shlex.quote(stem + '.retry' + ext)}"


def rebuild_command(results_path: str) -> str:
    """The form of a retry that rebuilds the payloads from the inputs with a fixed mapping."""
    return (
        f"backfill retry {shlex.quote(results_path)} -o fixed.jsonl -m FIXED_MAPPING.toml INPUT..."
    )
