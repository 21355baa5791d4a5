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


def _icinga_code_and_comments() -> tuple[str, str]:
    comments = "\n".join(re.findall(r"/\*.*?\*/|//[^\n]*", ICINGA, re.S))
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", ICINGA, flags=re.S)
    return code, comments


def test_icinga_documents_only_variables_that_exist() -> None:
    # a documented variable the commands never read gives a service without its setting
    code, comments = _icinga_code_and_comments()
    used = set(re.findall(r"\$(pg_ha_[a-z0-9_]+)\$", code)) | set(
        re.findall(r"vars\.(pg_ha_[a-z0-9_]+)\s*=", code)
    )
    # the header's example host marks replicas with a variable of its own choosing
    documented = set(re.findall(r"vars\.(pg_ha_[a-z0-9_]+)", comments)) - {"pg_ha_replica"}
    assert documented <= used, documented - used


def test_icinga_never_builds_the_server_from_address_alone() -> None:
    # $address$ is empty on an IPv6-only host: -H '' would ask the monitoring server's own
    # local socket. The ITL's ipv4-or-ipv6 choice ($check_address$) covers both.
    code, _ = _icinga_code_and_comments()
    assert "$address$" not in code and "$address6$" not in code
    assert "$check_address$" in code
    assert 'import "ipv4-or-ipv6"' in code


def test_nagios_documents_only_variables_that_exist() -> None:
    comments = "\n".join(re.findall(r"^#.*$", NAGIOS, re.M))
    code = re.sub(r"^#.*$", "", NAGIOS, flags=re.M)
    used = set(re.findall(r"\$_(?:SERVICE|HOST)([A-Z0-9_]+)\$", code))
    defined = set(re.findall(r"^\s*_([A-Z0-9_]+)\s", code, re.M))
    documented = set(re.findall(r"(?<![A-Z0-9$])_([A-Z][A-Z0-9_]+)", comments))
    assert documented <= used, documented - used
    assert defined <= used, defined - used


def test_nagios_never_appends_a_port_to_hostaddress() -> None:
    # "$HOSTADDRESS$:port" is ambiguous for an IPv6 address
    assert not re.search(r"\$HOSTADDRESS\$:", NAGIOS)
