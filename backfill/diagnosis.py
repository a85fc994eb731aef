"""The 404 diagnosis: what the rows answered 404 ENTRY_NOT_FOUND have in common.

The one place a 404's likely cause is decided, by embeddable id and by identifier key.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

# Causes of 404s, as the events API documents them; an embeddable id or key is blamed only
# when the data shows it (see not_found_groups).
CAUSE_WRONG_ID = (
    "likely a wrong embeddable id (other embeddable ids had rows sent),"
    " or its users never gave this identifier"
)
CAUSE_WRONG_KEY = "likely a wrong key (other identifier keys had rows sent)"
CAUSE_SOME_USERS = (
    "some users not found: the user never gave that identifier (or not yet),"
    " or the value is wrong or double-escaped"
)
CAUSE_NOTHING_SENT = (
    "no user entry found and nothing else sent to compare with: the users may not exist"
    " yet, or the embeddable id, identifier key or value is wrong"
)
# What a likely mistake line adds, per kind of group.
LIKELY_NOTE = {
    "embeddable id": " (or its users never gave this identifier)",
    "identifier key": " (the users' entries may have been made with another key)",
}
NEUTRAL_404 = (
    "404 ENTRY_NOT_FOUND: no user entry matches these identifiers for their embeddable id;"
    " the users may not exist yet (retry them later) or gave another identifier, or the"
    " value is wrong"
)
NOTHING_SENT = "no row was sent, so a wrong embeddable id or identifier key cannot be ruled out"
NAMES_SHOWN = 3  # names of each kind listed to check when nothing was sent
MIN_ROWS_TO_BLAME = 2  # one row not found is one missing user, not evidence against its id


@dataclass(frozen=True)
class NotFoundGroup:
    """The 404s of one embeddable id or identifier key, and the cause the data points to."""

    name: str
    answered: int
    not_found: int
    likely: bool  # the name itself is the likely mistake
    cause: str

    def to_dict(self) -> dict[str, object]:
        """The group as a row of the JSON 404 tables."""
        return {
            "name": self.name,
            "answered": self.answered,
            "not_found": self.not_found,
            "likely_cause": self.cause,
        }


def not_found_groups(
    kind: str, answered: Counter[str], missing: Counter[str]
) -> list[NotFoundGroup]:
    """Each name of one kind with 404s, commonest first: the one place a 404's cause is decided.

    A name is the likely mistake only when every answered row of it was not found while
    other names of the same kind had rows sent: that contrast is the evidence. Without it the
    cause stays neutral.
    """
    sent = {name for name, count in answered.items() if count > missing[name]}
    groups = []
    for name, count in sorted(missing.items(), key=lambda kv: (-kv[1], kv[0])):
        others_sent = bool(sent - {name})
        if name in sent:
            likely, cause = False, CAUSE_SOME_USERS
        elif others_sent and count >= MIN_ROWS_TO_BLAME:
            likely, cause = True, CAUSE_WRONG_ID if kind == "embeddable id" else CAUSE_WRONG_KEY
        else:
            likely, cause = False, CAUSE_SOME_USERS if others_sent else CAUSE_NOTHING_SENT
        groups.append(NotFoundGroup(name, answered[name], count, likely, cause))
    return groups


def diagnosis_lines(groups: dict[str, list[NotFoundGroup]], not_found: int) -> list[str]:
    """The 404 diagnosis as sentences: each likely mistake, or else the neutral cause."""
    lines = [
        f"every one of the {g.not_found:,} rows with {kind} '{g.name}' was not found:"
        f" that {kind} is the likely mistake{LIKELY_NOTE[kind]}"
        for kind, kind_groups in groups.items()
        for g in kind_groups
        if g.likely
    ]
    if lines or not not_found:
        return lines
    if not all(g.cause == CAUSE_NOTHING_SENT for g in groups["embeddable id"]):
        return [NEUTRAL_404]
    to_check = "; ".join(_listed(kind, kind_groups) for kind, kind_groups in groups.items())
    return [NEUTRAL_404, f"{NOTHING_SENT}: check {to_check}"]


def _listed(kind: str, groups: list[NotFoundGroup]) -> str:
    """The commonest names of a kind, quoted: "embeddable ids 'a', 'b' and 2 more"."""
    names = ", ".join(f"'{g.name}'" for g in groups[:NAMES_SHOWN])
    more = f" and {len(groups) - NAMES_SHOWN:,} more" if len(groups) > NAMES_SHOWN else ""
    return f"{kind}{'s' if len(groups) > 1 else ''} {names}{more}"
