"""SQL about pg-role-reporter: what it reads besides the role, and whether it is there.

- `read_turn()`: what the reporter reads every turn, in one statement (one round trip,
  four times a second): the role (ROLE_SQL, as read_role() reads it) and its position: the
  port the server listens on (matched against the Consul service's Port, so a wrong
  --service-id cannot tag another instance) and, on a primary, its current WAL position
  and how far it moved since the last published one (the server does the LSN arithmetic).
- `keep_session_open()`: exempts the kept connection from idle_session_timeout.
- `read_presence()`: consul-role's look at the reporter's kept connection in
  pg_stat_activity (application_name `pg-role-reporter`): none means it is stopped; a
  last query older than a few intervals means it is hung. Needs pg_read_all_stats (part
  of pg_monitor) to see another role's query_start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from checks.postgres.capabilities import ServerCapabilities
from checks.postgres.connection import fetch_row
from checks.postgres.readers.role import ROLE_SQL, RoleFacts, role_facts

if TYPE_CHECKING:
    import psycopg

REPORTER_APPLICATION_NAME = "pg-role-reporter"

POSITION_SQL = """
SELECT current_setting('port')::int AS port,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_current_wal_lsn()::text END AS wal_lsn,
       CASE WHEN pg_is_in_recovery() OR %(since)s::text IS NULL THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), %(since)s::text::pg_lsn)::bigint
       END AS advanced_bytes
"""

# ROLE_SQL and POSITION_SQL side by side (their column names differ): one round trip.
TURN_SQL = f"SELECT * FROM ({ROLE_SQL}) AS role, ({POSITION_SQL}) AS position"

PRESENCE_SQL = """
SELECT count(*)::int AS connections,
       -- greatest(now(), t) - t: an age that is never negative, and NULL when t is
       extract(epoch FROM greatest(now(), max(last_active)) - max(last_active))::float8
           AS silent_seconds
  FROM (SELECT coalesce(query_start, backend_start) AS last_active
          FROM pg_stat_activity
         WHERE application_name = %(name)s AND pid <> pg_backend_pid()) AS reporter
"""


# The reporter's loop also sleeps on its kept connection's socket, and a session that
# PostgreSQL ends wakes it to reconnect at once. Under an idle_session_timeout shorter than
# --interval (a DBA's, for the server or the monitoring role) every new session would end
# idle in turn: a reconnect (a backend forked) as often as that timeout, 30 a second at
# 20 ms. The setting is the session's own to change (USERSET), so the kept one opts out.
KEEP_SESSION_SQL = "SELECT set_config('idle_session_timeout', '0', false)"


@dataclass(frozen=True)
class ReporterPositionFacts:
    port: int
    wal_lsn: str | None
    advanced_bytes: int | None


def read_turn(
    conn: psycopg.Connection[dict[str, Any]], *, since: str | None
) -> tuple[RoleFacts, ReporterPositionFacts]:
    row = fetch_row(conn, TURN_SQL, {"since": since})
    position = ReporterPositionFacts(
        port=row["port"], wal_lsn=row["wal_lsn"], advanced_bytes=row["advanced_bytes"]
    )
    return role_facts(conn, row), position


def keep_session_open(conn: psycopg.Connection[dict[str, Any]]) -> None:
    """Once per new kept connection: PostgreSQL must not end it for idling between turns."""
    if ServerCapabilities.of(conn).has_idle_session_timeout:
        fetch_row(conn, KEEP_SESSION_SQL)


class ReporterPresenceFacts(NamedTuple):
    """The reporter's kept connections as pg_stat_activity shows them. A tuple, so that
    callers may unpack it as ``connections, silent = read_presence(conn)``."""

    connections: int
    # since the newest query of any of them; None if none is there or none is visible
    silent_seconds: float | None


def read_presence(conn: psycopg.Connection[dict[str, Any]]) -> ReporterPresenceFacts:
    params = {"name": REPORTER_APPLICATION_NAME}
    return fetch_row(conn, PRESENCE_SQL, params, row_class=ReporterPresenceFacts)
