"""What a send or a retry is asked to do: plain frozen values, checked, with no I/O.

The library functions (``backfill.api``) take these; the CLI builds them from its flags.
Nothing here imports aiohttp or click, so that ``import backfill`` stays light.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, urlsplit

from backfill.codes import RETRY_STATUSES, Status
from backfill.errors import CredentialsError, Hint, UsageError
from backfill.mapping import Mapping
from backfill.redact import register

# What to do when the results file exists: refuse to touch it, continue the run that wrote
# it (its rows already final are not sent again), or start again over it.
Existing = Literal["refuse", "resume", "overwrite"]
EXISTING: tuple[Existing, ...] = ("refuse", "resume", "overwrite")
AUTO_CEILING = 1024  # requests in flight auto may reach: 2,000/s at a 250 ms round trip is 500
LOOPBACK_NAMES = frozenset({"localhost"})
KEY_ESCAPED = frozenset("\"\\'<>&")  # what JSON or HTML would write another way
SANDBOX_PROJECT = "pr_sandbox"


@dataclass(frozen=True)
class Target:
    """Where events go and the key that lets them in; the key never shows in a repr.

    Made by ``check_target``, which refuses a malformed key or an unsafe URL.
    """

    base_url: str
    project_id: str
    api_key: str = field(repr=False)

    def __post_init__(self) -> None:
        register(self.api_key)  # masked from every output, however the Target was made

    @property
    def events_url(self) -> str:
        """POST https://host/projects/{projectId}/events."""
        return f"{self.base_url.rstrip('/')}/projects/{quote(self.project_id, safe='')}/events"


@dataclass(frozen=True)
class Sandbox:
    """The built-in sandbox, started for the run on a loopback port: a rehearsal.

    ``users`` is a CSV/JSONL file of the user entries it knows (404 for any other
    identifier); without one, every identifier belongs to an entry.
    """

    users: str | None = None
    project_id: str = SANDBOX_PROJECT


Destination = Target | Sandbox


@dataclass(frozen=True)
class SendOptions:
    """How hard to push: requests in flight and per second, retries, and when to give up.

    ``concurrency`` "auto" finds the requests in flight (and, where that is not enough, the
    rate) the server takes, up to ``max_concurrency``; a number holds it fixed. ``rate`` caps
    requests per second on top of either. ``limit`` takes only the first rows (a trial).
    """

    concurrency: int | Literal["auto"] = "auto"
    max_concurrency: int = AUTO_CEILING
    rate: float | None = None
    max_retries: int = 5
    timeout: float = 30.0
    max_consecutive_failures: int = 100
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    limit: int | None = None

    def __post_init__(self) -> None:
        """Refuse settings a send cannot run with, naming the setting (as the CLI's do)."""
        fixed = self.concurrency
        if fixed != "auto" and not (isinstance(fixed, int) and 1 <= fixed <= AUTO_CEILING):
            raise UsageError(
                f"concurrency must be 'auto' or a whole number from 1 to {AUTO_CEILING},"
                f" got {fixed!r}"
            )
        if not 1 <= self.max_concurrency <= AUTO_CEILING:
            raise UsageError(
                f"max_concurrency must be from 1 to {AUTO_CEILING}, got {self.max_concurrency}"
            )
        for name, value in (("rate", self.rate), ("timeout", self.timeout)):
            if value is not None and not value > 0:
                raise UsageError(f"{name} must be above 0, got {value}")
        for name, least, number in (
            ("max_retries", 0, self.max_retries),
            ("max_consecutive_failures", 1, self.max_consecutive_failures),
            ("limit", 1, self.limit),
        ):
            if number is not None and number < least:
                raise UsageError(f"{name} must be at least {least}, got {number}")
        if not 0 <= self.backoff_base <= self.backoff_cap:
            raise UsageError("backoff_base must be from 0 to backoff_cap")

    @property
    def adaptive(self) -> bool:
        """Whether the requests in flight follow the server (``concurrency`` "auto")."""
        return self.concurrency == "auto"

    @property
    def workers(self) -> int:
        """Workers and pooled connections: the fixed concurrency, or the ceiling of auto."""
        return self.max_concurrency if self.concurrency == "auto" else self.concurrency


@dataclass(frozen=True)
class SendPlan:
    """Send every row of the inputs that has no final record in ``results`` yet."""

    inputs: tuple[str, ...]
    mapping: Mapping
    results: str
    destination: Destination
    options: SendOptions = SendOptions()
    existing: Existing = "refuse"
    input_format: str | None = None  # csv, tsv, jsonl, json or parquet; None: by name
    ca_bundle: str | None = None  # extra CA certificates (PEM) to trust

    def __post_init__(self) -> None:
        _check_existing(self.existing)
        if not self.inputs:
            raise UsageError("no input given")
        if "-" in self.inputs and self.existing == "resume":
            raise UsageError(
                "a resumed run needs input files: stdin cannot be read again",
                hint=Hint.RESUME_NEEDS_FILES,
            )


@dataclass(frozen=True)
class Rebuild:
    """Build a retry's payloads again from the inputs with this mapping (a fixed one)."""

    mapping: Mapping
    inputs: tuple[str, ...]
    input_format: str | None = None


@dataclass(frozen=True)
class RetryPlan:
    """Send again the rows of ``from_results`` with the chosen statuses, into ``results``.

    Without ``rebuild`` the payloads stored in the results file are sent as they were; rows
    never sent (invalid, skipped) have none, so retrying them needs ``rebuild``.
    """

    from_results: str
    results: str
    destination: Destination
    statuses: tuple[Status, ...] = RETRY_STATUSES
    rebuild: Rebuild | None = None
    options: SendOptions = SendOptions()
    existing: Existing = "refuse"
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        _check_existing(self.existing)
        if not self.statuses:
            raise UsageError("no status to retry")
        if self.rebuild is not None:
            if not self.rebuild.inputs:
                raise UsageError("a rebuild needs the inputs the results file was made from")
            if "-" in self.rebuild.inputs and self.existing == "resume":
                raise UsageError(
                    "a resumed run needs input files: stdin cannot be read again",
                    hint=Hint.RESUME_NEEDS_FILES,
                )


def _check_existing(existing: str) -> None:
    if existing not in EXISTING:
        raise UsageError(f"existing must be one of {', '.join(EXISTING)}, got {existing!r}")


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_target(base_url: str, project_id: str | None, api_key: str | None) -> Target:
    """Refuse, before anything is sent, a missing or malformed key or an unsafe URL."""
    if not api_key:
        raise CredentialsError("no API key (keys start with rk_)", hint=Hint.API_KEY)
    api_key = api_key.strip().removeprefix("\ufeff")
    if not api_key.startswith("rk_"):
        raise CredentialsError("the API key does not start with rk_: Embeddables keys are rk_...")
    if not api_key.isprintable() or any(c.isspace() for c in api_key):
        raise CredentialsError("the API key holds spaces or control characters: check its source")
    if not api_key.isascii() or any(c in KEY_ESCAPED for c in api_key):
        # A server that echoes such a key escapes it, and an escaped key would slip past the
        # mask into messages and results files; no real key holds these characters.
        raise CredentialsError(
            "the API key holds a character keys never have (non-ASCII, a quote, a backslash or"
            " <>&): check its source"
        )
    if not project_id:
        raise CredentialsError("no project id", hint=Hint.PROJECT_ID)
    try:
        parts = urlsplit(base_url)
    except ValueError:  # an unclosed [ of an IPv6 address
        raise CredentialsError(f"{base_url}: not a URL") from None
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
    except ValueError:
        raise CredentialsError(f"{base_url}: the port is not a number from 1 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CredentialsError(f"{base_url}: not an http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise CredentialsError(
            f"{base_url}: plain http would send the key unencrypted; use https"
            " (http is allowed only to this machine)"
        )
    return Target(base_url, project_id, api_key)
