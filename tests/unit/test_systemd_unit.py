"""contrib/systemd/pg-role-reporter.service: unprivileged, token from a file, restarts."""

from __future__ import annotations

import configparser
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "systemd" / "pg-role-reporter.service"


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
