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

from enum import Enum, IntEnum


class ExitCode(IntEnum):
    """Process exit codes: SPEC.md's, and the shell's 141 for a closed output pipe."""

    OK = 0
    PROBLEMS = 1
    NOTHING_SENT = 2
    ABORTED = 3
    INTERRUPTED = 130
    OUTPUT_CLOSED = 141  # what a shell reports for a tool that SIGPIPE stopped (| head)


class Hint(Enum):
    """The setting that fixes an error: the CLI names its flag, a program its parameter."""

    FORMAT = "format"  # name the input's format
    FORMAT_FOR_STDIN = "format_for_stdin"
    DELIMITER = "delimiter"  # name the CSV delimiter
    REPLACE = "replace"  # write over an existing mapping file
    RESUME_OR_OVERWRITE = "resume_or_overwrite"  # what to do with an existing results file
    NEW_RUN = "new_run"  # a resume of a results file that is not there
    RESUME_NEEDS_FILES = "resume_needs_files"  # stdin cannot be read again
    REBUILD = "rebuild"  # rows with no stored payload: rebuild them with a mapping
    API_KEY = "api_key"
    PROJECT_ID = "project_id"


class BackfillError(Exception):
    """An error the user can act on; its message is shown as is.

    ``file`` is the file, archive member or URL involved, ``row`` the row (or line) in it,
    ``field`` the column or mapping key: None where the error has none. ``hint`` names the
    setting that fixes it; the message says so in words that name no command-line flag.
    """

    exit_code = ExitCode.NOTHING_SENT

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        field: str | None = None,
        hint: Hint | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file, self.row, self.field, self.hint = file, row, field, hint


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
