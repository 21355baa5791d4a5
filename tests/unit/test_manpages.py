"""Every executable has a man page that lints clean and documents all its options.

The executables are the console scripts the installed project declares (pyproject.toml),
so a new one cannot ship without a page.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from importlib.metadata import distribution
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {
    entry.name
    for entry in distribution("pg-ha-checks").entry_points
    if entry.group == "console_scripts"
}
# the click command behind each script's main()
COMMANDS = {
    "check_postgresql": "checks.check_postgresql:cli",
    "mem_check": "checks.mem_check:command",
    "pg-role-reporter": "checks.reporter.cli:cli",
}
# in this order; a page may have more (COMMANDS, FILES)
SECTIONS = (
    "NAME",
    "SYNOPSIS",
    "DESCRIPTION",
    "OPTIONS",
    "EXIT STATUS",
    "ENVIRONMENT",
    "EXAMPLES",
    "SEE ALSO",
)


def page(script: str) -> str:
    return (ROOT / "man" / f"{script}.1").read_text()


def command_of(script: str) -> click.Command:
    module, name = COMMANDS[script].split(":")
    return getattr(importlib.import_module(module), name)


def options_of(command: click.Command) -> set[str]:
    names = {
        opt
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden
        for opt in param.opts + param.secondary_opts
    }
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            names |= options_of(command.get_command(ctx, name))
    return names


def test_every_script_is_known_here() -> None:
    assert set(SCRIPTS) == set(COMMANDS)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_mandoc_lint_is_clean(script: str) -> None:
    if shutil.which("mandoc") is None:
        if os.environ.get("CI"):
            pytest.fail("mandoc is missing: scripts/bootstrap must install it")
        pytest.skip("mandoc not installed")
    result = subprocess.run(
        ["mandoc", "-Tlint", "-Wwarning", str(ROOT / "man" / f"{script}.1")],
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_sections_in_order(script: str) -> None:
    headers = re.findall(r'^\.SH "?([A-Z ]+?)"?$', page(script), re.MULTILINE)
    assert [h for h in headers if h in SECTIONS] == list(SECTIONS)


@pytest.mark.parametrize(
    ("script", "option"),
    [(s, o) for s in sorted(SCRIPTS) for o in sorted(options_of(command_of(s)))],
)
def test_every_option_is_documented(script: str, option: str) -> None:
    # roff writes a literal minus as "\-"
    assert re.search(rf"{re.escape(option)}\b", page(script).replace("\\-", "-"))


CHECK_POSTGRESQL = command_of("check_postgresql")


@pytest.mark.parametrize(
    "subcommand", sorted(CHECK_POSTGRESQL.list_commands(click.Context(CHECK_POSTGRESQL)))
)
def test_every_subcommand_has_its_own_section(subcommand: str) -> None:
    assert f".SS {subcommand}\n" in page("check_postgresql")


@pytest.mark.parametrize("script", ["check_postgresql", "mem_check"])
def test_consul_example_uses_args_not_script(script: str) -> None:
    examples = page(script).split(".SH EXAMPLES", 1)[1]
    assert '"args"' in examples
    assert '"script"' not in examples
