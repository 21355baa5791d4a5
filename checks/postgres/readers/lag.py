"""Replication lag as the replica sees it: the facts, never a verdict.

Everything that compares WAL positions is computed by the server (``pg_wal_lsn_diff``: LSN
arithmetic in the client goes wrong across segment boundaries), including the distance to
a reference position the caller passes in (the leader's published ``pg_wal_lsn``, or the
current WAL position of a primary given on the command line).

What the replica knows about *time* (docs/design.md §3, §9):

- ``pg_last_xact_replay_timestamp()`` is the primary's commit time of the last replayed
  transaction. WAL waiting to be replayed was written after it, so ``now -`` that time is
  an upper bound of how long that WAL has waited; after a quiet spell it is the length of
  the quiet spell, not lag.
- ``pg_stat_wal_receiver.latest_end_lsn``/``latest_end_time``: the primary's WAL end and
  the primary's clock when that end was first reported to us. When replay has not reached
  that position, some WAL waiting now was written before that time: ``now -
  latest_end_time`` is a lower bound of how long it has waited.
- When the WAL receiver is down its row is gone. The newest WAL file's modification time
  (``pg_ls_waldir()``, pg_monitor may read it) is when the replica last wrote WAL it got
  from upstream: a streamed record, the segment a reconnecting receiver rewrites from its
  start, the shutdown checkpoint a stopping primary sends, or a file restored from the
  archive. It is read only when no receiver streams, so the common path does not list
  the directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.capabilities import ServerCapabilities
from checks.postgres.connection import fetch_row

if TYPE_CHECKING:
    import psycopg

# Parameters a hot standby must have at least as high as the primary (PostgreSQL's
# CheckRequiredParameterValues); from 14 on, a standby that replays a parameter change
# above its own value pauses replay instead of shutting down.
REQUIRED_PARAMETERS = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)

_LAG_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       (SELECT system_identifier FROM pg_control_system())::text AS system_identifier,
       pg_last_wal_receive_lsn()::text AS received_lsn,
       pg_last_wal_replay_lsn()::text AS replayed_lsn,
       -- NULL stays NULL (unknown); read_lag() clamps negatives (GREATEST would turn a
       -- NULL into 0, and ages on the primary's clock go negative on clock skew).
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint
           AS received_not_replayed_bytes,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
           AS last_replayed_commit_age,
       CASE WHEN receiver.latest_end_lsn > pg_last_wal_replay_lsn()
            THEN extract(epoch FROM now() - receiver.latest_end_time)
            ELSE 0 END::float8 AS waiting_at_least,
       extract(epoch FROM current_setting('recovery_min_apply_delay')::interval)::float8
           AS apply_delay,
       {paused} AS replay_paused,
       receiver.pid AS receiver_pid,
       receiver.status AS receiver_status,
       extract(epoch FROM now() - receiver.last_msg_receipt_time)::float8
           AS receiver_message_age,
       receiver.sender_host, receiver.sender_port,
       extract(epoch FROM current_setting('wal_receiver_timeout')::interval)::float8
           AS wal_receiver_timeout,
       extract(epoch FROM now() - pg_postmaster_start_time())::float8 AS server_uptime
FROM (SELECT 1) AS one
LEFT JOIN pg_stat_wal_receiver AS receiver ON true
"""

# Only without a streaming receiver, so the common path neither lists pg_wal nor reads
# pg_settings. A separate statement because PostgreSQL checks EXECUTE on every function a
# statement names before running it: pg_ls_waldir() in the main query would fail for a
# role without pg_monitor before the check could name the missing privilege.
_NOT_STREAMING_SQL = """
SELECT (SELECT extract(epoch FROM now() - max(modification))
          FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$')::float8 AS last_wal_written_age,
       (SELECT setting <> '' FROM pg_settings WHERE name = 'primary_conninfo')
           AS streaming_configured,
       (SELECT setting <> '' FROM pg_settings WHERE name = 'restore_command')
           AS archive_configured
"""

_PARAMETER_COLUMNS = ", ".join(
    f"current_setting('{name}')::int AS {name}" for name in REQUIRED_PARAMETERS
)
_PARAMETERS_SQL = f"SELECT {_PARAMETER_COLUMNS}"
# Another server's position (a --primary, or the upstream when replay is paused).
_POSITION_SQL = f"""
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS wal_lsn,
       (SELECT system_identifier FROM pg_control_system())::text AS system_identifier,
       {_PARAMETER_COLUMNS}
"""


# Replay held up by a lock: a query here holds one a replayed record needs (DROP, TRUNCATE,
# VACUUM's truncation take AccessExclusiveLock), and max_standby_streaming_delay lets it
# wait, forever at -1. The record being replayed arrived before the startup process began
# to wait, so that wait is a lower bound of how long the waiting WAL has waited, even while
# the primary keeps writing (which keeps latest_end_time recent). Needs pg_locks.waitstart
# (has_lock_wait_start).
_REPLAY_LOCK_WAIT_SQL = """
SELECT extract(epoch FROM now() - min(l.waitstart))::float8 AS waited
FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE a.backend_type = 'startup' AND NOT l.granted
"""


def lag_sql(server: ServerCapabilities) -> str:
    # 'pause requested' and 'paused' both mean replay is not advancing on purpose
    if server.has_replay_pause_state:
        paused = "pg_is_in_recovery() AND pg_get_wal_replay_pause_state() <> 'not paused'"
    else:
        paused = "pg_is_in_recovery() AND pg_is_wal_replay_paused()"
    return _LAG_SQL.format(paused=paused)


@dataclass(frozen=True)
class ReplicaLagFacts:
    in_recovery: bool
    server_version: int
    system_identifier: str
    received_lsn: str | None
    replayed_lsn: str | None
    # None when nothing was streamed since the server started (log shipping)
    received_not_replayed_bytes: int | None
    # None without a reference position
    behind_reference_bytes: int | None
    # None when no transaction was replayed since the server started
    last_replayed_commit_age: float | None
    waiting_at_least: float
    apply_delay: float
    replay_paused: bool
    receiver_pid: int | None
    # None with a pid: the role may not read pg_stat_wal_receiver's details
    receiver_status: str | None
    receiver_message_age: float | None
    sender_host: str | None
    sender_port: int | None
    wal_receiver_timeout: float
    # Only read without a streaming receiver (None otherwise, or when not visible)
    last_wal_written_age: float | None
    streaming_configured: bool | None
    archive_configured: bool | None
    server_uptime: float

    @property
    def capabilities(self) -> ServerCapabilities:
        return ServerCapabilities(self.server_version)

    @property
    def receiver_hidden(self) -> bool:
        return self.receiver_pid is not None and self.receiver_status is None

    @property
    def streaming(self) -> bool:
        return self.receiver_status == "streaming"

    @property
    def sender(self) -> str | None:
        return f"{self.sender_host}:{self.sender_port}" if self.sender_host else None

    @property
    def log_shipping(self) -> bool:
        """A standby fed by restore_command alone: no receiver is expected."""
        return (
            not self.streaming
            and self.streaming_configured is False
            and bool(self.archive_configured)
        )


def _clamped(value: float | None) -> float | None:
    return None if value is None else max(0, value)


def read_lag(conn: psycopg.Connection[dict[str, Any]]) -> ReplicaLagFacts:
    """The replica's facts; ``behind_reference_bytes`` stays None (see read_distance)."""
    version = conn.info.server_version
    row = fetch_row(conn, lag_sql(ServerCapabilities(version)))
    not_streaming = (
        row["in_recovery"]
        and row["receiver_status"] != "streaming"
        and not (row["receiver_pid"] is not None and row["receiver_status"] is None)
    )
    row.update(
        fetch_row(conn, _NOT_STREAMING_SQL)
        if not_streaming
        else dict.fromkeys(("last_wal_written_age", "streaming_configured", "archive_configured"))
    )
    for name in (
        "received_not_replayed_bytes",
        "last_replayed_commit_age",
        "waiting_at_least",
        "receiver_message_age",
        "last_wal_written_age",
        "server_uptime",
    ):
        row[name] = _clamped(row[name])
    return ReplicaLagFacts(
        in_recovery=bool(row["in_recovery"]),
        server_version=version,
        system_identifier=row["system_identifier"],
        received_lsn=row["received_lsn"],
        replayed_lsn=row["replayed_lsn"],
        received_not_replayed_bytes=row["received_not_replayed_bytes"],
        behind_reference_bytes=None,
        last_replayed_commit_age=row["last_replayed_commit_age"],
        waiting_at_least=float(row["waiting_at_least"] or 0.0),
        apply_delay=float(row["apply_delay"] or 0.0),
        replay_paused=bool(row["replay_paused"]),
        receiver_pid=row["receiver_pid"],
        receiver_status=row["receiver_status"],
        receiver_message_age=row["receiver_message_age"],
        sender_host=row["sender_host"],
        sender_port=row["sender_port"],
        wal_receiver_timeout=float(row["wal_receiver_timeout"] or 0.0),
        last_wal_written_age=row["last_wal_written_age"],
        streaming_configured=row["streaming_configured"],
        archive_configured=row["archive_configured"],
        server_uptime=float(row["server_uptime"] or 0.0),
    )


def read_distance(conn: psycopg.Connection[dict[str, Any]], ahead: str, behind: str) -> int:
    """Bytes from ``behind`` to ``ahead`` (text LSNs), by the server; 0 if not ahead.

    Asked only once the replica knows it is a replica and a reference was found, so a
    primary's run never pays for the lookup.
    """
    # numeric, not ::bigint: a published position can be any LSN (up to FFFFFFFF/FFFFFFFF,
    # 2^64 - 1), and a bigint overflow would make the check UNKNOWN, which Consul counts as
    # critical on every replica at once.
    row = fetch_row(
        conn, "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn) AS bytes", (ahead, behind)
    )
    return max(0, int(row["bytes"]))


def read_replay_lock_wait(conn: psycopg.Connection[dict[str, Any]]) -> float | None:
    """Seconds the startup process has waited for a lock, None when it waits for none."""
    return _clamped(fetch_row(conn, _REPLAY_LOCK_WAIT_SQL)["waited"])


def read_parameters(conn: psycopg.Connection[dict[str, Any]]) -> dict[str, int]:
    """The replica's own values of the parameters a hot standby needs."""
    row = fetch_row(conn, _PARAMETERS_SQL)
    return {name: int(row[name]) for name in REQUIRED_PARAMETERS}


@dataclass(frozen=True)
class ServerPositionFacts:
    """What another server (a primary given by conninfo, or the upstream) told us."""

    in_recovery: bool
    wal_lsn: str | None
    system_identifier: str
    parameters: dict[str, int]


def read_position(conn: psycopg.Connection[dict[str, Any]]) -> ServerPositionFacts:
    row = fetch_row(conn, _POSITION_SQL)
    return ServerPositionFacts(
        in_recovery=bool(row["in_recovery"]),
        wal_lsn=row["wal_lsn"],
        system_identifier=row["system_identifier"],
        parameters={name: int(row[name]) for name in REQUIRED_PARAMETERS},
    )
