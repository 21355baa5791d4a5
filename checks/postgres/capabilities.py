"""What a PostgreSQL server can tell and do, by its version: each difference named once.

The readers ask ``if server.has_wal_status`` rather than compare version numbers, so the
reason for every version branch is written here, next to the major that brought it. The
version is libpq's (``conn.info.server_version``, learnt at login): no query is spent on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class ServerCapabilities:
    """A server's version-dependent features; ``server_version`` as libpq gives it (170004)."""

    server_version: int

    @classmethod
    def of(cls, conn: psycopg.Connection[Any]) -> ServerCapabilities:
        return cls(conn.info.server_version)

    def _since(self, major: int) -> bool:
        return self.server_version >= major * 10000

    @property
    def has_wal_status(self) -> bool:
        """pg_replication_slots.wal_status and safe_wal_size: requires PostgreSQL 13."""
        return self._since(13)

    @property
    def has_replay_pause_state(self) -> bool:
        """pg_get_wal_replay_pause_state(), pausing as 'pause requested' then 'paused':
        requires PostgreSQL 14."""
        return self._since(14)

    @property
    def has_lock_wait_start(self) -> bool:
        """pg_locks.waitstart: requires PostgreSQL 14."""
        return self._since(14)

    @property
    def has_idle_session_timeout(self) -> bool:
        """idle_session_timeout, which ends a session idle that long: requires PostgreSQL
        14."""
        return self._since(14)

    @property
    def pauses_for_parameters(self) -> bool:
        """A hot standby that replays a parameter change above its own value pauses replay
        (before 14 it shut down): requires PostgreSQL 14."""
        return self._since(14)

    @property
    def has_reserved_connections(self) -> bool:
        """reserved_connections, for members of pg_use_reserved_connections: requires
        PostgreSQL 16."""
        return self._since(16)

    @property
    def escapes_non_ascii_names(self) -> bool:
        """application_name shows a non-ASCII byte as ``\\xHH`` (before 16 as ``?``):
        requires PostgreSQL 16."""
        return self._since(16)

    @property
    def has_slot_inactive_since(self) -> bool:
        """pg_replication_slots.inactive_since, invalidation_reason and synced: requires
        PostgreSQL 17."""
        return self._since(17)

    @property
    def has_checkpointer_stats(self) -> bool:
        """pg_stat_checkpointer (the checkpoint counters left pg_stat_bgwriter): requires
        PostgreSQL 17."""
        return self._since(17)
