"""Role: primary or replica, on which timeline, of which cluster, writable or not.

The timeline comes from where it is current (DESIGN.md §3): on a primary the first 8 hex
digits of the current WAL file name (``pg_control_checkpoint()`` keeps the old timeline
until the end-of-recovery checkpoint, minutes after a promotion); on a replica the
timeline its WAL receiver is receiving, else the one it replays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import fetch_row

if TYPE_CHECKING:
    import psycopg

ROLE_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       current_setting('default_transaction_read_only')::bool AS read_only,
       (SELECT system_identifier FROM pg_control_system())::text AS system_identifier,
       CASE WHEN pg_is_in_recovery()
            THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                          (SELECT timeline_id FROM pg_control_checkpoint()))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END AS timeline
"""


@dataclass(frozen=True)
class RoleFacts:
    in_recovery: bool
    read_only: bool
    timeline: int
    system_identifier: str
    server_version: int

    @property
    def is_primary(self) -> bool:
        return not self.in_recovery

    @property
    def writable(self) -> bool:
        return not self.in_recovery and not self.read_only

    @property
    def role(self) -> str:
        return "replica" if self.in_recovery else "primary"


def read_role(conn: psycopg.Connection[dict[str, Any]]) -> RoleFacts:
    row = fetch_row(conn, ROLE_SQL)
    return RoleFacts(
        in_recovery=bool(row["in_recovery"]),
        read_only=bool(row["read_only"]),
        timeline=int(row["timeline"]),
        system_identifier=row["system_identifier"],
        server_version=conn.info.server_version,
    )
