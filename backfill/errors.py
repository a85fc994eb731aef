"""Exit codes and the exception tree.

    BackfillError               anything the user can fix; carries the exit code
     +-- UsageError             bad options or option combinations           (exit 2)
     +-- MappingError           the mapping file is unreadable or wrong       (exit 2)
     +-- InputError             an input cannot be opened or read             (exit 2)
     +-- CredentialsError       missing or malformed key, unsafe target       (exit 2)
     +-- ResultsFileError       a results file cannot be written or resumed   (exit 2)
     +-- RunAborted             the run stopped mid-way (key rejected, outage) (exit 3)
          +-- ResultsWriteError the results file could not be written or synced (exit 3)

Only ``cli.py`` turns these into messages and exit codes; the core raises them with a
one-line message that already names the file, row and field involved.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, as SPEC.md defines them."""

    OK = 0
    PROBLEMS = 1
    NOTHING_SENT = 2
    ABORTED = 3
    INTERRUPTED = 130


class BackfillError(Exception):
    """An error the user can act on; its message is shown as is."""

    exit_code = ExitCode.NOTHING_SENT


class UsageError(BackfillError):
    """Options that cannot work together or cannot be satisfied."""


class MappingError(BackfillError):
    """The mapping file is unreadable, malformed or names a column no input has."""


class InputError(BackfillError):
    """An input file cannot be opened or read."""


class CredentialsError(BackfillError):
    """The API key, project id or target URL is missing or unsafe."""


class ResultsFileError(BackfillError):
    """A results file cannot be written, read or resumed."""


class RunAborted(BackfillError):
    """The run stopped before every row was final; ``--resume`` continues it."""

    exit_code = ExitCode.ABORTED


class ResultsWriteError(RunAborted):
    """The results file stopped taking records (disk full, I/O error): the run cannot go on."""
