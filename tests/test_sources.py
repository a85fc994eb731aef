"""Sources in real exports: paths into nested objects and JSON text, lists, several inputs."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.errors import MappingError
from backfill.inputs import ROW, WIDE
from backfill.mapping import load_mapping
from backfill.pipeline import checked_batches, open_inputs
from tests.conftest import Run, Write

HEAD = """\
[fields]
embeddable_id = {{ value = "flow_1" }}
timestamp = {timestamp}
custom_event_name = "event"

[identifier]
key = {{ value = "email" }}
value = {value}
"""


def mapping(write: Write, timestamp: str = '"time"', value: str = '"email"', tail: str = "") -> str:
    """Write m.toml with the given timestamp and identifier value sources."""
    return write("m.toml", HEAD.format(timestamp=timestamp, value=value) + tail)


def jsonl(write: Write, name: str, records: list[dict[str, Any]]) -> str:
    """Write a JSON Lines export."""
    return write(name, "".join(json.dumps(r) + "\n" for r in records))


def payloads(paths: list[str], mapping_path: str) -> list[dict[str, Any] | None]:
    """Each row's payload (None when not sent), in input order."""
    m = load_mapping(mapping_path)
    found: list[dict[str, Any] | None] = []
    for batch in checked_batches(open_inputs(paths, m), m):
        found += [json.loads(p) if p else None for p in batch.checked["payload"]]
    return found


def identifier(payload: dict[str, Any] | None) -> str | None:
    """The identifier value a payload sends, decoded once."""
    return None if payload is None else json.loads(payload["identifiers"][0]["value"])


def test_a_path_reads_nested_objects_and_a_list_takes_the_first_non_empty(write: Write) -> None:
    rows = [
        {"event": "a", "properties": {"time": 1709296496, "$email": "A@x.io"}},
        {"event": "a", "properties": {"time": 1709296496, "$email": "", "email": "b@x.io"}},
        {"event": "a", "properties": {"time": 1709296496, "email": None}, "userId": "c@x.io"},
        {"event": "a", "properties": {"time": 1709296496}},
    ]
    jsonl(write, "e.jsonl", rows)
    mapping(
        write,
        timestamp='"properties.time"',
        value='{ column = ["properties.$email", "properties.email", "userId"] }',
    )
    found = payloads(["e.jsonl"], "m.toml")
    assert [identifier(p) for p in found] == ["A@x.io", "b@x.io", "c@x.io", None]
    assert found[0] is not None and found[0]["timestamp"] == "2024-03-01T12:34:56.000Z"


def test_a_path_reads_json_text_cells_and_a_dotted_column_is_a_column(write: Write) -> None:
    # PostHog: `properties` holds JSON text, and `person.properties.email` is a column.
    write(
        "e.csv",
        "event,time,properties,person.properties.email\n"
        'a,2024-03-01T12:00:00Z,"{""$email"": ""a@x.io"", ""n"": {""a.b"": ""deep""}}",p@x.io\n',
    )
    mapping(write, value='"person.properties.email"')
    assert [identifier(p) for p in payloads(["e.csv"], "m.toml")] == ["p@x.io"]
    mapping(write, value='"properties.$email"')
    assert [identifier(p) for p in payloads(["e.csv"], "m.toml")] == ["a@x.io"]
    mapping(write, value='{ path = ["properties", "n", "a.b"] }')
    assert [identifier(p) for p in payloads(["e.csv"], "m.toml")] == ["deep"]


def test_an_unknown_key_names_the_keys_there(write: Write) -> None:
    jsonl(write, "e.jsonl", [{"event": "a", "time": 1, "properties": {"time": 1, "email": "x"}}])
    mapping(write, value='"properties.mail"')
    with pytest.raises(MappingError) as caught:
        open_inputs(["e.jsonl"], load_mapping("m.toml"))
    assert str(caught.value) == (
        "m.toml: identifier.value: 'properties.mail' is not in e.jsonl: no key 'mail' in"
        " 'properties' in its first rows; the keys there are: email, time"
    )


def test_an_unknown_column_names_the_columns(write: Write, run: Run) -> None:
    jsonl(write, "e.jsonl", [{"event": "a", "time": 1, "email": "x"}])
    mapping(write, value='"traits.email"')
    result = run("validate", "e.jsonl", "-m", "m.toml")
    assert (result.exit_code, result.output) == (
        2,
        "error: m.toml: identifier.value: column 'traits.email' is not in e.jsonl;"
        " its columns are: event, time, email\n",
    )


def test_a_source_one_input_lacks_reads_as_empty_there(write: Write, run: Run) -> None:
    jsonl(write, "a.jsonl", [{"event": "a", "time": 1709296496, "context": {"email": "a@x.io"}}])
    jsonl(write, "b.jsonl", [{"event": "a", "time": 1709296496, "email": "b@x.io"}])
    mapping(write, value='{ column = ["context.email", "email"] }')
    found = payloads(["a.jsonl", "b.jsonl"], "m.toml")
    assert [identifier(p) for p in found] == ["a@x.io", "b@x.io"]


def test_props_paths_are_keyed_by_their_last_segment(write: Write) -> None:
    rows = [{"event": "a", "time": 1709296496, "email": "x", "p": {"amount": 3, "plan": "pro"}}]
    jsonl(write, "e.jsonl", rows)
    tail = (
        '[props]\nmetrics = ["p.amount"]\ndimensions = ["p.plan"]\nrename = { "p.plan" = "tier" }\n'
    )
    mapping(write, tail=tail)
    [payload] = payloads(["e.jsonl"], "m.toml")
    assert payload is not None
    props = json.loads(payload["custom_event_props"])
    assert props == {"payload_metrics": {"amount": 3}, "payload_dimensions": {"tier": "pro"}}


KEYS = st.text(alphabet="abcxyz$._ -é", min_size=1, max_size=6).filter(
    lambda k: k.strip() == k and k.strip()
)
SCALARS = st.one_of(
    st.text(alphabet="abc xyz1", min_size=1, max_size=8).filter(lambda s: s.strip() == s),
    st.integers(-1000, 1000),
)


@st.composite
def nested(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """A nested object and a path of keys into it that holds a scalar."""
    path = draw(st.lists(KEYS, min_size=1, max_size=4))
    value: Any = draw(SCALARS)
    for key in reversed(path):
        siblings = draw(st.dictionaries(KEYS, SCALARS, max_size=3))
        siblings.pop(key, None)
        value = {**siblings, key: value}
    return value, path


@settings(max_examples=60, deadline=None)
@given(case=nested(), as_text=st.booleans())
def test_an_explicit_path_reads_what_python_reads(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[dict[str, Any], list[str]], as_text: bool
) -> None:
    obj, path = case
    folder = Path(tmp_path_factory.mktemp("p"))
    cell: Any = json.dumps(obj) if as_text else obj  # a nested object, or JSON text of one
    row = {"event": "a", "time": 1709296496, "root": cell}
    (folder / "e.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    keys = ", ".join(json.dumps(k) for k in ["root", *path])
    (folder / "m.toml").write_text(
        HEAD.format(timestamp='"time"', value=f"{{ path = [{keys}] }}"), encoding="utf-8"
    )
    expected: Any = obj
    for key in path:
        expected = expected[key]
    [payload] = payloads([str(folder / "e.jsonl")], str(folder / "m.toml"))
    assert identifier(payload) == str(expected)


def test_two_paths_ending_alike_need_a_rename(write: Write, run: Run) -> None:
    jsonl(write, "e.jsonl", [{"event": "a", "time": 1, "email": "x", "a": {"n": 1}, "b": {"n": 2}}])
    mapping(write, tail='[props]\nmetrics = ["a.n", "b.n"]\n')
    result = run("validate", "e.jsonl", "-m", "m.toml")
    assert (result.exit_code, result.output) == (
        2,
        "error: m.toml: props: 'a.n' and 'b.n' would both be sent as 'n': give one another"
        " name in props.rename\n",
    )
    mapping(write, tail='[props]\nmetrics = ["a.n", "b.n"]\nrename = { "b.n" = "b_n" }\n')
    assert run("validate", "e.jsonl", "-m", "m.toml").exit_code == 1  # time 1 is not a time


def test_since_and_until_may_be_toml_dates(write: Write, run: Run) -> None:
    rows = [{"event": "a", "time": t, "email": "x"} for t in (1577836799, 1577836800)]
    jsonl(write, "e.jsonl", rows)
    mapping(write, tail="[filter]\nsince = 2020-01-01\n")
    report = json.loads(run("validate", "e.jsonl", "-m", "m.toml", "--json").output)
    assert (report["valid"], report["skipped_by_rule"]) == (1, {"since": 1})


def _events(write: Write, name: str, count: int) -> str:
    """A JSON Lines export of ``count`` valid events."""
    records = [{"event": "a", "time": 1709296496, "email": f"{i}@x.io"} for i in range(count)]
    return jsonl(write, name, records)


def test_inputs_are_read_as_one_stream_in_order_each_closed_once_read(write: Write) -> None:
    m = load_mapping(mapping(write))
    wide_header = ",".join(["event", "time", "email", *(f"c{i}" for i in range(WIDE))])
    wide = write("c.csv", f"{wide_header}\na,1709296496,c@x.io{',' * WIDE}\n")
    paths = [_events(write, "a.jsonl", 300), _events(write, "b.jsonl", 300), wide]
    paths.append(_events(write, "d.jsonl", 2))
    inputs = open_inputs(paths, m)
    order: list[tuple[str, int]] = []
    b_read_before_a_was_done = -1
    for batch in checked_batches(inputs, m, batch_bytes=4096):  # about 70 lines a batch
        order += [(batch.source, row) for row in batch.checked[ROW]]
        if order[-1] == (paths[0], 300):
            b_read_before_a_was_done = inputs[1].rows_read
    counts = {paths[0]: 300, paths[1]: 300, wide: 1, paths[3]: 2}
    assert order == [(path, row) for path, n in counts.items() for row in range(1, n + 1)]
    # Reading ran on into b.jsonl while a.jsonl's last batches were checked.
    assert b_read_before_a_was_done > 0
    assert all(inp.stream.closed for inp in inputs)


def test_a_stream_of_inputs_stopped_early_closes_every_input(write: Write) -> None:
    m = load_mapping(mapping(write))
    paths = [_events(write, f"{name}.jsonl", 300) for name in "abc"]
    inputs = open_inputs(paths, m)
    stream = checked_batches(inputs, m, batch_bytes=4096)
    assert next(stream).source == paths[0]
    stream.close()  # type: ignore[attr-defined]
    assert all(inp.stream.closed for inp in inputs)
    assert "backfill-read-ahead" not in [thread.name for thread in threading.enumerate()]
