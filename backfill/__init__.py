"""backfill: move historical events from CSV/JSONL exports into the Embeddables events API.

The command line is a thin layer over these functions and values::

    import backfill

    mapping = backfill.load_mapping("mapping.toml")
    report = backfill.validate(["events.csv"], mapping)
    plan = backfill.SendPlan(("events.csv",), mapping, "events.results.jsonl", backfill.Sandbox())
    outcome = backfill.send(plan)
"""

__version__ = "0.1.0"

from backfill.api import guess_mapping, load_mapping, retry, send, summarise, validate
from backfill.codes import Reason, Status
from backfill.errors import (
    BackfillError,
    CredentialsError,
    Hint,
    InputError,
    MappingError,
    ResultsFileError,
    ResultsWriteError,
    RunAborted,
    UsageError,
)
from backfill.guess import Guessed
from backfill.mapping import Mapping
from backfill.plans import (
    Destination,
    Existing,
    Rebuild,
    RetryPlan,
    Sandbox,
    SendOptions,
    SendPlan,
    Target,
    check_target,
)
from backfill.report import Example, ValidationReport
from backfill.summary import ResultsSummary, RunOutcome

__all__ = [
    "BackfillError",
    "CredentialsError",
    "Destination",
    "Example",
    "Existing",
    "Guessed",
    "Hint",
    "InputError",
    "Mapping",
    "MappingError",
    "Reason",
    "Rebuild",
    "ResultsFileError",
    "ResultsSummary",
    "ResultsWriteError",
    "RetryPlan",
    "RunAborted",
    "RunOutcome",
    "Sandbox",
    "SendOptions",
    "SendPlan",
    "Status",
    "Target",
    "UsageError",
    "ValidationReport",
    "__version__",
    "check_target",
    "guess_mapping",
    "load_mapping",
    "retry",
    "send",
    "summarise",
    "validate",
]
