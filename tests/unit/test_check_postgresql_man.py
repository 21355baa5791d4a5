"""man/check_postgresql.1 lints clean and documents every option of every subcommand."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from checks.check_postgresql import cli

PAGE = Path(__file__).resolve().parents[2] / "man" / "check_postgresql.1"


def _page_text() -> str:
    # roff writes a literal minus as "\-"
    return PAGE.read_text().replace("\\-", "-")


def _options(command: click.Command) -> set[str]:
    names = {
        opt
        for param in command.params
        if isinstance(param, click.Option)
        for opt in param.opts + param.secondary_opts
    }
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            names |= _options(command.get_command(ctx, name))
    return names


def test_mandoc_lint_is_clean() -> None:
    if shutil.which("mandoc") is None:
        if os.environ.get("CI"):
            pytest.fail("mandoc is missing: scripts/bootstrap must install it")
        pytest.skip("mandoc not installed")
    result = subprocess.run(
        ["mandoc", "-Tlint", "-Wwarning", str(PAGE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("option", sorted(_options(cli)))
def test_every_option_is_documented(option: str) -> None:
    assert option in _page_text()


@pytest.mark.parametrize("command", sorted(cli.list_commands(click.Context(cli))))
def test_every_subcommand_is_documented(command: str) -> None:
    assert f".SS {command}\n" in PAGE.read_text()
