"""The instance's status in one round trip: what the resident daemon's health endpoints tell
a load balancer (role, timeline, WAL positions, replay lag, paused replay, who it is).

- The timeline is the current one, as in read_role() (docs/design.md §3).
- WAL positions are byte offsets from 0/0, computed by the server (``pg_wal_lsn_diff``), the
  form Patroni's REST API reports them in.
- A replica's lag is measured against the primary's end of WAL as its WAL receiver last
  heard it (``latest_end_lsn``, or what it received if that is further): the bytes it
  still has to replay. A paused replay keeps receiving, so its lag grows with the
  primary's writes. With no WAL receiver the primary's position is unknown here, and so
  is the lag (None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import fetch_row
from checks.postgres.readers.role import TIMELINE_SQL

if TYPE_CHECKING:
    import psycopg

# pg_is_wal_replay_paused() and pg_last_wal_*() are evaluated only where they mean
# something: CASE keeps pg_current_wal_lsn() off a replica, where it raises.
INSTANCE_SQL = f"""
SELECT pg_is_in_recovery() AS in_recovery,
       (SELECT system_identifier FROM pg_control_system())::text AS system_identifier,
       {TIMELINE_SQL} AS timeline,
       CASE WHEN NOT pg_is_in_recovery()
            THEN pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint END AS wal_position,
       CASE WHEN pg_is_in_recovery()
            THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint END
           AS received_position,
       CASE WHEN pg_is_in_recovery()
            THEN pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint END
           AS replayed_position,
       CASE WHEN pg_is_in_recovery() AND w.status IS NOT NULL
            THEN greatest(0, pg_wal_lsn_diff(
                     greatest(w.latest_end_lsn, pg_last_wal_receive_lsn()),
                     pg_last_wal_replay_lsn()))::bigint
       END AS replay_lag_bytes,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS replay_paused,
       w.status AS receiver_status
  FROM (SELECT 1) AS one
  LEFT JOIN pg_stat_wal_receiver AS w ON true
"""


@dataclass(frozen=True)
class InstanceFacts:
    in_recovery: bool
    system_identifier: str
    timeline: int
    server_version: int
    # byte offsets from 0/0: the primary's current position; a replica's received and
    # replayed ones
    wal_position: int | None
    received_position: int | None
    replayed_position: int | None
    # bytes received or announced by the primary and not yet replayed (replica only)
    replay_lag_bytes: int | None
    replay_paused: bool | None
    # pg_stat_wal_receiver.status ("streaming", ...); None without a WAL receiver
    receiver_status: str | None

    @property
    def role(self) -> str:
        return "replica" if self.in_recovery else "primary"


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def read_instance_status(conn: psycopg.Connection[dict[str, Any]]) -> InstanceFacts:
    row = fetch_row(conn, INSTANCE_SQL)
    paused = row["replay_paused"]
    return InstanceFacts(
        in_recovery=bool(row["in_recovery"]),
        system_identifier=str(row["system_identifier"]),
        timeline=int(row["timeline"]),
        server_version=conn.info.server_version,
        wal_position=_int_or_none(row["wal_position"]),
        received_position=_int_or_none(row["received_position"]),
        replayed_position=_int_or_none(row["replayed_position"]),
        replay_lag_bytes=_int_or_none(row["replay_lag_bytes"]),
        replay_paused=None if paused is None else bool(paused),
        receiver_status=row["receiver_status"],
    )
