"""Transaction ID wraparound: how old is the oldest unfrozen XID of each database.

``age(datfrozenxid)`` counts transactions since the database was last fully frozen; at
2^31 the server stops accepting writes. ``pg_database`` is readable by every role, and a
replica holds the same values as its primary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import query

if TYPE_CHECKING:
    import psycopg

WRAPAROUND_LIMIT = 2**31

WRAPAROUND_SQL = """
SELECT datname, age(datfrozenxid)::bigint AS xid_age, mxid_age(datminmxid)::bigint AS mxid_age,
       current_setting('autovacuum_freeze_max_age')::bigint AS freeze_max_age
FROM pg_database
ORDER BY age(datfrozenxid) DESC, datname
"""


@dataclass(frozen=True)
class DatabaseAge:
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


def read_wraparound(conn: psycopg.Connection[dict[str, Any]]) -> list[DatabaseAge]:
    """Every database, oldest first."""
    return [DatabaseAge(**row) for row in query(conn, WRAPAROUND_SQL)]
