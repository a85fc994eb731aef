"""Write a large, realistic events CSV for benchmarks, streaming, in bounded memory.

    python bench/gen_events.py --rows 1000000 -o bench/out/events_1m.csv

Same columns and the same mix as sample_data/events.csv (three flows, event names in several
spellings, five timestamp formats over 2024, emails plain / capitalised / stringified /
double-escaped, optional amount, plan, country, coupon and a JSON ``extra``). A share of rows
(1% by default) is broken in one way each; the exact count per reason code is written beside the
CSV as ``<name>.expected.json`` so a benchmark can check a validator's report.

No ragged rows are planted: a bare ``polars.read_csv`` is one of the baselines, and it refuses
rows with too many fields.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    import polars as pl

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
FLOWS = (["flow_9f2c", "flow_a1b2", "flow_c3d4"], [50, 35, 15])
EVENTS = (
    ["plan_upgraded", "Signed Up", "signed-up", "signedUp", "checkout_completed", "Page Viewed"],
    [14, 8, 6, 5, 20, 30],
)
MONEY_EVENTS = frozenset({"plan_upgraded", "checkout_completed"})
PLANS = (["free", "starter", "pro", "business", ""], [30, 25, 20, 10, 15])
COUNTRIES = (["DE", "AT", "CH", "FR", "NL", "GB", "US", "ES", ""], [25, 8, 7, 12, 8, 12, 15, 3, 10])
COUPONS = (["", "SPRING24", "WELCOME10", "BLACKFRIDAY", "LOYAL5"], [88, 4, 4, 2, 2])
AMOUNTS = [f"{base + cents:.2f}" for base in (9, 19, 29, 49, 99, 199) for cents in (0, 0.99)]
EMAIL_STYLES = (["plain", "upper", "stringified", "double"], [60, 18, 14, 8])
TIMESTAMP_STYLES = (
    ["iso_z", "iso_z_ms", "iso_offset", "naive", "epoch_s", "epoch_ms"],
    [25, 12, 15, 25, 15, 8],
)
FIRST_NAMES = ["ada", "alan", "grace", "linus", "margaret", "dennis", "barbara", "ken", "radia"]
DOMAINS = ["example.com", "example.org", "mail.example.net", "corp.example"]

YEAR_START = 1704067200  # 2024-01-01T00:00:00Z
YEAR_END = 1735689600  # 2025-01-01T00:00:00Z
# Europe/Berlin in 2024 (EU rule: last Sunday of March / October at 01:00 UTC). Fixed numbers
# keep the hot loop free of zoneinfo lookups; the generator only emits 2024.
DST_START = 1711846800  # 2024-03-31T01:00:00Z
DST_END = 1729990800  # 2024-10-27T01:00:00Z

# One broken value per planted row, keyed by the reason a validator should give.
BREAKAGES: list[tuple[str, str, str]] = [
    ("missing_embeddable_id", "flow_id", ""),
    ("missing_timestamp", "occurred_at", ""),
    ("missing_custom_event_name", "event", " "),
    ("missing_identifier_value", "email", ""),
    ("bad_timestamp", "occurred_at", "yesterday"),
    ("future_timestamp", "occurred_at", "2099-06-01T10:00:00Z"),
    ("bad_event_name", "event", "123 Go!!"),
    ("bad_metric", "amount", "n/a"),
    ("bad_props", "extra", "[1,2]"),
]

Column = list[str]


def make_emails(rng: random.Random, count: int) -> dict[str, list[str]]:
    """Each user's address in every style, indexed by style then user number."""
    plain = [
        f"{rng.choice(FIRST_NAMES)}.{n}@{rng.choice(DOMAINS)}" for n in range(count)
    ]  # the number keeps the addresses unique
    return {
        "plain": plain,
        "upper": [email[0].upper() + email[1:] for email in plain],
        "stringified": [json.dumps(email) for email in plain],
        "double": [json.dumps(json.dumps(email)) for email in plain],
    }


def make_extras(rng: random.Random, count: int = 256) -> list[str]:
    """A pool of JSON-object texts for the ``extra`` column."""
    pool = []
    for _ in range(count):
        extra: dict[str, object] = {"source": rng.choice(["import", "web", "ios", "android"])}
        if rng.random() < 0.6:
            extra["campaign"] = rng.choice(["spring", "summer", "newsletter", "frühling"])
        if rng.random() < 0.2:
            extra["ab_test"] = {"name": "pricing_page", "variant": rng.choice("ab")}
        pool.append(json.dumps(extra, ensure_ascii=False))
    return pool


def format_timestamp(style: str, seconds: int, millis: int) -> str:
    """One instant (UTC epoch seconds + milliseconds) in one of the export's formats."""
    if style == "epoch_s":
        return str(seconds)
    if style == "epoch_ms":
        return f"{seconds}{millis:03d}"
    if style == "iso_z":
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    if style == "iso_z_ms":
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
    offset = 7200 if DST_START <= seconds < DST_END else 3600
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds + offset))
    if style == "naive":
        return local
    return local.replace(" ", "T") + ("+02:00" if offset == 7200 else "+01:00")


def weighted(rng: random.Random, choices: tuple[list[str], list[int]], n: int) -> Column:
    return rng.choices(choices[0], weights=choices[1], k=n)


def make_chunk(
    rng: random.Random, first: int, n: int, emails: dict[str, list[str]], extras: list[str]
) -> dict[str, Column]:
    """Columns of ``n`` valid rows; ``first`` is the global number of the first one."""
    # Multiplying by an odd constant modulo 2**48 is a bijection: unique, random-looking ids.
    ids = [f"evt_{(i * 0x9E3779B97F4B) & 0xFFFFFFFFFFFF:012x}" for i in range(first, first + n)]
    # int(random() * k) rather than randrange/choice: several times faster, bias irrelevant here.
    r = rng.random
    span, n_users = YEAR_END - YEAR_START, len(emails["plain"])
    seconds = [YEAR_START + int(r() * span) for _ in range(n)]
    styles = weighted(rng, TIMESTAMP_STYLES, n)
    events = weighted(rng, EVENTS, n)
    users = [int(r() * n_users) for _ in range(n)]
    email_styles = weighted(rng, EMAIL_STYLES, n)
    return {
        "event_id": ids,
        "flow_id": weighted(rng, FLOWS, n),
        "occurred_at": [
            format_timestamp(style, s, s % 1000) for style, s in zip(styles, seconds, strict=True)
        ],
        "event": events,
        "email": [emails[style][u] for style, u in zip(email_styles, users, strict=True)],
        "plan": weighted(rng, PLANS, n),
        "country": weighted(rng, COUNTRIES, n),
        "amount": [
            AMOUNTS[int(r() * len(AMOUNTS))] if event in MONEY_EVENTS and r() < 0.9 else ""
            for event in events
        ],
        "coupon": weighted(rng, COUPONS, n),
        "extra": [extras[int(r() * len(extras))] if r() < 0.35 else "" for _ in range(n)],
    }


def break_rows(
    rng: random.Random, columns: dict[str, Column], rate: float, planted: Counter[str]
) -> None:
    """Break about ``rate`` of the chunk's rows, one planted problem each."""
    n = len(columns["event_id"])
    for row in rng.sample(range(n), k=round(n * rate)):
        reason, column, value = rng.choice(BREAKAGES)
        if reason == "bad_metric":
            columns["event"][row] = "checkout_completed"  # a money event, so amount matters
        columns[column][row] = value
        planted[reason] += 1


def write_events(
    path: Path | str,
    rows: int,
    *,
    seed: int = 1,
    invalid_rate: float = 0.01,
    users: int = 50_000,
    chunk_rows: int = 20_000,
) -> Counter[str]:
    """Write ``rows`` events to ``path`` and return how many rows were broken, per reason."""
    rng = random.Random(seed)
    emails = make_emails(rng, users)
    extras = make_extras(rng)
    planted: Counter[str] = Counter()
    with Path(path).open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for first in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - first)
            columns = make_chunk(rng, first, n, emails, extras)
            break_rows(rng, columns, invalid_rate, planted)
            writer.writerows(zip(*(columns[name] for name in COLUMNS), strict=True))
    return planted


def expected_path(path: Path) -> Path:
    """Where the planted counts of a generated file are kept."""
    return path.with_name(path.name + ".expected.json")


def write_expected(path: Path, rows: int, planted: Counter[str]) -> None:
    invalid = sum(planted.values())
    expected = {
        "rows": rows,
        "valid": rows - invalid,
        "invalid": invalid,
        "invalid_by_reason": dict(sorted(planted.items())),
    }
    expected_path(path).write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")


def size_label(rows: int) -> str:
    """1000000 -> "1m", 200000 -> "200k": short, stable file names."""
    for unit, size in (("m", 1_000_000), ("k", 1_000)):
        if rows % size == 0:
            return f"{rows // size}{unit}"
    return str(rows)


def generated(path: Path, rows: int, invalid_rate: float) -> Path:
    """The generated CSV at ``path``, written now if it (or its counts) is missing."""
    if path.exists() and expected_path(path).exists():
        return path
    print(f"generating {path.name} ({rows:,} rows) ...", flush=True)
    started = time.perf_counter()
    partial = path.with_name(path.name + ".partial")
    planted = write_events(partial, rows, invalid_rate=invalid_rate)
    partial.replace(path)  # an interrupted run must not leave a short file that looks complete
    write_expected(path, rows, planted)
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--invalid-rate", type=float, default=0.01)
    parser.add_argument("--users", type=int, default=50_000, help="distinct email addresses")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    planted = write_events(
        args.output, args.rows, seed=args.seed, invalid_rate=args.invalid_rate, users=args.users
    )
    write_expected(args.output, args.rows, planted)
    elapsed = time.perf_counter() - started
    size_mib = args.output.stat().st_size / 2**20
    print(f"{args.output}: {args.rows:,} rows, {size_mib:,.1f} MiB in {elapsed:.1f} s")
    print(f"broken rows: {sum(planted.values()):,} {dict(sorted(planted.items()))}")


if __name__ == "__main__":
    main()


# --- Duplicates (bench/dedupe.py) and a JSON-text column (bench/validate.py) -------------------


def event_id(index: int) -> str:
    """The ``event_id`` that ``make_chunk`` gives the row with this global number."""
    return f"evt_{(index * 0x9E3779B97F4B) & 0xFFFFFFFFFFFF:012x}"


# A planted duplicate repeats the id of an earlier row: half the time one of the last NEAR_ROWS
# rows (mostly the same read batch), otherwise any earlier row (mostly batches apart).
NEAR_ROWS = 2_000
# A duplicate this many rows or more after its original is counted as far apart (backfill
# reads 8 MiB batches, about 75,000 rows of these files).
FAR_ROWS = 100_000


def write_events_with_duplicates(
    path: Path | str,
    rows: int,
    *,
    seed: int = 1,
    invalid_rate: float = 0.01,
    duplicate_rate: float = 0.1,
    users: int = 50_000,
    chunk_rows: int = 20_000,
) -> tuple[Counter[str], dict[str, int]]:
    """Like ``write_events``, with ``duplicate_rate`` of the rows repeating an earlier id.

    Exactly ``round(rows * duplicate_rate)`` rows carry the ``event_id`` of an earlier row,
    spread evenly through the file. Broken rows, duplicates and the rows they copy are kept
    apart: a duplicate and its original are both valid, so a validator deduplicating on
    ``event_id`` must skip exactly the planted count, whatever it does with invalid rows.
    Returns the broken rows per reason and the duplicates' figures (count, far apart, the
    largest distance).
    """
    rng = random.Random(seed)
    emails = make_emails(rng, users)
    extras = make_extras(rng)
    planted: Counter[str] = Counter()
    usable = bytearray(rows)  # 1: a valid row with its own id, which a duplicate may repeat
    stats = {"duplicates": 0, "duplicates_far": 0, "duplicate_max_distance": 0}
    r = rng.random
    with Path(path).open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for first in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - first)
            columns = make_chunk(rng, first, n, emails, extras)
            broken = set(rng.sample(range(n), k=round(n * invalid_rate)))
            for row in sorted(broken):
                reason, column, value = rng.choice(BREAKAGES)
                if reason == "bad_metric":
                    columns["event"][row] = "checkout_completed"
                columns[column][row] = value
                planted[reason] += 1
            want = round((first + n) * duplicate_rate) - round(first * duplicate_rate)
            low = min(NEAR_ROWS, n) if first == 0 else 0  # the file's first rows have no past
            candidates = [p for p in range(low, n) if p not in broken]
            duplicates = sorted(rng.sample(candidates, k=min(want, len(candidates))))
            taken = broken.union(duplicates)
            for p in range(n):
                if p not in taken:
                    usable[first + p] = 1
            for p in duplicates:
                here = first + p
                while True:
                    if r() < 0.5:
                        origin = here - 1 - int(r() * min(NEAR_ROWS, here))
                    else:
                        origin = int(r() * here)
                    if usable[origin]:
                        break
                columns["event_id"][p] = event_id(origin)
                distance = here - origin
                stats["duplicates"] += 1
                stats["duplicates_far"] += distance >= FAR_ROWS
                stats["duplicate_max_distance"] = max(stats["duplicate_max_distance"], distance)
            writer.writerows(zip(*(columns[name] for name in COLUMNS), strict=True))
    return planted, stats


def generated_with_duplicates(
    path: Path, rows: int, *, invalid_rate: float = 0.01, duplicate_rate: float = 0.1
) -> Path:
    """The CSV at ``path`` from ``write_events_with_duplicates``, written now if missing.

    Its ``.expected.json`` holds the usual counts (as validated without dedupe) plus
    ``duplicates``, ``duplicates_far`` and ``duplicate_max_distance``.
    """
    if path.exists() and expected_path(path).exists():
        return path
    share = f"{duplicate_rate:.0%} duplicates"
    print(f"generating {path.name} ({rows:,} rows, {share}) ...", flush=True)
    started = time.perf_counter()
    partial = path.with_name(path.name + ".partial")
    planted, stats = write_events_with_duplicates(
        partial, rows, invalid_rate=invalid_rate, duplicate_rate=duplicate_rate
    )
    partial.replace(path)
    write_expected(path, rows, planted)
    expected = json.loads(expected_path(path).read_text(encoding="utf-8"))
    expected_path(path).write_text(json.dumps({**expected, **stats}, indent=2) + "\n", "utf-8")
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return path


# The columns of a file whose time, event, email and amount sit in one JSON-text column.
PROPERTIES_COLUMNS = ["event_id", "flow_id", "properties", "plan", "country", "coupon", "extra"]
# Where each of them goes inside ``properties``.
PROPERTIES_KEYS = {"occurred_at": "time", "event": "event", "email": "email", "amount": "amount"}


def properties_cell(row: dict[str, str]) -> str:
    """The JSON text of one row's ``properties``: the four cells, empty ones left out.

    Epoch timestamps and amounts that are numbers become JSON numbers (as in Mixpanel's or
    PostHog's exports); everything else stays a string, so each planted problem stays one.
    """
    properties: dict[str, object] = {}
    for column, key in PROPERTIES_KEYS.items():
        cell = row[column]
        if cell == "":
            continue
        if column == "occurred_at" and cell.isdigit():
            properties[key] = int(cell)
        elif column == "amount":
            try:
                properties[key] = float(cell)
            except ValueError:
                properties[key] = cell
        else:
            properties[key] = cell
    return json.dumps(properties, ensure_ascii=False)


def write_properties_copy(source: Path, path: Path) -> int:
    """Write ``source`` (a ``write_events`` file) again with ``properties`` for four columns.

    Row for row the same events, so the validator's counts are the source's.
    """
    rows = 0
    with (
        source.open(encoding="utf-8", newline="") as inp,
        path.open("w", encoding="utf-8", newline="") as out,
    ):
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(PROPERTIES_COLUMNS)
        for row in csv.DictReader(inp):
            row["properties"] = properties_cell(row)
            writer.writerow([row[name] for name in PROPERTIES_COLUMNS])
            rows += 1
    return rows


def generated_properties_copy(source: Path, path: Path) -> Path:
    """The JSON-text copy of ``source`` at ``path``, written now if missing or older."""
    if (
        path.exists()
        and expected_path(path).exists()
        and path.stat().st_mtime >= source.stat().st_mtime
    ):
        return path
    print(f"writing {path.name} (JSON-text properties of {source.name}) ...", flush=True)
    started = time.perf_counter()
    partial = path.with_name(path.name + ".partial")
    write_properties_copy(source, partial)
    partial.replace(path)
    expected_path(path).write_text(expected_path(source).read_text(encoding="utf-8"), "utf-8")
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return path


# --- The same events in other forms (bench/inputs.py) -----------------------------------------

# Rows per Parquet row group: what an export tool typically writes, and several per file.
PARQUET_ROW_GROUP = 100_000
# The directory form: the events split into this many Parquet files, in name order.
PARQUET_PARTS = 10


def write_gzip_copy(source: Path, path: Path, level: int = 6) -> None:
    """``source`` gzip-compressed (gzip's default level), streaming."""
    with source.open("rb") as inp, gzip.open(path, "wb", compresslevel=level) as out:
        shutil.copyfileobj(inp, out, 1 << 20)


def _as_text_frame(source: Path) -> pl.LazyFrame:
    """A ``write_events`` CSV as Polars reads it with every column a string (empty = null).

    Strings, not inferred types: the planted problems (``yesterday`` in a timestamp column,
    ``n/a`` in the amount) must survive, so the validator's counts stay the CSV's.
    """
    import polars as pl  # here, not at the top: the CSV generator needs no Polars

    return pl.scan_csv(source, infer_schema=False)


def write_jsonl_copy(source: Path, path: Path) -> None:
    """``source`` as JSON Lines, one object per row, an empty cell as ``null``, streaming."""
    _as_text_frame(source).sink_ndjson(path)


def write_parquet_copy(source: Path, path: Path, row_group: int = PARQUET_ROW_GROUP) -> None:
    """``source`` as one Parquet file (string columns, ``row_group`` rows a group), streaming."""
    _as_text_frame(source).sink_parquet(path, row_group_size=row_group)


def write_parquet_parts(
    parquet: Path, directory: Path, parts: int = PARQUET_PARTS, row_group: int = PARQUET_ROW_GROUP
) -> list[Path]:
    """The rows of ``parquet`` split, in order, into ``parts`` files ``part-00.parquet``, ...

    Name order is row order, so the directory holds the same events in the same order.
    """
    import polars as pl

    rows = pl.scan_parquet(parquet).select(pl.len()).collect().item()
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for part in range(parts):
        first, last = rows * part // parts, rows * (part + 1) // parts
        path = directory / f"part-{part:02d}.parquet"
        pl.scan_parquet(parquet).slice(first, last - first).sink_parquet(
            path, row_group_size=row_group
        )
        written.append(path)
    return written


# The forms of bench/inputs.py, in table order; "Parquet, 10 files" is a directory.
FORMS = ["CSV", "CSV.gz", "JSONL", "Parquet", f"Parquet, {PARQUET_PARTS} files"]


def form_paths(source: Path) -> dict[str, Path]:
    """Where each form of the ``write_events`` CSV ``source`` is kept, beside it."""
    stem = source.with_suffix("")
    return {
        "CSV": source,
        "CSV.gz": source.with_name(source.name + ".gz"),
        "JSONL": stem.with_suffix(".jsonl"),
        "Parquet": stem.with_suffix(".parquet"),
        FORMS[4]: stem.with_name(stem.name + "_parts"),
    }


def generated_forms(source: Path) -> dict[str, Path]:
    """Every form of ``source`` (a ``generated`` CSV), each written now if missing or older.

    Each file (and the directory) gets the source's ``.expected.json``: the same rows, so the
    same planted counts.
    """
    paths = form_paths(source)
    writers: dict[str, Callable[[Path], object]] = {
        "CSV.gz": lambda path: write_gzip_copy(source, path),
        "JSONL": lambda path: write_jsonl_copy(source, path),
        "Parquet": lambda path: write_parquet_copy(source, path),
        FORMS[4]: lambda path: write_parquet_parts(paths["Parquet"], path),
    }
    for form, write in writers.items():  # the directory after the Parquet file it splits
        path = paths[form]
        done = expected_path(path)
        if done.exists() and done.stat().st_mtime >= source.stat().st_mtime and path.exists():
            continue
        print(f"writing {path.name} ({form} of {source.name}) ...", flush=True)
        started = time.perf_counter()
        partial = path.with_name(path.name + ".partial")
        if partial.is_dir():
            shutil.rmtree(partial)
        write(partial)
        if path.is_dir():
            shutil.rmtree(path)
        partial.replace(path)  # an interrupted run must not leave a short file that looks whole
        done.write_text(expected_path(source).read_text(encoding="utf-8"), "utf-8")
        print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return paths
