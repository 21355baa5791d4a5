"""checks.reporter.problems: a refused login is not an outage."""

from __future__ import annotations

import pytest

from checks.reporter.problems import LOGIN_FAILED, NO_PRIVILEGE, UNREACHABLE, classify


@pytest.mark.parametrize(
    "message",
    [
        'cannot connect to 127.0.0.1:5432: password authentication failed for user "role_reporter"',
        'cannot connect to /run/postgresql: role "pg_role_reporter" does not exist',
        'cannot connect to 10.0.0.1:5432: no pg_hba.conf entry for host "10.0.0.2", user '
        '"role_reporter", database "postgres", no encryption',
        "cannot connect to 127.0.0.1:5432: fe_sendauth: no password supplied",
        'cannot connect to 127.0.0.1:5432: database "postgres" does not exist',
    ],
)
def test_login_refusals(message: str) -> None:
    problem = classify(message, unknown_status=False)
    assert problem.kind == LOGIN_FAILED
    assert problem.log_line.startswith("PostgreSQL refused the reporter's login (")
    assert problem.published is not None


@pytest.mark.parametrize(
    "message",
    [
        "cannot connect to 127.0.0.1:5432: Connection refused",
        "cannot connect to 127.0.0.1:5432: no answer within 5s",
        "cannot connect to 127.0.0.1:5432: the database system is shutting down",
        "cannot connect to 127.0.0.1:5432: sorry, too many clients already",
        "connection to 127.0.0.1:5432 lost: server closed the connection unexpectedly",
    ],
)
def test_outages(message: str) -> None:
    problem = classify(message, unknown_status=False)
    assert problem.kind == UNREACHABLE
    assert problem.log_line.startswith("PostgreSQL unreachable (")
    assert problem.published is None  # the checks say that; no reason to publish


def test_missing_privilege() -> None:
    problem = classify(
        "permission denied (permission denied for function pg_current_wal_lsn): grant the "
        "check's role pg_monitor",
        unknown_status=True,
    )
    assert problem.kind == NO_PRIVILEGE
