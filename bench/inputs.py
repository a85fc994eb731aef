"""Benchmark ``backfill validate`` on the same events in every input form, local and in S3.

    python bench/inputs.py [--rows 1000000] [--skip-5m] [--skip-s3 | --skip-local]
                           [--only parquet,parquet_10_files,...] [--repeat N]

Generates bench/out/events_<N>.csv (gen_events.py, 1% invalid rows) and a five times larger
file if missing, and each of them again as CSV.gz, JSONL, Parquet (string columns, 100,000-row
row groups) and a directory of ten Parquet files (gen_events.generated_forms). Then, for every
form and size, each in its own child process (bench/measure.py), side by side:

    backfill validate SOURCE -m MAPPING --report R    (the sample mapping)
    the bare Polars read of the same SOURCE           polars.read_csv(infer_schema=False) for
                                                      CSV and CSV.gz, read_ndjson for JSONL,
                                                      read_parquet for Parquet (DIR/*.parquet)

first on the local files, then from S3: a moto server started here, in this process, on a
free loopback port, the files uploaded with boto3, the children given AWS_ENDPOINT_URL, dummy
credentials and a region (validate reads ``s3://bench/...``; the bare reads pass the same as
Polars ``storage_options``). moto answers a ranged GET by reading the whole object and
slicing it; the benchmark patches that to read only the range, as S3 does
(``--moto-whole-ranges`` leaves moto as it is). The S3 part needs backfill.remote and moto,
boto3 and botocore in the venv (``pip install -e '.[test]'``); without them it is skipped, saying
why.

It prints one table (validate's and the bare read's wall time and peak RSS, and validate / bare
read), then the targets: Parquet the fastest local form; every validate within 3x of its bare
read; validate's peak RSS at 5N within 1.3x of N for local Parquet and for every form in S3.
Every validate report is checked against the counts the generator planted (exit 1 if one
differs or a command fails).

The commands import backfill as the entry point would (``python -P``), so
``PYTHONPATH=/tmp/snap`` measures an exported commit; see bench/send.py, ``backfill_source``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gen_events import FORMS, expected_path, generated, generated_forms, size_label
from measure import CommandFailed, Measurement, measure
from send import backfill_source

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
SAMPLE_MAPPING = ROOT / "sample_data" / "mapping.toml"
BIG_FACTOR = 5
BUCKET = "bench"
LOCAL, S3 = "local", "S3"

# The targets of the issue.
MAX_RATIO = 3.0  # validate / bare read, wall time
MAX_RSS_GROWTH = 1.3  # validate's peak RSS, 5N rows / N rows

# The bare read: argv = reader, source, storage options (JSON, or "null"), expected rows.
# It checks the row count, so that a read that stops short cannot pass for a fast one.
BARE_READ = """
import json, sys
import polars as pl
reader, source, options, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
extra = {"storage_options": options} if options else {}
if reader == "csv":
    frame = pl.read_csv(source, infer_schema=False, **extra)
elif reader == "ndjson":
    frame = pl.read_ndjson(source, **extra)
else:
    frame = pl.read_parquet(source, **extra)
if frame.height != int(rows):
    sys.exit(f"read {frame.height} rows, not {rows}")
"""
READERS = {"CSV": "csv", "CSV.gz": "csv", "JSONL": "ndjson", "Parquet": "parquet"}


@dataclass
class Case:
    """One form of the events, in one place: what validate reads and what Polars reads."""

    form: str
    where: str
    rows: int
    source: str  # what `backfill validate` is given
    bare_source: str  # what the bare Polars read is given
    expected: Path  # the planted counts
    env: dict[str, str] | None = None  # the children's environment (None: this one's)
    storage_options: dict[str, str] | None = None
    validate: Measurement | None = None
    bare: Measurement | None = None
    errors: list[str] = field(default_factory=list)
    counts: str = ""
    counts_ok: bool = False

    @property
    def label(self) -> str:
        return f"{self.form}, {self.where}, {size_label(self.rows)}"

    @property
    def ratio(self) -> float | None:
        if self.validate is None or self.bare is None:
            return None
        return self.validate.wall_s / self.bare.wall_s


def ensure_mapping() -> Path:
    """The sample mapping, copied so that the benchmark inputs are self-contained."""
    path = OUT / "mapping.toml"
    shutil.copyfile(SAMPLE_MAPPING, path)
    return path


def ensure_forms(rows: int) -> dict[str, Path]:
    """Every form of the ``rows``-row events, written now if missing."""
    csv = generated(OUT / f"events_{size_label(rows)}.csv", rows, invalid_rate=0.01)
    return generated_forms(csv)


def reader_of(form: str) -> str:
    return READERS.get(form, "parquet")  # the directory is Parquet


def local_cases(forms: dict[str, Path], rows: int) -> list[Case]:
    cases = []
    for form in FORMS:
        path = forms[form]
        bare = str(path / "*.parquet") if path.is_dir() else str(path)
        cases.append(Case(form, LOCAL, rows, str(path), bare, expected_path(path)))
    return cases


def warm_cache(path: Path) -> None:
    """Read the file (every file of a directory) once: no run pays for a cold disk alone."""
    for one in sorted(path.iterdir()) if path.is_dir() else [path]:
        with one.open("rb") as stream:
            while stream.read(1 << 24):
                pass


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no stderr)"


def compare_counts(report: dict[str, Any], expected: dict[str, Any]) -> tuple[bool, str]:
    """Do the report's counts match what the generator planted? And a short note."""
    by_reason = report.get("invalid_by_reason") or {}
    report = {**report, "invalid_by_reason": {k: v for k, v in by_reason.items() if v}}
    keys = ("rows", "valid", "invalid", "invalid_by_reason")
    mismatches = [key for key in keys if report.get(key) != expected[key]]
    if not mismatches:
        return True, f"match ({report['valid']:,} valid, {report['invalid']:,} invalid)"
    shown = {key: report.get(key) for key in mismatches}
    return False, f"DIFFER from planted {', '.join(mismatches)}: {shown}"


def validate_command(case: Case, mapping: Path, report: Path) -> list[str]:
    return [
        sys.executable,
        "-P",  # backfill from sys.path as the entry point sees it, not from the cwd
        "-m",
        "backfill",
        "validate",
        case.source,
        "-m",
        str(mapping),
        "--report",
        str(report),
    ]


def bare_command(case: Case) -> list[str]:
    options = json.dumps(case.storage_options)
    reader = reader_of(case.form)
    return [sys.executable, "-c", BARE_READ, reader, case.bare_source, options, str(case.rows)]


def better(old: Measurement | None, new: Measurement) -> Measurement:
    """The best over rounds: the fastest wall time, the smallest peak RSS."""
    if old is None:
        return new
    return Measurement(min(old.wall_s, new.wall_s), min(old.peak_rss_mib, new.peak_rss_mib))


def run_case(case: Case, mapping: Path, repeat: int) -> None:
    """Measure validate and the bare read of one case, alternating, ``repeat`` rounds."""
    report = OUT / f"inputs_report_{case.where}_{size_label(case.rows)}_{slug(case.form)}.json"
    print(f"measuring {case.label} ...", flush=True)
    for _ in range(repeat):
        report.unlink(missing_ok=True)
        try:
            # validate exits 1 for "some rows are invalid", which every generated file has
            run = measure(
                validate_command(case, mapping, report), ok_codes=(0, 1), cwd=ROOT, env=case.env
            )
            case.validate = better(case.validate, run)
        except CommandFailed as failure:
            case.errors.append(
                f"validate: exit {failure.returncode}: {last_line(failure.stderr_tail)}"
            )
            break
        if not report.exists():
            # exit 1 is also what an import error gives: only the report proves that it ran
            case.errors.append("validate wrote no --report: run it by hand to see why")
            break
        expected = json.loads(case.expected.read_text(encoding="utf-8"))
        ok, note = compare_counts(json.loads(report.read_text(encoding="utf-8")), expected)
        case.counts_ok, case.counts = ok, note
        try:
            case.bare = better(case.bare, measure(bare_command(case), cwd=ROOT, env=case.env))
        except CommandFailed as failure:
            case.errors.append(
                f"bare read: exit {failure.returncode}: {last_line(failure.stderr_tail)}"
            )
            break


def slug(form: str) -> str:
    return form.lower().replace(", ", "_").replace(" ", "_").replace(".", "")


# --- S3: a moto server in this process ----------------------------------------------------------


def s3_missing(env: dict[str, str]) -> str | None:
    """Why the S3 part cannot run, or None: moto and boto3 here, backfill.remote in a child."""
    try:
        import boto3  # type: ignore[import-untyped]  # noqa: F401
        from moto.server import ThreadedMotoServer  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[test]')"
    check = [sys.executable, "-P", "-c", "import backfill.remote, botocore"]
    found = subprocess.run(check, env=env, capture_output=True, text=True, check=False)
    if found.returncode != 0:
        return f"backfill cannot read S3 yet: {last_line(found.stderr)}"
    return None


class _Ranged:
    """An object's bytes as moto's GET handler sees them: read from its buffer on demand.

    Stands in for ``FakeKey.value`` during a ranged GET: ``len()`` is the object's size, a
    slice reads only those bytes, and iterating yields the whole object in 1 MiB pieces (for
    a range moto answers with the whole object).
    """

    def __init__(self, key: Any) -> None:
        self.key = key

    def __len__(self) -> int:
        return int(self.key.size)

    def __getitem__(self, wanted: slice) -> bytes:
        start, stop, _ = wanted.indices(len(self))
        with self.key.lock:
            self.key._value_buffer.seek(start)
            return bytes(self.key._value_buffer.read(max(0, stop - start)))

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self), 1 << 20):
            yield self[start : start + (1 << 20)]


def patch_moto_ranges() -> None:
    """Make moto answer a ranged GET by reading the range, not the whole object.

    moto (5.x) builds every GET from ``FakeKey.value``, the whole object read from its
    spooled buffer, and slices the range out of it afterwards (``_handle_range_header``): a
    read of a 1 GiB object in 8 MiB ranges copies 128 GiB. Real S3 costs the range; so
    does this, by handing moto a ``_Ranged`` for ``value`` while it serves a ranged GET.
    """
    import threading

    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response

    if getattr(S3Response, "_bench_ranged", False):
        return
    serving = threading.local()
    whole: Any = FakeKey.__dict__["value"]  # the property itself

    def value(key: Any) -> Any:
        return _Ranged(key) if getattr(serving, "ranged", False) else whole.fget(key)

    original = S3Response.get_object

    def get_object(self: Any) -> Any:
        ranged = bool(self.headers.get("range")) and not self._get_int_param("partNumber")
        serving.ranged = ranged
        try:
            return original(self)
        finally:
            serving.ranged = False

    FakeKey.value = property(value, whole.fset)  # type: ignore[method-assign,assignment]
    S3Response.get_object = get_object  # type: ignore[method-assign]
    S3Response._bench_ranged = True  # type: ignore[attr-defined]


@contextmanager
def moto_server(ranged: bool = True) -> Iterator[str]:
    """A moto S3 server on a free loopback port, in a thread of this process; its URL.

    ``ranged``: ranged GETs read only their range (``patch_moto_ranges``).
    """
    from moto.server import ThreadedMotoServer

    if ranged:
        patch_moto_ranges()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_env(endpoint: str) -> dict[str, str]:
    """The children's environment for the moto server: endpoint, dummy keys, a region."""
    env = dict(os.environ)
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",  # never ask for an instance role
    )
    return env


def polars_options(endpoint: str) -> dict[str, str]:
    """The same, as Polars' object-store ``storage_options`` for the bare reads."""
    return {
        "aws_endpoint_url": endpoint,
        "aws_access_key_id": "bench",
        "aws_secret_access_key": "bench",
        "aws_region": "us-east-1",
        "aws_allow_http": "true",
    }


def upload(endpoint: str, forms: dict[str, Path], rows: int) -> list[Case]:
    """Put every form into the bucket under its local name; the S3 cases."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        region_name="us-east-1",
    )
    buckets = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    if BUCKET not in buckets:
        client.create_bucket(Bucket=BUCKET)
    env, options = s3_env(endpoint), polars_options(endpoint)
    cases = []
    for form in FORMS:
        path = forms[form]
        started = time.perf_counter()
        if path.is_dir():
            for part in sorted(path.iterdir()):
                client.upload_file(str(part), BUCKET, f"{path.name}/{part.name}")
            source, bare = f"s3://{BUCKET}/{path.name}/", f"s3://{BUCKET}/{path.name}/*.parquet"
        else:
            client.upload_file(str(path), BUCKET, path.name)
            source = bare = f"s3://{BUCKET}/{path.name}"
        size = (
            sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size
        )
        took = time.perf_counter() - started
        print(f"uploaded {source} ({size / 2**20:,.1f} MiB) in {took:.1f} s", flush=True)
        cases.append(Case(form, S3, rows, source, bare, expected_path(path), env, options))
    return cases


# --- The table and the targets --------------------------------------------------------------------


def print_table(cases: list[Case]) -> None:
    print()
    header = (
        f"| {'form':<17} | {'where':<5} | {'rows':>9} | {'validate s':>10} | {'validate MiB':>12} "
        f"| {'bare read s':>11} | {'bare MiB':>8} | {'ratio':>5} | counts |"
    )
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for case in cases:
        v, b, ratio = case.validate, case.bare, case.ratio
        cells = [
            f"{v.wall_s:10.2f}" if v else f"{'failed':>10}",
            f"{v.peak_rss_mib:12.1f}" if v else f"{'':>12}",
            f"{b.wall_s:11.2f}" if b else f"{'failed':>11}",
            f"{b.peak_rss_mib:8.1f}" if b else f"{'':>8}",
            f"{ratio:4.2f}x" if ratio is not None else f"{'n/a':>5}",
        ]
        note = "; ".join([case.counts, *case.errors]) if case.errors else case.counts
        first = f"| {case.form:<17} | {case.where:<5} | {case.rows:>9,}"
        print(f"{first} | {' | '.join(cells)} | {note} |")


def find(cases: list[Case], form: str, where: str, rows: int) -> Case | None:
    for case in cases:
        if (case.form, case.where, case.rows) == (form, where, rows):
            return case
    return None


def verdict(kept: bool) -> str:
    return "ok" if kept else "MISSED"


def check_parquet_fastest(cases: list[Case], sizes: list[int]) -> list[str]:
    lines = []
    for rows in sizes:
        timed = [
            (case.validate.wall_s, case.form)
            for case in cases
            if case.where == LOCAL and case.rows == rows and case.validate is not None
        ]
        if not timed:
            continue
        order = ", ".join(f"{form} {wall:.2f} s" for wall, form in sorted(timed))
        parquet = next((wall for wall, form in timed if form == "Parquet"), None)
        # Parquet against the forms that are not Parquet (the directory is Parquet too)
        others = [wall for wall, form in timed if form in READERS and form != "Parquet"]
        if parquet is None or not others:
            lines.append(f"  Parquet fastest local form, {size_label(rows)}: n/a ({order})")
            continue
        lines.append(
            f"  Parquet fastest local form, {size_label(rows)}: "
            f"{verdict(parquet < min(others))} ({order})"
        )
    return lines


def check_ratios(cases: list[Case]) -> list[str]:
    ratios = [(case.ratio, case.label) for case in cases if case.ratio is not None]
    if not ratios:
        return ["  validate / bare read <= 3: n/a"]
    missed = [f"{label} {ratio:.2f}x" for ratio, label in ratios if ratio > MAX_RATIO]
    worst, label = max(ratios)
    line = f"  validate / bare read <= {MAX_RATIO:g}, every case: {verdict(not missed)}"
    line += f" (worst: {label} {worst:.2f}x)"
    return [line] + ([f"    missed: {', '.join(missed)}"] if missed else [])


def check_rss(cases: list[Case], small: int, big: int) -> list[str]:
    lines = []
    for where in (LOCAL, S3):
        for form in FORMS:
            one, five = find(cases, form, where, small), find(cases, form, where, big)
            if one is None or five is None or one.validate is None or five.validate is None:
                continue
            growth = five.validate.peak_rss_mib / one.validate.peak_rss_mib
            target = where == S3 or form == "Parquet"
            figures = f"{five.validate.peak_rss_mib:.1f} / {one.validate.peak_rss_mib:.1f} MiB"
            kept = verdict(growth <= MAX_RSS_GROWTH) if target else "no target"
            lines.append(
                f"  RSS {size_label(big)}/{size_label(small)}, {form}, {where}: "
                f"{growth:.2f} ({figures}) {kept}"
            )
    return lines


def print_checks(cases: list[Case], small: int, big: int | None) -> None:
    sizes = [small] if big is None else [small, big]
    print()
    lines = check_parquet_fastest(cases, sizes) + check_ratios(cases)
    if big is not None:
        lines += check_rss(cases, small, big)
    for line in lines:
        print(line)
    good = sum(case.counts_ok for case in cases)
    print(f"  counts as planted: {good} of {len(cases)} validate reports")
    for case in cases:
        if case.validate is not None and not case.counts_ok:
            print(f"    {case.label}: {case.counts}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the small size")
    parser.add_argument("--skip-5m", action="store_true", help="skip the 5x larger size")
    parser.add_argument("--skip-s3", action="store_true", help="local files only")
    parser.add_argument("--skip-local", action="store_true", help="S3 only")
    parser.add_argument(
        "--only", default="", help="these forms only, by slug: csv,csvgz,jsonl,parquet,..."
    )
    parser.add_argument("--repeat", type=int, default=1, help="best of N rounds of each")
    parser.add_argument(
        "--moto-whole-ranges",
        action="store_true",
        help="leave moto as it is: every ranged GET reads the whole object (see patch_moto_ranges)",
    )
    args = parser.parse_args(argv)
    if args.rows < 10 or args.repeat < 1:
        parser.error("--rows must be at least 10 and --repeat positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"backfill: {backfill_source(dict(os.environ))}", flush=True)
    print(f"load average at the start: {os.getloadavg()[0]:.2f}", flush=True)
    mapping = ensure_mapping()
    small, big = args.rows, None if args.skip_5m else args.rows * BIG_FACTOR
    sizes = [small] if big is None else [small, big]
    forms = {rows: ensure_forms(rows) for rows in sizes}
    cases: list[Case] = []
    only = {name for name in args.only.split(",") if name}
    for rows in sizes:
        for case in local_cases(forms[rows], rows):
            if args.skip_local or (only and slug(case.form) not in only):
                continue
            warm_cache(Path(case.source))
            run_case(case, mapping, args.repeat)
            cases.append(case)
    missing = None if args.skip_s3 else s3_missing(dict(os.environ))
    if missing is not None:
        print(f"S3 part skipped: {missing}", flush=True)
    elif not args.skip_s3:
        with moto_server(ranged=not args.moto_whole_ranges) as endpoint:
            how = "whole-object" if args.moto_whole_ranges else "patched to read only the range"
            print(f"moto server at {endpoint}, ranged GETs {how}", flush=True)
            for rows in sizes:
                for case in upload(endpoint, forms[rows], rows):
                    if only and slug(case.form) not in only:
                        continue
                    run_case(case, mapping, args.repeat)
                    cases.append(case)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}", flush=True)
    print_table(cases)
    print_checks(cases, small, big)
    failed = any(case.errors or not case.counts_ok for case in cases)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
