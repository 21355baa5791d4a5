"""Checkpoints: how much WAL the last one (a restartpoint on a standby) leaves to replay.

A crash replays WAL from the redo position of the last completed checkpoint, and pg_wal
keeps every segment from there on. The checkpointer starts a checkpoint when the WAL
written since that position reaches max_wal_size / (1 + checkpoint_completion_target),
and paces it to finish as the distance nears max_wal_size: a distance well beyond
max_wal_size means checkpoints fall behind the writes (or the checkpointer is stuck), so
recovery takes longer and pg_wal grows. A server that writes nothing skips its
checkpoints: the last one grows old while the distance stays near zero, which is why the
distance, not the age, is what to judge.

Everything here is readable by every role (``pg_control_checkpoint()``, the statistics
views). PostgreSQL 17 moved the checkpointer's counters from ``pg_stat_bgwriter`` to
``pg_stat_checkpointer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.capabilities import ServerCapabilities
from checks.postgres.connection import fetch_row

if TYPE_CHECKING:
    import psycopg

_CHECKPOINTS_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       -- greatest(now(), t) - t: an age that is never negative
       extract(epoch FROM greatest(now(), c.checkpoint_time) - c.checkpoint_time)::float8
           AS last_checkpoint_age,
       -- on a standby, crash recovery would start at the restartpoint and replay up to
       -- what it has replayed; NULL stays NULL (unknown)
       CASE WHEN d.bytes < 0 THEN 0 ELSE d.bytes END::bigint AS wal_since_redo_bytes,
       pg_size_bytes(current_setting('max_wal_size'))::bigint AS max_wal_size_bytes,
       extract(epoch FROM current_setting('checkpoint_timeout')::interval)::float8
           AS checkpoint_timeout,
       s.{timed}::bigint AS checkpoints_timed,
       s.{requested}::bigint AS checkpoints_requested
FROM pg_control_checkpoint() AS c
CROSS JOIN LATERAL (
    SELECT pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                                ELSE pg_current_wal_lsn() END,
                           c.redo_lsn) AS bytes
) AS d
CROSS JOIN {view} AS s
"""


def checkpoints_sql(server: ServerCapabilities) -> str:
    if server.has_checkpointer_stats:
        return _CHECKPOINTS_SQL.format(
            view="pg_stat_checkpointer", timed="num_timed", requested="num_requested"
        )
    return _CHECKPOINTS_SQL.format(
        view="pg_stat_bgwriter", timed="checkpoints_timed", requested="checkpoints_req"
    )


@dataclass(frozen=True)
class CheckpointsFacts:
    in_recovery: bool
    # since the last checkpoint (restartpoint on a standby) completed
    last_checkpoint_age: float
    # WAL from that checkpoint's redo position to here (replayed WAL on a standby); None
    # when the server cannot say (a standby that has replayed nothing yet)
    wal_since_redo_bytes: int | None
    max_wal_size_bytes: int
    checkpoint_timeout: float
    # the checkpointer's counters since its statistics were reset (before 17 a standby's
    # restartpoints count here too)
    checkpoints_timed: int
    checkpoints_requested: int

    @property
    def kind(self) -> str:
        """What a standby makes instead of a checkpoint: a restartpoint."""
        return "restartpoint" if self.in_recovery else "checkpoint"

    @property
    def wal_since_redo_percent(self) -> float | None:
        """The distance to replay as a share of max_wal_size."""
        if self.wal_since_redo_bytes is None or not self.max_wal_size_bytes:
            return None
        return 100.0 * self.wal_since_redo_bytes / self.max_wal_size_bytes


def read_checkpoints(conn: psycopg.Connection[dict[str, Any]]) -> CheckpointsFacts:
    sql = checkpoints_sql(ServerCapabilities.of(conn))
    return fetch_row(conn, sql, row_class=CheckpointsFacts)
