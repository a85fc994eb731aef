"""The 404 diagnosis: an embeddable id or identifier key is blamed only when the data shows it."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from backfill.diagnosis import CAUSE_NOTHING_SENT, CAUSE_SOME_USERS, CAUSE_WRONG_ID
from backfill.summary import ResultsSummary

# (embeddable id, identifier key, status) of each answered row.
Rows = Iterable[tuple[str, str, str]]


def summary_of(rows: Rows) -> ResultsSummary:
    """A summary that counted these rows, as a send run does."""
    summary = ResultsSummary("r.jsonl")
    for embeddable_id, key, status in rows:
        error = "ENTRY_NOT_FOUND" if status == "not_found" else None
        summary.add(status, error, embeddable_id, key)
    return summary


def causes(summary: ResultsSummary) -> dict[str, str]:
    """Each embeddable id with 404s and the cause the tables give it."""
    return {e["name"]: e["likely_cause"] for e in summary.to_dict()["not_found_by_embeddable_id"]}


def test_an_id_none_of_whose_rows_was_found_while_others_were_sent_is_likely() -> None:
    summary = summary_of(
        [("flow_a", "email", "sent"), ("flow_a", "email", "not_found")]
        + [("flow_b", "email", "not_found")] * 3
    )

    data = summary.to_dict()

    assert causes(summary) == {"flow_b": CAUSE_WRONG_ID, "flow_a": CAUSE_SOME_USERS}
    assert data["diagnosis"] == [
        "every one of the 3 rows with embeddable id 'flow_b' was not found: that embeddable id"
        " is the likely mistake (or its users never gave this identifier)"
    ]


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([("flow_a", "email", "not_found")] * 3, id="one-id-nothing-sent"),
        pytest.param(
            [("flow_a", "email", "not_found")] * 2 + [("flow_b", "email", "not_found")] * 2,
            id="two-ids-nothing-sent",
        ),
    ],
)
def test_nothing_sent_blames_no_id_and_no_key(rows: Rows) -> None:
    summary = summary_of(rows)

    data = summary.to_dict()

    assert set(causes(summary).values()) == {CAUSE_NOTHING_SENT}
    assert [e["likely_cause"] for e in data["not_found_by_identifier_key"]] == [CAUSE_NOTHING_SENT]
    assert "likely" not in " ".join(data["diagnosis"])
    assert data["diagnosis"][1].startswith(
        "no row was sent, so a wrong embeddable id or identifier key cannot be ruled out: check"
        " embeddable id"
    )
    assert data["diagnosis"][1].endswith("; identifier key 'email'")


def test_a_key_is_likely_only_when_another_key_had_rows_sent() -> None:
    summary = summary_of([("flow_a", "email", "sent")] * 2 + [("flow_a", "mail", "not_found")] * 2)

    data = summary.to_dict()

    assert data["diagnosis"] == [
        "every one of the 2 rows with identifier key 'mail' was not found: that identifier key"
        " is the likely mistake (the users' entries may have been made with another key)"
    ]
    assert causes(summary) == {"flow_a": CAUSE_SOME_USERS}


def test_some_users_missing_in_every_id_is_the_neutral_cause() -> None:
    summary = summary_of(
        [
            ("flow_a", "email", "sent"),
            ("flow_a", "email", "not_found"),
            ("flow_b", "email", "sent"),
            ("flow_b", "email", "not_found"),
        ]
    )

    data = summary.to_dict()

    assert set(causes(summary).values()) == {CAUSE_SOME_USERS}
    assert data["diagnosis"] == [
        "404 ENTRY_NOT_FOUND: no user entry matches these identifiers for their embeddable id;"
        " the users may not exist yet (retry them later) or gave another identifier, or the"
        " value is wrong"
    ]


def test_no_404_no_diagnosis() -> None:
    data = summary_of([("flow_a", "email", "sent")]).to_dict()

    assert (data["diagnosis"], data["not_found_by_embeddable_id"]) == ([], [])


def test_nothing_sent_lists_a_few_names_to_check() -> None:
    rows = [(f"flow_{i}", "email", "not_found") for i in range(5)]

    data = summary_of(rows).to_dict()

    assert data["diagnosis"][1].endswith(
        "check embeddable ids 'flow_0', 'flow_1', 'flow_2' and 2 more; identifier key 'email'"
    )
