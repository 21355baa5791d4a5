"""Replication slots: how much WAL each one holds back, and whether it can still be used.

Retained WAL is measured from the slot's ``restart_lsn`` to where this server is (its
current WAL on a primary, its replayed WAL on a replica), by the server
(``pg_wal_lsn_diff``). Versions add what they know: 13 ``wal_status`` and
``safe_wal_size`` (with ``max_slot_wal_keep_size``), 17 ``inactive_since``,
``invalidation_reason`` and ``synced``. ``pg_replication_slots`` is readable by every role.

A slot created without reserving WAL (``restart_lsn`` NULL until a standby or decoder
first uses it) holds nothing: its retained bytes and ``safe_wal_size`` are NULL here
(the server computes a meaningless ``safe_wal_size`` from LSN 0 for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.capabilities import ServerCapabilities
from checks.postgres.connection import query

if TYPE_CHECKING:
    import psycopg

_SLOTS_SQL = """
WITH here AS (
    SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                ELSE pg_current_wal_lsn() END AS lsn
)
SELECT slot_name, slot_type, temporary, active, active_pid,
       restart_lsn IS NOT NULL AS reserves_wal,
       CASE WHEN restart_lsn IS NOT NULL
            THEN greatest(0, pg_wal_lsn_diff(here.lsn, restart_lsn))::bigint END
           AS retained_bytes,
       {since_13},
       {since_17}
FROM pg_replication_slots, here
ORDER BY slot_name
"""
_SINCE_13 = "wal_status, safe_wal_size"
_BEFORE_13 = "NULL::text AS wal_status, NULL::bigint AS safe_wal_size"
# A server start sets inactive_since of every slot it loads from disk to that moment (17,
# 18): before the server was ready for clients (when the postmaster starts its launchers),
# no slot can have been created or released, so such an inactive_since says "since the
# start", a lower bound. Without a launcher (a standby, autovacuum off), a second after
# the postmaster started stands in.
_SINCE_17 = """extract(epoch FROM greatest(now(), inactive_since) - inactive_since)::float8
           AS inactive_seconds, invalidation_reason,
       inactive_since < (SELECT coalesce(min(backend_start),
                                         pg_postmaster_start_time() + interval '1 s')
                         FROM pg_stat_activity
                         WHERE backend_type IN ('autovacuum launcher',
                                                'logical replication launcher'))
           AS inactive_at_start,
       synced"""
_BEFORE_17 = (
    "NULL::float8 AS inactive_seconds, NULL::text AS invalidation_reason,"
    " false AS inactive_at_start, false AS synced"
)


def slots_sql(server: ServerCapabilities) -> str:
    return _SLOTS_SQL.format(
        since_13=_SINCE_13 if server.has_wal_status else _BEFORE_13,
        since_17=_SINCE_17 if server.has_slot_inactive_since else _BEFORE_17,
    )


@dataclass(frozen=True)
class SlotFacts:
    slot_name: str
    slot_type: str
    temporary: bool
    active: bool
    active_pid: int | None
    # False while restart_lsn is NULL: never used since created without reserving WAL, or lost
    reserves_wal: bool
    # None when the slot reserves no WAL (never used, or lost)
    retained_bytes: int | None
    # 13+: reserved, extended, unreserved, lost; None before 13
    wal_status: str | None
    # 13+: bytes that can still be written before the slot is lost; None without a limit,
    # and None when the slot reserves no WAL (the server's number is meaningless then)
    safe_wal_size: int | None
    # 17+: seconds since the slot became inactive; None when active or not known
    inactive_seconds: float | None
    invalidation_reason: str | None
    # 17+: inactive_since is the server's start: inactive at least that long, maybe longer
    inactive_at_start: bool | None = False
    # 17+: a failover slot a standby keeps in sync with its primary's; never active there
    synced: bool | None = False

    @property
    def lost(self) -> bool:
        return self.wal_status == "lost"

    @property
    def unreserved(self) -> bool:
        return self.wal_status == "unreserved"

    @property
    def never_reserved(self) -> bool:
        """No WAL reserved yet (created without reserving, never used); not a lost slot."""
        return not self.reserves_wal and not self.invalidated

    @property
    def invalidated(self) -> bool:
        """Unusable for good: lost its WAL, or invalidated for another reason (17+)."""
        return self.lost or bool(self.invalidation_reason)

    @property
    def judged_inactive(self) -> bool:
        """Inactive in a way worth a look: not a slot that never reserved WAL (it holds
        nothing), not an invalidated one (judged as such), not a synced failover slot on a
        standby (never active there by design)."""
        return not (self.active or self.never_reserved or self.invalidated or self.synced)

    @property
    def badness(self) -> tuple[int, int, str]:
        """Sort key, worst first: lost, unreserved, inactive by WAL retained, the rest."""
        if self.invalidated:
            rank = 0
        elif self.unreserved:
            rank = 1
        elif self.judged_inactive:
            rank = 2
        else:
            rank = 3
        return (rank, -(self.retained_bytes or 0), self.slot_name)


def read_slots(conn: psycopg.Connection[dict[str, Any]]) -> list[SlotFacts]:
    return [slot_of_row(row) for row in query(conn, slots_sql(ServerCapabilities.of(conn)))]


def slot_of_row(row: dict[str, Any]) -> SlotFacts:
    """A slot that reserves no WAL has no safe_wal_size: the server computes one from
    LSN 0 (-292 MiB observed on a never-used slot)."""
    if not row["reserves_wal"] or row["wal_status"] is None:
        row = {**row, "safe_wal_size": None}
    return SlotFacts(**row)
