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
    SELECT pg_is_in_recovery() AS in_recovery,
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                ELSE pg_current_wal_lsn() END AS lsn
)
-- one row even with no standby (pid NULL), so the recovery state comes in the same query
SELECT here.in_recovery, r.pid, r.application_name, host(r.client_addr) AS client_addr,
       r.state, r.sync_state,
       greatest(0, pg_wal_lsn_diff(here.lsn, r.replay_lsn))::bigint AS replay_lag_bytes,
       coalesce(extract(epoch FROM r.write_lag), 0)::float8 AS write_lag_seconds,
       coalesce(extract(epoch FROM r.flush_lag), 0)::float8 AS flush_lag_seconds,
       coalesce(extract(epoch FROM r.replay_lag), 0)::float8 AS replay_lag_seconds
FROM here
-- a running pg_basebackup is a WAL sender too, but not a standby
LEFT JOIN pg_stat_replication AS r ON r.state IS DISTINCT FROM 'backup'
ORDER BY r.application_name, r.pid
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


@dataclass(frozen=True)
class Upstream:
    """The server asked, and the standbys streaming from it."""

    in_recovery: bool
    standbys: list[Standby]


def read_standbys(conn: psycopg.Connection[dict[str, Any]]) -> Upstream:
    rows = query(conn, STANDBYS_SQL)
    in_recovery = bool(rows[0]["in_recovery"])
    for row in rows:
        del row["in_recovery"]
    return Upstream(in_recovery, [Standby(**row) for row in rows if row["pid"] is not None])
