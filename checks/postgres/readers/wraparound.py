"""Transaction ID wraparound: how old is the oldest unfrozen XID of each database.

``age(datfrozenxid)`` counts transactions since the database was last fully frozen; at
2^31 the server stops accepting writes. ``pg_database`` is readable by every role, and a
replica holds the same values as its primary.

Vacuum can only freeze what no one may still need to see: rows older than the server's
xmin horizon. Whatever holds that horizon back holds datfrozenxid back, however often
vacuum runs: a replication slot's ``xmin`` (a standby's hot_standby_feedback through its
slot) or ``catalog_xmin`` (a logical slot), a prepared transaction, a session's open
transaction or snapshot, a standby's hot_standby_feedback without a slot (its WAL
sender's ``backend_xmin``). The oldest of them is what to deal with; all are readable
with pg_monitor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import query
from checks.postgres.readers.connections import HIDDEN_SESSIONS_SQL

if TYPE_CHECKING:
    import psycopg

WRAPAROUND_LIMIT = 2**31

# The oldest of everything that holds the xmin horizon back, with its XID age: an
# uncorrelated subquery, so the server computes it once for all rows of pg_database.
_HOLDER = """(SELECT row_to_json(h) FROM (
    SELECT 'replication slot' AS kind, slot_name::text AS name, 'xmin' AS what,
           age(xmin)::bigint AS age
    FROM pg_replication_slots WHERE xmin IS NOT NULL
    UNION ALL
    SELECT 'replication slot', slot_name::text, 'catalog_xmin', age(catalog_xmin)::bigint
    FROM pg_replication_slots WHERE catalog_xmin IS NOT NULL
    UNION ALL
    SELECT 'prepared transaction', gid, 'transaction', age(transaction)::bigint
    FROM pg_prepared_xacts
    UNION ALL
    -- a WAL sender's backend_xmin is its standby's feedback, named below
    SELECT 'session', 'pid ' || pid || coalesce(' (' || nullif(application_name, '') || ')', ''),
           CASE WHEN backend_xid IS NOT NULL THEN 'transaction' ELSE 'snapshot' END,
           greatest(age(backend_xid), age(backend_xmin))::bigint
    FROM pg_stat_activity
    WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
      AND backend_type IS DISTINCT FROM 'walsender' AND pid <> pg_backend_pid()
    UNION ALL
    SELECT 'standby', application_name, 'hot_standby_feedback', age(backend_xmin)::bigint
    FROM pg_stat_replication WHERE backend_xmin IS NOT NULL
    ORDER BY age DESC, kind, name LIMIT 1
) AS h)"""

WRAPAROUND_SQL = f"""
SELECT datname, age(datfrozenxid)::bigint AS xid_age, mxid_age(datminmxid)::bigint AS mxid_age,
       current_setting('autovacuum_freeze_max_age')::bigint AS freeze_max_age,
       {_HOLDER} AS holder, ({HIDDEN_SESSIONS_SQL})::int AS hidden_sessions
FROM pg_database
ORDER BY age(datfrozenxid) DESC, datname
"""


@dataclass(frozen=True)
class HorizonHolderFacts:
    """What holds the xmin horizon back, oldest first: ``replication slot 'x' (xmin)``."""

    kind: str
    name: str
    what: str
    age: int

    def describe(self) -> str:
        if self.kind == "session":
            return f"{self.name}'s open {self.what}"
        if self.kind == "standby":
            return f"standby {self.name}'s hot_standby_feedback"
        if self.kind == "prepared transaction":
            return f"prepared transaction '{self.name}'"
        return f"{self.kind} '{self.name}' ({self.what})"


@dataclass(frozen=True)
class DatabaseAgeFacts:
    datname: str
    xid_age: int
    mxid_age: int
    freeze_max_age: int

    @property
    def xid_percent(self) -> float:
        return 100.0 * self.xid_age / WRAPAROUND_LIMIT

    @property
    def mxid_percent(self) -> float:
        return 100.0 * self.mxid_age / WRAPAROUND_LIMIT


@dataclass(frozen=True)
class WraparoundFacts:
    databases: list[DatabaseAgeFacts]  # oldest first
    holder: HorizonHolderFacts | None  # None: nothing holds the xmin horizon back
    # sessions whose transactions this role cannot see (no pg_read_all_stats)
    hidden_sessions: int = 0


def read_wraparound(conn: psycopg.Connection[dict[str, Any]]) -> WraparoundFacts:
    rows = query(conn, WRAPAROUND_SQL)
    first = rows[0] if rows else {}
    server_columns = ("holder", "hidden_sessions")
    databases = [
        DatabaseAgeFacts(**{k: v for k, v in row.items() if k not in server_columns})
        for row in rows
    ]
    holder = first.get("holder")
    return WraparoundFacts(
        databases=databases,
        holder=HorizonHolderFacts(**holder) if holder else None,
        hidden_sessions=int(first.get("hidden_sessions") or 0),
    )


def holds_back(holder: HorizonHolderFacts | None, oldest: DatabaseAgeFacts) -> bool:
    """Whether the holder is why the oldest database cannot be frozen further: vacuum
    could otherwise freeze up to the holder's XID, so at least half of the age is its."""
    return holder is not None and holder.age * 2 >= oldest.xid_age
