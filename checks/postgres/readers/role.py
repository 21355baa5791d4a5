"""Role: primary or replica, on which timeline, of which cluster, writable or not.

The timeline comes from where it is current (docs/design.md §3): on a primary the first 8
hex digits of the current WAL file name (``pg_control_checkpoint()`` keeps the old timeline
until the end-of-recovery checkpoint, minutes after a promotion); on a replica the
timeline its WAL receiver is receiving, else the one it replays.

Writable is a fact about the server, not about our session (docs/design.md §9). A primary
is read-only for its clients when ``default_transaction_read_only`` is on in the server's
own configuration (postgresql.conf, ALTER SYSTEM's postgresql.auto.conf, the command line):
every new session of every role starts read-only. The same setting made for one database,
one role, one role in one database, or by the client (``PGOPTIONS``, ``options=`` in a
conninfo or service file) only concerns the sessions it is made for; the monitoring login
often carries exactly that, as a safety belt. ``pg_settings.source`` says which layer our
session's value comes from; when it is one of those login layers, the server's own value is
hidden behind it, and only a superuser can read it (``pg_file_settings``). A pg_monitor
login then assumes the built-in default (off) and the details say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import fetch_row, query
from checks.postgres.server_settings import is_login_source

if TYPE_CHECKING:
    import psycopg

# The current timeline (see above), as read_role() and the resident's health endpoints
# (readers/instance.py) both report it.
TIMELINE_SQL = """CASE WHEN pg_is_in_recovery()
            THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                          (SELECT timeline_id FROM pg_control_checkpoint()))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END"""

ROLE_SQL = f"""
SELECT pg_is_in_recovery() AS in_recovery,
       s.setting::bool AS session_read_only,
       s.source AS read_only_source,
       s.boot_val::bool AS built_in_read_only,
       has_table_privilege('pg_catalog.pg_file_settings', 'SELECT') AS can_read_files,
       (SELECT system_identifier FROM pg_control_system())::text AS system_identifier,
       {TIMELINE_SQL} AS timeline
FROM pg_settings AS s
WHERE s.name = 'default_transaction_read_only'
"""

# The configuration files' value in effect (superusers only): the last applied line wins.
FILE_READ_ONLY_SQL = """
SELECT setting::bool AS read_only
FROM pg_file_settings
WHERE name = 'default_transaction_read_only' AND applied
ORDER BY seqno DESC
LIMIT 1
"""


@dataclass(frozen=True)
class RoleFacts:
    in_recovery: bool
    # the server's own default_transaction_read_only: every new session starts read-only
    read_only: bool
    timeline: int
    system_identifier: str
    server_version: int
    # our session's value and the pg_settings source it came from
    session_read_only: bool = False
    read_only_source: str = "default"
    # False when a login layer hides the server's value from this role (read_only is
    # then the built-in default)
    server_value_known: bool = True

    @property
    def is_primary(self) -> bool:
        return not self.in_recovery

    @property
    def writable(self) -> bool:
        return not self.in_recovery and not self.read_only

    @property
    def role(self) -> str:
        return "replica" if self.in_recovery else "primary"

    @property
    def login_setting(self) -> bool:
        """Our session's default_transaction_read_only comes from a per-login layer."""
        return is_login_source(self.read_only_source)

    def read_only_note(self) -> str | None:
        """Why writable is what it is, when our session would suggest otherwise."""
        if not self.is_primary:
            return None
        if self.read_only:
            return "default_transaction_read_only is on in the server's configuration"
        if not self.login_setting or self.session_read_only == self.read_only:
            return None
        note = (
            f"default_transaction_read_only={'on' if self.session_read_only else 'off'} is "
            f"this login's own ({self.read_only_source} setting), not the server's"
        )
        if not self.server_value_known:
            note += "; it hides the server's value from this role, taken as the default (off)"
        return note


def read_role(conn: psycopg.Connection[dict[str, Any]]) -> RoleFacts:
    return role_facts(conn, fetch_row(conn, ROLE_SQL))


def role_facts(conn: psycopg.Connection[dict[str, Any]], row: Mapping[str, Any]) -> RoleFacts:
    """RoleFacts from a row with ROLE_SQL's columns (maybe among others: the reporter reads
    them in the same statement as its position, one round trip per turn)."""
    source = str(row["read_only_source"])
    session_read_only = bool(row["session_read_only"])
    read_only, known = session_read_only, True
    if is_login_source(source):
        read_only, known = bool(row["built_in_read_only"]), False
        if row["can_read_files"]:
            # a later line of the configuration files overrides an earlier one
            rows = query(conn, FILE_READ_ONLY_SQL)
            read_only, known = (bool(rows[0]["read_only"]) if rows else read_only), True
    return RoleFacts(
        in_recovery=bool(row["in_recovery"]),
        read_only=read_only,
        timeline=int(row["timeline"]),
        system_identifier=row["system_identifier"],
        server_version=conn.info.server_version,
        session_read_only=session_read_only,
        read_only_source=source,
        server_value_known=known,
    )
