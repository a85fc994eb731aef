"""Make docs/validate-report.png and docs/results-report.png from the sample data.

Runs the README's sample commands in a scratch directory, writes both HTML reports and
photographs them with headless Chromium (Debian's ``chromium``), offline:

    .venv/bin/python docs/make_screenshots.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
SAMPLE = DOCS.parent / "sample_data"
CHROMIUM = "/usr/bin/chromium"
SHOTS = {"validate-report.html": "validate-report.png", "results-report.html": "results-report.png"}


def backfill(*args: str, cwd: Path) -> None:
    """Run ``backfill ARGS...`` in ``cwd``; exit code 1 (some rows not sent) is expected."""
    done = subprocess.run([sys.executable, "-m", "backfill", *args], cwd=cwd, capture_output=True)
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr.decode())


def screenshot(page: Path, png: Path, profile: Path) -> None:
    """Photograph the top 1200x1600 pixels of a page, with no network."""
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            "--window-size=1200,1600",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
    )


def main() -> None:
    """Write both reports of the sample data and photograph them into docs/."""
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for name in ("events.csv", "mapping.toml", "users.csv"):
            shutil.copy(SAMPLE / name, work / name)
        backfill(
            "validate",
            "events.csv",
            "-m",
            "mapping.toml",
            "--report",
            "validate-report.html",
            cwd=work,
        )
        backfill(
            "send", "events.csv", "-m", "mapping.toml", "--sandbox", "--sandbox-users", "users.csv",
            "--overwrite", "--no-progress", cwd=work,
        )  # fmt: skip
        backfill("report", "events.results.jsonl", "--html", "results-report.html", cwd=work)
        for page, png in SHOTS.items():
            screenshot(work / page, DOCS / png, work / "profile")
            print(f"wrote {DOCS / png}")


if __name__ == "__main__":
    main()
