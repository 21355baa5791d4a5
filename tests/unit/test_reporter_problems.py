"""checks.reporter.problems and checks.postgres.refusals: a refused login is not an outage,
nor is a missing privilege; the daemon words each by the check error's cause."""

from __future__ import annotations

import pytest

from checks.postgres.refusals import connect_cause
from checks.reporter.problems import (
    LOGIN_FAILED,
    NO_PRIVILEGE,
    OTHER,
    UNREACHABLE,
    PostgresProblem,
    problem_of,
)
from checks.status import Cause, CheckFailed, Status


def classify(message: str, *, timed_out: bool = False) -> PostgresProblem:
    """A failed connect as connection.py raises it, as the reporter words it."""
    cause = connect_cause(message, timed_out=timed_out)
    return problem_of(CheckFailed(Status.CRITICAL, message, cause=cause))


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
    problem = classify(message)
    assert problem.kind == LOGIN_FAILED
    assert problem.log_line.startswith("PostgreSQL refused the reporter's login (")
    assert problem.published is not None


@pytest.mark.parametrize(
    "message",
    [
        "cannot connect to 127.0.0.1:5432: Connection refused",
        "cannot connect to 127.0.0.1:5432: the database system is shutting down",
        "cannot connect to 127.0.0.1:5432: sorry, too many clients already",
        "connection to 127.0.0.1:5432 lost: server closed the connection unexpectedly",
    ],
)
def test_outages(message: str) -> None:
    problem = classify(message)
    assert problem.kind == UNREACHABLE
    assert problem.log_line.startswith("PostgreSQL unreachable (")
    assert problem.published is None  # the checks say that; no reason to publish


def test_a_connect_timeout_is_an_outage() -> None:
    problem = classify("cannot connect to 127.0.0.1:5432: no answer within 5s", timed_out=True)
    assert problem.kind == UNREACHABLE
    assert problem.log_line.startswith("PostgreSQL unreachable (")


def test_missing_privilege() -> None:
    problem = problem_of(
        CheckFailed(
            Status.UNKNOWN,
            "permission denied (permission denied for function pg_current_wal_lsn): grant the "
            "check's role pg_monitor",
            cause=Cause.PRIVILEGE,
        )
    )
    assert problem.kind == NO_PRIVILEGE
    assert problem.log_line.startswith("PostgreSQL: the reporter's role lacks a privilege (")
    assert "unreachable" not in problem.log_line
    assert problem.published is not None


def test_a_failure_of_no_known_cause_is_not_called_an_outage() -> None:
    """Before causes, any failed role query was logged as 'PostgreSQL unreachable'."""
    problem = problem_of(CheckFailed(Status.UNKNOWN, "bad connection settings: invalid port"))
    assert problem.kind == OTHER
    assert "unreachable" not in problem.log_line
    assert problem.published is not None


@pytest.mark.parametrize("cause", list(Cause))
def test_every_cause_has_words(cause: Cause) -> None:
    assert problem_of(CheckFailed(Status.CRITICAL, "x", cause=cause)).log_line
