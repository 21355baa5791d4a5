"""Standbys as their upstream sees them (``pg_stat_replication``).

Works on a cascading replica too: the reference point is then its replayed LSN.
``write_lag``/``flush_lag``/``replay_lag`` (PostgreSQL 10+) are NULL once a standby has
caught up and the upstream is idle; that means no lag, so they read as 0.

A WAL sender whose client reports where it wrote WAL but never where it replayed it
(``replay_lsn`` NULL, ``write_lsn`` set) feeds a WAL receiver such as pg_receivewal or
barman, not a standby: nothing can fail over to it, and it has no replay lag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import query

if TYPE_CHECKING:
    import psycopg

STANDBYS_SQL = """
WITH here AS (
    SELECT pg_is_in_recovery() AS in_recovery,
           current_setting('synchronous_standby_names') AS synchronous_standby_names,
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                ELSE pg_current_wal_lsn() END AS lsn
)
-- one row even with no standby (pid NULL), so the server's state comes in the same query
SELECT here.in_recovery, here.synchronous_standby_names,
       r.pid, r.application_name, host(r.client_addr) AS client_addr,
       r.state, r.sync_state,
       (r.replay_lsn IS NULL AND r.write_lsn IS NOT NULL) AS wal_receiver,
       CASE WHEN r.replay_lsn IS NULL THEN NULL
            ELSE greatest(0, pg_wal_lsn_diff(here.lsn, r.replay_lsn))::bigint
       END AS replay_lag_bytes,
       CASE WHEN r.flush_lsn IS NULL THEN NULL
            ELSE greatest(0, pg_wal_lsn_diff(here.lsn, r.flush_lsn))::bigint
       END AS flush_lag_bytes,
       coalesce(extract(epoch FROM r.write_lag), 0)::float8 AS write_lag_seconds,
       coalesce(extract(epoch FROM r.flush_lag), 0)::float8 AS flush_lag_seconds,
       coalesce(extract(epoch FROM r.replay_lag), 0)::float8 AS replay_lag_seconds
FROM here
-- a running pg_basebackup is a WAL sender too, but not a standby
LEFT JOIN pg_stat_replication AS r ON r.state IS DISTINCT FROM 'backup'
ORDER BY r.application_name, r.pid
"""

# "FIRST 2 (a, b)", "ANY 1 (a, b)", "2 (a, b)" (the pre-9.6 form of FIRST)
_COUNTED = re.compile(r"^\s*(?:(?:first|any)\s+)?(\d+)\s*\(", re.IGNORECASE)


def required_sync_standbys(setting: str | None) -> int:
    """How many synchronous standbys a commit waits for, per ``synchronous_standby_names``.

    ``FIRST n (...)``, ``ANY n (...)`` and ``n (...)`` wait for n; a plain list of names
    (or ``*``) waits for the first one connected, so 1; an empty setting for none.
    """
    if setting is None or not setting.strip():
        return 0
    match = _COUNTED.match(setting)
    return int(match.group(1)) if match else 1


@dataclass(frozen=True)
class Standby:
    pid: int
    application_name: str
    client_addr: str | None
    # None: the role may not read pg_stat_replication's details
    state: str | None
    sync_state: str | None
    # a WAL receiver (pg_receivewal, barman): writes WAL, replays none
    wal_receiver: bool | None
    # None: not reported (a WAL receiver, or a standby that has not replied yet)
    replay_lag_bytes: int | None
    flush_lag_bytes: int | None
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


def worst_first(standbys: list[Standby]) -> list[Standby]:
    """Not streaming first, then the largest replay lag (bytes, then seconds), then name."""
    return sorted(
        standbys,
        key=lambda s: (
            s.streaming,
            -(s.replay_lag_bytes or 0),
            -s.replay_lag_seconds,
            s.application_name,
            s.pid,
        ),
    )


@dataclass(frozen=True)
class Upstream:
    """The server asked, and the standbys and WAL receivers streaming from it."""

    in_recovery: bool
    synchronous_standby_names: str
    standbys: list[Standby]
    wal_receivers: list[Standby]

    @property
    def required_sync(self) -> int:
        """Synchronous standbys commits wait for: none on a replica (cascading is async)."""
        if self.in_recovery:
            return 0
        return required_sync_standbys(self.synchronous_standby_names)


def read_standbys(conn: psycopg.Connection[dict[str, Any]]) -> Upstream:
    rows = query(conn, STANDBYS_SQL)
    in_recovery = bool(rows[0]["in_recovery"])
    names = rows[0]["synchronous_standby_names"] or ""
    senders = []
    for row in rows:
        if row["pid"] is None:
            continue
        del row["in_recovery"], row["synchronous_standby_names"]
        senders.append(Standby(**row))
    return Upstream(
        in_recovery=in_recovery,
        synchronous_standby_names=names,
        standbys=worst_first([s for s in senders if not s.wal_receiver]),
        wal_receivers=[s for s in senders if s.wal_receiver],
    )
