"""SQL about pg-role-reporter: what it reads besides the role, and whether it is there.

- `read_position()`: the reporter's own query next to read_role(): the port the server
  listens on (matched against the Consul service's Port, so a wrong --service-id cannot tag
  another instance) and, on a primary, its current WAL position and how far it moved since
  the last published one (the server does the LSN arithmetic).
- `read_presence()`: consul-role's look at the reporter's kept connection in
  pg_stat_activity (application_name `pg-role-reporter`): none means it is stopped; a
  last query older than a few intervals means it is hung. Needs pg_read_all_stats (part
  of pg_monitor) to see another role's query_start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import fetch_row

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

PRESENCE_SQL = """
SELECT count(*)::int AS connections,
       extract(epoch FROM now() - max(coalesce(query_start, backend_start)))::float8
           AS silent_seconds
  FROM pg_stat_activity
 WHERE application_name = %(name)s AND pid <> pg_backend_pid()
"""


@dataclass(frozen=True)
class ReporterPositionFacts:
    port: int
    wal_lsn: str | None
    advanced_bytes: int | None


def read_position(
    conn: psycopg.Connection[dict[str, Any]], *, since: str | None
) -> ReporterPositionFacts:
    row = fetch_row(conn, POSITION_SQL, {"since": since})
    return ReporterPositionFacts(
        port=int(row["port"]),
        wal_lsn=row["wal_lsn"],
        advanced_bytes=None if row["advanced_bytes"] is None else int(row["advanced_bytes"]),
    )


def read_presence(conn: psycopg.Connection[dict[str, Any]]) -> tuple[int, float | None]:
    """(connections, seconds since the newest query of any of them, None if invisible)."""
    row = fetch_row(conn, PRESENCE_SQL, {"name": REPORTER_APPLICATION_NAME})
    silent = row["silent_seconds"]
    return int(row["connections"]), None if silent is None else max(0.0, float(silent))
