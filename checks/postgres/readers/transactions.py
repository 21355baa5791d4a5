"""Long transactions: the oldest open one, and the oldest session idle inside one.

Both hold back vacuum (and, on a replica with hot_standby_feedback, the primary's);
an idle-in-transaction session also holds its locks while doing nothing. Only client
backends count: autovacuum and WAL senders have their own checks. Prepared transactions
(``pg_prepared_xacts``, readable by every role) belong to no session: they hold back the
xmin horizon and keep their locks across restarts until someone commits or rolls them back.
How far they hold it back is the age of their XID (``age(transaction)``), which grows with
the server's write rate, not with the clock: they are judged by both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import fetch_row
from checks.postgres.readers.connections import HIDDEN_SESSIONS_SQL

if TYPE_CHECKING:
    import psycopg

TRANSACTIONS_SQL = f"""
WITH open AS (
    SELECT pid, usename, datname, application_name, state,
           -- greatest(now(), t) - t: a session whose transaction began after this one's
           -- now() would otherwise be a negative age, outside every 0-based range
           extract(epoch FROM greatest(now(), xact_start) - xact_start)::float8 AS xact_age,
           CASE WHEN state LIKE 'idle in transaction%'
                THEN extract(epoch FROM greatest(now(), state_change) - state_change)::float8
           END AS idle_age
    FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND xact_start IS NOT NULL
      AND pid <> pg_backend_pid()
)
SELECT ({HIDDEN_SESSIONS_SQL})::int AS hidden,
       (SELECT count(*) FROM open)::int AS open_transactions,
       (SELECT count(*) FROM open WHERE idle_age IS NOT NULL)::int AS idle_in_transaction,
       (SELECT row_to_json(o) FROM open AS o ORDER BY xact_age DESC, pid LIMIT 1) AS oldest,
       (SELECT row_to_json(o) FROM open AS o WHERE idle_age IS NOT NULL
         ORDER BY idle_age DESC, pid LIMIT 1) AS oldest_idle,
       (SELECT count(*) FROM pg_prepared_xacts)::int AS prepared,
       (SELECT row_to_json(p) FROM (
            SELECT gid, owner, database,
                   extract(epoch FROM greatest(now(), prepared) - prepared)::float8 AS age,
                   age(transaction)::bigint AS xid_age
            FROM pg_prepared_xacts ORDER BY prepared, gid LIMIT 1) AS p) AS oldest_prepared,
       -- the one pinning the oldest XID: it may have begun long before it was prepared
       (SELECT row_to_json(p) FROM (
            SELECT gid, owner, database,
                   extract(epoch FROM greatest(now(), prepared) - prepared)::float8 AS age,
                   age(transaction)::bigint AS xid_age
            FROM pg_prepared_xacts ORDER BY age(transaction) DESC, gid LIMIT 1) AS p)
           AS pinning_prepared
"""


@dataclass(frozen=True)
class SessionFacts:
    pid: int
    usename: str | None
    datname: str | None
    application_name: str | None
    state: str | None
    xact_age: float
    idle_age: float | None

    def describe(self) -> str:
        """``pid 4242 (psql)``: what a DBA needs to find and end it."""
        name = self.application_name or "no application_name"
        return f"pid {self.pid} ({name})"

    def where(self) -> str:
        return f"{self.usename or '?'}@{self.datname or '?'}"


@dataclass(frozen=True)
class PreparedXactFacts:
    gid: str
    owner: str | None
    database: str | None
    age: float
    # transactions begun since this one: its XID holds the xmin horizon (and so vacuum's
    # freezing, and wraparound) back by that much
    xid_age: int = 0

    def describe(self) -> str:
        """``prepared transaction 'tx42' (app@shop)``: what COMMIT/ROLLBACK PREPARED needs."""
        return f"prepared transaction '{self.gid}' ({self.owner or '?'}@{self.database or '?'})"


@dataclass(frozen=True)
class TransactionsFacts:
    hidden: int
    open_transactions: int
    idle_in_transaction: int
    oldest: SessionFacts | None
    oldest_idle: SessionFacts | None
    prepared: int
    oldest_prepared: PreparedXactFacts | None
    pinning_prepared: PreparedXactFacts | None = None

    @property
    def oldest_prepared_age(self) -> float | None:
        return self.oldest_prepared.age if self.oldest_prepared else None


def read_transactions(conn: psycopg.Connection[dict[str, Any]]) -> TransactionsFacts:
    row = fetch_row(conn, TRANSACTIONS_SQL)
    return TransactionsFacts(
        hidden=row["hidden"],
        open_transactions=row["open_transactions"],
        idle_in_transaction=row["idle_in_transaction"],
        oldest=SessionFacts(**row["oldest"]) if row["oldest"] else None,
        oldest_idle=SessionFacts(**row["oldest_idle"]) if row["oldest_idle"] else None,
        prepared=row["prepared"],
        oldest_prepared=PreparedXactFacts(**row["oldest_prepared"])
        if row["oldest_prepared"]
        else None,
        pinning_prepared=(
            PreparedXactFacts(**row["pinning_prepared"]) if row["pinning_prepared"] else None
        ),
    )
