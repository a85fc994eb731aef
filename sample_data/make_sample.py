"""Write the sample export: events.csv, events.jsonl (the same events) and users.csv.

Standard library only and seeded, so running it again reproduces the committed files byte for
byte:

    python sample_data/make_sample.py

Row N of events.csv (header excluded) and line N of events.jsonl are the same event, so a
validation of either file should give the same counts. The planted problems, one row each
unless noted:

    missing_embeddable_id    empty flow_id
    missing_timestamp        empty occurred_at
    missing_identifier_value empty email, and one holding only blanks
    bad_timestamp            "yesterday"
    future_timestamp         a time in 2099
    bad_event_name           "123 Go!!" (missing_custom_event_name: one empty event)
    bad_metric               amount "n/a" and "twelve"
    bad_props                extra "[1,2]" (a JSON array, not an object)
    malformed_row            CSV: one row with too many fields, one with too few;
                             JSONL: the same rows are a truncated line and an array line

users.csv holds about 80% of the (flow, email) pairs of flow_9f2c and flow_a1b2, so some valid
rows answer 404 ENTRY_NOT_FOUND; flow_c3d4 has no users at all.

With mapping.toml, as generated: 300 rows, 287 valid, 13 invalid (as listed above); of the
valid rows 189 match a user and 98 do not (45 of them in flow_c3d4). Repairs: 161 event names
converted, 79 identifiers unwrapped, 77 naive times taken as Berlin time. Four ISO times carry
microseconds ending in 999, where truncating to milliseconds and rounding differ.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

# One event as a JSONL export would type it: str, int, float, dict, list or None.
Event = dict[str, object]

SEED = 20240301
ROWS = 300
HERE = Path(__file__).resolve().parent
COLUMNS = [
    "event_id",
    "flow_id",
    "occurred_at",
    "event",
    "email",
    "plan",
    "country",
    "amount",
    "coupon",
    "extra",
]
FLOWS = ["flow_9f2c", "flow_a1b2", "flow_c3d4"]
FLOW_WEIGHTS = [50, 35, 15]
# No user of this flow is registered: every one of its rows must come back 404.
UNREGISTERED_FLOW = "flow_c3d4"
BERLIN = ZoneInfo("Europe/Berlin")
YEAR_START = datetime(2024, 1, 1, tzinfo=UTC)
YEAR_SECONDS = 366 * 24 * 3600
FIRST_NAMES = [
    "ada", "alan", "grace", "linus", "margaret", "dennis", "barbara", "ken", "frances",
    "edsger", "radia", "tim", "hedy", "john", "katherine", "donald", "sophie", "guido",
    "anita", "bjarne",
]  # fmt: skip
LAST_NAMES = ["lovelace", "turing", "hopper", "torvalds", "hamilton", "ritchie", "liskov"]
DOMAINS = ["example.com", "example.org", "mail.example.net"]
EVENTS = [
    ("plan_upgraded", 14),
    ("Signed Up", 8),
    ("signed-up", 6),
    ("signedUp", 5),
    ("checkout_completed", 20),
    ("Page Viewed", 30),
]
PLANS = ["free", "starter", "pro", "business"]
COUNTRIES = ["DE", "AT", "CH", "FR", "NL", "GB", "US", "ES"]
COUPONS = ["SPRING24", "WELCOME10", "BLACKFRIDAY", "LOYAL5"]
CAMPAIGNS = ["spring", "summer", "newsletter", "partner", "frühling"]
SOURCES = ["import", "web", "ios", "android"]


@dataclass(frozen=True)
class User:
    email: str  # canonical, lowercase
    flows: tuple[str, ...]


def make_users(rng: random.Random, count: int = 40) -> list[User]:
    """About 40 users; most belong to one flow, some to two."""
    emails: list[str] = []
    while len(emails) < count:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = f"{first}.{last}@{rng.choice(DOMAINS)}"
        if email not in emails:
            emails.append(email)
    users = []
    for email in emails:
        # The unregistered flow is the small one, so its 404s stand out rather than dominate.
        flows = rng.choices(FLOWS, weights=FLOW_WEIGHTS, k=2 if rng.random() < 0.25 else 1)
        users.append(User(email, tuple(sorted(set(flows)))))
    return users


def render_timestamp(rng: random.Random, instant: datetime) -> object:
    """One instant in one of the export's formats; epoch values come back as ints."""
    kind = rng.choices(
        ["iso_z", "iso_z_ms", "iso_z_us", "iso_offset", "naive", "epoch_s", "epoch_ms"],
        weights=[25, 10, 2, 15, 25, 15, 10],
    )[0]
    local = instant.astimezone(BERLIN)
    if kind == "iso_z":
        return instant.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "iso_z_ms":
        return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"
    if kind == "iso_z_us":
        # Microseconds ending in 999: truncating to milliseconds and rounding differ.
        return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}999Z"
    if kind == "iso_offset":
        # Berlin's own offset: +02:00 in summer, +01:00 in winter.
        return local.isoformat(timespec="seconds")
    if kind == "naive":
        return local.strftime("%Y-%m-%d %H:%M:%S")
    if kind == "epoch_s":
        return int(instant.timestamp())
    return int(instant.timestamp()) * 1000 + instant.microsecond // 1000


def random_instant(rng: random.Random) -> datetime:
    """A moment in 2024, kept clear of the DST switch nights so naive Berlin times are unique."""
    while True:
        instant = YEAR_START + timedelta(
            seconds=rng.randrange(YEAR_SECONDS), microseconds=rng.randrange(0, 1_000_000, 1000)
        )
        local = instant.astimezone(BERLIN)
        switch_night = (local.month, local.day) in {(3, 31), (10, 27)} and local.hour < 4
        if instant.year == 2024 and not switch_night:
            return instant


def render_email(rng: random.Random, email: str) -> str:
    """The ways an export spells one address: as is, capitalised, stringified, double-escaped."""
    kind = rng.choices(["plain", "upper", "stringified", "double"], weights=[60, 18, 14, 8])[0]
    if kind == "upper":
        name, domain = email.split("@")
        return f"{name.title()}@{domain.upper() if rng.random() < 0.3 else domain}"
    if kind == "stringified":
        return json.dumps(email)
    if kind == "double":
        return json.dumps(json.dumps(email))
    return email


def render_amount(rng: random.Random, event: str) -> object:
    """Money events carry an amount (a float for JSONL); the others mostly none."""
    if event in {"plan_upgraded", "checkout_completed"} and rng.random() < 0.9:
        return round(rng.choice([9.0, 19.0, 29.0, 49.0, 99.0, 199.0]) + rng.choice([0, 0.99]), 2)
    return None


def render_extra(rng: random.Random) -> dict[str, object] | None:
    """Some rows carry a JSON object of free-form properties."""
    if rng.random() >= 0.4:
        return None
    extra: dict[str, object] = {"source": rng.choice(SOURCES)}
    if rng.random() < 0.6:
        extra["campaign"] = rng.choice(CAMPAIGNS)
    if rng.random() < 0.2:
        extra["ab_test"] = {"name": "pricing_page", "variant": rng.choice(["a", "b"])}
    return extra


def make_event(rng: random.Random, users: list[User]) -> Event:
    """One valid event, with values typed the way a JSONL export would type them."""
    user = rng.choice(users)
    names, weights = zip(*EVENTS, strict=True)
    event = rng.choices(names, weights=weights)[0]
    return {
        "event_id": f"evt_{rng.getrandbits(48):012x}",
        "flow_id": rng.choice(user.flows),
        "occurred_at": render_timestamp(rng, random_instant(rng)),
        "event": event,
        "email": render_email(rng, user.email),
        "plan": rng.choice(PLANS) if rng.random() < 0.85 else None,
        "country": rng.choice(COUNTRIES) if rng.random() < 0.9 else None,
        "amount": render_amount(rng, event),
        "coupon": rng.choice(COUPONS) if rng.random() < 0.12 else None,
        "extra": render_extra(rng),
    }


# What each broken row changes; "ragged_long"/"ragged_short" are only broken at write time.
BREAKAGES: list[tuple[str, dict[str, object]]] = [
    # None: an empty CSV cell; in JSONL an absent key, a null or "" (chosen at random).
    ("missing_embeddable_id", {"flow_id": None}),
    ("missing_timestamp", {"occurred_at": None}),
    ("missing_identifier_value", {"email": None}),
    ("missing_identifier_value", {"email": "   "}),
    ("bad_timestamp", {"occurred_at": "yesterday"}),
    ("future_timestamp", {"occurred_at": "2099-06-01T10:00:00Z"}),
    ("bad_event_name", {"event": "123 Go!!"}),
    ("missing_custom_event_name", {"event": None}),
    ("bad_metric", {"event": "checkout_completed", "amount": "n/a"}),
    ("bad_metric", {"event": "plan_upgraded", "amount": "twelve"}),
    ("bad_props", {"extra": [1, 2]}),
    ("ragged_long", {}),
    ("ragged_short", {}),
]


def make_events(rng: random.Random, users: list[User]) -> tuple[list[Event], dict[int, str]]:
    """All sample events, plus which row index carries which planted breakage."""
    events = [make_event(rng, users) for _ in range(ROWS)]
    # Keep the first rows clean so a quick look at the head shows the happy path.
    broken_rows = sorted(rng.sample(range(10, ROWS), k=len(BREAKAGES)))
    breakage_at: dict[int, str] = {}
    for row, (name, changes) in zip(broken_rows, BREAKAGES, strict=True):
        events[row].update(changes)
        breakage_at[row] = name
    return events, breakage_at


def csv_cell(value: object) -> str:
    """How a CSV export spells a value: everything is text, nothing is empty-vs-null."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def csv_line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def csv_lines(events: list[Event], breakage_at: dict[int, str]) -> Iterator[str]:
    yield csv_line(COLUMNS)
    for row, event in enumerate(events):
        cells = [csv_cell(event[column]) for column in COLUMNS]
        if breakage_at.get(row) == "ragged_long":
            # An unquoted comma in a coupon code, as hand-edited exports have.
            cells[COLUMNS.index("coupon")] = "SPRING24"
            cells.insert(COLUMNS.index("coupon") + 1, "10%")
        elif breakage_at.get(row) == "ragged_short":
            cells = cells[:6]  # cut off after "plan"
        yield csv_line(cells)


def jsonl_value(rng: random.Random, column: str, value: object) -> object:
    """JSONL exports mix types: an epoch as a number or text, extra as object or its JSON text."""
    if column == "occurred_at" and isinstance(value, int) and rng.random() < 0.25:
        return str(value)
    if column == "amount" and isinstance(value, float) and rng.random() < 0.3:
        return f"{value:.2f}"
    if column == "extra" and isinstance(value, dict) and rng.random() < 0.4:
        return json.dumps(value, ensure_ascii=False)
    return value


def jsonl_lines(
    rng: random.Random, events: list[Event], breakage_at: dict[int, str]
) -> Iterator[str]:
    for row, event in enumerate(events):
        record: dict[str, object] = {}
        for column in COLUMNS:
            value = event[column]
            # Exporters disagree on empty values: the key is absent, null, or "".
            if value is None:
                style = rng.random()
                if style < 0.5:
                    continue
                record[column] = None if style < 0.8 else ""
            else:
                record[column] = jsonl_value(rng, column, value)
        line = json.dumps(record, ensure_ascii=False)
        if breakage_at.get(row) == "ragged_long":
            line = line[: len(line) // 2]  # a line cut short by a crashed exporter
        elif breakage_at.get(row) == "ragged_short":
            line = json.dumps([1, 2])
        yield line + "\n"


def registered_pairs(rng: random.Random, users: list[User]) -> list[tuple[str, str]]:
    """About 80% of the users, in every flow they use except the unregistered one."""
    kept = [user for user in users if rng.random() < 0.8]
    pairs = {(flow, user.email) for user in kept for flow in user.flows}
    return sorted(pair for pair in pairs if pair[0] != UNREGISTERED_FLOW)


def users_lines(pairs: list[tuple[str, str]]) -> Iterator[str]:
    yield csv_line(["embeddable_id", "key", "value"])
    for flow, email in pairs:
        yield csv_line([flow, "email", email])


def write(path: Path, lines: Iterator[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.writelines(lines)


def main() -> None:
    rng = random.Random(SEED)
    users = make_users(rng)
    events, breakage_at = make_events(rng, users)
    write(HERE / "events.csv", csv_lines(events, breakage_at))
    write(HERE / "events.jsonl", jsonl_lines(rng, events, breakage_at))
    write(HERE / "users.csv", users_lines(registered_pairs(rng, users)))
    for row, name in sorted(breakage_at.items()):
        print(f"row {row + 1:>3}: {name}")


if __name__ == "__main__":
    main()
