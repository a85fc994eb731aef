"""backfill as a library: the functions of ``import backfill``, called directly, not via click."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

import backfill
from backfill import Hint, Sandbox, SendOptions, SendPlan, Status
from backfill.commands import resume_command

ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "sample_data"


@pytest.fixture
def sample(workdir: Path) -> Path:
    """The sample export, mapping and users, copied to the current directory."""
    shutil.copytree(SAMPLE, workdir / "sample_data")
    return workdir / "sample_data"


def sample_plan(sample: Path, results: str = "r.jsonl", **changes: Any) -> SendPlan:
    mapping = backfill.load_mapping(str(sample / "mapping.toml"))
    plan = SendPlan(
        (str(sample / "events.csv"),),
        mapping,
        results,
        Sandbox(users=str(sample / "users.csv")),
    )
    return dataclasses.replace(plan, **changes)


def test_validate_returns_the_report_and_prints_nothing(
    sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = backfill.load_mapping(str(sample / "mapping.toml"))
    report = backfill.validate([str(sample / "events.csv")], mapping, invalid_out="bad.csv")
    assert (report.rows, report.valid, report.invalid, report.skipped) == (300, 287, 13, 0)
    assert sum(report.reason_counts().values()) == 13
    first = next(iter(report.examples.values()))[0]
    assert first.source == str(sample / "events.csv") and first.row > 0 and first.message
    assert len(Path("bad.csv").read_text().splitlines()) == 14  # the header and 13 rows
    assert capsys.readouterr() == ("", "")


def test_send_to_the_sandbox_then_resume_and_refuse(
    sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[int] = []
    outcome = backfill.send(sample_plan(sample), on_progress=lambda s: seen.append(s.rows))
    assert outcome.summary.status_counts() == {
        "sent": 189,
        "not_found": 98,
        "rejected": 0,
        "failed": 0,
        "invalid": 13,
        "skipped": 0,
    }
    assert (outcome.complete, outcome.stopped, outcome.interrupted) == (False, None, False)
    assert outcome.results == "r.jsonl" and outcome.existing == "refuse"
    assert seen and seen[-1] == 300
    assert len(Path("r.jsonl").read_text().splitlines()) == 300
    assert capsys.readouterr() == ("", "")

    with pytest.raises(backfill.ResultsFileError) as caught:
        backfill.send(sample_plan(sample))
    assert (caught.value.file, caught.value.hint) == ("r.jsonl", Hint.RESUME_OR_OVERWRITE)
    assert "--" not in str(caught.value)  # the library names no command-line flag

    again = backfill.send(sample_plan(sample, existing="resume"))
    assert again.summary.rows == 300 and again.summary.requests == 0
    assert backfill.summarise("r.jsonl").status_counts() == outcome.summary.status_counts()


def test_retry_sends_the_not_found_rows_again_and_rebuild_needs_a_mapping(sample: Path) -> None:
    backfill.send(sample_plan(sample))
    plan = backfill.RetryPlan("r.jsonl", "retry.jsonl", Sandbox(users=str(sample / "users.csv")))
    outcome = backfill.retry(plan)
    assert outcome.summary.rows == 98 and outcome.summary.by_status[Status.NOT_FOUND] == 98
    with pytest.raises(backfill.UsageError) as caught:
        backfill.retry(
            backfill.RetryPlan("r.jsonl", "again.jsonl", Sandbox(), statuses=(Status.INVALID,))
        )
    assert caught.value.hint == Hint.REBUILD
    mapping = backfill.load_mapping(str(sample / "mapping.toml"))
    rebuilt = backfill.retry(
        backfill.RetryPlan(
            "r.jsonl",
            "rebuilt.jsonl",
            Sandbox(),  # every identifier known: the rows go through
            statuses=(Status.NOT_FOUND,),
            rebuild=backfill.Rebuild(mapping, (str(sample / "events.csv"),)),
        )
    )
    assert rebuilt.complete and rebuilt.summary.by_status[Status.SENT] == 98


def test_signal_handlers_only_when_asked(sample: Path) -> None:
    handlers: list[object] = []

    def look(summary: backfill.ResultsSummary) -> None:
        handlers.append(signal.getsignal(signal.SIGTERM))

    backfill.send(sample_plan(sample, "a.jsonl"), on_progress=look)
    assert set(map(id, handlers)) == {id(signal.SIG_DFL)}
    handlers.clear()
    backfill.send(sample_plan(sample, "b.jsonl"), on_progress=look, handle_signals=True)
    assert signal.SIG_DFL not in handlers
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # put back after the run


def test_plans_are_checked_when_made(sample: Path) -> None:
    mapping = backfill.load_mapping(str(sample / "mapping.toml"))
    with pytest.raises(backfill.UsageError, match="existing must be one of"):
        SendPlan(("a.csv",), mapping, "r.jsonl", Sandbox(), existing=cast(Any, "append"))
    with pytest.raises(backfill.UsageError, match="stdin cannot be read again") as caught:
        SendPlan(("-",), mapping, "r.jsonl", Sandbox(), existing="resume")
    assert caught.value.hint == Hint.RESUME_NEEDS_FILES
    with pytest.raises(backfill.UsageError, match="no input given"):
        SendPlan((), mapping, "r.jsonl", Sandbox())
    with pytest.raises(backfill.UsageError, match="concurrency"):
        SendOptions(concurrency=0)
    assert SendOptions().adaptive and SendOptions().workers == 1024
    assert SendOptions(concurrency=8).workers == 8


def test_a_target_is_checked_and_its_key_never_shows() -> None:
    target = backfill.check_target("https://api.example.com", "pr_1", "rk_secret_123")
    assert "rk_secret_123" not in repr(target)
    with pytest.raises(backfill.CredentialsError) as caught:
        backfill.check_target("https://api.example.com", "pr_1", None)
    assert caught.value.hint == Hint.API_KEY and "--" not in str(caught.value)
    with pytest.raises(backfill.CredentialsError, match="plain http"):
        backfill.check_target("http://api.example.com", "pr_1", "rk_x")


def test_errors_carry_the_file_row_and_field(workdir: Path) -> None:
    Path("dup.csv").write_text("a,b,a\n1,2,3\n")
    Path("m.toml").write_text("[fields]\n")
    mapping_error = pytest.raises(backfill.MappingError)
    with mapping_error as caught_mapping:
        backfill.load_mapping("m.toml")
    assert caught_mapping.value.file == "m.toml"
    sample_mapping = backfill.load_mapping(str(SAMPLE / "mapping.toml"))
    with pytest.raises(backfill.InputError) as caught:
        backfill.validate(["dup.csv"], sample_mapping)
    assert (caught.value.file, caught.value.field) == ("dup.csv", "a")
    with pytest.raises(backfill.InputError) as stdin:
        backfill.validate(["-"], sample_mapping)
    assert stdin.value.hint == Hint.FORMAT_FOR_STDIN


def test_guess_mapping_returns_the_text_and_writes_only_when_asked(sample: Path) -> None:
    guessed = backfill.guess_mapping(str(sample / "events.csv"))
    assert "[identifier]" in guessed.text and guessed.guesses
    assert not Path("mapping.toml").exists()
    written = backfill.guess_mapping(str(sample / "events.csv"), "m.toml")
    assert Path("m.toml").read_text(encoding="utf-8") == written.text
    with pytest.raises(backfill.UsageError) as caught:
        backfill.guess_mapping(str(sample / "events.csv"), "m.toml")
    assert caught.value.hint == Hint.REPLACE
    backfill.guess_mapping(str(sample / "events.csv"), "m.toml", replace=True)
    report = backfill.validate([str(sample / "events.csv")], backfill.load_mapping("m.toml"))
    assert report.rows == 300


def test_import_backfill_loads_neither_aiohttp_nor_click() -> None:
    found = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import backfill"],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = {line.rsplit("|", 1)[-1].strip() for line in found.stderr.splitlines()}
    assert "backfill" in modules
    assert not {m for m in modules if m.split(".")[0] in ("aiohttp", "click")}


def test_backfill_report_does_not_import_aiohttp(sample: Path) -> None:
    backfill.send(sample_plan(sample))
    script = (
        "import sys\n"
        "from backfill.cli import cli\n"
        "try:\n"
        "    cli(['report', 'r.jsonl', '--json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('aiohttp' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "False", done.stderr
    assert json.loads("\n".join(done.stdout.splitlines()[:-1]))["rows"] == 300


def test_the_readme_example_runs_as_written(sample: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Using backfill from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    said = re.search(r"It prints `(.*?)`, then `(.*?)`", section, re.S)
    assert said is not None
    done = subprocess.run(
        [sys.executable, "-c", code[1]], capture_output=True, text=True, cwd=sample.parent
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [said[1], " ".join(said[2].split())]
    assert (sample.parent / "events.results.jsonl").exists()


def test_the_resume_command_gives_every_setting_a_resume_checks(sample: Path, run: Any) -> None:
    rows = list(csv.reader((sample / "events.csv").read_text(encoding="utf-8").splitlines()))
    with open("semi.csv", "w", encoding="cp1252", newline="") as out:
        csv.writer(out, delimiter=";").writerows(rows)
    mapping_path = str(sample / "mapping.toml")
    users = str(sample / "users.csv")
    first = run(
        "send", "semi.csv", "-m", mapping_path, "--delimiter", ";", "--encoding", "cp1252",
        "--sandbox", "--sandbox-users", users, "--project-id", "pr_x", "-o", "r.jsonl",
        "--no-progress",
    )  # fmt: skip
    assert first.exit_code == 1, first.output  # the sample's planted problems
    mapping = backfill.load_mapping(mapping_path)
    dialect = dataclasses.replace(mapping.input, delimiter=";", encoding="cp1252")
    plan = SendPlan(
        ("semi.csv",),
        dataclasses.replace(mapping, input=dialect),
        "r.jsonl",
        Sandbox(users=users, project_id="pr_x"),
        existing="resume",
    )
    words = shlex.split(resume_command(plan))
    assert words[:2] == ["backfill", "send"] and words[-1] == "--resume"
    resumed = run(*words[1:], "--no-progress", "--json")
    assert resumed.exit_code == 1, resumed.output  # accepted: nothing left to send
    assert json.loads(resumed.stdout)["requests"] == 0


def test_every_phrase_the_cli_puts_a_flag_in_is_still_the_cores() -> None:
    # The CLI names its flags by replacing the core's words: reworded core text would
    # silently lose the flag, so each phrase must still be found in the core's source.
    from backfill.cli import HINT_WORDS, STOP_WORDS

    core = " ".join(
        " ".join(path.read_text(encoding="utf-8").split())
        for path in (ROOT / "backfill").glob("*.py")
        if path.name != "cli.py"
    )
    phrases = [c for pairs in HINT_WORDS.values() for c, _ in pairs] + [c for c, _ in STOP_WORDS]
    assert [p for p in phrases if p.strip() not in core.replace('" "', "")] == []
    assert set(HINT_WORDS) | {Hint.API_KEY, Hint.PROJECT_ID} == set(Hint)
