"""The dedupe store: first sightings exact, a dict model agrees, memory bounded, files removed."""

from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import backfill.dedupe
from backfill.dedupe import FirstSeen, SeenKeys
from backfill.errors import RunAborted

Sighting = tuple[str, int] | None

MEMORY_ROWS = 1_500_000
MEMORY_BATCH = 10_000
# What the store may add to a process's peak memory, whatever the number of keys: its page
# cache (32 MiB) and one batch's worth of lists. Holding 1,350,000 keys in a Python dict
# with their first rows takes about 250 MB.
MEMORY_BOUND_MIB = 100
# A child process that feeds MEMORY_ROWS keys in batches, 10% of them repeating the key of
# an earlier row (in the same batch or up to two batches back), and prints what it saw.
FEEDER = """
import json, resource, sys
import polars as pl
from backfill.dedupe import SeenKeys

mode, total, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = SeenKeys() if mode == "store" else None
duplicates = wrong = 0
for start in range(0, total, size):
    rows = pl.int_range(start, min(start + size, total), eager=True, dtype=pl.Int64)
    repeat = rows % 10 == 9
    back = rows - 9 - 10_000 * ((rows // 10) % 3)
    first = pl.select(
        pl.when(~repeat).then(None).when(back >= 0).then(back).otherwise(rows - 9)
    ).to_series()
    keys = pl.select(pl.format("evt-{}", pl.coalesce(first, rows))).to_series()
    if store is not None:
        seen = store.first_seen("events.csv", rows, keys)
        duplicates += seen.row.is_not_null().sum()
        wrong += (~seen.row.eq_missing(first)).sum()
print(json.dumps({
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "duplicates": int(duplicates),
    "wrong": int(wrong),
    "distinct": len(store) if store is not None else 0,
}))
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SeenKeys]:
    """An empty store in the test's scratch directory."""
    with SeenKeys(str(tmp_path)) as seen:
        yield seen


def ask(
    store: SeenKeys, source: str, rows: Sequence[int], keys: Sequence[str | None]
) -> list[Sighting]:
    """The store's answer for one batch, as (source, row) or None per row."""
    seen = store.first_seen(
        source, pl.Series(rows, dtype=pl.Int64), pl.Series(keys, dtype=pl.String)
    )
    return sightings(seen)


def sightings(seen: FirstSeen) -> list[Sighting]:
    """A FirstSeen as (source, row) or None per row, checking that both are null together."""
    assert seen.source.dtype == pl.String
    assert seen.row.dtype == pl.Int64
    pairs = list(zip(seen.source.to_list(), seen.row.to_list(), strict=True))
    assert all((source is None) == (row is None) for source, row in pairs)
    return [None if row is None else (source, row) for source, row in pairs]


def test_duplicates_within_a_batch_point_at_the_first_row(store: SeenKeys) -> None:
    answer = ask(store, "a.csv", [1, 2, 3, 4, 5], ["x", "y", "x", "x", "y"])

    assert answer == [None, None, ("a.csv", 1), ("a.csv", 1), ("a.csv", 2)]
    assert len(store) == 2


def test_duplicates_across_batches_point_at_the_earlier_batch(store: SeenKeys) -> None:
    ask(store, "a.csv", [1, 2], ["x", "y"])

    assert ask(store, "a.csv", [3, 4, 5], ["z", "y", "z"]) == [None, ("a.csv", 2), ("a.csv", 3)]
    assert len(store) == 3


def test_duplicates_across_sources_name_the_source_seen_first(store: SeenKeys) -> None:
    ask(store, "a.csv", [7], ["x"])

    assert ask(store, "b.jsonl", [1, 2, 3], ["y", "x", "y"]) == [
        None,
        ("a.csv", 7),
        ("b.jsonl", 1),
    ]
    assert ask(store, "a.csv", [8, 9], ["y", "w"]) == [("b.jsonl", 1), None]


def test_null_keys_are_never_duplicates_and_not_stored(store: SeenKeys) -> None:
    assert ask(store, "a.csv", [1, 2, 3], [None, "x", None]) == [None, None, None]
    assert ask(store, "a.csv", [4, 5], [None, "x"]) == [None, ("a.csv", 2)]
    assert len(store) == 1


def test_a_batch_of_only_null_keys(store: SeenKeys) -> None:
    seen = store.first_seen("a.csv", pl.Series([1, 2]), pl.Series([None, None]))

    assert sightings(seen) == [None, None]
    assert len(store) == 0


def test_an_empty_batch(store: SeenKeys) -> None:
    assert ask(store, "a.csv", [], []) == []
    assert len(store) == 0


def test_remembered_keys_are_duplicates_of_their_rows(store: SeenKeys) -> None:
    store.remember("a.csv", pl.Series([3, 4, 5]), pl.Series(["x", "y", "x"]))

    assert len(store) == 2
    assert ask(store, "a.csv", [6, 7, 8], ["x", "z", "y"]) == [("a.csv", 3), None, ("a.csv", 4)]


def test_the_first_occurrence_wins(store: SeenKeys) -> None:
    ask(store, "a.csv", [1], ["x"])
    store.remember("b.csv", pl.Series([2]), pl.Series(["x"]))
    ask(store, "b.csv", [3], ["x"])

    assert ask(store, "c.csv", [4], ["x"]) == [("a.csv", 1)]
    assert len(store) == 1


def test_keys_that_differ_only_in_case_or_space_are_different(store: SeenKeys) -> None:
    keys = ["x", "X", " x", "x ", "", "\u00e9", "e\u0301"]

    assert ask(store, "a.csv", list(range(len(keys))), keys) == [None] * len(keys)
    assert ask(store, "a.csv", [10], [""]) == [("a.csv", 4)]


def test_row_numbers_and_keys_of_different_lengths_are_refused(store: SeenKeys) -> None:
    with pytest.raises(ValueError, match="2 row numbers for 3 keys"):
        store.first_seen("a.csv", pl.Series([1, 2]), pl.Series(["x", "y", "z"]))


batches = st.lists(
    st.tuples(
        st.sampled_from(["first_seen", "remember"]),
        st.sampled_from(["a.csv", "b.csv"]),
        st.lists(st.one_of(st.none(), st.sampled_from("abcdefgh")), max_size=12),
    ),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(batches=batches)
def test_the_store_agrees_with_a_dict(
    batches: list[tuple[str, str, list[str | None]]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    model: dict[str, tuple[str, int]] = {}
    next_row = {"a.csv": 1, "b.csv": 1}
    with SeenKeys(str(tmp_path_factory.mktemp("dedupe"))) as store:
        for call, source, keys in batches:
            rows = list(range(next_row[source], next_row[source] + len(keys)))
            next_row[source] += len(keys)
            expected: list[Sighting] = []
            for row, key in zip(rows, keys, strict=True):
                expected.append(None if key is None else model.get(key))
                if key is not None:
                    model.setdefault(key, (source, row))
            if call == "remember":
                store.remember(
                    source, pl.Series(rows, dtype=pl.Int64), pl.Series(keys, dtype=pl.String)
                )
            else:
                assert ask(store, source, rows, keys) == expected
            assert len(store) == len(model)


def test_the_scratch_directory_is_removed_on_close(tmp_path: Path) -> None:
    store = SeenKeys(str(tmp_path))
    ask(store, "a.csv", [1], ["x"])
    assert store.directory.parent == tmp_path
    assert (store.directory / "seen.sqlite").is_file()

    store.close()
    store.close()

    assert list(tmp_path.iterdir()) == []


def test_the_scratch_directory_is_removed_on_leaving_the_block(tmp_path: Path) -> None:
    with SeenKeys(str(tmp_path)) as store:
        ask(store, "a.csv", [1], ["x"])
        assert list(tmp_path.iterdir()) == [store.directory]

    assert list(tmp_path.iterdir()) == []


def test_a_store_never_closed_is_removed_when_dropped(tmp_path: Path) -> None:
    store = SeenKeys(str(tmp_path))
    ask(store, "a.csv", [1], ["x"])

    del store
    gc.collect()

    assert list(tmp_path.iterdir()) == []


def test_a_closed_store_refuses_batches(tmp_path: Path) -> None:
    store = SeenKeys(str(tmp_path))
    store.close()

    with pytest.raises(ValueError, match="closed"):
        ask(store, "a.csv", [1], ["x"])


def test_a_full_scratch_disk_stops_the_run_and_removes_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database of at most 8 pages stands for a full disk: SQLite answers SQLITE_FULL.
    monkeypatch.setattr(
        backfill.dedupe, "PRAGMAS", (*backfill.dedupe.PRAGMAS, "PRAGMA max_page_count = 8")
    )
    store = SeenKeys(str(tmp_path))
    keys = pl.Series([f"key-{n}" for n in range(5_000)])

    with pytest.raises(
        RunAborted, match=r"the dedupe store in .* failed: database or disk is full"
    ):
        store.first_seen("a.csv", pl.int_range(0, 5_000, eager=True), keys)

    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="closed"):
        ask(store, "a.csv", [1], ["x"])


def test_a_directory_that_cannot_hold_the_store_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing"

    with pytest.raises(
        RunAborted, match=re.escape(f"cannot create the dedupe store in {missing}: ")
    ):
        SeenKeys(str(missing))


def feed(mode: str) -> dict[str, float]:
    """Run the feeder in a child process with or without the store; its printed figures."""
    done = subprocess.run(
        [sys.executable, "-c", FEEDER, mode, str(MEMORY_ROWS), str(MEMORY_BATCH)],
        capture_output=True,
        text=True,
        check=True,
        timeout=100,
    )
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def test_memory_stays_bounded_for_millions_of_keys() -> None:
    baseline = feed("baseline")
    stored = feed("store")

    assert stored["duplicates"] == MEMORY_ROWS // 10
    assert stored["wrong"] == 0
    assert stored["distinct"] == MEMORY_ROWS - MEMORY_ROWS // 10
    assert stored["peak_mib"] - baseline["peak_mib"] < MEMORY_BOUND_MIB, (baseline, stored)
