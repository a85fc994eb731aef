"""Row statuses and reason codes: the stable words of reports and results files."""

from __future__ import annotations

from enum import StrEnum

# The sandbox's defaults (SPEC.md), here so that the CLI can show them without importing aiohttp.
SANDBOX_API_KEY = "rk_sandbox"
SANDBOX_HOST = "127.0.0.1"
SANDBOX_PORT = 8787


class Status(StrEnum):
    """The final status of one input row in a results file."""

    SENT = "sent"
    NOT_FOUND = "not_found"
    REJECTED = "rejected"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"  # not an event to send: filtered out, or a duplicate


# What a retry sends again unless told otherwise: rows that may go through another time.
RETRY_STATUSES = (Status.NOT_FOUND, Status.FAILED)


class Skip(StrEnum):
    """Why a row was skipped: the error code of a ``skipped`` record."""

    FILTERED = "filtered"
    DUPLICATE = "duplicate"


class Reason(StrEnum):
    """Why a row is invalid; checked in this order, a row gets the first that applies."""

    MALFORMED_ROW = "malformed_row"
    MISSING_EMBEDDABLE_ID = "missing_embeddable_id"
    MISSING_TIMESTAMP = "missing_timestamp"
    MISSING_CUSTOM_EVENT_NAME = "missing_custom_event_name"
    MISSING_IDENTIFIER_KEY = "missing_identifier_key"
    MISSING_IDENTIFIER_VALUE = "missing_identifier_value"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    BAD_EVENT_NAME = "bad_event_name"
    BAD_IDENTIFIER_VALUE = "bad_identifier_value"
    BAD_METRIC = "bad_metric"
    BAD_PROPS = "bad_props"


class Repair(StrEnum):
    """A change the tool made to a value so that it could be sent."""

    EVENT_NAME_CONVERTED = "event_name_converted"
    IDENTIFIER_UNWRAPPED = "identifier_unwrapped"
    TIMEZONE_ASSUMED = "timezone_assumed"


# API error code carried by a 404 for an unknown user entry.
ENTRY_NOT_FOUND = "ENTRY_NOT_FOUND"
TIMEOUT = "TIMEOUT"
CONNECTION_ERROR = "CONNECTION_ERROR"
# The note on a failed row whose last request went out and was never answered: `retry`
# counts sending it again as an ambiguous retry.
LAST_UNANSWERED = "no answer to the last attempt: the event may exist"
# The note on a sent row whose 200 answer broke off: the event exists, its entry_id is unknown.
ANSWER_CUT_OFF = "the answer broke off after its 200 status: the event exists, entry_id unknown"
