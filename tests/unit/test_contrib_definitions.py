"""The Nagios and Icinga 2 definitions keep up with the subcommands (the daemons' own
tests in tests/integration prove that they load and run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from checks.check_postgresql import SUBCOMMANDS

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
NAGIOS = (CONTRIB / "nagios" / "pg-ha-checks.cfg").read_text()
ICINGA = (CONTRIB / "icinga2" / "pg-ha-checks.conf").read_text()
EXPECTED = sorted([*(f"pg_ha_{name.replace('-', '_')}" for name in SUBCOMMANDS), "pg_ha_mem"])


@pytest.mark.parametrize("command", EXPECTED)
def test_nagios_defines_every_check(command: str) -> None:
    assert re.search(rf"^\s*command_name\s+{command}\s*$", NAGIOS, re.MULTILINE)


@pytest.mark.parametrize("command", EXPECTED)
def test_icinga_defines_every_check(command: str) -> None:
    assert f'object CheckCommand "{command}"' in ICINGA


def test_no_password_in_definitions() -> None:
    for text in (NAGIOS, ICINGA):
        assert not re.search(r"--password|PGPASSWORD|CONSUL_HTTP_TOKEN\b", text)
