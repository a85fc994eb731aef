"""Identifier values are personal data: their masked form, and messages with them masked.

A masked value keeps its first character and an email's domain (``a***@example.com``), so a
report still tells values apart without showing them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from backfill.codes import Reason

# A bad_identifier_value message as payloads.py words it: "<field>: '<value>' is not valid <type>".
BAD_VALUE_MESSAGE = re.compile(r"(?P<head>.*?: )'(?P<value>.*)'(?P<tail> is not valid \w+)", re.S)
DOMAIN = re.compile(r"(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}")
EMAIL = re.compile(r"[^\s'\"`<>@(),;:\\\[\]{}]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}")
HIDDEN = "(message hidden: it names an identifier value; show identifiers in full to see it)"


def mask_identifier(value: str) -> str:
    """The masked form of an identifier value: its first character, ***, an email's @domain."""
    text = value.strip().strip('"\\').strip()
    if not text:
        return "***"
    _, at, domain = text.rpartition("@")
    return f"{text[0]}***" + (f"@{domain}" if at and DOMAIN.fullmatch(domain) else "")


def mask_message(reason: str | None, message: str, values: Iterable[str] = ()) -> str:
    """A message with identifier values masked: a bad value, the given values, any email."""
    if reason == Reason.BAD_IDENTIFIER_VALUE:
        match = BAD_VALUE_MESSAGE.fullmatch(message)
        if match is None:
            return HIDDEN
        masked = mask_identifier(match["value"])
        message = f"{match['head']}'{masked}'{match['tail']}"
    for value in sorted((v for v in values if v), key=len, reverse=True):
        message = message.replace(value, mask_identifier(value))
    return EMAIL.sub(lambda found: mask_identifier(found[0]), message)
