"""The shell commands backfill suggests: to continue a run, and to send again what failed.

The one place their text is built; the CLI and the pages it writes show them.
"""

from __future__ import annotations

import shlex

from backfill.codes import Status
from backfill.plans import RetryPlan, Sandbox, SendPlan

RETRY_STATUSES = (Status.NOT_FOUND, Status.FAILED)


def resume_command(plan: SendPlan | RetryPlan) -> str:
    """The command that continues a run if it stops early."""
    words = ["backfill"]
    if isinstance(plan, RetryPlan):
        rebuild = plan.rebuild
        inputs = () if rebuild is None else rebuild.inputs
        words += ["retry", plan.from_results, *inputs, "-o", plan.results]
        words += ["--status", ",".join(s.value for s in plan.statuses)]
        mapping = None if rebuild is None else rebuild.mapping
    else:
        words += ["send", *plan.inputs, "-o", plan.results]
        mapping = plan.mapping
    if mapping is not None:
        words += ["-m", mapping.path]
    destination = plan.destination
    if isinstance(destination, Sandbox):
        words += ["--sandbox"]
    else:
        words += ["--project-id", destination.project_id, "--base-url", destination.base_url]
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
