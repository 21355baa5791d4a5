"""role: which default_transaction_read_only is the server's, and what the output says."""

from __future__ import annotations

import pytest

from checks.postgres.readers.role import RoleFacts
from checks.postgres.server_settings import is_login_source


def facts(**changes) -> RoleFacts:
    values = {
        "in_recovery": False,
        "read_only": False,
        "timeline": 1,
        "system_identifier": "7",
        "server_version": 150000,
    }
    values.update(changes)
    return RoleFacts(**values)


@pytest.mark.parametrize("source", ["database", "user", "database user", "client", "session"])
def test_login_layers(source: str) -> None:
    assert is_login_source(source)


@pytest.mark.parametrize(
    "source", ["default", "configuration file", "command line", "environment variable", "override"]
)
def test_server_layers(source: str) -> None:
    assert not is_login_source(source)


def test_login_read_only_leaves_the_primary_writable_and_says_why() -> None:
    mine = facts(session_read_only=True, read_only_source="user")
    assert mine.writable
    assert mine.read_only_note() == (
        "default_transaction_read_only=on is this login's own (user setting), not the server's"
    )
    hidden = facts(session_read_only=True, read_only_source="client", server_value_known=False)
    assert hidden.read_only_note().endswith(
        "it hides the server's value from this role, taken as the default (off)"
    )


def test_server_read_only_primary_is_not_writable() -> None:
    server = facts(read_only=True, session_read_only=True, read_only_source="configuration file")
    assert not server.writable
    assert server.read_only_note() == (
        "default_transaction_read_only is on in the server's configuration"
    )


def test_replica_is_never_writable_and_needs_no_note() -> None:
    replica = facts(in_recovery=True, session_read_only=True, read_only_source="user")
    assert not replica.writable and replica.read_only_note() is None
