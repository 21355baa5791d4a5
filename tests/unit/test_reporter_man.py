"""man/pg-role-reporter.1 lints clean and documents every option; the systemd unit is sane."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from checks.role_reporter import cli

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "man" / "pg-role-reporter.1"
UNIT = ROOT / "contrib" / "systemd" / "pg-role-reporter.service"
SECTIONS = (
    "NAME",
    "SYNOPSIS",
    "DESCRIPTION",
    "OPTIONS",
    "EXIT STATUS",
    "ENVIRONMENT",
    "FILES",
    "EXAMPLES",
    "SEE ALSO",
)


def _page_text() -> str:
    return PAGE.read_text().replace("\\-", "-")


def test_mandoc_lint_is_clean() -> None:
    if shutil.which("mandoc") is None:
        if os.environ.get("CI"):
            pytest.fail("mandoc is missing: scripts/bootstrap must install it")
        pytest.skip("mandoc not installed")
    result = subprocess.run(
        ["mandoc", "-Tlint", "-Wwarning", str(PAGE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("section", SECTIONS)
def test_every_section_is_there(section: str) -> None:
    assert f".SH {section}\n" in PAGE.read_text() or f'.SH "{section}"\n' in PAGE.read_text()


@pytest.mark.parametrize(
    "option",
    sorted(
        opt
        for param in cli.params
        if isinstance(param, click.Option)
        for opt in param.opts + param.secondary_opts
    ),
)
def test_every_option_is_documented(option: str) -> None:
    assert option in _page_text()


def test_systemd_unit_runs_unprivileged_with_a_token_file_and_restarts() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["User"] not in ("", "root")
    assert service["Restart"] == "always" and service["RestartSec"]
    assert "pg-role-reporter" in service["ExecStart"]
    assert "token" not in service["ExecStart"].lower()
    assert "CONSUL_HTTP_TOKEN_FILE=/etc/consul.d/pg-role-reporter.token" in UNIT.read_text()
    assert "NoNewPrivileges=yes" in UNIT.read_text()
