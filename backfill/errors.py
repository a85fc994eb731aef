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
one-line message that already names the file, row and field involved, and carries them as
data too (``file``, ``row``, ``field``) for a program that catches them.
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
    """An error the user can act on; its message is shown as is.

    ``file`` is the file, archive member or URL involved, ``row`` the row (or line) in it,
    ``field`` the column or mapping key: None where the error has none.
    """

    exit_code = ExitCode.NOTHING_SENT

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file, self.row, self.field = file, row, field


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
