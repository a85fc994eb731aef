"""The exports of the common analytics tools: recognised, and mapped by the tool's preset.

Mixpanel, Amplitude, Segment, PostHog, GA4 and Heap exports are recognised by their
telltale columns, the keys nested in them and the values of one (``recognise``), or taken
as one tool's because ``--preset`` names it (``forced_preset``). A recognised export gets
that tool's ``PresetPlan``, built from what the sample holds: its identifier alternatives,
event renames, filters for rows that are not events, its dedupe key and the props to drop.
The plan is written as a mapping file with a comment above each setting saying why.

Column-by-column guessing, sampling and the ``init`` entry point are in ``backfill.guess``,
whose sample, guesses and TOML writing this module builds on.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from backfill.errors import InputError
from backfill.guess import (
    EMAIL,
    EMBEDDABLE_PLACEHOLDER,
    EMBEDDABLE_WARNING,
    MIN_SHARE,
    Guess,
    Guessed,
    Sample,
    _comment,
    _guessed,
    _key_path,
    _text,
    _toml,
    _toml_list,
    usable,
)


@dataclass(frozen=True)
class Shape:
    """What a sample shows of an export's layout: its columns and the keys nested in them."""

    sample: pl.DataFrame
    columns: tuple[str, ...]

    def has(self, column: str) -> bool:
        """Whether the export has this column (a top-level key of JSON Lines)."""
        return column in self.columns

    def nested(self, column: str, keys: Sequence[str]) -> list[str]:
        """The keys that some sampled row holds in a column of objects (or their JSON text)."""
        if not self.has(column) or not keys:
            return []
        text = _text(column)
        found = self.sample.select(
            text.str.json_path_match(_key_path([key])).is_not_null().any().alias(str(i))
            for i, key in enumerate(keys)
        ).row(0)
        return [key for key, seen in zip(keys, found, strict=True) if seen]

    def present(self, *sources: str) -> list[str]:
        """Those of the sources (columns, or dotted paths into one) the sample has."""
        found = []
        for source in sources:
            if self.has(source):
                found.append(source)
                continue
            column, _, rest = source.partition(".")
            path = rest.split(".")
            if rest and self.has(column) and self._holds(column, path):
                found.append(source)
        return found

    def _holds(self, column: str, path: Sequence[str]) -> bool:
        """Whether some sampled row has a value at a path inside a column."""
        match = _text(column).str.json_path_match(_key_path(path))
        return bool(self.sample.select(match.is_not_null().any()).item())

    def values(self, column: str, wanted: Sequence[str]) -> list[str]:
        """Those of the wanted values that the column holds in some sampled row."""
        if not self.has(column):
            return []
        seen = set(self.sample.select(_text(column).drop_nulls().unique()).to_series())
        return [value for value in wanted if value in seen]

    def share(self, column: str, pattern: str) -> float:
        """The share of a column's non-empty sampled values that match a pattern."""
        text = _text(column)
        counts = self.sample.select(text.str.contains(pattern).sum().alias("hits"), text.count())
        hits, filled = counts.row(0)
        return (hits or 0) / filled if filled else 0.0


@dataclass(frozen=True)
class Telltales:
    """What marks an export as one tool's: columns, keys nested in one, values of one."""

    columns: tuple[str, ...]  # all of these
    any_of: tuple[str, ...] = ()  # and at least one of these, when given
    also: tuple[str, ...] = ()  # named in the reasons when there, not needed
    nested: tuple[str, tuple[str, ...], tuple[str, ...]] | None = None  # column, needed, also
    values: tuple[str, tuple[str, ...]] | None = None  # column, values named when there
    values_needed: bool = False  # and at least one of those values is needed


@dataclass(frozen=True)
class Preset:
    """A known tool's export: how to recognise it and how to map it."""

    name: str  # as --preset takes it
    title: str  # 'a Mixpanel raw export'
    tool: str  # 'Mixpanel', for comments
    shapes: tuple[Telltales, ...]  # the export's shapes, any one of which marks it
    plan: Callable[[Shape], PresetPlan]


@dataclass(frozen=True)
class Recognised:
    """A preset and the telltales found for it in the sample."""

    preset: Preset
    telltales: Telltales
    columns: list[str]
    nested: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)

    def because(self) -> str:
        """The telltales in words: 'columns event, properties; properties holds time, ...'."""
        t = self.telltales
        parts = [f"columns {', '.join(self.columns)}"]
        if t.nested is not None and self.nested:
            parts.append(f"{t.nested[0]} holds {', '.join(self.nested)}")
        if t.values is not None and self.values:
            parts.append(f"{t.values[0]} holds {', '.join(self.values)}")
        return "; ".join(parts)


def telltales_found(preset: Preset, shape: Shape) -> Recognised | None:
    """The first of the preset's shapes whose telltales the sample has, or None."""
    for telltales in preset.shapes:
        found = shape_found(preset, telltales, shape)
        if found is not None:
            return found
    return None


def shape_found(preset: Preset, t: Telltales, shape: Shape) -> Recognised | None:
    """One shape's telltales in the sample, or None when one that is needed is missing."""
    if _missing(t, shape):
        return None
    found = _seen(preset, t, shape, (*t.any_of, *t.also))
    if t.nested is not None and not set(t.nested[1]) <= set(found.nested):
        return None
    if t.values is not None and t.values_needed and not found.values:
        return None
    return found


def _missing(t: Telltales, shape: Shape) -> list[str]:
    """The telltale columns the sample lacks: 'event', and 'userId or anonymousId'."""
    missing = [c for c in t.columns if not shape.has(c)]
    if t.any_of and not any(shape.has(c) for c in t.any_of):
        missing.append(" or ".join(t.any_of))
    return missing


def _seen(preset: Preset, t: Telltales, shape: Shape, named: Sequence[str]) -> Recognised:
    """The telltales of a shape that the sample holds, naming the columns of ``named`` it has."""
    nested = shape.nested(t.nested[0], (*t.nested[1], *t.nested[2])) if t.nested else []
    values = shape.values(*t.values) if t.values else []
    present = [c for c in named if shape.has(c)]
    return Recognised(preset, t, [*t.columns, *present], nested, values)


def recognise(shape: Shape) -> Recognised | None:
    """The first preset whose telltales the sample has, or None."""
    for preset in PRESETS.values():
        found = telltales_found(preset, shape)
        if found is not None:
            return found
    return None


def forced_preset(shape: Shape, name: str, source: str) -> Recognised:
    """The named preset, with the telltales the sample has; refused without its columns."""
    preset = PRESETS[name]
    found = telltales_found(preset, shape)
    if found is not None:
        return found
    t = preset.shapes[0]
    missing = _missing(t, shape)
    if missing:
        raise InputError(
            f"{source}: not {preset.title}: no column {', '.join(missing)} (its columns are:"
            f" {', '.join(shape.columns) or '(none)'}); nothing written",
            file=source,
        )
    return _seen(preset, t, shape, t.also)


@dataclass(frozen=True)
class Alternative:
    """One [[identifier]] alternative of a preset: its key, its sources and why."""

    key: str
    sources: list[str]
    why: list[str]
    lowercase: bool = False


@dataclass
class PresetPlan:
    """A preset's mapping for one export, with the comment that explains each choice."""

    timestamp: str
    time_option: str  # 'unit = "s"', 'timezone = "UTC"' or ""
    time_note: str  # how the export writes times, for the printed guess
    time_why: list[str]
    event: str
    event_why: list[str]
    rename: dict[str, str] = field(default_factory=dict)
    strip_prefix: list[str] = field(default_factory=list)
    identifiers: list[Alternative] = field(default_factory=list)
    include: dict[str, list[str]] = field(default_factory=dict)
    exclude: dict[str, list[str]] = field(default_factory=dict)
    filter_why: list[str] = field(default_factory=list)
    dedupe: list[str] = field(default_factory=list)
    dedupe_why: list[str] = field(default_factory=list)
    json_columns: list[str] = field(default_factory=list)
    dimensions: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    props_why: list[str] = field(default_factory=list)


# Props keys that are personal data, or the tool's bookkeeping of what the mapping sends already.
PERSONAL = ["email", "$email", "name", "$name", "first_name", "last_name", "phone", "$phone"]
MIXPANEL_DROP = [
    "time", "distinct_id", "$insert_id", "$user_id", "$device_id", "$distinct_id_before_identity",
    "mp_lib", "$lib_version", "mp_processing_time_ms", "$mp_api_endpoint",
    "$mp_api_timestamp_ms", "token", "$ip", "ip", *PERSONAL,
]  # fmt: skip
POSTHOG_DROP = [
    "distinct_id", "$insert_id", "$time", "$ip", "$set", "$set_once", "$session_id",
    "$window_id", "$device_id", "$anon_distinct_id", "$lib_version", "token", "$user_id",
    *PERSONAL,
]  # fmt: skip
GA4_DROP = [
    "ga_session_id", "ga_session_number", "engagement_time_msec", "session_engaged",
    "batch_page_id", "batch_ordering_id", "batch_event_index", "ignore_referrer", "entrances",
    "firebase_event_origin", "firebase_screen_id",
]  # fmt: skip
SEGMENT_DROP = [*PERSONAL, "address", "ip"]
# The columns a Segment warehouse gives every tracks table (besides context_*).
SEGMENT_WAREHOUSE_COLUMNS = [
    "id", "anonymous_id", "user_id", "event", "event_text", "timestamp", "original_timestamp",
    "received_at", "sent_at", "uuid_ts", "loaded_at", "uuid", "channel",
]  # fmt: skip
AMPLITUDE_DROP = [*PERSONAL, "ip_address"]
HEAP_DROP = [*PERSONAL, "identity"]
# Event names that are identity or session bookkeeping, not user actions.
AMPLITUDE_NON_EVENTS = [
    "$identify",
    "$groupidentify",
    "session_start",
    "session_end",
    "[Amplitude] Start Session",
    "[Amplitude] End Session",
]
POSTHOG_NON_EVENTS = [
    "$identify",
    "$set",
    "$create_alias",
    "$merge_dangerously",
    "$groupidentify",
    "$autocapture",
    "$feature_flag_called",
]


def _email_first(emails: list[str], why: str) -> list[Alternative]:
    """The email alternative, when the sample has any of the email sources."""
    if not emails:
        return []
    return [Alternative("email", emails, [why, *EMAIL_KEY_NOTE], lowercase=True)]


EMAIL_KEY_NOTE = [
    "key: the User Data key under which your Embeddables captured the email; emails are",
    'matched lowercased (normalize = "none" if your entries keep capitals).',
]


def _user_id(key: str, sources: list[str], why: str) -> list[Alternative]:
    """An alternative that sends a user id, when the sample has its source."""
    if not sources:
        return []
    return [
        Alternative(
            key, sources, [why, f'key "{key}" is a guess: give the User Data key that holds it.']
        )
    ]


def mixpanel_plan(shape: Shape) -> PresetPlan:
    """Mixpanel's raw export: everything but the event name sits in properties."""
    identifiers = _email_first(
        shape.present("properties.$email", "properties.email"),
        "The email Mixpanel holds ($email, or email where the SDK wrote it without the $).",
    )
    identifiers += _user_id(
        "user_id",
        shape.present("properties.$user_id"),
        "Rows without an email: the id given to identify() ($user_id).",
    )
    if not identifiers:
        identifiers = _user_id(
            "distinct_id", ["properties.distinct_id"], "Mixpanel's distinct_id: no email here."
        )
    dedupe = _dedupe(shape, "properties.$insert_id", "Mixpanel's insert id")
    return PresetPlan(
        timestamp="properties.time",
        time_option='unit = "s"',
        time_note="epoch seconds",
        time_why=["Mixpanel's event time: epoch seconds in properties.time."],
        event="event",
        event_why=[
            "Mixpanel's page view gets a plain name; its other $-names lose the $",
            '("$mp_click" -> mp_click); the rest are converted ("Signed Up" -> signed_up).',
        ],
        rename={"$mp_web_page_view": "page_viewed"},
        strip_prefix=["$"],
        identifiers=identifiers,
        exclude={"event": ["$identify", "$create_alias", "$merge"]},
        filter_why=["$identify, $create_alias and $merge record identity changes, not events."],
        dedupe=dedupe[0],
        dedupe_why=dedupe[1],
        json_columns=["properties"],
        drop=MIXPANEL_DROP,
        props_why=_copied("Mixpanel property"),
    )


def _dedupe(shape: Shape, source: str, what: str) -> tuple[list[str], list[str]]:
    """The dedupe key on the tool's event id (when the sample has it), and why."""
    if not shape.present(source):
        return [], [f"No {what} ({source}) in the sample: no dedupe."]
    return [source], [f"{what[0].upper()}{what[1:]}: an event exported twice is sent once."]


def _copied(what: str) -> list[str]:
    """Why the props are the tool's properties less the drop list."""
    return [
        f"Every {what} is copied into the props, except those in drop: the fields",
        "sent already, the tool's bookkeeping and personal data.",
    ]


def amplitude_plan(shape: Shape) -> PresetPlan:
    """Amplitude's export API: event_type, event_time, and two property objects."""
    identifiers = _email_first(
        shape.present("user_properties.email", "user_properties.$email", "event_properties.email"),
        "The email among the user (or event) properties.",
    )
    identifiers += _user_id(
        "user_id", shape.present("user_id"), "Rows without an email: Amplitude's user_id."
    )
    if not identifiers:
        identifiers = _user_id("device_id", ["device_id"], "Amplitude's device_id: no user id.")
    dedupe = _dedupe(shape, "$insert_id" if shape.has("$insert_id") else "uuid", "Amplitude's id")
    return PresetPlan(
        timestamp="event_time",
        time_option='timezone = "UTC"',
        time_note="UTC without an offset",
        time_why=["Amplitude's event_time: UTC, written without an offset."],
        event="event_type",
        event_why=[
            'Amplitude\'s autocaptured names lose their prefix ("[Amplitude] Element Clicked"',
            "-> element_clicked), its page view gets a plain name; the rest are converted.",
        ],
        rename={"[Amplitude] Page Viewed": "page_viewed"},
        strip_prefix=["[Amplitude] "],
        identifiers=identifiers,
        exclude={"event_type": AMPLITUDE_NON_EVENTS},
        filter_why=["Identify calls and session markers are not user actions."],
        dedupe=dedupe[0],
        dedupe_why=dedupe[1],
        json_columns=shape.present("event_properties", "user_properties"),
        drop=AMPLITUDE_DROP,
        props_why=[
            "The event and user properties are copied into the props (the event's win a",
            "key both have), except the personal data in drop.",
        ],
    )


def segment_plan(shape: Shape) -> PresetPlan:
    """Segment's archive: messages of several types, traits in the context."""
    if not shape.has("messageId"):
        return segment_warehouse_plan(shape)
    identifiers = _email_first(
        shape.present("context.traits.email", "properties.email"),
        "The email in the context's traits (browser calls) or the properties (server calls).",
    )
    identifiers += _user_id("user_id", shape.present("userId"), "Rows without an email: userId.")
    if not identifiers:
        identifiers = _user_id("anonymous_id", ["anonymousId"], "Segment's anonymousId: no user.")
    dedupe = _dedupe(
        shape, "messageId", "Segment's messageId (archives are delivered at least once)"
    )
    return PresetPlan(
        timestamp="timestamp",
        time_option="",
        time_note="ISO 8601 in UTC",
        time_why=["Segment's timestamp: the event time corrected for the device's clock."],
        event="event",
        event_why=['Segment\'s event names, converted ("Order Completed" -> order_completed).'],
        identifiers=identifiers,
        include={"type": ["track"]},
        filter_why=[
            "Only track messages are events; identify, page, screen, group and alias calls",
            "are skipped.",
        ],
        dedupe=dedupe[0],
        dedupe_why=dedupe[1],
        json_columns=shape.present("properties"),
        drop=SEGMENT_DROP,
        props_why=_copied("property of the event"),
    )


def segment_warehouse_plan(shape: Shape) -> PresetPlan:
    """A Segment warehouse's tracks table: one column per property, the context flattened."""
    identifiers = _email_first(
        shape.present("context_traits_email", "email"),
        "The email in the context's traits (context_traits_email).",
    )
    identifiers += _user_id("user_id", shape.present("user_id"), "Rows without an email: user_id.")
    if not identifiers:
        identifiers = _user_id("anonymous_id", ["anonymous_id"], "Segment's anonymous_id: no user.")
    dedupe = _dedupe(shape, "id", "Segment's message id (id)")
    own = {*SEGMENT_WAREHOUSE_COLUMNS, *SEGMENT_DROP}
    return PresetPlan(
        timestamp="timestamp",
        time_option="",
        time_note="ISO 8601 in UTC",
        time_why=["Segment's timestamp: the event time corrected for the device's clock."],
        event="event_text",
        event_why=[
            'Segment\'s event names as sent, converted ("Order Completed" -> order_completed).'
        ],
        identifiers=identifiers,
        filter_why=["A tracks table holds track calls only: nothing to filter out."],
        dedupe=dedupe[0],
        dedupe_why=dedupe[1],
        columns=[c for c in shape.columns if c not in own and not c.startswith("context_")],
        drop=SEGMENT_DROP,
        props_why=[
            "The event's own property columns are copied into the props; Segment's columns",
            "(the context, times and ids) are not.",
        ],
    )


def posthog_plan(shape: Shape) -> PresetPlan:
    """PostHog's events: $-named built-in events, properties as JSON (text in a CSV)."""
    identifiers = _email_first(
        shape.present(
            "person.properties.email",  # the events CSV
            "person_properties.email",  # batch exports
            "properties.$set.email",
            "properties.email",
        ),
        "The person's email, or the one set with the event ($set).",
    )
    if not identifiers:
        identifiers = _user_id("distinct_id", ["distinct_id"], "PostHog's distinct_id: no email.")
    dedupe = _dedupe(shape, "uuid", "PostHog's event uuid")
    return PresetPlan(
        timestamp="timestamp",
        time_option="",
        time_note="ISO 8601",
        time_why=["PostHog's event timestamp."],
        event="event",
        event_why=[
            "PostHog's page events get plain names, its other $-names lose the $",
            '("$rageclick" -> rageclick); the rest are converted.',
        ],
        rename={"$pageview": "page_viewed", "$pageleave": "page_left", "$screen": "screen_viewed"},
        strip_prefix=["$"],
        identifiers=identifiers,
        exclude={"event": POSTHOG_NON_EVENTS},
        filter_why=[
            "Identity and feature-flag bookkeeping, and autocaptured clicks without a name",
            "of their own, are not events to send (remove $autocapture to send them).",
        ],
        dedupe=dedupe[0],
        dedupe_why=dedupe[1],
        json_columns=["properties"],
        drop=POSTHOG_DROP,
        props_why=_copied("PostHog property"),
    )


def ga4_plan(shape: Shape) -> PresetPlan:
    """GA4's BigQuery export: microsecond times, parameters as lists of key and value."""
    ids = _user_id("user_id", shape.present("user_id"), "GA4's user_id, set for signed-in users.")
    if not ids:
        ids = _user_id("user_pseudo_id", ["user_pseudo_id"], "GA4's user_pseudo_id: no user_id.")
    return PresetPlan(
        timestamp="event_timestamp",
        time_option='unit = "us"',
        time_note="epoch microseconds",
        time_why=["GA4's event_timestamp: epoch microseconds, cut to milliseconds."],
        event="event_name",
        event_why=["GA4's names are snake_case already; custom ones are converted."],
        identifiers=ids,
        exclude={"event_name": ["first_visit", "first_open", "session_start", "user_engagement"]},
        filter_why=["GA4's own bookkeeping events, not user actions."],
        dedupe=["user_pseudo_id", "event_timestamp", "event_name"],
        dedupe_why=["GA4 has no event id: one user's event at one microsecond is sent once."],
        json_columns=shape.present("event_params", "user_properties"),
        drop=GA4_DROP,
        props_why=[
            "The event parameters and user properties (lists of key and value) are copied",
            "into the props, except GA4's session bookkeeping in drop.",
        ],
    )


def heap_plan(shape: Shape) -> PresetPlan:
    """Heap's export: built-in event kinds and custom names, the identity given to identify."""
    event = (shape.present("event_table_name", "type", "event_name") or ["type"])[0]
    if shape.has("identity") and shape.share("identity", EMAIL) >= MIN_SHARE:
        ids = _email_first(["identity"], "Heap's identity: the email given to identify().")
    else:
        ids = _user_id("identity", shape.present("identity"), "Heap's identity (identify()).")
    ids = ids or _user_id("user_id", ["user_id"], "Heap's own user_id: no identity column.")
    by_type = event == "type"
    dedupe = _dedupe(shape, "event_id", "Heap's event_id")
    return PresetPlan(
        timestamp="time",
        time_option='timezone = "UTC"',
        time_note="UTC without an offset",
        time_why=["Heap's event time: UTC, written without an offset."],
        event=event,
        event_why=[f"Heap's event names in {event}, converted to snake_case."],
        rename={"pageview": "page_viewed", "submit": "form_submitted"} if by_type else {},
        identifiers=ids,
        exclude={event: ["session", "click", "change"]} if by_type else {},
        filter_why=["Sessions, and autocaptured clicks and field changes, are not events to send."]
        if by_type
        else [],
        dedupe=dedupe[0],
        dedupe_why=dedupe[1],
        json_columns=shape.present("properties"),
        dimensions=shape.present("platform", "device_type", "country", "browser"),
        drop=HEAP_DROP,
        props_why=[
            "The event's properties are copied into the props (except personal data in",
            "drop); the device and place are dimensions.",
        ],
    )


# PostHog's own events, named in the reasons when the sample has them.
POSTHOG_EVENTS = (
    "$pageview",
    "$pageleave",
    "$autocapture",
    "$identify",
    "$rageclick",
    "$screen",
    "$feature_flag_called",
)
PRESETS: dict[str, Preset] = {
    # In the order they are tried: the most telltale columns first.
    "ga4": Preset(
        "ga4",
        "a GA4 BigQuery export",
        "GA4",
        (
            Telltales(
                ("event_date", "event_timestamp", "event_name", "user_pseudo_id", "event_params"),
                also=("user_properties",),
            ),
        ),
        ga4_plan,
    ),
    "amplitude": Preset(
        "amplitude",
        "an Amplitude export (Export API)",
        "Amplitude",
        (
            Telltales(
                ("event_type", "event_time", "event_properties", "user_properties"),
                also=("amplitude_id", "$insert_id"),
            ),
        ),
        amplitude_plan,
    ),
    "segment": Preset(
        "segment",
        "a Segment archive (S3 or warehouse)",
        "Segment",
        (
            Telltales(  # the S3 archive: one message of any type per line
                ("type", "messageId", "timestamp"),
                any_of=("userId", "anonymousId"),
                values=("type", ("track", "identify", "page", "screen", "group", "alias")),
                values_needed=True,
            ),
            Telltales(  # a warehouse's tracks table, flattened: context_traits_email
                ("id", "event", "event_text", "timestamp", "received_at"),
                any_of=("user_id", "anonymous_id"),
                also=("uuid_ts",),
            ),
        ),
        segment_plan,
    ),
    "posthog": Preset(
        "posthog",
        "a PostHog events export",
        "PostHog",
        (
            Telltales(
                ("uuid", "event", "properties", "timestamp", "distinct_id"),
                also=("person.properties.email",),
                values=("event", POSTHOG_EVENTS),
            ),
        ),
        posthog_plan,
    ),
    "mixpanel": Preset(
        "mixpanel",
        "a Mixpanel raw export",
        "Mixpanel",
        (
            Telltales(
                ("event", "properties"),
                nested=("properties", ("time", "distinct_id"), ("$insert_id", "mp_lib")),
            ),
        ),
        mixpanel_plan,
    ),
    "heap": Preset(
        "heap",
        "a Heap export",
        "Heap",
        (
            Telltales(
                ("event_id", "user_id", "session_id", "time"),
                any_of=("event_table_name", "type", "identity"),
                values=("type", ("session", "pageview", "click", "change", "submit")),
            ),
        ),
        heap_plan,
    ),
}
PRESET_NAMES = ("mixpanel", "amplitude", "segment", "posthog", "ga4", "heap")


def known_tool_mapping(
    sample: Sample, source: str, output: str, preset: str | None = None
) -> Guessed | None:
    """The tool's mapping when the export is a known tool's (or ``preset`` names one), else None."""
    shape = Shape(sample.frame, tuple(c for c in usable(sample.columns) if c in sample.read))
    found = forced_preset(shape, preset, sample.name) if preset else recognise(shape)
    if found is None:
        return None
    return preset_mapping(found, shape, sample, source, output, forced=preset is not None)


def preset_mapping(
    found: Recognised,
    shape: Shape,
    sample: Sample,
    source: str,
    output: str,
    forced: bool = False,
) -> Guessed:
    """The preset's mapping for this export, with a guess line per choice."""
    plan = found.preset.plan(shape)
    guessed = _guessed(sample, source)
    guessed.preset, guessed.recognised, guessed.forced = found.preset.name, found, forced
    tool = found.preset.tool
    guessed.guesses += _preset_guesses(plan, tool)
    guessed.warnings.append(EMBEDDABLE_WARNING)
    guessed.text = render_preset(plan, guessed, output)
    return guessed


def _preset_guesses(plan: PresetPlan, tool: str) -> list[Guess]:
    """One printed line per setting of a preset's mapping."""
    return [
        Guess("embeddable_id", EMBEDDABLE_PLACEHOLDER, f"placeholder: {tool} exports carry none"),
        Guess("timestamp", plan.timestamp, plan.time_note),
        Guess("custom_event_name", plan.event, _event_summary(plan)),
        Guess("identifier", _identifier_summary(plan), "the first with a value in a row"),
        Guess("filter", _filter_summary(plan), "rows that are not events, or sent already"),
        Guess("props", _props_summary(plan), "copied less personal data and bookkeeping"),
    ]


def _event_summary(plan: PresetPlan) -> str:
    """'renamed $pageview -> page_viewed; prefix "$" stripped; converted to snake_case'."""
    parts = [f"renamed {a} -> {b}" for a, b in plan.rename.items()]
    parts += [f"prefix {_toml(p)} stripped" for p in plan.strip_prefix]
    return "; ".join([*parts, "converted to snake_case"])


def _identifier_summary(plan: PresetPlan) -> str:
    """'email from properties.$email or properties.email, else user_id from ...'."""
    alternatives = [f"{a.key} from {' or '.join(a.sources)}" for a in plan.identifiers]
    return ", else ".join(alternatives)


def _filter_summary(plan: PresetPlan) -> str:
    """'exclude event $identify, $create_alias; dedupe on properties.$insert_id'."""
    parts = [f"include {k} {', '.join(v)}" for k, v in plan.include.items()]
    parts += [f"exclude {k} {', '.join(v)}" for k, v in plan.exclude.items()]
    if plan.dedupe:
        parts.append(f"dedupe on {' + '.join(plan.dedupe)}")
    return "; ".join(parts) or "none"


def _props_summary(plan: PresetPlan) -> str:
    """'json_column properties; dimensions country; 22 keys dropped'."""
    parts = []
    if plan.json_columns:
        parts.append(f"json_column {', '.join(plan.json_columns)}")
    if plan.dimensions:
        parts.append(f"dimensions {', '.join(plan.dimensions)}")
    if plan.columns:
        parts.append(f"columns {', '.join(plan.columns)}")
    parts.append(f"{len(plan.drop)} keys dropped")
    return "; ".join(parts)


def render_preset(plan: PresetPlan, guessed: Guessed, output: str) -> str:
    """The mapping file of a preset: every setting with a comment saying why."""
    found = guessed.recognised
    assert found is not None
    how = "Mapped as (the preset asked for)" if guessed.forced else "Recognised as"
    lines = [
        *guessed.header("written"),
        *_comments(textwrap.wrap(f"{how} {found.preset.title}: {found.because()}.", 88)),
        *guessed.how_to_check("choice", output),
        "[fields]",
        '# FILL IN the id of the Embeddable these events belong to (e.g. "flow_9f2c"):',
        f"# {found.preset.tool} exports do not carry one. Validate accepts the placeholder.",
        f"embeddable_id = {{ value = {_toml(EMBEDDABLE_PLACEHOLDER)} }}",
        *_comments(plan.time_why),
        f"timestamp = {_inline(column=_toml(plan.timestamp), extra=plan.time_option)}",
        "",
        *_preset_event_lines(plan),
        *_preset_identifier_lines(plan),
        *_preset_filter_lines(plan),
        *_preset_props_lines(plan),
    ]
    return "\n".join(lines) + "\n"


def _comments(texts: Sequence[str]) -> list[str]:
    """Comment lines."""
    return [_comment(t) for t in texts]


def _inline(column: str, extra: str = "") -> str:
    """'{ column = "x", unit = "s" }'."""
    return "{ " + ", ".join(p for p in (f"column = {column}", extra) if p) + " }"


def _toml_key(key: str) -> str:
    """A TOML key: bare when it can be, else quoted."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml(key)


def _toml_table(table: dict[str, str]) -> str:
    """A TOML inline table of strings."""
    return "{ " + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in table.items()) + " }"


def _sources(sources: Sequence[str]) -> str:
    """One source as a string, several as a list."""
    return _toml(sources[0]) if len(sources) == 1 else _toml_list(sources)


def _preset_event_lines(plan: PresetPlan) -> list[str]:
    """The [fields.custom_event_name] sub-table."""
    lines = [
        *_comments(plan.event_why),
        "[fields.custom_event_name]",
        f"column = {_toml(plan.event)}",
        'snake_case = "convert"',
    ]
    if plan.rename:
        lines.append(f"rename = {_toml_table(plan.rename)}")
    if plan.strip_prefix:
        lines.append(f"strip_prefix = {_toml_list(plan.strip_prefix)}")
    return [*lines, ""]


def _preset_identifier_lines(plan: PresetPlan) -> list[str]:
    """One [[identifier]] table per alternative, the first with a value in a row sent."""
    lines = ["# Identifier: the first alternative below with a value in a row is the one sent."]
    for alternative in plan.identifiers:
        normalize = ', normalize = "lowercase"' if alternative.lowercase else ""
        lines += [
            *_comments(alternative.why),
            "[[identifier]]",
            f"key = {{ value = {_toml(alternative.key)} }}",
            f"value = {{ column = {_sources(alternative.sources)}{normalize} }}",
            "",
        ]
    return lines


def _preset_filter_lines(plan: PresetPlan) -> list[str]:
    """The [filter] table: rows that are not events, and the dedupe key."""
    lines = ["[filter]", *_comments(plan.filter_why)]
    for word, rules in (("include", plan.include), ("exclude", plan.exclude)):
        for source, values in rules.items():
            lines.append(f"{word} = {{ {_toml_key(source)} = {_toml_list(values)} }}")
    lines += _comments(plan.dedupe_why)
    if plan.dedupe:
        lines.append(f"dedupe = {_sources(plan.dedupe)}")
    lines += [
        "# To import a time window only (UTC unless an offset is given):",
        '# since = "2023-01-01"',
        '# until = "2024-01-01"',
        "",
    ]
    return lines


def _preset_props_lines(plan: PresetPlan) -> list[str]:
    """The [props] table: the tool's properties as the props, less the drop list."""
    lines = ["[props]", *_comments(plan.props_why)]
    if plan.json_columns:
        lines.append(f"json_column = {_sources(plan.json_columns)}")
    if plan.dimensions:
        lines.append(f"dimensions = {_toml_list(plan.dimensions)}")
    if plan.columns:
        lines += _wrapped_list("columns", plan.columns)
    return [*lines, *_wrapped_list("drop", plan.drop)]


def _wrapped_list(name: str, items: Sequence[str], width: int = 92) -> list[str]:
    """A TOML array over several lines, so a long list stays readable."""
    lines = [f"{name} = ["]
    line = "   "
    for item in items:
        piece = f" {_toml(item)},"
        if len(line) + len(piece) > width:
            lines.append(line)
            line = "   "
        line += piece
    return [*lines, line, "]"]
