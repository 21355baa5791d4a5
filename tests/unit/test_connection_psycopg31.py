"""psycopg 3.1 (Debian 12's, the floor) shortens libpq's connection messages; the checks
read the whole message from the PGconn instead."""

from __future__ import annotations

from types import SimpleNamespace

import psycopg
import pytest

from checks.postgres.connection import ConnectionSettings, explain_connect_error, settings_problem


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


def test_every_host_is_named_from_the_whole_message() -> None:
    libpq_said = (
        'connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n"
        'connection to server at "localhost" (127.0.0.1), port 2 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?"
    )
    # what psycopg 3.1.7 makes of it: the first server's words are cut off
    shortened = "Connection refused\n\tIs the server running on that host and accepting " + (
        "TCP/IP connections?\n" + libpq_said.split("?\n", 1)[1]
    )
    exc = type("Error31", (psycopg.OperationalError,), {"pgconn": None})(
        f"connection failed: {shortened}"
    )
    exc.pgconn = SimpleNamespace(error_message=libpq_said.encode() + b"\n")
    summary, details = explain_connect_error(exc, ConnectionSettings())
    assert summary == (
        "cannot connect to any of 2 servers: 127.0.0.1:1: Connection refused, "
        "localhost:2: Connection refused"
    )
    assert len(details) == 2
