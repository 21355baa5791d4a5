"""Replication lag as the replica sees it.

Bytes are received-but-not-replayed WAL, computed on the server (``pg_wal_lsn_diff``: LSN
arithmetic in the client goes wrong across segment boundaries). Seconds are 0 when all
that was received is replayed: on an idle primary ``now() - pg_last_xact_replay_timestamp()``
grows without any lag, which is the false alarm the older plugins raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import fetch_row

if TYPE_CHECKING:
    import psycopg

_LAG_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       greatest(0, pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()))::bigint
           AS replay_lag_bytes,
       CASE WHEN pg_last_wal_receive_lsn() IS NULL
                 OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
            -- the replay timestamp is the primary's clock: never a negative age on skew
            ELSE coalesce(extract(epoch FROM greatest(now(), pg_last_xact_replay_timestamp())
                                             - pg_last_xact_replay_timestamp()), 0)
       END::float8 AS replay_lag_seconds,
       {paused} AS replay_paused,
       receiver.pid AS receiver_pid,
       receiver.status AS receiver_status,
       extract(epoch FROM greatest(now(), receiver.last_msg_receipt_time)
                          - receiver.last_msg_receipt_time)::float8
           AS receiver_message_age,
       receiver.sender_host, receiver.sender_port,
       extract(epoch FROM current_setting('wal_receiver_timeout')::interval)::float8
           AS wal_receiver_timeout
FROM (SELECT 1) AS one
LEFT JOIN pg_stat_wal_receiver AS receiver ON true
"""
# 14 made pausing a two-step state ('pause requested' then 'paused'); both mean replay
# is not advancing on purpose.
_PAUSED_SINCE_14 = "pg_is_in_recovery() AND pg_get_wal_replay_pause_state() <> 'not paused'"
_PAUSED_BEFORE_14 = "pg_is_in_recovery() AND pg_is_wal_replay_paused()"


def lag_sql(server_version: int) -> str:
    paused = _PAUSED_SINCE_14 if server_version >= 140000 else _PAUSED_BEFORE_14
    return _LAG_SQL.format(paused=paused)


@dataclass(frozen=True)
class ReplicaLag:
    in_recovery: bool
    replay_lag_bytes: int
    replay_lag_seconds: float
    replay_paused: bool
    receiver_pid: int | None
    # None with a pid: the role may not read pg_stat_wal_receiver's details
    receiver_status: str | None
    receiver_message_age: float | None
    sender: str | None
    wal_receiver_timeout: float

    @property
    def receiver_hidden(self) -> bool:
        return self.receiver_pid is not None and self.receiver_status is None


def read_lag(conn: psycopg.Connection[dict[str, Any]]) -> ReplicaLag:
    row = fetch_row(conn, lag_sql(conn.info.server_version))
    sender = f"{row['sender_host']}:{row['sender_port']}" if row["sender_host"] else None
    return ReplicaLag(
        in_recovery=bool(row["in_recovery"]),
        replay_lag_bytes=int(row["replay_lag_bytes"] or 0),
        replay_lag_seconds=float(row["replay_lag_seconds"] or 0.0),
        replay_paused=bool(row["replay_paused"]),
        receiver_pid=row["receiver_pid"],
        receiver_status=row["receiver_status"],
        receiver_message_age=row["receiver_message_age"],
        sender=sender,
        wal_receiver_timeout=float(row["wal_receiver_timeout"] or 0.0),
    )
