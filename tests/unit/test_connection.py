"""Connection settings: what reaches libpq, and how its errors read."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from checks.postgres.connection import (
    ConnectionSettings,
    describe_connect_error,
    explain_connect_error,
    settings_problem,
)


def params(settings: ConnectionSettings) -> dict:
    return conninfo_to_dict(settings.conninfo())


def test_only_what_the_user_set_is_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGOPTIONS", raising=False)
    got = params(ConnectionSettings(host="db1", port=5433, timeout=10))
    assert got["host"] == "db1" and got["port"] == "5433"
    assert "user" not in got and "dbname" not in got and "password" not in got
    assert got["fallback_application_name"] == "check_postgresql"
    assert got["connect_timeout"] == "8"
    assert got["options"] == "-c statement_timeout=8000"


def test_libpq_minimum_connect_timeout() -> None:
    assert params(ConnectionSettings(timeout=1))["connect_timeout"] == "2"


@pytest.mark.parametrize(
    ("dbname", "expected"),
    [
        ("sales", {"dbname": "sales"}),
        ("host=db2 dbname=sales user=mon", {"host": "db2", "dbname": "sales", "user": "mon"}),
        ("postgresql://mon@db2:6432/sales", {"host": "db2", "port": "6432", "dbname": "sales"}),
    ],
)
def test_dbname_takes_a_name_a_conninfo_or_a_uri(dbname: str, expected: dict) -> None:
    got = params(ConnectionSettings(dbname=dbname))
    assert expected.items() <= got.items()


def test_statement_timeout_joins_the_users_own_options() -> None:
    got = params(ConnectionSettings(dbname="dbname=x options='-c work_mem=4MB'", timeout=5))
    assert got["options"] == "-c work_mem=4MB -c statement_timeout=4000"


def test_a_service_files_options_are_not_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSERVICE", "pg-ha")
    assert "options" not in params(ConnectionSettings())
    monkeypatch.delenv("PGSERVICE")
    assert "options" not in params(ConnectionSettings(dbname="service=pg-ha"))


def test_target_names_the_server_without_libpq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "db9")
    monkeypatch.delenv("PGPORT", raising=False)
    assert ConnectionSettings().target() == "db9:5432"
    assert ConnectionSettings(host="h", port=1).target() == "h:1"


@pytest.mark.parametrize(
    "conninfo",
    [
        "host=db password=s3cret dbname=x",
        "host=db password = 's3 cret' dbname=x",
        "postgresql://mon:s3cret@db/x",
    ],
)
def test_passwords_never_reach_the_output(conninfo: str) -> None:
    shown = ConnectionSettings(dbname=conninfo).target()
    assert "s3cret" not in shown and "s3 cret" not in shown


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            'connection failed: connection to server at "127.0.0.1", port 5499 failed: '
            "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
            "connections?",
            "cannot connect to 127.0.0.1:5499: Connection refused",
        ),
        (
            'connection failed: connection to server at "db1" (10.0.0.5), port 5432 failed: '
            'FATAL:  password authentication failed for user "monitor"',
            'cannot connect to db1:5432: password authentication failed for user "monitor"',
        ),
        (
            'connection failed: connection to server on socket "/run/pg/.s.PGSQL.5432" '
            "failed: No such file or directory",
            "cannot connect to /run/pg/.s.PGSQL.5432: No such file or directory",
        ),
        (
            "connection timeout expired",
            "cannot connect to db1:5432: no answer within 8s",
        ),
    ],
)
def test_libpq_errors_in_one_plain_line(message: str, expected: str) -> None:
    settings = ConnectionSettings(host="db1", port=5432, timeout=10)
    assert describe_connect_error(psycopg.OperationalError(message), settings) == expected


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (
            'connection is bad: definition of service "x" not found',
            'definition of service "x" not found',
        ),
        ('connection is bad: invalid sslmode value: "bogus"', 'invalid sslmode value: "bogus"'),
        ('connection is bad: could not translate host name "db9" to address', None),
        (
            'connection is bad: connection to server on socket "/run/x/.s.PGSQL.5432" failed: '
            "No such file or directory",
            None,
        ),
        ('connection failed: connection to server at "h", port 1 failed: refused', None),
    ],
)
def test_settings_problems_are_told_from_outages(message: str, problem: str | None) -> None:
    assert settings_problem(psycopg.OperationalError(message)) == problem


LIBPQ_TWO_HOSTS = (
    'connection failed: connection to server at "db1" (10.0.0.1), port 5432 failed: '
    "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
    'connections?\nconnection to server at "db2" (10.0.0.2), port 5433 failed: FATAL:  '
    "the database system is not accepting connections\nDETAIL:  Hot standby mode is disabled.\n"
)

PSYCOPG_TWO_HOSTS = (
    'connection failed: connection to server at "10.0.0.2", port 5433 failed: FATAL:  the '
    "database system is not yet accepting connections\nDETAIL:  Consistent recovery state "
    "has not been yet reached.\nMultiple connection attempts failed. All failures were:\n"
    "- host: 'db1', port: '5432', hostaddr: '10.0.0.1': connection timeout expired\n"
    "- host: 'db2', port: '5433', hostaddr: '10.0.0.2': connection failed: connection to "
    'server at "10.0.0.2", port 5433 failed: FATAL:  the database system is not yet '
    "accepting connections\nDETAIL:  Consistent recovery state has not been yet reached."
)


def test_every_host_with_its_detail_libpq_style() -> None:
    """psycopg 3.1 hands over libpq's own text: one block per attempt."""
    settings = ConnectionSettings(timeout=10)
    assert describe_connect_error(psycopg.OperationalError(LIBPQ_TWO_HOSTS), settings) == (
        "cannot connect to any of 2 servers: db1:5432: Connection refused, db2:5433: the "
        "database system is not accepting connections (Hot standby mode is disabled.)"
    )


def test_every_host_with_its_detail_psycopg_style() -> None:
    """psycopg 3.2+ tries each host itself, repeats the last failure first, then all."""
    settings = ConnectionSettings(timeout=10)
    summary, details = explain_connect_error(psycopg.OperationalError(PSYCOPG_TWO_HOSTS), settings)
    second = (
        "10.0.0.2:5433: the database system is not yet accepting connections (Consistent "
        "recovery state has not been yet reached.)"
    )
    assert summary == f"cannot connect to any of 2 servers: db1:5432: no answer within 8s, {second}"
    assert details == [
        "cannot connect to db1:5432: no answer within 8s",
        f"cannot connect to {second}",
    ]


def test_reserved_slots_name_the_grant() -> None:
    message = (
        'connection failed: connection to server at "db1" (10.0.0.1), port 5432 failed: '
        "FATAL:  remaining connection slots are reserved for roles with privileges of the "
        '"pg_use_reserved_connections" role'
    )
    settings = ConnectionSettings(user="consul_monitor")
    assert describe_connect_error(psycopg.OperationalError(message), settings).endswith(
        '"pg_use_reserved_connections" role (GRANT pg_use_reserved_connections TO consul_monitor)'
    )


def test_target_of_a_service_file_and_host_lists(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in ("PGHOST", "PGPORT", "PGSERVICE", "PGHOSTADDR"):
        monkeypatch.delenv(name, raising=False)
    services = tmp_path / "pg_service.conf"
    services.write_text("[ha]\nhost=db1,db2\nport=5433\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    assert ConnectionSettings(dbname="service=ha").target() == "db1:5433, db2:5433"
    monkeypatch.setenv("PGSERVICE", "ha")
    assert ConnectionSettings().target() == "db1:5433, db2:5433"
    monkeypatch.delenv("PGSERVICE")
    monkeypatch.setenv("PGHOST", "a,b")
    monkeypatch.setenv("PGPORT", "1,2")
    assert ConnectionSettings().target() == "a:1, b:2"
    assert ConnectionSettings(dbname="postgresql://u:pw@h9:7/x").target() == "h9:7"
    assert ConnectionSettings(host="/run/pg", port=5).target() == "/run/pg/.s.PGSQL.5"
