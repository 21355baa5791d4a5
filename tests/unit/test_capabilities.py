"""Each server capability turns on at the major that brought it, and not a release before."""

from __future__ import annotations

import pytest

from checks.postgres.capabilities import ServerCapabilities

SINCE = {
    "has_wal_status": 13,
    "has_replay_pause_state": 14,
    "has_lock_wait_start": 14,
    "has_idle_session_timeout": 14,
    "pauses_for_parameters": 14,
    "has_reserved_connections": 16,
    "escapes_non_ascii_names": 16,
    "has_slot_inactive_since": 17,
    "has_checkpointer_stats": 17,
}


@pytest.mark.parametrize(("name", "major"), SINCE.items())
def test_capability_starts_at_its_major(name: str, major: int) -> None:
    last_minor_before = (major - 1) * 10000 + 99
    assert getattr(ServerCapabilities(major * 10000), name) is True
    assert getattr(ServerCapabilities(last_minor_before), name) is False


def test_every_capability_is_listed_with_its_reason() -> None:
    named = {
        n for n in vars(ServerCapabilities) if isinstance(getattr(ServerCapabilities, n), property)
    }
    assert named == set(SINCE)
    for name, major in SINCE.items():
        reason = getattr(ServerCapabilities, name).__doc__
        assert f"requires PostgreSQL {major}" in " ".join(reason.split())
