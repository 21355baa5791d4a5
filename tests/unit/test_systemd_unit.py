"""contrib/systemd units: unprivileged, secrets as credentials, notify + watchdog, restarts.

`pg-role-reporter.service` serves one PostgreSQL per host; `pg-role-reporter@.service`
one instance per service id, each with its own directory of env and credential files.
Both are also run through `systemd-analyze verify`, which parses them as systemd would
(unknown keys and bad values are warnings on stderr, so stderr must stay empty).
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
UNIT = SYSTEMD_DIR / "pg-role-reporter.service"
TEMPLATE = SYSTEMD_DIR / "pg-role-reporter@.service"
SHIPPED_BINARY = "/usr/local/bin/pg-role-reporter"


def parse(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment]
    unit.read_string(path.read_text())
    return unit


@pytest.mark.parametrize("path", [UNIT, TEMPLATE], ids=lambda p: p.name)
def test_unit_runs_unprivileged_with_secrets_as_credentials_and_restarts(path: Path) -> None:
    text = path.read_text()
    service = parse(path)["Service"]
    # a user of its own: not root, and not postgres (whose superusers can read files)
    assert service.get("DynamicUser") == "yes"
    assert "User" not in service
    assert service["Restart"] == "always" and service["RestartSec"]
    assert "pg-role-reporter" in service["ExecStart"]
    assert "token" not in service["ExecStart"].lower()
    assert "Environment=CONSUL_HTTP_TOKEN_FILE=%d/consul-token" in text
    assert "Environment=PGPASSFILE=%d/pgpass" in text
    assert "PGPASSWORD" not in text
    assert "NoNewPrivileges=yes" in text
    # PostgreSQL reserves role names starting with pg_: the agreed login role
    assert "PGUSER=role_reporter" in text and "pg_role_reporter" not in text


@pytest.mark.parametrize("path", [UNIT, TEMPLATE], ids=lambda p: p.name)
def test_unit_waits_for_readiness_and_restarts_a_hung_reporter(path: Path) -> None:
    service = parse(path)["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    watchdog = service["WatchdogSec"]
    assert watchdog.endswith("s") and 10 <= int(watchdog[:-1]) <= 120
    # the notify socket is AF_UNIX: the address families must allow it
    assert "AF_UNIX" in service["RestrictAddressFamilies"].split()


def test_single_unit_reads_its_files_from_etc_pg_ha_checks() -> None:
    text = UNIT.read_text()
    assert "LoadCredential=consul-token:/etc/pg-ha-checks/consul-token" in text
    assert "LoadCredential=pgpass:/etc/pg-ha-checks/pgpass" in text
    assert parse(UNIT)["Service"]["ExecStart"].split()[1:] == [
        "--service-id",
        "pg-db",
        "--listen",
        "127.0.0.1:8008",
    ]


def test_template_instance_names_its_service_and_its_own_files() -> None:
    text = TEMPLATE.read_text()
    service = parse(TEMPLATE)["Service"]
    assert service["ExecStart"].split()[1:3] == ["--service-id", "%i"]
    assert "LoadCredential=consul-token:/etc/pg-ha-checks/%i/consul-token" in text
    assert "LoadCredential=pgpass:/etc/pg-ha-checks/%i/pgpass" in text
    # Required (no "-" prefix): a missing instance directory is a failed start, not a
    # reporter quietly aimed at port 5432.
    # (systemd.exec(5): variables from EnvironmentFile= override Environment=, so the
    # unit's PGPORT=5432 etc. are only defaults.)
    assert service["EnvironmentFile"] == "/etc/pg-ha-checks/%i/env"


@pytest.mark.parametrize(
    ("path", "name"),
    [(UNIT, "pg-role-reporter.service"), (TEMPLATE, "pg-role-reporter@pg-db-5433.service")],
    ids=["single", "template"],
)
def test_systemd_analyze_verify_accepts_the_unit(path: Path, name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: scripts/bootstrap installs systemd"
    # verify insists that ExecStart's binary exists: point it at this venv's.
    binary = Path(sys.executable).parent / "pg-role-reporter"
    assert binary.exists(), binary
    text = path.read_text()
    assert SHIPPED_BINARY in text
    (tmp_path / path.name).write_text(text.replace(SHIPPED_BINARY, str(binary)))
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stdout + done.stderr
