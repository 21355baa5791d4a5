"""Client connections against the slots a non-superuser can actually get.

Since PostgreSQL 12 WAL senders do not count against ``max_connections`` and background
workers never did, so "used" is the client backends. Superusers may use the
``superuser_reserved_connections`` slots, and (16+) members of pg_use_reserved_connections
the ``reserved_connections`` ones; everybody else runs out before ``max_connections``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from checks.postgres.capabilities import ServerCapabilities
from checks.postgres.connection import fetch_row

if TYPE_CHECKING:
    import psycopg

# Without pg_read_all_stats, other roles' sessions show in pg_stat_activity with a NULL
# backend_type (and state); only their usesysid tells a session from an aux process.
HIDDEN_SESSIONS_SQL = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type IS NULL AND usesysid IS NOT NULL"
)

_CONNECTIONS_SQL = """
WITH clients AS (
    SELECT datname, state FROM pg_stat_activity WHERE backend_type = 'client backend'
)
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       {reserved}::int AS reserved,
       (SELECT count(*) FROM clients)::int AS used,
       ({hidden})::int AS hidden,
       coalesce((SELECT json_object_agg(coalesce(datname, ''), n)
                   FROM (SELECT datname, count(*) AS n FROM clients GROUP BY datname) AS d),
                '{{}}') AS per_database,
       coalesce((SELECT json_object_agg(coalesce(state, 'unknown'), n)
                   FROM (SELECT state, count(*) AS n FROM clients GROUP BY state) AS s),
                '{{}}') AS per_state
"""
_RESERVED_SINCE_16 = "current_setting('reserved_connections')"
_RESERVED_BEFORE_16 = "0"


def connections_sql(server: ServerCapabilities) -> str:
    reserved = _RESERVED_SINCE_16 if server.has_reserved_connections else _RESERVED_BEFORE_16
    return _CONNECTIONS_SQL.format(reserved=reserved, hidden=HIDDEN_SESSIONS_SQL)


@dataclass(frozen=True)
class ConnectionsFacts:
    max_connections: int
    superuser_reserved: int
    reserved: int
    used: int
    # sessions of other roles this login may not see (no pg_read_all_stats)
    hidden: int
    per_database: dict[str, int] = field(default_factory=dict)
    per_state: dict[str, int] = field(default_factory=dict)

    @property
    def usable(self) -> int:
        return max(0, self.max_connections - self.superuser_reserved - self.reserved)

    @property
    def used_percent(self) -> float:
        return 100.0 * self.used / self.usable if self.usable else 100.0

    @property
    def busiest_database(self) -> tuple[str, int] | None:
        if not self.per_database:
            return None
        return max(self.per_database.items(), key=lambda item: (item[1], item[0]))


def read_connections(conn: psycopg.Connection[dict[str, Any]]) -> ConnectionsFacts:
    sql = connections_sql(ServerCapabilities.of(conn))
    return fetch_row(conn, sql, row_class=ConnectionsFacts)
