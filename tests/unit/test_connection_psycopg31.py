"""psycopg 3.1 (Debian 12's, the floor) shortens libpq's connection messages; the checks
read the whole message from the PGconn instead."""

from __future__ import annotations

from types import SimpleNamespace

import psycopg
import pytest

from checks.postgres.connection import settings_problem


def _psycopg31_error(shortened: str, libpq_said: str) -> psycopg.OperationalError:
    exc = psycopg.OperationalError(f"connection is bad: {shortened}")
    # psycopg.Error.pgconn is a read-only property; a subclass instance stands in for one
    # raised by psycopg 3.1 with its PGconn attached.
    fake = type("Error31", (psycopg.OperationalError,), {"pgconn": None})(str(exc))
    fake.pgconn = SimpleNamespace(error_message=libpq_said.encode() + b"\n")
    return fake


@pytest.mark.parametrize(
    ("shortened", "libpq_said", "problem"),
    [
        ('"bogus"', 'invalid sslmode value: "bogus"', 'invalid sslmode value: "bogus"'),
        (
            "No such file or directory",
            'connection to server on socket "/nowhere/.s.PGSQL.5432" failed: '
            "No such file or directory",
            None,  # an outage, not a settings problem
        ),
    ],
)
def test_the_whole_libpq_message_decides(shortened: str, libpq_said: str, problem) -> None:
    assert settings_problem(_psycopg31_error(shortened, libpq_said)) == problem
