"""Validation rules and payload building, on frames built in the test (no files)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from backfill.codes import Reason
from backfill.inputs import MALFORMED, ROW
from backfill.mapping import Mapping, Source
from backfill.payloads import (
    PAYLOAD,
    REASON,
    _epoch,
    _whole_epoch,
    build_payloads,
)
from backfill.sandbox import parse_event

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
COLUMNS = ["flow", "ts", "event", "email", "amount", "plan", "coupon", "extra"]


def mapping(**overrides: Any) -> Mapping:
    """The README's example mapping, over the test columns."""
    settings: dict[str, Any] = {
        "path": "m.toml",
        "embeddable_id": Source("fields.embeddable_id", column="flow"),
        "timestamp": Source("fields.timestamp", column="ts"),
        "event_name": Source("fields.custom_event_name", column="event"),
        "identifier_key": Source("identifier.key", value="email"),
        "identifier_value": Source("identifier.value", column="email"),
        "metrics": ("amount",),
        "dimensions": ("plan",),
        "columns": ("coupon",),
        "json_column": "extra",
    }
    settings.update(overrides)
    return Mapping(**settings)


def frame(*rows: dict[str, Any]) -> pl.DataFrame:
    """A batch like inputs.batches yields: row numbers, no malformed rows, text cells."""
    data = {c: [r.get(c, "") for r in rows] for c in COLUMNS}
    batch = pl.DataFrame(data, schema={c: pl.String for c in COLUMNS})
    return batch.with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW),
        pl.lit(None, pl.String).alias(MALFORMED),
    )


GOOD = {
    "flow": "flow_9f2c",
    "ts": "2024-03-01T12:34:56Z",
    "event": "plan_upgraded",
    "email": "ada@example.com",
}


def build(m: Mapping | None = None, **cells: Any) -> dict[str, Any]:
    """Build one row and return its output as a dict."""
    out = build_payloads(frame({**GOOD, **cells}), m or mapping(), NOW)
    return out.row(0, named=True)


def body(m: Mapping | None = None, **cells: Any) -> dict[str, Any]:
    """The decoded body of one valid row."""
    row = build(m, **cells)
    assert row[REASON] is None, row
    decoded: dict[str, Any] = json.loads(row[PAYLOAD])
    return decoded


def test_api_example_body() -> None:
    out = build(amount="49.0", plan="pro")
    assert out[PAYLOAD] == (
        '{"embeddable_id":"flow_9f2c","timestamp":"2024-03-01T12:34:56.000Z",'
        '"custom_event_name":"plan_upgraded",'
        '"custom_event_props":"{\\"payload_metrics\\":{\\"amount\\":49.0},'
        '\\"payload_dimensions\\":{\\"plan\\":\\"pro\\"}}",'
        '"identifiers":[{"key":"email","value":"\\"ada@example.com\\""}]}'
    )


def test_empty_props_are_an_empty_object() -> None:
    assert body()["custom_event_props"] == "{}"


@pytest.mark.parametrize(
    ("cell", "sent"),
    [
        pytest.param("2024-03-01T12:34:56Z", "2024-03-01T12:34:56.000Z", id="iso-z"),
        pytest.param("2024-03-01T12:34:56.123456Z", "2024-03-01T12:34:56.123Z", id="micros"),
        pytest.param("2024-03-01T12:34:56.999999Z", "2024-03-01T12:34:56.999Z", id="truncated"),
        pytest.param("2024-03-01T14:34:56+02:00", "2024-03-01T12:34:56.000Z", id="offset"),
        pytest.param("2024-03-01T14:34:56+0200", "2024-03-01T12:34:56.000Z", id="offset-basic"),
        pytest.param("2024-03-01 12:34:56", "2024-03-01T12:34:56.000Z", id="space"),
        pytest.param("2024-03-01T12:34", "2024-03-01T12:34:00.000Z", id="minutes"),
        pytest.param("2024-03-01", "2024-03-01T00:00:00.000Z", id="date"),
        pytest.param("1709296496", "2024-03-01T12:34:56.000Z", id="epoch-s"),
        pytest.param("1709296496123", "2024-03-01T12:34:56.123Z", id="epoch-ms"),
        pytest.param("1709296496.5", "2024-03-01T12:34:56.500Z", id="epoch-frac"),
    ],
)
def test_timestamp_formats(cell: str, sent: str) -> None:
    assert body(ts=cell)["timestamp"] == sent


def test_naive_time_takes_the_mappings_zone() -> None:
    out = build(mapping(timezone="Europe/Berlin"), ts="2024-07-01 12:00:00")
    assert json.loads(out[PAYLOAD])["timestamp"] == "2024-07-01T10:00:00.000Z"
    assert out["timezone_assumed"] is True


def test_custom_format() -> None:
    m = mapping(timestamp_format="%d/%m/%Y %H:%M")
    assert body(m, ts="01/03/2024 12:34")["timestamp"] == "2024-03-01T12:34:00.000Z"


def test_nonexistent_local_time_is_bad() -> None:
    out = build(mapping(timezone="Europe/Berlin"), ts="2024-03-31 02:30:00")
    assert out[REASON] == Reason.BAD_TIMESTAMP


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        pytest.param("yesterday", Reason.BAD_TIMESTAMP, id="words"),
        pytest.param("2024-13-01", Reason.BAD_TIMESTAMP, id="month-13"),
        pytest.param("20240301", Reason.BAD_TIMESTAMP, id="8-digits"),
        pytest.param("2025-06-01T12:06:00Z", Reason.FUTURE_TIMESTAMP, id="6-min-ahead"),
        pytest.param("", Reason.MISSING_TIMESTAMP, id="empty"),
        pytest.param("   ", Reason.MISSING_TIMESTAMP, id="blank"),
    ],
)
def test_bad_timestamps(cell: str, reason: Reason) -> None:
    assert build(ts=cell)[REASON] == reason


def test_four_minutes_ahead_is_allowed() -> None:
    assert build(ts="2025-06-01T12:04:00Z")[REASON] is None


@pytest.mark.parametrize(
    ("name", "converted"),
    [
        ("Signed Up", "signed_up"),
        ("signed-up", "signed_up"),
        ("signedUp", "signed_up"),
        ("SignedUp", "signed_up"),
        ("HTTPRequest Sent", "http_request_sent"),
        ("plan.upgraded/v2", "plan_upgraded_v2"),
        ("  already_snake  ", "already_snake"),
    ],
)
def test_event_names_converted(name: str, converted: str) -> None:
    out = build(mapping(snake_case="convert"), event=name)
    assert json.loads(out[PAYLOAD])["custom_event_name"] == converted


@pytest.mark.parametrize("name", ["123 Go!!", "Café Visited", "___", "2fa_enabled"])
def test_event_names_that_cannot_be_converted(name: str) -> None:
    assert build(mapping(snake_case="convert"), event=name)[REASON] == Reason.BAD_EVENT_NAME


def test_reject_mode_refuses_other_spellings() -> None:
    assert build(event="Signed Up")[REASON] == Reason.BAD_EVENT_NAME


@pytest.mark.parametrize(
    "cell",
    [
        pytest.param("ada@example.com", id="raw"),
        pytest.param('"ada@example.com"', id="stringified"),
        pytest.param('"\\"ada@example.com\\""', id="double-escaped"),
        pytest.param('  "ada@example.com" ', id="padded"),
    ],
)
def test_identifier_stringified_once(cell: str) -> None:
    ident = body(email=cell)["identifiers"]
    assert ident == [{"key": "email", "value": '"ada@example.com"'}]


def test_identifier_normalize_lowercase() -> None:
    m = mapping(normalize="lowercase")
    assert body(m, email="Ada@Example.COM")["identifiers"][0]["value"] == '"ada@example.com"'


def test_identifier_number() -> None:
    m = mapping(identifier_type="number")
    assert body(m, email="123")["identifiers"][0]["value"] == "123"
    assert body(m, email='"123"')["identifiers"][0]["value"] == "123"
    assert build(m, email="12a")[REASON] == Reason.BAD_IDENTIFIER_VALUE
    assert build(m, email="00123")[REASON] == Reason.BAD_IDENTIFIER_VALUE


def test_identifier_json() -> None:
    m = mapping(identifier_type="json")
    assert body(m, email='{"id": 5}')["identifiers"][0]["value"] == '{"id": 5}'
    assert body(m, email='"ada"')["identifiers"][0]["value"] == '"ada"'
    assert build(m, email="ada")[REASON] == Reason.BAD_IDENTIFIER_VALUE


def test_identifier_key_from_a_column() -> None:
    m = mapping(identifier_key=Source("identifier.key", column="coupon"), columns=())
    assert body(m, coupon="user_email")["identifiers"][0]["key"] == "user_email"
    assert build(m, coupon="")[REASON] == Reason.MISSING_IDENTIFIER_KEY


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        pytest.param({"flow": ""}, Reason.MISSING_EMBEDDABLE_ID, id="flow"),
        pytest.param({"event": " "}, Reason.MISSING_CUSTOM_EVENT_NAME, id="event"),
        pytest.param({"email": ""}, Reason.MISSING_IDENTIFIER_VALUE, id="email"),
        pytest.param({"email": '""'}, Reason.MISSING_IDENTIFIER_VALUE, id="empty-quoted"),
        pytest.param({"amount": "n/a"}, Reason.BAD_METRIC, id="metric-text"),
        pytest.param({"amount": "NaN"}, Reason.BAD_METRIC, id="metric-nan"),
        pytest.param({"amount": "1e999"}, Reason.BAD_METRIC, id="metric-inf"),
        pytest.param({"extra": "[1, 2]"}, Reason.BAD_PROPS, id="json-array"),
        pytest.param({"extra": "{broken"}, Reason.BAD_PROPS, id="json-broken"),
        pytest.param({"extra": '"{}"'}, Reason.BAD_PROPS, id="json-string"),
    ],
)
def test_reasons(cells: dict[str, str], reason: Reason) -> None:
    assert build(**cells)[REASON] == reason


def test_first_broken_rule_wins() -> None:
    assert build(flow="", ts="yesterday")[REASON] == Reason.MISSING_EMBEDDABLE_ID


def test_malformed_row_is_invalid() -> None:
    batch = frame(GOOD).with_columns(pl.lit("expected 8 fields, found 9").alias(MALFORMED))
    out = build_payloads(batch, mapping(), NOW).row(0, named=True)
    assert (out[REASON], out["message"]) == ("malformed_row", "expected 8 fields, found 9")


def test_messages_name_the_column_and_value() -> None:
    assert build(ts="yesterday")["message"] == "column 'ts': cannot read 'yesterday' as a timestamp"
    assert build(flow="")["message"] == "column 'flow' is empty"


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        pytest.param(
            {"ts": "2999-01-01T00:00:00Z"},
            "column 'ts': '2999-01-01T00:00:00Z' is in the future",
            id="future_timestamp",
        ),
        pytest.param(
            {"event": "Café!"}, "column 'event': 'Café!' is not snake_case", id="bad_event_name"
        ),
        pytest.param({"amount": "n/a"}, "column 'amount': 'n/a' is not a number", id="bad_metric"),
        pytest.param(
            {"amount": "1e999"}, "column 'amount': '1e999' is not a finite number", id="metric-inf"
        ),
        pytest.param(
            {"amount": "12", "size": "big", "weight": "heavy"},
            "column 'size': 'big' is not a number",
            id="bad_metric-first-bad-column",
        ),
        pytest.param(
            {"extra": "[1, 2]"}, "column 'extra': '[1, 2]' is not a JSON object", id="bad_props"
        ),
    ],
)
def test_every_reason_names_the_column_and_the_value(cells: dict[str, str], message: str) -> None:
    m = mapping(metrics=("amount", "size", "weight"), snake_case="reject")
    batch = frame({**GOOD, **cells}).with_columns(
        pl.lit(cells.get("size", ""), pl.String).alias("size"),
        pl.lit(cells.get("weight", ""), pl.String).alias("weight"),
    )

    out = build_payloads(batch, m, NOW).row(0, named=True)

    assert out["message"] == message


def test_bad_identifier_value_names_the_column_and_the_value() -> None:
    out = build(mapping(identifier_type="number"), email="12a")

    assert out["message"] == "column 'email': '12a' is not valid number"


def test_props_layout_and_rename() -> None:
    m = mapping(rename={"amount": "order_amount", "coupon": "code"})
    cells = {"amount": " 49 ", "plan": "pro", "coupon": "SPRING", "extra": '{"source": "import"}'}
    props = json.loads(body(m, **cells)["custom_event_props"])
    assert props == {
        "source": "import",
        "payload_metrics": {"order_amount": 49},
        "payload_dimensions": {"plan": "pro"},
        "code": "SPRING",
    }


@pytest.mark.parametrize("depth", [127, 128, 300])
def test_props_nested_past_polars_parser_are_a_json_object(depth: int) -> None:
    extra = '{"a": ' * depth + "1.50" + "}" * depth
    props = json.loads(body(extra=extra)["custom_event_props"])
    assert props["a"] == json.loads(extra)["a"]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("[" * 300 + "]" * 300, id="array"),
        pytest.param('{"a": ' * 300 + "NaN" + "}" * 300, id="nan"),
        pytest.param('{"a": ' * 300 + "1e400" + "}" * 300, id="out-of-range"),
        pytest.param('{"a": ' * 300 + '"\\ud800"' + "}" * 300, id="lone-surrogate"),
        pytest.param('{"a": ' * 300 + "1" + "}" * 299, id="unclosed"),
        pytest.param('{"a": ' * 5000 + "1" + "}" * 5000, id="too-deep-for-python"),
    ],
)
def test_props_nested_deep_but_not_an_object_are_bad(extra: str) -> None:
    assert build(extra=extra)[REASON] == Reason.BAD_PROPS


def test_empty_cells_are_left_out() -> None:
    props = json.loads(body(amount="", plan=" ", coupon="", extra="")["custom_event_props"])
    assert props == {}


def test_mapped_columns_win_a_duplicate_key() -> None:
    props = json.loads(body(coupon="A", extra='{"coupon": "B"}')["custom_event_props"])
    assert props["coupon"] == "A"


def test_constants_for_every_field() -> None:
    m = mapping(
        embeddable_id=Source("fields.embeddable_id", value="flow_const"),
        event_name=Source("fields.custom_event_name", value="imported"),
        timestamp=Source("fields.timestamp", value="2024-01-01T00:00:00Z"),
    )
    sent = body(m, flow="", event="", ts="")
    assert (sent["embeddable_id"], sent["custom_event_name"], sent["timestamp"]) == (
        "flow_const",
        "imported",
        "2024-01-01T00:00:00.000Z",
    )


def test_repairs_flagged_on_valid_rows_only() -> None:
    m = mapping(snake_case="convert")
    rows = build_payloads(
        frame(
            {**GOOD, "event": "Signed Up", "email": '"a@b.c"', "ts": "2024-01-01 00:00:00"},
            {**GOOD, "event": "Signed Up", "flow": ""},
        ),
        m,
        NOW,
    )
    assert rows["event_name_converted"].to_list() == [True, False]
    assert rows["identifier_unwrapped"].to_list() == [True, False]
    assert rows["timezone_assumed"].to_list() == [True, False]


# Strings a CSV cell or JSON field can hold, that trimming leaves alone and that are not
# themselves wrapped in quotes (those are taken as already stringified, by design).
identifier_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1
) | st.text(min_size=1)


@settings(max_examples=300, deadline=None)
@given(identifier_text)
def test_any_identifier_survives_every_wrapping(value: str) -> None:
    assume(value == value.strip() and value.strip() != "")
    assume(not (value.startswith('"') and value.endswith('"')))
    assume(all(ord(c) >= 32 or c in "\t" for c in value[:1] + value[-1:]))
    wrappings = [value, json.dumps(value), json.dumps(json.dumps(value))]
    out = build_payloads(frame(*[{**GOOD, "email": w} for w in wrappings]), mapping(), NOW)
    assume(out[REASON].null_count() == 3)  # trimming may still find unicode space at the ends
    values = [json.loads(p)["identifiers"][0]["value"] for p in out[PAYLOAD]]
    assert values[0] == values[1] == values[2]
    assert json.loads(values[0]) == value


cell = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "0", "-1.5", "1e3", "NaN", '{"a": 1}', "[1]", '"x"', "null"]),
)
timestamp_cell = st.one_of(
    cell,
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2030, 1, 1)).map(str),
    st.integers(min_value=0, max_value=2_000_000_000_000).map(str),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "flow": cell,
                "ts": timestamp_cell,
                "event": cell,
                "email": cell,
                "amount": cell,
                "plan": cell,
                "coupon": cell,
                "extra": cell,
            }
        ),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from(["reject", "convert"]),
    st.sampled_from(["string", "number", "json"]),
)
def test_every_payload_passes_the_api_rules(
    rows: list[dict[str, str]], snake: str, kind: str
) -> None:
    out = build_payloads(frame(*rows), mapping(snake_case=snake, identifier_type=kind), NOW)
    assert out.height == len(rows)
    for reason, payload in out.select(REASON, PAYLOAD).iter_rows():
        assert (reason is None) == (payload is not None)
        if payload is not None:
            parse_event(payload.encode())  # raises with the sandbox's 400 message


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="0123456789", min_size=9, max_size=19), min_size=1, max_size=20))
def test_whole_epoch_numbers_read_as_the_text_cut_reads_them(digits: list[str]) -> None:
    # The integer reading of epoch numbers without a fraction must agree with the reading
    # that cuts the digits as text, which also reads fractions.
    table = pl.DataFrame({"t": digits}, schema={"t": pl.String})
    read = table.select(
        _whole_epoch(pl.col("t")).alias("whole"), _epoch(pl.col("t"), None).alias("cut")
    )
    assert read["whole"].to_list() == read["cut"].to_list()
