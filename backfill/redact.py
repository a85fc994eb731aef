"""Keep the API key out of every output: messages, logs, tracebacks and results files.

The key is registered once, where it is read; every place that turns outside text (a
server's answer, a library's exception, a log record) into output passes it through here.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

MASK = "[key]"
_secrets: set[str] = set()


def register(secret: str | None) -> None:
    """Remember a secret to mask from now on, with the forms an echo may give it.

    A server may echo what it got JSON-escaped (``/`` as ``\\/``) or URL-encoded.
    """
    if secret:
        _secrets.update({secret, secret.replace("/", "\\/"), quote(secret, safe="")})


def redact(text: str) -> str:
    """The text with every registered secret masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
