"""Where a mapping's sources are in each input: columns, paths into nested values, lists.

A path descends nested objects (a JSON Lines value, which the reader gives as its JSON text)
and cells holding JSON text of an object (a CSV column like PostHog's ``properties``) alike:
both are JSON text by the time a batch is read, so one JSONPath expression reads both.

Sources are resolved once per input, before any row is read: a name or path that no input
has refuses the mapping, naming what is there (the columns, or the keys seen in the first
rows). Each batch then gets one working column per derived source, as Polars expressions.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import polars as pl

from backfill.errors import MappingError
from backfill.inputs import InputFile, frame_column, json_path
from backfill.mapping import (
    Candidate,
    Mapping,
    Source,
    missing_column_error,
    top_column,
    written,
)

SAMPLE_ROWS = 1000  # rows looked at for the keys of nested values
KEYS_SHOWN = 20

Path = tuple[str, ...]


@dataclass(frozen=True)
class InputPlan:
    """How one input gives the mapping's sources: the columns to read and the derived ones."""

    reads: list[str]  # the input's own columns the sources need, in mapping order
    derived: list[tuple[str, list[Path]]]  # working column -> the paths tried, in order
    absent: list[str]  # plain columns another input has: empty in this one


def resolve(mapping: Mapping, inputs: Sequence[InputFile]) -> tuple[Mapping, dict[str, InputPlan]]:
    """Check every source against the inputs and plan how each input gives them.

    Returns the mapping with its props keys decided (a path's key is its last segment) and a
    plan per input name. A source that no input has is a MappingError.
    """
    samples = _Samples(inputs)
    for source in mapping.all_sources():
        # A list of sources is there when one of them is: each row takes what it has.
        problems = [_absent(mapping, source, c, samples) for c in source.names]
        if all(problems):
            raise problems[0]  # type: ignore[misc]
    plans = {inp.name: _plan(mapping, inp) for inp in inputs}
    resolved = replace(mapping, prop_keys=_prop_keys(mapping, inputs))
    _check_prop_keys(resolved)
    return resolved, plans


def _plan(mapping: Mapping, inp: InputFile) -> InputPlan:
    """The columns to read from one input and the paths of each derived source in it."""
    reads: dict[str, None] = {}
    derived: dict[str, list[Path]] = {}
    absent: dict[str, None] = {}
    for source in mapping.all_sources():
        paths = [top_column(c, inp.columns) for c in source.names]
        found = [p for p in paths if p is not None]
        reads.update(dict.fromkeys(p[0] for p in found))
        if source.column is None:
            continue
        if not found:
            absent[source.column] = None
        elif source.candidates or len(found[0]) > 1:
            derived[source.column] = found  # a list, or a path: worked out from the paths
    return InputPlan(list(reads), list(derived.items()), list(absent))


def _prop_keys(mapping: Mapping, inputs: Sequence[InputFile]) -> dict[str, str]:
    """Each props entry's key: the last segment of a path, the name of a column."""
    keys = {}
    for entry in (*mapping.metrics, *mapping.dimensions, *mapping.columns):
        path = next((p for inp in inputs if (p := top_column(entry, inp.columns))), (entry,))
        keys[entry] = path[-1]
    return keys


def _check_prop_keys(mapping: Mapping) -> None:
    """Refuse two props entries sent under one key (paths ending in the same segment)."""
    seen: dict[str, str] = {}
    for entry in (*mapping.metrics, *mapping.dimensions, *mapping.columns):
        key = mapping.prop_name(entry)
        if key in seen:
            raise MappingError(
                f"{mapping.path}: props: '{seen[key]}' and '{entry}' would both be sent as"
                f" '{key}': give one another name in props.rename",
                file=mapping.path,
            )
        seen[key] = entry


def add_sources(batch: pl.DataFrame, plan: InputPlan) -> pl.DataFrame:
    """A batch with each derived source's working column added: its first non-empty path."""
    columns = [pl.lit(None, pl.String).alias(frame_column(name)) for name in plan.absent]
    for name, paths in plan.derived:
        texts = [_trimmed(_path_text(batch, path)) for path in paths]
        value = pl.coalesce(texts) if texts else pl.lit(None, pl.String)
        columns.append(value.alias(name))
    return batch.with_columns(columns) if columns else batch


def _trimmed(text: pl.Expr) -> pl.Expr:
    """A value as trimmed text, null when blank: an empty source gives way to the next."""
    return text.str.strip_chars().replace("", None)


def _path_text(batch: pl.DataFrame, path: Path) -> pl.Expr:
    """The text at a path: the column's own, or the value found inside its JSON text."""
    column = pl.nth(batch.get_column_index(frame_column(path[0]))).cast(pl.String)
    if len(path) == 1:
        return column
    found = json_path(*path[1:])
    if found is None:
        raise MappingError(f"the path {written(path)} cannot be read (quotes or a backslash)")
    return column.str.json_path_match(found)


# --- checking nested keys against the first rows -------------------------------------------


def _absent(
    mapping: Mapping, source: Source, candidate: Candidate, samples: _Samples
) -> MappingError | None:
    """Why no input has a name or path (its column, or its keys in the first rows), or None."""
    found = [top_column(candidate, inp.columns) for inp in samples.inputs]
    if not any(found):
        first = samples.inputs[0]
        return missing_column_error(mapping, source.where, candidate, first.name, first.columns)
    problems = []
    for inp, path in zip(samples.inputs, found, strict=True):
        if path is None:
            continue  # not in this input: it reads as empty there
        if len(path) == 1:
            return None  # a plain column somewhere: nothing to check
        missing = _missing_key(samples.values(inp, path[0]), path[1:])
        if missing is None:
            return None
        problems.append((inp.name, path, *missing))
    name, path, depth, keys = problems[0]
    where = ".".join(path[: depth + 1])
    listing = ", ".join(sorted(keys)[:KEYS_SHOWN]) + (" ..." if len(keys) > KEYS_SHOWN else "")
    return MappingError(
        f"{mapping.path}: {source.where}: '{written(candidate)}' is not in {name}: no key"
        f" '{path[depth + 1]}' in '{where}' in its first rows; the keys there are:"
        f" {listing or '(none)'}"
    )


def _missing_key(values: Iterable[Any], keys: Path) -> tuple[int, set[str]] | None:
    """Where a path leaves the sampled values (depth, keys seen there), or None if it is there.

    A sample with no object at some depth proves nothing (the values may be empty in the
    first rows): only a level with objects that all lack the key is a missing key.
    """
    level = [v for v in values if isinstance(v, dict)]
    for depth, key in enumerate(keys):
        if not level:
            return None
        if not any(key in value for value in level):
            return depth, {k for value in level for k in value}
        level = [_object(value.get(key)) for value in level if key in value]
        level = [v for v in level if isinstance(v, dict)]
    return None


def _object(value: Any) -> Any:
    """A nested value, reading JSON text of an object as the object."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


class _Samples:
    """The values of a column in each input's first rows, read from what the reader holds."""

    def __init__(self, inputs: Sequence[InputFile]) -> None:
        self.inputs = list(inputs)
        self.cache: dict[tuple[str, str], list[Any]] = {}

    def values(self, inp: InputFile, column: str) -> list[Any]:
        """The column's values in the input's first rows, JSON text read as objects."""
        key = (inp.name, column)
        if key not in self.cache:
            self.cache[key] = [_object(v) for v in _first_values(inp, column)]
        return self.cache[key]


def _first_values(inp: InputFile, column: str) -> Iterator[Any]:
    """A column's values in the first SAMPLE_ROWS rows of an input (bytes read ahead)."""
    if inp.parquet is not None:  # structs come as dicts, JSON text as strings
        first = inp.parquet.select(pl.nth(inp.columns.index(column))).head(SAMPLE_ROWS)
        yield from first.collect().to_series().to_list()
        return
    text = inp.pending.decode("utf-8", errors="replace")
    if inp.format == "jsonl":
        for line in text.split("\n")[:SAMPLE_ROWS]:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record.get(column)
        return
    index = inp.columns.index(column)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=inp.delimiter)
    for count, record in enumerate(reader):
        if count >= SAMPLE_ROWS:
            return
        if len(record) == len(inp.columns):
            yield record[index]
