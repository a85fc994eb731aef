"""Every command explains itself with an example."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import Result

from backfill.cli import cli

Run = Callable[..., Result]
COMMANDS = sorted(cli.commands)


def listed_commands(help_text: str) -> list[str]:
    """The command names under 'Commands:' in a group's --help."""
    section = help_text.split("Commands:\n", 1)[1]
    return sorted(line.split()[0] for line in section.splitlines() if line.startswith("  "))


def test_top_level_help_lists_every_command(run: Run) -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: backfill [OPTIONS] COMMAND [ARGS]...\n")
    assert listed_commands(result.stdout) == COMMANDS
    assert "validate" in COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_an_example(run: Run, command: str, flag: str) -> None:
    result = run(command, flag)
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: backfill {command} [OPTIONS]")
    example = result.stdout.split("Example", 1)
    assert len(example) == 2, f"no example in `backfill {command} --help`"
    assert f"backfill {command} " in example[1]
