"""The mapping file: every mistake is one line naming the file and the key; good files load."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from backfill.errors import ExitCode, MappingError
from backfill.mapping import Mapping, Source, check_columns, load_mapping

Write = Callable[[str, str | bytes], str]
DATA = Path(__file__).parent / "data"

FIELDS = {
    "embeddable_id": '"flow_id"',
    "timestamp": '"occurred_at"',
    "custom_event_name": '"event"',
}
IDENTIFIER = {"key": '{ value = "email" }', "value": '"email"'}


def mapping_toml(
    fields: dict[str, str | None] | None = None,
    identifier: dict[str, str | None] | None = None,
    props: dict[str, str] | None = None,
    tail: str = "",
) -> str:
    """A valid mapping with some entries changed (a None entry is left out), then ``tail``."""
    lines = []
    for table, defaults, changes in (
        ("fields", FIELDS, fields),
        ("identifier", IDENTIFIER, identifier),
        ("props", {}, props),
    ):
        entries = {**defaults, **(changes or {})}
        if table != "props" or props is not None:
            lines.append(f"[{table}]")
            lines += [f"{key} = {value}" for key, value in entries.items() if value is not None]
    return "\n".join(lines) + "\n" + tail


def load_error(write: Write, text: str | bytes) -> str:
    """The message of the MappingError that loading ``text`` raises."""
    with pytest.raises(MappingError) as caught:
        load_mapping(write("m.toml", text))
    return str(caught.value)


def ts(inline: str) -> dict[str, str | None]:
    """Fields with the timestamp given as an inline table."""
    return {"timestamp": f'{{ column = "occurred_at", {inline} }}'}


def ident_value(spec: str) -> dict[str, str | None]:
    """Identifier entries with the value given as ``spec``."""
    return {"value": spec}


BAD_MAPPINGS = [
    # Unknown keys, with the closest known key when there is one.
    pytest.param(
        mapping_toml(tail="[prop]\nmetrics = []\n"),
        "unknown key 'prop' (did you mean 'props'?);"
        " expected one of: fields, identifier, props, filter, input",
        id="top-level-key-typo",
    ),
    pytest.param(
        mapping_toml(tail="[options]\n"),
        "unknown key 'options'; expected one of: fields, identifier, props, filter, input",
        id="top-level-key-unknown",
    ),
    pytest.param(
        mapping_toml(fields={"embedable_id": '"x"'}),
        "[fields] unknown key 'embedable_id' (did you mean 'embeddable_id'?);"
        " expected one of: embeddable_id, timestamp, custom_event_name",
        id="fields-key",
    ),
    pytest.param(
        mapping_toml(identifier={"kee": '"x"'}),
        "[identifier] unknown key 'kee' (did you mean 'key'?); expected one of: key, value",
        id="identifier-key",
    ),
    pytest.param(
        mapping_toml(props={"metric": '["amount"]'}),
        "[props] unknown key 'metric' (did you mean 'metrics'?);"
        " expected one of: metrics, dimensions, columns, json_column, rename, drop",
        id="props-key",
    ),
    pytest.param(
        mapping_toml(fields=ts('timezon = "UTC"')),
        "[fields.timestamp] unknown key 'timezon' (did you mean 'timezone'?);"
        " expected one of: column, path, value, timezone, format, unit",
        id="inline-timestamp-key",
    ),
    pytest.param(
        mapping_toml(identifier=ident_value('{ column = "email", typ = "number" }')),
        "[identifier.value] unknown key 'typ' (did you mean 'type'?);"
        " expected one of: column, path, value, type, normalize",
        id="inline-identifier-value-key",
    ),
    pytest.param(
        mapping_toml(identifier={"key": '{ value = "email", type = "string" }'}),
        "[identifier.key] unknown key 'type'; expected one of: column, path, value",
        id="inline-key-setting-of-another-field",
    ),
    pytest.param(
        mapping_toml(fields={"embeddable_id": '{ column = "flow_id", timezone = "UTC" }'}),
        "[fields.embeddable_id] unknown key 'timezone'; expected one of: column, path, value",
        id="inline-timezone-on-embeddable-id",
    ),
    # Missing or mistyped tables and fields.
    pytest.param(
        "[identifier]\nkey = 'email'\nvalue = 'email'\n",
        "missing table [fields]",
        id="no-fields-table",
    ),
    pytest.param(
        "[fields]\nembeddable_id = 'flow_id'\ntimestamp = 'ts'\ncustom_event_name = 'event'\n",
        "missing table [identifier]",
        id="no-identifier-table",
    ),
    pytest.param("", "missing table [fields]", id="empty-file"),
    pytest.param(
        "fields = 1\n[identifier]\nkey = 'email'\nvalue = 'email'\n",
        "[fields] must be a table, got integer",
        id="fields-not-a-table",
    ),
    pytest.param(
        "props = 3\n" + mapping_toml(),
        "[props] must be a table, got integer",
        id="props-not-a-table",
    ),
    pytest.param(
        mapping_toml(fields={"timestamp": None}),
        "[fields] missing 'timestamp' (a column name or { value = ... })",
        id="field-missing",
    ),
    pytest.param(
        mapping_toml(identifier={"value": None}),
        "[identifier] missing 'value' (a column name or { value = ... })",
        id="identifier-value-missing",
    ),
    pytest.param(
        mapping_toml(fields={"embeddable_id": "5"}),
        "fields.embeddable_id must be a column name or a table, got integer",
        id="field-bare-int",
    ),
    pytest.param(
        mapping_toml(fields={"custom_event_name": "[5]"}),
        "fields.custom_event_name must be a column name, a path or a list of them, got integer",
        id="field-array-of-numbers",
    ),
    pytest.param(
        mapping_toml(fields={"embeddable_id": "{ column = 5 }"}),
        "fields.embeddable_id must be a column name, a path or a list of them, got integer",
        id="column-not-a-string",
    ),
    pytest.param(
        mapping_toml(fields={"embeddable_id": "{ value = 5 }"}),
        "fields.embeddable_id.value must be a string, got integer",
        id="constant-int-outside-identifier-value",
    ),
    pytest.param(
        mapping_toml(identifier=ident_value("{ value = true }")),
        "identifier.value.value must be a string, got boolean",
        id="identifier-constant-boolean",
    ),
    pytest.param(
        mapping_toml(identifier=ident_value("{ value = 1979-05-27 }")),
        "identifier.value.value must be a string, got date",
        id="identifier-constant-date",
    ),
    pytest.param(
        mapping_toml(identifier=ident_value("{ value = inf }")),
        "identifier.value.value must be a finite number, got inf",
        id="identifier-constant-inf",
    ),
    pytest.param(
        mapping_toml(identifier=ident_value("{ value = nan }")),
        "identifier.value.value must be a finite number, got nan",
        id="identifier-constant-nan",
    ),
    pytest.param(
        mapping_toml(fields=ts("timezone = 1")),
        "fields.timestamp.timezone must be a string, got integer",
        id="timezone-not-a-string",
    ),
    pytest.param(
        mapping_toml(fields=ts('format = ["%d/%m/%Y"]')),
        "fields.timestamp.format must be a string, got array",
        id="format-not-a-string",
    ),
    pytest.param(
        mapping_toml(fields={"custom_event_name": '{ column = "event", snake_case = true }'}),
        "fields.custom_event_name.snake_case must be a string, got boolean",
        id="snake-case-not-a-string",
    ),
    pytest.param(
        mapping_toml(props={"metrics": '"amount"'}),
        "props.metrics must be a list of column names",
        id="metrics-not-a-list",
    ),
    pytest.param(
        mapping_toml(props={"metrics": '["amount", 1]'}),
        "props.metrics must be a list of column names",
        id="metrics-list-with-a-number",
    ),
    pytest.param(
        mapping_toml(props={"dimensions": "{ plan = 1 }"}),
        "props.dimensions must be a list of column names",
        id="dimensions-a-table",
    ),
    pytest.param(
        mapping_toml(props={"json_column": "1"}),
        "props.json_column must be a column name or a list of them",
        id="json-column-not-a-string",
    ),
    pytest.param(
        mapping_toml(props={"metrics": '["amount"]', "rename": '"order_amount"'}),
        'props.rename must be a table of column = "new name"',
        id="rename-not-a-table",
    ),
    pytest.param(
        mapping_toml(props={"metrics": '["amount"]', "rename": "{ amount = 1 }"}),
        'props.rename must be a table of column = "new name"',
        id="rename-value-not-a-string",
    ),
    # Column or constant: exactly one, and not blank.
    pytest.param(
        mapping_toml(fields={"embeddable_id": '{ column = "flow_id", value = "flow_1" }'}),
        "fields.embeddable_id needs exactly one of 'column', 'path' or 'value'",
        id="both-column-and-value",
    ),
    pytest.param(
        mapping_toml(fields={"embeddable_id": "{ }"}),
        "fields.embeddable_id needs exactly one of 'column', 'path' or 'value'",
        id="neither-column-nor-value",
    ),
    pytest.param(
        mapping_toml(fields={"timestamp": '{ timezone = "UTC" }'}),
        "fields.timestamp needs exactly one of 'column', 'path' or 'value'",
        id="settings-but-no-column",
    ),
    pytest.param(
        mapping_toml(fields={"embeddable_id": '""'}),
        "fields.embeddable_id is empty",
        id="empty-column-name",
    ),
    pytest.param(
        mapping_toml(fields={"embeddable_id": '{ column = "  " }'}),
        "fields.embeddable_id is empty",
        id="blank-column-name",
    ),
    pytest.param(
        mapping_toml(identifier={"key": '{ value = "" }'}),
        "identifier.key is empty",
        id="empty-constant",
    ),
    pytest.param(
        mapping_toml(props={"metrics": '[""]'}),
        "props.metrics is empty",
        id="empty-metric-name",
    ),
    pytest.param(
        mapping_toml(props={"metrics": '["amount"]', "rename": '{ amount = "" }'}),
        "props.rename.amount is empty",
        id="empty-rename-target",
    ),
    pytest.param(
        mapping_toml(fields=ts('format = ""')),
        "fields.timestamp.format is empty",
        id="empty-format",
    ),
    pytest.param(
        mapping_toml(fields=ts('timezone = ""')),
        "fields.timestamp.timezone is empty",
        id="empty-timezone",
    ),
    # Settings limited to a few words.
    pytest.param(
        mapping_toml(fields={"custom_event_name": '{ column = "event", snake_case = "convertt" }'}),
        "fields.custom_event_name.snake_case must be one of 'reject', 'convert',"
        " got 'convertt' (did you mean 'convert'?)",
        id="snake-case-typo",
    ),
    pytest.param(
        mapping_toml(fields={"custom_event_name": '{ column = "event", snake_case = "yes" }'}),
        "fields.custom_event_name.snake_case must be one of 'reject', 'convert', got 'yes'",
        id="snake-case-unknown",
    ),
    pytest.param(
        mapping_toml(identifier=ident_value('{ column = "email", type = "numbr" }')),
        "identifier.value.type must be one of 'string', 'number', 'json',"
        " got 'numbr' (did you mean 'number'?)",
        id="type-typo",
    ),
    pytest.param(
        mapping_toml(identifier=ident_value('{ column = "email", normalize = "lower" }')),
        "identifier.value.normalize must be one of 'none', 'lowercase', 'uppercase',"
        " got 'lower' (did you mean 'lowercase'?)",
        id="normalize-typo",
    ),
    pytest.param(
        mapping_toml(identifier=ident_value('{ column = "email", normalize = "xyz" }')),
        "identifier.value.normalize must be one of 'none', 'lowercase', 'uppercase', got 'xyz'",
        id="normalize-unknown",
    ),
    # Time zones: the IANA names that both Python and Polars know.
    pytest.param(
        mapping_toml(fields=ts('timezone = "Europe/Berln"')),
        "fields.timestamp.timezone: unknown time zone 'Europe/Berln'"
        " (did you mean 'Europe/Berlin'?)",
        id="timezone-typo",
    ),
    pytest.param(
        mapping_toml(fields=ts('timezone = "utc"')),
        "fields.timestamp.timezone: unknown time zone 'utc' (did you mean 'UTC'?)",
        id="timezone-wrong-case",
    ),
    pytest.param(
        mapping_toml(fields=ts('timezone = "Qqqqq"')),
        "fields.timestamp.timezone: unknown time zone 'Qqqqq'",
        id="timezone-unknown",
    ),
    pytest.param(
        mapping_toml(fields=ts('timezone = "../etc/passwd"')),
        "fields.timestamp.timezone: unknown time zone '../etc/passwd'",
        id="timezone-path",
    ),
    pytest.param(
        mapping_toml(fields=ts('timezone = "+01:00"')),
        "fields.timestamp.timezone: unknown time zone '+01:00'",
        id="timezone-offset",
    ),
    pytest.param(
        # Python knows it, Polars does not: refused here rather than crashing mid-run.
        mapping_toml(fields=ts('timezone = "localtime"')),
        "fields.timestamp.timezone: unknown time zone 'localtime'",
        id="timezone-python-only",
    ),
    # Props: each column once, rename only props columns, no two props under one key.
    pytest.param(
        mapping_toml(props={"metrics": '["amount"]', "rename": '{ amont = "order_amount" }'}),
        "props.rename: 'amont' is not a metric, dimension or column (did you mean 'amount'?)",
        id="rename-typo",
    ),
    pytest.param(
        mapping_toml(props={"json_column": '"extra"', "rename": '{ extra = "more" }'}),
        "props.rename: 'extra' is not a metric, dimension or column",
        id="rename-json-column",
    ),
    pytest.param(
        mapping_toml(props={"metrics": '["amount"]', "dimensions": '["plan", "amount"]'}),
        "props: column 'amount' is listed twice",
        id="column-in-two-lists",
    ),
    pytest.param(
        mapping_toml(props={"columns": '["coupon", "coupon"]'}),
        "props: column 'coupon' is listed twice",
        id="column-twice-in-one-list",
    ),
    pytest.param(
        mapping_toml(props={"metrics": '["a", "b"]', "rename": '{ a = "b" }'}),
        "props: two columns are sent as 'b'",
        id="rename-onto-another-column",
    ),
    pytest.param(
        mapping_toml(props={"dimensions": '["a", "b"]', "rename": '{ a = "x", b = "x" }'}),
        "props: two columns are sent as 'x'",
        id="two-renamed-to-one-key",
    ),
    pytest.param(
        mapping_toml(props={"columns": '["coupon"]', "rename": '{ coupon = "payload_metrics" }'}),
        "props.columns: 'coupon' cannot be sent as 'payload_metrics', the key that holds"
        " the metrics",
        id="column-renamed-onto-metrics-key",
    ),
    pytest.param(
        mapping_toml(props={"columns": '["payload_dimensions"]'}),
        "props.columns: 'payload_dimensions' cannot be sent as 'payload_dimensions',"
        " the key that holds the dimensions",
        id="column-named-like-dimensions-key",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_MAPPINGS)
def test_bad_mapping(write: Write, text: str, message: str) -> None:
    error = load_error(write, text)
    assert error == f"m.toml: {message}"
    assert "\n" not in error


def test_mapping_errors_exit_2() -> None:
    assert MappingError("x").exit_code == ExitCode.NOTHING_SENT


def test_missing_file(workdir: Path) -> None:
    with pytest.raises(MappingError, match=r"^nope\.toml: no such mapping file$"):
        load_mapping("nope.toml")


def test_directory(workdir: Path) -> None:
    (workdir / "conf.d").mkdir()
    with pytest.raises(MappingError, match=r"^conf\.d: is a directory, not a mapping file$"):
        load_mapping("conf.d")


@pytest.mark.parametrize(
    ("text", "position"),
    [
        pytest.param("[fields\n", "(at line 1, column 8)", id="unclosed-table"),
        pytest.param('[fields]\nembeddable_id = "flow_id\n', "(at line 2, column 25)", id="string"),
        pytest.param("[fields]\nembeddable_id = flow_id\n", "(at line 2, column 17)", id="bare"),
        pytest.param("[fields]\n[fields]\n", "(at line 2, column 8)", id="table-twice"),
    ],
)
def test_bad_toml(write: Write, text: str, position: str) -> None:
    # The middle of the message is tomllib's own wording; ours is the prefix and the position.
    error = load_error(write, text)
    assert error.startswith("m.toml: not valid TOML: ")
    assert error.endswith(position)
    assert "\n" not in error


def test_not_utf8(write: Write) -> None:
    error = load_error(write, b"[fields]\nembeddable_id = '\xe9'\n")
    assert error == "m.toml: the mapping file is not UTF-8 text (byte 0xe9 on line 2)"


def test_byte_order_mark_and_crlf_are_read(write: Write) -> None:
    text = mapping_toml().replace("\n", "\r\n").encode()
    mapping = load_mapping(write("m.toml", b"\xef\xbb\xbf" + text))
    assert mapping.embeddable_id == Source("fields.embeddable_id", column="flow_id")


def test_spec_example_loads() -> None:
    path = str(DATA / "spec_mapping.toml")
    mapping = load_mapping(path)
    assert replace(mapping, text="") == Mapping(
        path=path,
        embeddable_id=Source("fields.embeddable_id", column="flow_id"),
        timestamp=Source("fields.timestamp", column="occurred_at"),
        event_name=Source("fields.custom_event_name", column="event"),
        identifier_key=Source("identifier.key", value="email"),
        identifier_value=Source("identifier.value", column="email"),
        timezone="UTC",
        timestamp_format=None,
        snake_case="convert",
        identifier_type="string",
        normalize="lowercase",
        metrics=("amount",),
        dimensions=("plan", "country"),
        columns=("coupon",),
        json_column="extra",
        rename={"amount": "order_amount"},
    )
    assert mapping.text == (DATA / "spec_mapping.toml").read_text()
    assert mapping.columns_used() == [
        "flow_id",
        "occurred_at",
        "event",
        "email",
        "amount",
        "plan",
        "country",
        "coupon",
        "extra",
    ]
    assert mapping.prop_name("amount") == "order_amount"
    assert mapping.prop_name("plan") == "plan"


def test_defaults(write: Write) -> None:
    mapping = load_mapping(write("m.toml", mapping_toml()))
    assert (mapping.timezone, mapping.timestamp_format, mapping.snake_case) == (
        "UTC",
        None,
        "reject",
    )
    assert (mapping.identifier_type, mapping.normalize) == ("string", "none")
    assert (mapping.metrics, mapping.dimensions, mapping.columns) == ((), (), ())
    assert (mapping.json_column, mapping.rename) == (None, {})


def test_every_setting(write: Write) -> None:
    text = mapping_toml(
        fields={
            "timestamp": '{ column = "t", timezone = "America/New_York", format = "%d/%m/%Y" }',
            "custom_event_name": '{ column = "e", snake_case = "reject" }',
        },
        identifier={"value": '{ column = "id", type = "number", normalize = "uppercase" }'},
    )
    mapping = load_mapping(write("m.toml", text))
    assert mapping.timestamp == Source("fields.timestamp", column="t")
    assert (mapping.timezone, mapping.timestamp_format) == ("America/New_York", "%d/%m/%Y")
    assert (mapping.identifier_type, mapping.normalize) == ("number", "uppercase")
    assert mapping.identifier_value == Source("identifier.value", column="id")


def test_constants_for_every_field(write: Write) -> None:
    text = mapping_toml(
        fields={
            "embeddable_id": '{ value = "flow_9f2c" }',
            "timestamp": '{ value = "2024-03-01T12:34:56Z", timezone = "UTC" }',
            "custom_event_name": '{ value = "Signed Up", snake_case = "convert" }',
        },
        identifier={"key": '{ value = "email" }', "value": '{ value = "ada@example.com" }'},
    )
    mapping = load_mapping(write("m.toml", text))
    assert mapping.sources() == (
        Source("fields.embeddable_id", value="flow_9f2c"),
        Source("fields.timestamp", value="2024-03-01T12:34:56Z"),
        Source("fields.custom_event_name", value="Signed Up"),
        Source("identifier.key", value="email"),
        Source("identifier.value", value="ada@example.com"),
    )
    assert mapping.columns_used() == []


@pytest.mark.parametrize(
    ("constant", "text"),
    [
        pytest.param("123", "123", id="integer"),
        pytest.param("-7", "-7", id="negative"),
        pytest.param("1.5", "1.5", id="float"),
        pytest.param('"00123"', "00123", id="string-keeps-zeros"),
    ],
)
def test_identifier_value_constant(write: Write, constant: str, text: str) -> None:
    text_toml = mapping_toml(identifier=ident_value(f'{{ value = {constant}, type = "number" }}'))
    mapping = load_mapping(write("m.toml", text_toml))
    assert mapping.identifier_value == Source("identifier.value", value=text)
    assert mapping.identifier_type == "number"


def test_rename_may_swap_names(write: Write) -> None:
    text = mapping_toml(props={"metrics": '["a", "b"]', "rename": '{ a = "b", b = "a" }'})
    mapping = load_mapping(write("m.toml", text))
    assert [mapping.prop_name(c) for c in mapping.metrics] == ["b", "a"]


SPEC_COLUMNS = ["flow_id", "occurred_at", "event", "email", "amount", "plan", "country", "coupon"]


@pytest.mark.parametrize(
    ("available", "message"),
    [
        pytest.param(
            [*SPEC_COLUMNS, "extras"],
            "props.json_column: column 'extra' is not in events.csv (did you mean 'extras'?)",
            id="close-match",
        ),
        pytest.param(
            [c.replace("occurred_at", "occured_at") for c in SPEC_COLUMNS] + ["extra"],
            "fields.timestamp: column 'occurred_at' is not in events.csv"
            " (did you mean 'occured_at'?)",
            id="typo-in-export",
        ),
        pytest.param(
            [*SPEC_COLUMNS, "zzz"],
            "props.json_column: column 'extra' is not in events.csv; its columns are:"
            " flow_id, occurred_at, event, email, amount, plan, country, coupon, zzz",
            id="nothing-close",
        ),
        pytest.param(
            ["a", "b"],
            "fields.embeddable_id: column 'flow_id' is not in events.csv; its columns are: a, b",
            id="first-use-reported",
        ),
        pytest.param(
            [],
            "fields.embeddable_id: column 'flow_id' is not in events.csv; its columns are: (none)",
            id="no-columns",
        ),
    ],
)
def test_check_columns(available: list[str], message: str) -> None:
    mapping = load_mapping(DATA / "spec_mapping.toml")
    with pytest.raises(MappingError) as caught:
        check_columns(mapping, "events.csv", available)
    assert str(caught.value) == f"{DATA / 'spec_mapping.toml'}: {message}"


def test_check_columns_passes_when_every_column_is_there() -> None:
    mapping = load_mapping(DATA / "spec_mapping.toml")
    check_columns(mapping, "events.csv", [*SPEC_COLUMNS, "extra", "unused"])


def test_constants_need_no_columns(write: Write) -> None:
    mapping = load_mapping(
        write("m.toml", mapping_toml(fields={"embeddable_id": '{ value = "f" }'}))
    )
    with pytest.raises(MappingError, match="column 'occurred_at' is not in"):
        check_columns(mapping, "x.csv", ["flow_id"])
    check_columns(mapping, "x.csv", ["occurred_at", "event", "email"])
