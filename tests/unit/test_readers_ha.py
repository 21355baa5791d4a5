"""Pure logic of the slots, connections, archiver, wraparound and transactions readers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from checks.postgres.capabilities import ServerCapabilities
from checks.postgres.readers.archiver import ArchiverFacts
from checks.postgres.readers.connections import ConnectionsFacts, connections_sql
from checks.postgres.readers.slots import slots_sql
from checks.postgres.readers.wraparound import DatabaseAgeFacts

IDLE = ArchiverFacts(
    archive_mode="on",
    in_recovery=False,
    archived_count=10,
    last_archived_wal="000000010000000000000009",
    last_archived_age=7200.0,
    failed_count=0,
    last_failed_wal=None,
    last_failed_age=None,
    failing=False,
    can_list_status=True,
)


def test_archive_delay_is_zero_when_nothing_waits() -> None:
    # two idle hours since the last success are not a delay
    assert IDLE.delay_seconds == 0.0


def test_archive_delay_after_idle_counts_from_the_waiting_segment() -> None:
    waiting = replace(IDLE, ready_wal_files=1, oldest_ready_age=2.5)
    assert waiting.delay_seconds == 2.5


def test_archive_delay_when_stuck_counts_from_the_last_success() -> None:
    stuck = replace(IDLE, ready_wal_files=40, last_archived_age=600.0, oldest_ready_age=3600.0)
    assert stuck.delay_seconds == 600.0


@pytest.mark.parametrize(
    ("mode", "in_recovery", "archives"),
    [
        ("off", False, False),
        ("on", False, True),
        ("on", True, False),
        ("always", True, True),
        ("always", False, True),
    ],
)
def test_who_archives(mode: str, in_recovery: bool, archives: bool) -> None:
    assert replace(IDLE, archive_mode=mode, in_recovery=in_recovery).archives_here is archives


def test_usable_connections_leave_out_every_reserved_slot() -> None:
    facts = ConnectionsFacts(
        max_connections=100, superuser_reserved=3, reserved=5, used=46, hidden=0
    )
    assert facts.usable == 92
    assert facts.used_percent == pytest.approx(50.0)


def test_busiest_database_is_stable_on_ties() -> None:
    facts = ConnectionsFacts(100, 3, 0, 4, 0, per_database={"a": 2, "b": 2})
    assert facts.busiest_database == ("b", 2)


def test_sql_follows_the_server_version() -> None:
    assert "'reserved_connections'" in connections_sql(ServerCapabilities(160000))
    assert "'reserved_connections'" not in connections_sql(ServerCapabilities(150000))
    assert "NULL::text AS wal_status" in slots_sql(ServerCapabilities(120000))
    assert "wal_status, safe_wal_size" in slots_sql(ServerCapabilities(130000))
    assert "inactive_since" not in slots_sql(ServerCapabilities(160000))
    assert "inactive_since" in slots_sql(ServerCapabilities(170000))


def test_wraparound_percent_of_two_to_the_31() -> None:
    assert DatabaseAgeFacts("db", 2**30, 0, 200_000_000).xid_percent == 50.0
