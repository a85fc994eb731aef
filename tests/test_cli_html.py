"""``validate --report PATH.html`` and ``report --html``: the pages as a browser shows them.

The pages are loaded in headless Chromium (Debian's ``chromium``; CI installs it) with no
network: each must load without a console message, and its charts must carry the counts of
the report data that the JSON output holds. Masking, file modes and terminal colour too.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import Result

from backfill import cli

Run = Callable[..., Result]
Write = Callable[[str, str | bytes], str]

SAMPLE = Path(__file__).parent.parent / "sample_data"
CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is not installed (apt-get install chromium); CI installs it",
)
SCRIPT = "<script>alert(1)</script>"


class Dom(HTMLParser):
    """The elements (tag, attributes) and text of a DOM dump."""

    def __init__(self, dump: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.texts: list[str] = []
        self.feed(dump)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    @property
    def text(self) -> str:
        """All the text, joined."""
        return " ".join(self.texts)

    def counts(self, tag: str, key: str, **wanted: str) -> dict[str, int]:
        """data-<key> -> data-count of the ``tag`` elements that have data-<key>."""
        return {
            a[f"data-{key}"]: int(a["data-count"])
            for t, a in self.tags
            if t == tag and f"data-{key}" in a and all(a.get(k) == v for k, v in wanted.items())
        }


def chromium(page: Path, profile: Path, *action: str) -> subprocess.CompletedProcess[str]:
    """Open a page in headless Chromium with no network, doing ``action``; stderr has the log."""
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: no network
        "--proxy-server=http://127.0.0.1:9",  # and nothing gets out through a proxy either
        "--enable-logging=stderr",
        "--v=0",
        *action,
        page.resolve().as_uri(),
    ]
    env = {**os.environ, "HOME": str(profile)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=100, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def load(page: Path, tmp_path: Path) -> Dom:
    """The DOM of a page after it loaded, checked to have logged nothing to the console."""
    done = chromium(page, tmp_path / "profile", "--dump-dom")
    console = [
        line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line
    ]
    assert console == []
    assert "</html>" in done.stdout
    return Dom(done.stdout)


def sample(workdir: Path) -> None:
    """The sample export, mapping and users in the working directory."""
    for name in ("events.csv", "mapping.toml", "users.csv"):
        shutil.copy(SAMPLE / name, workdir / name)


def send_sample(run: Run) -> None:
    """The README's sample run, to r.jsonl."""
    result = run(
        "send", "events.csv", "-m", "mapping.toml", "--sandbox", "--sandbox-users", "users.csv",
        "--overwrite", "-o", "r.jsonl", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 1, result.output


def mode(path: str) -> int:
    """A file's permission bits."""
    return stat.S_IMODE(os.stat(path).st_mode)


# --- In the browser -----------------------------------------------------------------------


@needs_chromium
def test_validation_page_of_the_sample_in_chromium(workdir: Path, run: Run) -> None:
    sample(workdir)
    result = run("validate", "events.csv", "-m", "mapping.toml", "--report", "v.html", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert mode("v.html") == 0o600

    dom = load(workdir / "v.html", workdir)

    assert not [t for t, _ in dom.tags if t == "script"]
    days = dom.counts("g", "bucket")
    assert {d: c for d, c in days.items() if c} == data["valid_per_day"]
    assert sum(days.values()) == data["valid"] == 287
    assert dom.counts("g", "reason") == data["invalid_by_reason"]
    for reason, examples in data["examples"].items():
        for example, message in zip(examples, data["example_messages"][reason], strict=True):
            assert f"{example['source']}:{example['row']}" in dom.text
            assert message in dom.text
    for name in [*data["event_names"], *data["embeddable_ids"]]:
        assert name in dom.text
    assert data["first_timestamp"] in dom.text


@needs_chromium
def test_results_page_of_the_sample_run_in_chromium(workdir: Path, run: Run) -> None:
    sample(workdir)
    send_sample(run)
    result = run("report", "r.jsonl", "--html", "r.html", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert mode("r.html") == 0o600

    dom = load(workdir / "r.html", workdir)

    assert not [t for t, _ in dom.tags if t == "script"]
    assert dom.counts("g", "status") == data["by_status"]
    assert dom.counts("g", "error") == data["by_error"]
    days = dom.counts("g", "bucket")
    with_payload = data["rows"] - data["by_status"]["invalid"]
    assert sum(days.values()) == with_payload == 287
    per_day = {d: sum(c.values()) for d, c in data["records_per_day"].items()}
    assert {d: c for d, c in days.items() if c} == per_day
    for status in ("sent", "not_found"):
        rects = [a for t, a in dom.tags if t == "rect" and a.get("data-series") == status]
        assert sum(int(r["data-count"]) for r in rects) == data["by_status"][status]
    by_id = {e["name"]: e for e in data["not_found_by_embeddable_id"]}
    assert by_id["flow_c3d4"]["not_found"] == by_id["flow_c3d4"]["answered"] == 45
    assert "wrong embeddable id" in by_id["flow_c3d4"]["likely_cause"]
    assert data["diagnosis"][0] in dom.text
    assert "backfill retry r.jsonl -o r.retry.jsonl" in dom.text
    assert "a wrong or double-escaped value" in dom.text
    assert "events.csv:25" in dom.text  # an example, with file:row
    assert "@" in dom.text and "***@" in dom.text  # identifiers masked
    emails = (SAMPLE / "users.csv").read_text().split()
    assert not any(line.split(",")[-1] in dom.text for line in emails[1:])


@needs_chromium
def test_markup_in_an_export_is_shown_as_text(workdir: Path, write: Write, run: Run) -> None:
    """An event name, an embeddable id and a file name holding a script inject nothing."""
    (workdir / "<script>alert(1)<").mkdir()
    source = write(
        f"{SCRIPT}.csv",
        "flow_id,occurred_at,event,email\n"
        f"{SCRIPT},2024-03-01T12:00:00Z,signed_up,a@example.com\n"
        f"{SCRIPT},2024-03-02T12:00:00Z,signed_up,b@example.com\n"
        f"flow_1,2024-03-01T12:00:00Z,{SCRIPT},c@example.com\n"
        f"flow_1,2024-03-03T12:00:00Z,signed_up,{SCRIPT}@example.com\n",
    )
    assert source == f"{SCRIPT}.csv"
    write(
        "mapping.toml",
        '[fields]\nembeddable_id = "flow_id"\ntimestamp = "occurred_at"\n'
        'custom_event_name = { column = "event", snake_case = "convert" }\n'
        '[identifier]\nkey = { value = "email" }\nvalue = { column = "email" }\n',
    )
    write("users.csv", "embeddable_id,key,value\nflow_1,email,c@example.com\n")
    validated = run("validate", source, "-m", "mapping.toml", "--report", "v.html")
    assert validated.exit_code == 1
    sent = run(
        "send", source, "-m", "mapping.toml", "--sandbox", "--sandbox-users", "users.csv",
        "-o", "r.jsonl", "--no-progress",
    )  # fmt: skip
    assert sent.exit_code == 1, sent.output
    reported = run("report", "r.jsonl", "--html", "r.html", "--show-identifiers")
    assert reported.exit_code == 0

    for page in ("v.html", "r.html"):
        dom = load(workdir / page, workdir)
        assert not [t for t, _ in dom.tags if t == "script"], page
        assert f"{SCRIPT}.csv" in dom.text, page  # the file name, as text
        assert SCRIPT in dom.text
        raw = (workdir / page).read_text()
        assert "<script" not in raw.lower()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    v = Dom((workdir / "v.html").read_text())
    assert f"column 'event': '{SCRIPT}' cannot be made snake_case" in v.text
    r = Dom((workdir / "r.html").read_text())
    # Nothing was sent, so the diagnosis blames no id but lists the ones to check.
    assert f"check embeddable ids '{SCRIPT}', 'flow_1'" in r.text
    assert f'email = "{SCRIPT}@example.com"' in r.text  # --show-identifiers, still text


@needs_chromium
def test_screenshots_render(workdir: Path, run: Run) -> None:
    sample(workdir)
    assert run("validate", "events.csv", "-m", "mapping.toml", "--report", "v.html").exit_code == 1
    for page in ("v.html",):
        shot = workdir / f"{page}.png"
        chromium(
            workdir / page,
            workdir / "profile",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            "--hide-scrollbars",
        )
        png = shot.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert (width, height) == (1200, 1600)
        assert len(png) > 30_000  # a page with charts, not a blank one


# --- Files, masking and the terminal ------------------------------------------------------


def test_report_json_stays_json_and_text_output_is_unchanged(workdir: Path, run: Run) -> None:
    sample(workdir)
    plain = run("validate", "events.csv", "-m", "mapping.toml")
    as_json = run("validate", "events.csv", "-m", "mapping.toml", "--report", "v.json")
    as_html = run("validate", "events.csv", "-m", "mapping.toml", "--report", "V.HTML")
    assert plain.stdout == as_json.stdout == as_html.stdout
    assert json.loads(Path("v.json").read_text())["rows"] == 300
    assert Path("V.HTML").read_text().startswith("<!DOCTYPE html>")
    assert mode("v.json") == mode("V.HTML") == 0o600


def test_report_html_is_refused_over_the_results_file(workdir: Path, run: Run) -> None:
    sample(workdir)
    send_sample(run)
    result = run("report", "r.jsonl", "--html", "r.jsonl")
    assert result.exit_code == 2
    assert result.stderr == "error: r.jsonl: is one of the inputs; writing it would destroy it\n"


def bad_identifiers(write: Write) -> None:
    """An export whose identifier values are not numbers: bad_identifier_value, naming them."""
    write(
        "m.toml",
        '[fields]\nembeddable_id = "flow_id"\ntimestamp = "occurred_at"\n'
        'custom_event_name = "event"\n'
        '[identifier]\nkey = { value = "customer_id" }\n'
        'value = { column = "id", type = "number" }\n',
    )
    write(
        "ids.csv",
        "flow_id,occurred_at,event,id\n"
        "flow_1,2024-03-01T12:00:00Z,signed_up,ada@example.com\n"
        "flow_1,2024-03-01T12:00:00Z,signed_up,cust-42\n",
    )


@pytest.mark.parametrize(
    ("options", "shown"),
    [
        pytest.param(
            (),
            [
                "column 'id': 'a***@example.com' is not valid number",
                "column 'id': 'c***' is not valid number",
            ],
            id="masked",
        ),
        pytest.param(
            ("--show-identifiers",),
            [
                "column 'id': 'ada@example.com' is not valid number",
                "column 'id': 'cust-42' is not valid number",
            ],
            id="shown",
        ),
    ],
)
def test_identifier_values_in_reports(
    workdir: Path, write: Write, run: Run, options: tuple[str, ...], shown: list[str]
) -> None:
    bad_identifiers(write)
    args = ("validate", "ids.csv", "-m", "m.toml", *options)
    data = json.loads(run(*args, "--json", "--report", "r.json").stdout)
    assert data["example_messages"] == {"bad_identifier_value": shown}
    assert json.loads(Path("r.json").read_text())["example_messages"] == data["example_messages"]
    run(*args, "--report", "r.html")
    page = Path("r.html").read_text()
    hidden = {"ada@example.com", "cust-42"} - {m.split("'")[3] for m in shown}
    assert all(m.replace("'", "&#x27;") in page for m in shown)
    assert not [value for value in hidden if value in page]


def test_results_files_keep_full_payloads_but_reports_mask(
    workdir: Path, write: Write, run: Run
) -> None:
    write("mapping.toml", '[fields]\nembeddable_id = "flow_id"\ntimestamp = "at"\n'
          'custom_event_name = "event"\n[identifier]\nkey = { value = "email" }\n'
          'value = { column = "email" }\n')  # fmt: skip
    write(
        "e.csv", "flow_id,at,event,email\nflow_1,2024-03-01T12:00:00Z,signed_up,ada@example.com\n"
    )
    write("users.csv", "embeddable_id,key,value\nflow_1,email,someone@example.com\n")
    result = run(
        "send", "e.csv", "-m", "mapping.toml", "--sandbox", "--sandbox-users", "users.csv",
        "-o", "r.jsonl", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "ada@example.com" in Path("r.jsonl").read_text()
    for options in ((), ("--json",), ("--html", "r.html")):
        assert "ada@example.com" not in run("report", "r.jsonl", *options).stdout
    assert "ada@example.com" not in Path("r.html").read_text()
    assert "a***@example.com" in Path("r.html").read_text()
    shown = json.loads(run("report", "r.jsonl", "--json", "--show-identifiers").stdout)
    assert shown["examples"]["ENTRY_NOT_FOUND"][0]["value"] == '"ada@example.com"'


class Terminal(io.StringIO):
    """A stdout that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("tty", "no_color", "coloured"),
    [
        pytest.param(True, None, True, id="terminal"),
        pytest.param(True, "1", False, id="NO_COLOR"),
        pytest.param(False, None, False, id="pipe"),
    ],
)
def test_colour_only_on_a_terminal_without_no_color(
    monkeypatch: pytest.MonkeyPatch, tty: bool, no_color: str | None, coloured: bool
) -> None:
    monkeypatch.setattr("sys.stdout", Terminal() if tty else io.StringIO())
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    style = cli._terminal_style()
    assert ("\x1b[" in style("13", "bad")) is coloured
    assert style("x", "heading") == ("\x1b[1mx\x1b[0m" if coloured else "x")


def test_coloured_tables_stay_aligned() -> None:
    from collections import Counter

    from backfill.report import ValidationReport
    from backfill.text import validation_text as render_text

    data = ValidationReport(
        sources=["a.csv"],
        rows=1_234_567,
        valid=1_234_000,
        invalid_by_reason=Counter({"bad_timestamp": 500, "bad_metric": 67}),
    )

    def bracket(text: str, role: str) -> str:
        return f"[{text}]"

    plain, styled = render_text(data).splitlines(), render_text(data, bracket).splitlines()
    assert plain[:3] == [
        "Rows read:  1,234,567  (a.csv)",
        "Valid:      1,234,000",
        "Invalid:    567",
    ]
    for a, b in zip(plain, styled, strict=True):
        assert a == b.replace("[", "").replace("]", "")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["validate", "events.csv", "-m", "mapping.toml", "--report", "full.json"]),
        pytest.param(["validate", "events.csv", "-m", "mapping.toml", "--report", "full.html"]),
        pytest.param(["validate", "events.csv", "-m", "mapping.toml", "--invalid-out", "full.csv"]),
        pytest.param(
            ["validate", "events.csv", "-m", "mapping.toml", "--invalid-out", "full.jsonl"]
        ),
        pytest.param(["report", "r.jsonl", "--html", "full.html"]),
    ],
    ids=["report-json", "report-html", "invalid-csv", "invalid-jsonl", "results-page"],
)
def test_a_full_disk_is_one_line_naming_the_file(workdir: Path, run: Run, args: list[str]) -> None:
    sample(workdir)
    if args[0] == "report":
        send_sample(run)
    Path(args[-1]).symlink_to("/dev/full")  # every write fails: No space left on device
    result = run(*args)
    assert result.exit_code == 2
    assert result.stderr == f"error: {args[-1]}: cannot write: No space left on device\n"
