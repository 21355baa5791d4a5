"""Standbys as their upstream sees them (``pg_stat_replication``).

Works on a cascading replica too: the reference point is then its replayed LSN.
``write_lag``/``flush_lag``/``replay_lag`` (PostgreSQL 10+) are NULL once a standby has
caught up and the upstream is idle; that means no lag, so they read as 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import query

if TYPE_CHECKING:
    import psycopg

STANDBYS_SQL = """
WITH here AS (
    SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                ELSE pg_current_wal_lsn() END AS lsn
)
SELECT pid, application_name, host(client_addr) AS client_addr, state, sync_state,
       greatest(0, pg_wal_lsn_diff(here.lsn, replay_lsn))::bigint AS replay_lag_bytes,
       coalesce(extract(epoch FROM write_lag), 0)::float8 AS write_lag_seconds,
       coalesce(extract(epoch FROM flush_lag), 0)::float8 AS flush_lag_seconds,
       coalesce(extract(epoch FROM replay_lag), 0)::float8 AS replay_lag_seconds
FROM pg_stat_replication, here
-- a running pg_basebackup is a WAL sender too, but not a standby
WHERE state IS DISTINCT FROM 'backup'
ORDER BY application_name, pid
"""


@dataclass(frozen=True)
class Standby:
    pid: int
    application_name: str
    client_addr: str | None
    # None: the role may not read pg_stat_replication's details
    state: str | None
    sync_state: str | None
    replay_lag_bytes: int | None
    write_lag_seconds: float
    flush_lag_seconds: float
    replay_lag_seconds: float

    @property
    def hidden(self) -> bool:
        return self.state is None

    @property
    def streaming(self) -> bool:
        return self.state == "streaming"

    @property
    def synchronous(self) -> bool:
        return self.sync_state in ("sync", "quorum")


def read_standbys(conn: psycopg.Connection[dict[str, Any]]) -> list[Standby]:
    return [Standby(**row) for row in query(conn, STANDBYS_SQL)]
