"""``backfill init`` on the exports of known tools: which tool it recognises, why, and the preset.

The exports are those of ``tests/data/exports``, each in its tool's documented shape.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tomllib
from pathlib import Path

import click
import pytest

from backfill.cli import cli
from backfill.errors import InputError
from backfill.guess import guess_any, guess_mapping, read_sample
from backfill.mapping import load_mapping
from backfill.presets import PRESET_NAMES, PRESETS
from tests.conftest import Run, Write

DATA = Path(__file__).parent / "data"
EXPORTS = DATA / "exports"
SAMPLE = Path(__file__).parent.parent / "sample_data"

# The export of each tool, and the first line init prints for it: the tool and its telltales.
RECOGNISED = {
    "mixpanel": (
        "export.jsonl",
        "Recognised a Mixpanel raw export in export.jsonl (31 sampled rows): columns event,"
        " properties; properties holds time, distinct_id, $insert_id, mp_lib",
    ),
    "amplitude": (
        "export.jsonl",
        "Recognised an Amplitude export (Export API) in export.jsonl (27 sampled rows): columns"
        " event_type, event_time, event_properties, user_properties, amplitude_id, $insert_id",
    ),
    "segment": (
        "archive.jsonl",
        "Recognised a Segment archive (S3 or warehouse) in archive.jsonl (28 sampled rows):"
        " columns type, messageId, timestamp, userId, anonymousId; type holds track, identify,"
        " page, group, alias",
    ),
    "posthog": (
        "events.csv",
        "Recognised a PostHog events export in events.csv (27 sampled rows): columns uuid,"
        " event, properties, timestamp, distinct_id, person.properties.email; event holds"
        " $pageview, $pageleave, $autocapture, $identify, $rageclick, $feature_flag_called",
    ),
    "ga4": (
        "events_20240301.jsonl",
        "Recognised a GA4 BigQuery export in events_20240301.jsonl (28 sampled rows): columns"
        " event_date, event_timestamp, event_name, user_pseudo_id, event_params, user_properties",
    ),
    "heap": (
        "events.csv",
        "Recognised a Heap export in events.csv (26 sampled rows): columns event_id, user_id,"
        " session_id, time, type, identity; type holds session, pageview, click, change, submit",
    ),
}

# Lines each preset's mapping must hold: the choices that make the tool's export work.
PRESET_LINES = {
    "mixpanel": [
        'timestamp = { column = "properties.time", unit = "s" }',
        'rename = { "$mp_web_page_view" = "page_viewed" }',
        'strip_prefix = ["$"]',
        'value = { column = ["properties.$email", "properties.email"], normalize = "lowercase" }',
        'value = { column = "properties.$user_id" }',
        'exclude = { event = ["$identify", "$create_alias", "$merge"] }',
        'dedupe = "properties.$insert_id"',
        'json_column = "properties"',
    ],
    "amplitude": [
        'timestamp = { column = "event_time", timezone = "UTC" }',
        'rename = { "[Amplitude] Page Viewed" = "page_viewed" }',
        'strip_prefix = ["[Amplitude] "]',
        'value = { column = "user_properties.email", normalize = "lowercase" }',
        'value = { column = "user_id" }',
        'dedupe = "$insert_id"',
        'json_column = ["event_properties", "user_properties"]',
    ],
    "segment": [
        'timestamp = { column = "timestamp" }',
        'value = { column = ["context.traits.email", "properties.email"],'
        ' normalize = "lowercase" }',
        'value = { column = "userId" }',
        'include = { type = ["track"] }',
        'dedupe = "messageId"',
        'json_column = "properties"',
    ],
    "posthog": [
        'rename = { "$pageview" = "page_viewed", "$pageleave" = "page_left",'
        ' "$screen" = "screen_viewed" }',
        'value = { column = ["person.properties.email", "properties.$set.email"],'
        ' normalize = "lowercase" }',
        'dedupe = "uuid"',
        'json_column = "properties"',
    ],
    "ga4": [
        'timestamp = { column = "event_timestamp", unit = "us" }',
        'value = { column = "user_id" }',
        'exclude = { event_name = ["first_visit", "first_open", "session_start",'
        ' "user_engagement"] }',
        'dedupe = ["user_pseudo_id", "event_timestamp", "event_name"]',
        'json_column = ["event_params", "user_properties"]',
    ],
    "heap": [
        'timestamp = { column = "time", timezone = "UTC" }',
        'column = "type"',
        'rename = { pageview = "page_viewed", submit = "form_submitted" }',
        'value = { column = "identity", normalize = "lowercase" }',
        'exclude = { type = ["session", "click", "change"] }',
        'dedupe = "event_id"',
        'dimensions = ["platform", "device_type", "country", "browser"]',
    ],
}


def export_here(tool: str, workdir: Path) -> str:
    """Copy a tool's export into the current directory; its file name."""
    name = RECOGNISED[tool][0]
    shutil.copy(EXPORTS / tool / name, workdir / name)
    return name


@pytest.mark.parametrize("tool", RECOGNISED)
def test_each_tool_is_recognised_by_its_telltales(tool: str, workdir: Path) -> None:
    name = export_here(tool, workdir)
    sample = read_sample(name, None, 10_000)
    guessed = guess_any(sample, name, "mapping.toml")
    assert guessed.preset == tool
    assert guessed.heading() == RECOGNISED[tool][1]


@pytest.mark.parametrize("tool", RECOGNISED)
def test_each_preset_writes_the_tools_choices(tool: str, workdir: Path) -> None:
    name = export_here(tool, workdir)
    sample = read_sample(name, None, 10_000)
    text = guess_any(sample, name, "mapping.toml").text
    lines = text.splitlines()
    assert [line for line in PRESET_LINES[tool] if line not in lines] == []
    # Valid TOML, the embeddable id a placeholder, and every block of settings commented.
    doc = tomllib.loads(text)
    assert doc["fields"]["embeddable_id"] == {"value": "REPLACE_WITH_EMBEDDABLE_ID"}
    assert lines[0].startswith(f"# Mapping for {name}, written by `backfill init` from ")
    blocks = [block.splitlines() for block in text.split("\n\n")]
    settings = [b for b in blocks if any(line[:1].isalpha() for line in b)]
    assert [b for b in settings if not any(line.startswith("#") for line in b)] == []


@pytest.mark.parametrize("tool", RECOGNISED)
def test_each_preset_sends_a_tool_choice_of_guess_lines(tool: str, workdir: Path) -> None:
    name = export_here(tool, workdir)
    sample = read_sample(name, None, 10_000)
    guessed = guess_any(sample, name, "mapping.toml")
    fields = [g.field for g in guessed.guesses]
    # A CSV export's dialect first: what was sniffed is always said.
    dialect = ["delimiter", "encoding", "decimal_comma"] if name.endswith(".csv") else []
    assert fields == [
        *dialect,
        "embeddable_id",
        "timestamp",
        "custom_event_name",
        "identifier",
        "filter",
        "props",
    ]
    assert guessed.guesses[len(dialect)].line() == (
        f"embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: {PRESETS[tool].tool}"
        " exports carry none)"
    )
    assert guessed.warnings == [
        "no column is named like an embeddable id: every row goes to the placeholder"
        " 'REPLACE_WITH_EMBEDDABLE_ID' (validate accepts it); fill in fields.embeddable_id"
        " before sending"
    ]


def test_the_printed_guesses_of_a_preset(workdir: Path) -> None:
    name = export_here("mixpanel", workdir)
    sample = read_sample(name, None, 10_000)
    lines = [g.line() for g in guess_any(sample, name, "mapping.toml").guesses]
    assert lines == [
        "embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: Mixpanel exports carry none)",
        "timestamp: properties.time (epoch seconds)",
        "custom_event_name: event (renamed $mp_web_page_view -> page_viewed;"
        ' prefix "$" stripped; converted to snake_case)',
        "identifier: email from properties.$email or properties.email, else user_id from"
        " properties.$user_id (the first with a value in a row)",
        "filter: exclude event $identify, $create_alias, $merge; dedupe on"
        " properties.$insert_id (rows that are not events, or sent already)",
        "props: json_column properties; 22 keys dropped (copied less personal data and"
        " bookkeeping)",
    ]


MIXPANEL_LIKE = (
    '{"event": "Signed Up", "properties": {"time": 1709296496, "$email": "a@x.io"}}\n'
    '{"event": "Plan Upgraded", "properties": {"time": 1709296500, "$email": "b@x.io"}}\n'
)


def test_a_preset_is_forced_where_the_telltales_are_missing(write: Write) -> None:
    # No distinct_id in properties: not taken for Mixpanel's, but --preset mixpanel maps it.
    write("x.jsonl", MIXPANEL_LIKE)
    sample = read_sample("x.jsonl", None, 100)
    with pytest.raises(InputError, match="no column reads as timestamps"):
        guess_any(sample, "x.jsonl", "mapping.toml")
    guessed = guess_any(sample, "x.jsonl", "mapping.toml", preset="mixpanel")
    assert guessed.heading() == (
        "Preset mixpanel (a Mixpanel raw export) for x.jsonl (2 sampled rows): columns event,"
        " properties; properties holds time"
    )
    assert guessed.forced
    assert "# Mapped as (the preset asked for) a Mixpanel raw export:" in guessed.text
    assert 'value = { column = "properties.$email", normalize = "lowercase" }' in guessed.text
    # No $insert_id in the sample: nothing to dedupe on, and the comment says so.
    assert "dedupe =" not in guessed.text
    assert "# No Mixpanel's insert id (properties.$insert_id) in the sample: no dedupe." in (
        guessed.text
    )


def test_a_preset_forces_one_tool_over_another(workdir: Path) -> None:
    # A PostHog export also has the columns Mixpanel's needs (event, properties).
    name = export_here("posthog", workdir)
    sample = read_sample(name, None, 10_000)
    guessed = guess_any(sample, name, "mapping.toml", preset="mixpanel")
    assert guessed.preset == "mixpanel"
    assert guessed.heading() == (
        "Preset mixpanel (a Mixpanel raw export) for events.csv (27 sampled rows): columns"
        " event, properties; properties holds distinct_id, $insert_id"
    )


def test_a_preset_without_its_columns_is_refused(exports_ga4: str, run: Run) -> None:
    result = run("init", exports_ga4, "--preset", "heap")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: events_20240301.jsonl: not a Heap export: no column event_id, session_id, time,"
        " event_table_name or type or identity (its columns are: event_date, event_timestamp,"
    )
    assert result.stderr.endswith("); nothing written\n")
    assert not Path("mapping.toml").exists()


@pytest.fixture
def exports_ga4(workdir: Path) -> str:
    """The GA4 export in the current directory."""
    return export_here("ga4", workdir)


def test_an_unknown_preset_is_refused(exports_ga4: str, run: Run) -> None:
    result = run("init", exports_ga4, "--preset", "matomo")
    assert result.exit_code == 2
    assert "Invalid value for '--preset': 'matomo' is not one of 'mixpanel', 'amplitude'," in (
        result.stderr
    )


def test_the_cli_offers_every_preset() -> None:
    init = cli.commands["init"]
    option = next(p for p in init.params if p.name == "preset")
    assert isinstance(option.type, click.Choice)
    assert tuple(option.type.choices) == PRESET_NAMES
    assert sorted(PRESETS) == sorted(PRESET_NAMES)


WAREHOUSE_TRACKS = """\
id,anonymous_id,user_id,event,event_text,timestamp,received_at,uuid_ts,context_library_name,\
context_traits_email,revenue,plan
ajs-1,anon-1,u_1,order_completed,Order Completed,2024-03-01T09:04:56.789Z,\
2024-03-01T09:04:57.100Z,2024-03-01 10:00:00,analytics.js,ada@shop.example,49.5,pro
ajs-2,anon-2,,signed_up,Signed Up,2024-03-01T10:00:00.000Z,2024-03-01T10:00:01.000Z,\
2024-03-01 11:00:00,analytics.js,,,
"""


def test_a_segment_warehouse_table_is_recognised(write: Write) -> None:
    # A warehouse's tracks table: no type or messageId, the context flattened into columns.
    write("tracks.csv", WAREHOUSE_TRACKS)
    sample = read_sample("tracks.csv", None, 100)
    guessed = guess_any(sample, "tracks.csv", "mapping.toml")
    assert guessed.heading() == (
        "Recognised a Segment archive (S3 or warehouse) in tracks.csv (2 sampled rows): columns"
        " id, event, event_text, timestamp, received_at, user_id, anonymous_id, uuid_ts"
    )
    lines = guessed.text.splitlines()
    for line in [
        'column = "event_text"',
        'value = { column = "context_traits_email", normalize = "lowercase" }',
        'value = { column = "user_id" }',
        'dedupe = "id"',
        '    "revenue", "plan",',
    ]:
        assert line in lines
    assert "include =" not in guessed.text  # a tracks table holds nothing but tracks


@pytest.mark.parametrize(
    "path",
    [
        SAMPLE / "events.csv",
        SAMPLE / "events.jsonl",
        DATA / "init" / "tracking.csv",
        DATA / "init" / "app_events.jsonl",
        DATA / "init" / "orders.tsv.gz",
        DATA / "valid.csv",
        DATA / "events.jsonl",
    ],
    ids=lambda p: p.name,
)
def test_other_exports_are_guessed_as_before(path: Path) -> None:
    sample = read_sample(str(path), None, 10_000)
    guessed = guess_any(sample, path.name, "mapping.toml")
    assert guessed.preset is None
    assert guessed.heading().startswith("Guessed from ")
    assert guessed.text == guess_mapping(sample, path.name, "mapping.toml").text


# --- init through the command line: the mapping written loads and validates each export ---

PRINTED = {
    "mixpanel": """\
  embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: Mixpanel exports carry none)
  timestamp: properties.time (epoch seconds)
  custom_event_name: event (renamed $mp_web_page_view -> page_viewed; prefix "$" stripped; \
converted to snake_case)
  identifier: email from properties.$email or properties.email, else user_id from \
properties.$user_id (the first with a value in a row)
  filter: exclude event $identify, $create_alias, $merge; dedupe on properties.$insert_id \
(rows that are not events, or sent already)
  props: json_column properties; 22 keys dropped (copied less personal data and bookkeeping)
""",
    "amplitude": """\
  embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: Amplitude exports carry none)
  timestamp: event_time (UTC without an offset)
  custom_event_name: event_type (renamed [Amplitude] Page Viewed -> page_viewed; prefix \
"[Amplitude] " stripped; converted to snake_case)
  identifier: email from user_properties.email, else user_id from user_id (the first with \
a value in a row)
  filter: exclude event_type $identify, $groupidentify, session_start, session_end, \
[Amplitude] Start Session, [Amplitude] End Session; dedupe on $insert_id (rows that are not \
events, or sent already)
  props: json_column event_properties, user_properties; 9 keys dropped (copied less personal \
data and bookkeeping)
""",
    "segment": """\
  embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: Segment exports carry none)
  timestamp: timestamp (ISO 8601 in UTC)
  custom_event_name: event (converted to snake_case)
  identifier: email from context.traits.email or properties.email, else user_id from userId \
(the first with a value in a row)
  filter: include type track; dedupe on messageId (rows that are not events, or sent already)
  props: json_column properties; 10 keys dropped (copied less personal data and bookkeeping)
""",
    "posthog": """\
  delimiter: "," (sniffed: the header holds 5 ',')
  encoding: utf-8 (sniffed: the file decodes as UTF-8)
  decimal_comma: false (the delimiter is ',', so decimals are points)
  embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: PostHog exports carry none)
  timestamp: timestamp (ISO 8601)
  custom_event_name: event (renamed $pageview -> page_viewed; renamed $pageleave -> page_left; \
renamed $screen -> screen_viewed; prefix "$" stripped; converted to snake_case)
  identifier: email from person.properties.email or properties.$set.email (the first with a \
value in a row)
  filter: exclude event $identify, $set, $create_alias, $merge_dangerously, $groupidentify, \
$autocapture, $feature_flag_called; dedupe on uuid (rows that are not events, or sent already)
  props: json_column properties; 21 keys dropped (copied less personal data and bookkeeping)
""",
    "ga4": """\
  embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: GA4 exports carry none)
  timestamp: event_timestamp (epoch microseconds)
  custom_event_name: event_name (converted to snake_case)
  identifier: user_id from user_id (the first with a value in a row)
  filter: exclude event_name first_visit, first_open, session_start, user_engagement; dedupe \
on user_pseudo_id + event_timestamp + event_name (rows that are not events, or sent already)
  props: json_column event_params, user_properties; 11 keys dropped (copied less personal data \
and bookkeeping)
""",
    "heap": """\
  delimiter: "," (sniffed: the header holds 13 ',')
  encoding: utf-8 (sniffed: the file decodes as UTF-8)
  decimal_comma: false (the delimiter is ',', so decimals are points)
  embeddable_id: REPLACE_WITH_EMBEDDABLE_ID (placeholder: Heap exports carry none)
  timestamp: time (UTC without an offset)
  custom_event_name: type (renamed pageview -> page_viewed; renamed submit -> form_submitted; \
converted to snake_case)
  identifier: email from identity (the first with a value in a row)
  filter: exclude type session, click, change; dedupe on event_id (rows that are not events, \
or sent already)
  props: json_column properties; dimensions platform, device_type, country, browser; 9 keys \
dropped (copied less personal data and bookkeeping)
""",
}
PLACEHOLDER_WARNING = (
    "warning: no column is named like an embeddable id: every row goes to the placeholder"
    " 'REPLACE_WITH_EMBEDDABLE_ID' (validate accepts it); fill in fields.embeddable_id"
    " before sending\n"
)
# (rows, valid, invalid, skipped) of each export under its preset's mapping, counted by hand
# from the rows in expected.json: the presets filter and dedupe like the hand-written
# mappings but send no metrics (so no bad_metric) and have no time window.
PRESET_COUNTS = {
    "mixpanel": (31, 21, 5, 5),  # 3 identity rows + 2 duplicates skipped; 4 without user, 1 name
    "amplitude": (27, 19, 2, 6),  # 5 identify/session rows + 1 duplicate; 2 anonymous
    "segment": (28, 17, 2, 9),  # 8 messages not track + 1 duplicate; 2 anonymous
    "posthog": (27, 17, 3, 7),  # 6 excluded events + 1 duplicate; 3 without an email
    "ga4": (28, 18, 3, 7),  # 6 GA4 bookkeeping events + 1 duplicate; 3 without user_id
    "heap": (26, 17, 2, 7),  # 6 sessions/clicks/changes + 1 duplicate; 2 anonymous
}


@pytest.mark.parametrize("tool", RECOGNISED)
def test_init_writes_each_tools_mapping_and_validate_runs_it(
    tool: str, workdir: Path, run: Run
) -> None:
    name = export_here(tool, workdir)
    result = run("init", name)
    assert (result.exit_code, result.stderr) == (0, PLACEHOLDER_WARNING)
    assert result.stdout == (
        f"{RECOGNISED[tool][1]}\n{PRINTED[tool]}"
        f"Wrote mapping.toml. Check it, then run: backfill validate {name} -m mapping.toml\n"
    )
    mapping = load_mapping("mapping.toml")
    assert mapping.embeddable_id.value == "REPLACE_WITH_EMBEDDABLE_ID"
    checked = run("validate", name, "-m", "mapping.toml", "--json")
    report = json.loads(checked.stdout)
    counts = (report["rows"], report["valid"], report["invalid"], report["skipped"])
    assert counts == PRESET_COUNTS[tool]
    assert checked.exit_code == 1  # every export has rows without a user


@pytest.mark.parametrize("tool", RECOGNISED)
def test_init_with_a_preset_says_it_was_asked_for(tool: str, workdir: Path, run: Run) -> None:
    name = export_here(tool, workdir)
    result = run("init", name, "--preset", tool)
    assert result.exit_code == 0, result.stderr
    title = PRESETS[tool].title
    because = RECOGNISED[tool][1].split("): ", 1)[1]
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"Preset {tool} ({title}) for {name} (")
    assert first.endswith(f" sampled rows): {because}")
    load_mapping("mapping.toml")


def test_a_forced_preset_maps_an_export_it_would_not_recognise(write: Write, run: Run) -> None:
    write("x.jsonl", MIXPANEL_LIKE)
    result = run("init", "x.jsonl", "--preset", "mixpanel")
    assert result.exit_code == 0, result.stderr
    checked = run("validate", "x.jsonl", "-m", "mapping.toml", "--json")
    assert (checked.exit_code, json.loads(checked.stdout)["valid"]) == (0, 2)


def test_a_tools_export_in_another_dialect_gets_its_input_table(workdir: Path, run: Run) -> None:
    # Heap's CSV opened and saved by a German spreadsheet: semicolons and cp1252.
    with open(EXPORTS / "heap" / "events.csv", encoding="utf-8", newline="") as source:
        records = list(csv.reader(source))
    text = io.StringIO()
    csv.writer(text, delimiter=";").writerows(records)
    Path("events.csv").write_bytes(text.getvalue().encode("cp1252"))
    result = run("init", "events.csv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == RECOGNISED["heap"][1]
    assert lines[1] == "  delimiter: \";\" (sniffed: the header holds 13 ';')"
    assert lines[2].startswith("  encoding: cp1252 (sniffed: byte 0xE9 on line ")
    assert lines[3] == "  decimal_comma: false (sniffed: no column holds numbers like 12,50)"
    written = Path("mapping.toml").read_text(encoding="utf-8")
    assert '\n[input]\n# delimiter: ";"' in written
    assert 'delimiter = ";"\n' in written
    assert 'encoding = "cp1252"\n' in written
    checked = run("validate", "events.csv", "-m", "mapping.toml", "--json")
    report = json.loads(checked.stdout)
    counts = (report["rows"], report["valid"], report["invalid"], report["skipped"])
    assert counts == PRESET_COUNTS["heap"]
