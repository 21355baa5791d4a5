"""contrib/systemd/pg-role-reporter.service: unprivileged, token from a file, restarts."""

from __future__ import annotations

import configparser
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "systemd" / "pg-role-reporter.service"


def test_systemd_unit_runs_unprivileged_with_secrets_as_credentials_and_restarts() -> None:
    text = UNIT.read_text()
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment]
    unit.read_string(text)
    service = unit["Service"]
    # a user of its own: not root, and not postgres (whose superusers can read files)
    assert service.get("DynamicUser") == "yes"
    assert "User" not in service
    assert service["Restart"] == "always" and service["RestartSec"]
    assert "pg-role-reporter" in service["ExecStart"]
    assert "token" not in service["ExecStart"].lower()
    assert "LoadCredential=consul-token:/etc/pg-ha-checks/consul-token" in text
    assert "Environment=CONSUL_HTTP_TOKEN_FILE=%d/consul-token" in text
    assert "LoadCredential=pgpass:/etc/pg-ha-checks/pgpass" in text
    assert "PGPASSWORD" not in text
    assert "NoNewPrivileges=yes" in text
