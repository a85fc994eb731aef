"""Counting a run's rows in the background: exact counts of local inputs of every kind,
estimates of objects in a bucket, and nothing but an unknown total when an input cannot be read."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import polars as pl
import pytest

from backfill import counting
from backfill.counting import Count, RowCount, count_records, count_rows
from backfill.inputs import Dialect
from tests.remote_servers import S3, moto_endpoint_fixture, s3_fixture  # noqa: F401


def counted(*arguments: str, fmt: str | None = None, **options: object) -> Count:
    """The count of a run's inputs once counting is over."""
    count = count_rows(arguments, fmt, **options)  # type: ignore[arg-type]
    assert count.finished.wait(20)
    return count.current()


def csv_text(rows: int, newline: str = "\n") -> str:
    """A CSV export with a header, quoted cells and ``rows`` rows."""
    lines = ["event,email,props"]
    lines += [f'e{i},u{i}@example.com,"{{""n"": {i}, ""tags"": ""a,b""}}"' for i in range(rows)]
    return newline.join(lines) + newline


def jsonl_text(rows: int) -> str:
    """JSON Lines of ``rows`` events."""
    return "".join(json.dumps({"event": f"e{i}", "n": i}) + "\n" for i in range(rows))


@pytest.fixture
def small_head(monkeypatch: pytest.MonkeyPatch) -> None:
    """Estimates from the first 4 KiB and counts 1 KiB at a time, so small files take both paths."""
    monkeypatch.setattr(counting, "HEAD_BYTES", 4096)
    monkeypatch.setattr(counting, "CHUNK_BYTES", 1024)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_csv_rows_are_its_lines_less_the_header(tmp_path: Path, newline: str) -> None:
    (tmp_path / "e.csv").write_text(csv_text(250, newline), newline="")
    assert counted(str(tmp_path / "e.csv")) == Count(250, True)


def test_blank_lines_and_a_last_line_without_newline_are_counted_as_the_reader_reads_them(
    tmp_path: Path,
) -> None:
    (tmp_path / "e.csv").write_text("a,b\n\n1,2\n\n\n3,4\r\n\r\n5,6")
    (tmp_path / "e.jsonl").write_text('\n{"a": 1}\n\n{"a": 2}\n')
    assert counted(str(tmp_path / "e.csv")) == Count(3, True)
    assert counted(str(tmp_path / "e.jsonl")) == Count(2, True)


def test_large_inputs_are_estimated_then_counted(tmp_path: Path, small_head: None) -> None:
    (tmp_path / "e.csv").write_text(csv_text(3000))
    (tmp_path / "e.tsv").write_text("".join(f"e{i}\tu{i}\n" for i in range(3001)))
    (tmp_path / "e.jsonl").write_text(jsonl_text(3000))
    (tmp_path / "e.csv.gz").write_bytes(gzip.compress(csv_text(3000).encode()))
    for name in ("e.csv", "e.tsv", "e.jsonl", "e.csv.gz"):
        assert counted(str(tmp_path / name)) == Count(3000, True), name


def test_an_estimate_comes_first_and_is_close(tmp_path: Path, small_head: None) -> None:
    path = tmp_path / "e.csv.gz"
    path.write_bytes(gzip.compress(csv_text(3000).encode()))
    part = counting._Part(counting.locate(str(path))[0])
    counting._measure(part, None, "utf-8")
    assert part.rows is not None and abs(part.rows - 3000) < 300
    assert (part.exact, part.recount, part.gzipped) == (False, True, True)


def test_a_quoted_newline_leaves_an_estimate(tmp_path: Path, small_head: None) -> None:
    text = csv_text(100) + 'e,u@example.com,"two\nlines"\n' + csv_text(100).split("\n", 1)[1]
    (tmp_path / "e.csv").write_text(text)
    count = counted(str(tmp_path / "e.csv"))
    assert count.total == 202 and not count.exact  # 201 rows: one spans two lines


def test_json_array_small_exact_large_estimated(tmp_path: Path, small_head: None) -> None:
    (tmp_path / "small.json").write_text(json.dumps([{"e": "[{x}]", "n": 1}, {"e": "\\"}]))
    records = [{"event": f"e{i}", "props": {"tags": ["a", "b"]}} for i in range(2000)]
    (tmp_path / "big.json").write_text(json.dumps(records, indent=2))
    assert counted(str(tmp_path / "small.json")) == Count(2, True)
    big = counted(str(tmp_path / "big.json"))
    assert big.total is not None and abs(big.total - 2000) < 200 and not big.exact


def test_zip_members_and_a_directory(tmp_path: Path, small_head: None) -> None:
    with zipfile.ZipFile(tmp_path / "export.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.csv", csv_text(700))
        archive.writestr("b/c.jsonl.gz", gzip.compress(jsonl_text(500).encode()))
        archive.writestr("_SUCCESS", "")
    folder = tmp_path / "parts"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.csv").write_text(csv_text(30))
    (folder / "sub" / "two.jsonl").write_text(jsonl_text(2000))
    (folder / ".hidden.csv").write_text(csv_text(99))
    assert counted(str(tmp_path / "export.zip")) == Count(1200, True)
    assert counted(str(folder), str(tmp_path / "export.zip")) == Count(3230, True)


def test_parquet_from_its_metadata_in_place_or_in_an_archive(tmp_path: Path) -> None:
    frame = pl.DataFrame({"event": [f"e{i}" for i in range(1234)]})
    frame.write_parquet(tmp_path / "e.parquet")
    buffer = io.BytesIO()
    frame.head(10).write_parquet(buffer)
    with zipfile.ZipFile(tmp_path / "p.zip", "w") as archive:
        archive.writestr("x.parquet", buffer.getvalue())
    assert counted(str(tmp_path / "e.parquet")) == Count(1234, True)
    assert counted(str(tmp_path / "p.zip")) == Count(10, True)


@pytest.mark.parametrize("encoding", ["cp1252", "utf-8-sig"])
def test_encodings_that_write_newlines_as_ascii_are_counted(
    tmp_path: Path, small_head: None, encoding: str
) -> None:
    (tmp_path / "e.csv").write_bytes(csv_text(1000).replace("e1", "é").encode(encoding))
    assert counted(str(tmp_path / "e.csv"), dialect=Dialect(encoding=encoding)) == Count(1000, True)


def test_utf16_is_estimated(tmp_path: Path, small_head: None) -> None:
    (tmp_path / "e.csv").write_bytes(csv_text(1000).encode("utf-16"))
    count = counted(str(tmp_path / "e.csv"), dialect=Dialect(encoding="utf-16"))
    assert count.total is not None and abs(count.total - 1000) < 100 and not count.exact


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(["missing.csv"], id="no such file"),
        pytest.param(["-"], id="stdin"),
        pytest.param(["e.csv", "bad.csv.gz"], id="corrupt gzip"),
        pytest.param(["e.csv", "bad.parquet"], id="not parquet"),
        pytest.param(["blob"], id="unknown format"),
    ],
)
def test_what_cannot_be_read_leaves_the_total_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arguments: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("e.csv").write_text(csv_text(5))
    Path("bad.csv.gz").write_bytes(gzip.compress(csv_text(50).encode())[:40])
    Path("bad.parquet").write_bytes(b"PAR1 not really")
    Path("blob").write_bytes(b"\x00\x01binary")
    assert counted(*arguments) == Count(None, False)


def test_limit_caps_the_total(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text(csv_text(10))
    count = count_rows([str(tmp_path / "e.csv")], limit=4)
    assert count.finished.wait(10)
    assert (count.total, count.exact) == (4, True)
    assert count.current(done_before=3) == Count(7, True)  # a resumed run's own 4 more
    assert count.current(done_before=8) == Count(10, True)


def test_a_stopped_count_stays_unknown() -> None:
    count = RowCount()
    count.stop()
    assert count.current() == Count(None, False)


def test_lines_split_anywhere_count_the_same() -> None:
    text = b'h\r\n\r\n"a\n""b""",1\n\nx,"y"\n""\nlast'
    whole = counting._Lines(quotes=True)
    whole.feed(text)
    for size in (1, 2, 3, 5):
        pieces = counting._Lines(quotes=True)
        for start in range(0, len(text), size):
            pieces.feed(text[start : start + size])
        assert (pieces.records(True), pieces.exact) == (whole.records(True), whole.exact)
    assert (whole.records(True), whole.exact) == (5, False)


def test_a_retry_counts_the_records_it_sends_again(tmp_path: Path) -> None:
    statuses = ["sent", "failed", "not_found", "failed", "invalid"]
    records = [
        {"source": "e.csv", "row": i + 1, "status": s, "http_status": None, "error": None}
        | {"message": None, "attempts": 1, "entry_id": None, "payload": None}
        for i, s in enumerate(statuses)
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    count = count_records(str(path), ["failed", "not_found"], limit=None)
    assert count.finished.wait(10)
    assert count.current() == Count(3, True)


def test_objects_in_a_bucket_are_estimated_from_their_first_block(s3: S3, small_head: None) -> None:
    for part in range(6):
        s3.put(f"logs/p{part}.csv", csv_text(2000).encode())
    s3.put("logs/p9.jsonl.gz", gzip.compress(jsonl_text(2000).encode()))
    count = counted("s3://exports/logs/")
    assert count.total is not None and abs(count.total - 14000) < 1400
    assert not count.exact


def test_parquet_in_a_bucket_is_exact(s3: S3) -> None:
    buffer = io.BytesIO()
    pl.DataFrame({"event": ["a", "b", "c"]}).write_parquet(buffer)
    url = s3.put("p/e.parquet", buffer.getvalue())
    s3.put("p/f.csv", csv_text(3).encode())  # small enough to be counted whole
    assert counted(url) == Count(3, True)
    assert counted("s3://exports/p/") == Count(6, True)
