"""Liveness: can the server run a query at all, and how long does it take."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import fetch_row

if TYPE_CHECKING:
    import psycopg

# Asks for the recovery state too: it costs nothing and tells the reader which node answered.
ALIVE_SQL = "SELECT pg_is_in_recovery() AS in_recovery"


@dataclass(frozen=True)
class LivenessFacts:
    query_seconds: float
    in_recovery: bool
    server_version: int


def read_liveness(conn: psycopg.Connection[dict[str, Any]]) -> LivenessFacts:
    started = time.monotonic()
    row = fetch_row(conn, ALIVE_SQL)
    return LivenessFacts(
        query_seconds=time.monotonic() - started,
        in_recovery=bool(row["in_recovery"]),
        server_version=conn.info.server_version,
    )
