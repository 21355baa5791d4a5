"""Standbys as their upstream sees them (``pg_stat_replication``).

Works on a cascading replica too: the reference point is then its replayed LSN.
``write_lag``/``flush_lag``/``replay_lag`` (PostgreSQL 10+) are NULL once a standby has
caught up and the upstream is idle; that means no lag, so they read as 0.

A WAL sender whose client reports where it wrote WAL but never where it replayed it
(``replay_lsn`` NULL, ``write_lsn`` set) feeds a WAL receiver such as pg_receivewal or
barman, not a standby: nothing can fail over to it, and it has no replay lag.
A WAL sender decoding a logical replication slot feeds a subscriber (or pg_recvlogical):
it holds a copy of some tables, not of the cluster, so it is not a standby either. So does
one copying a table for a new subscription, which has no active slot while it copies: a
logical WAL sender is told by the database it is connected to.

Whether commits wait for synchronous standbys is the server's ``synchronous_commit``
(``on``, ``remote_write``, ``remote_apply`` wait; ``local`` and ``off`` do not), read from
the server's own configuration layers like every server fact (checks/postgres/
server_settings.py): a value our login carries says nothing about other sessions.

The server replaces non-ASCII characters of an ``application_name`` (``?`` per byte
before PostgreSQL 16, ``\\xHH`` escapes since): such a standby never matches a name in
synchronous_standby_names or ``--standby`` written with the real characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from checks.postgres.capabilities import ServerCapabilities
from checks.postgres.connection import query
from checks.postgres.server_settings import is_login_source

if TYPE_CHECKING:
    import psycopg

STANDBYS_SQL = """
WITH here AS (
    SELECT pg_is_in_recovery() AS in_recovery,
           current_setting('synchronous_standby_names') AS synchronous_standby_names,
           sc.setting AS synchronous_commit, sc.source AS synchronous_commit_source,
           sc.boot_val AS synchronous_commit_default,
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                ELSE pg_current_wal_lsn() END AS lsn
    FROM pg_settings AS sc WHERE sc.name = 'synchronous_commit'
)
-- one row even with no standby (pid NULL), so the server's state comes in the same query
SELECT here.in_recovery, here.synchronous_standby_names, here.synchronous_commit,
       here.synchronous_commit_source, here.synchronous_commit_default,
       r.pid, r.application_name, host(r.client_addr) AS client_addr,
       r.state, r.sync_state,
       (r.replay_lsn IS NULL AND r.write_lsn IS NOT NULL) AS wal_receiver,
       -- a logical WAL sender is connected to a database (a physical one is not); its
       -- slot is not active while it copies a subscription's table
       (EXISTS (SELECT FROM pg_replication_slots AS s
                WHERE s.active_pid = r.pid AND s.slot_type = 'logical')
        OR EXISTS (SELECT FROM pg_stat_activity AS a
                   WHERE a.pid = r.pid AND a.datid IS NOT NULL)) AS logical,
       CASE WHEN r.replay_lsn IS NULL THEN NULL
            ELSE greatest(0, pg_wal_lsn_diff(here.lsn, r.replay_lsn))::bigint
       END AS replay_lag_bytes,
       CASE WHEN r.flush_lsn IS NULL THEN NULL
            ELSE greatest(0, pg_wal_lsn_diff(here.lsn, r.flush_lsn))::bigint
       END AS flush_lag_bytes,
       coalesce(extract(epoch FROM r.write_lag), 0)::float8 AS write_lag_seconds,
       coalesce(extract(epoch FROM r.flush_lag), 0)::float8 AS flush_lag_seconds,
       coalesce(extract(epoch FROM r.replay_lag), 0)::float8 AS replay_lag_seconds
FROM here
-- a running pg_basebackup is a WAL sender too, but not a standby
LEFT JOIN pg_stat_replication AS r ON r.state IS DISTINCT FROM 'backup'
ORDER BY r.application_name, r.pid
"""

# "FIRST 2 (a, b)", "ANY 1 (a, b)", "2 (a, b)" (the pre-9.6 form of FIRST)
_COUNTED = re.compile(r"^\s*(?:(?:first|any)\s+)?(\d+)\s*\(", re.IGNORECASE)


def required_sync_standbys(setting: str | None) -> int:
    """How many synchronous standbys a commit waits for, per ``synchronous_standby_names``.

    ``FIRST n (...)``, ``ANY n (...)`` and ``n (...)`` wait for n; a plain list of names
    (or ``*``) waits for the first one connected, so 1; an empty setting for none.
    """
    if setting is None or not setting.strip():
        return 0
    match = _COUNTED.match(setting)
    return int(match.group(1)) if match else 1


@dataclass(frozen=True)
class StandbyFacts:
    pid: int
    application_name: str
    client_addr: str | None
    # None: the role may not read pg_stat_replication's details
    state: str | None
    sync_state: str | None
    # a WAL receiver (pg_receivewal, barman): writes WAL, replays none
    wal_receiver: bool | None
    # decodes a logical slot for a subscriber (or pg_recvlogical): not a copy of the cluster
    logical: bool
    # None: not reported (a WAL receiver, or a standby that has not replied yet)
    replay_lag_bytes: int | None
    flush_lag_bytes: int | None
    write_lag_seconds: float
    flush_lag_seconds: float
    replay_lag_seconds: float

    @property
    def hidden(self) -> bool:
        return self.state is None

    @property
    def streaming(self) -> bool:
        return self.state == "streaming"

    @property
    def synchronous(self) -> bool:
        return self.sync_state in ("sync", "quorum")


def worst_first(standbys: list[StandbyFacts]) -> list[StandbyFacts]:
    """Not streaming first, then the largest replay lag (bytes, then seconds), then name."""
    return sorted(
        standbys,
        key=lambda s: (
            s.streaming,
            -(s.replay_lag_bytes or 0),
            -s.replay_lag_seconds,
            s.application_name,
            s.pid,
        ),
    )


# synchronous_commit values with which a commit waits for synchronous standbys
WAITING_COMMITS = frozenset({"on", "remote_write", "remote_apply"})


@dataclass(frozen=True)
class UpstreamFacts:
    """The server asked, and the standbys and WAL receivers streaming from it."""

    in_recovery: bool
    synchronous_standby_names: str
    standbys: list[StandbyFacts]
    wal_receivers: list[StandbyFacts]
    logical: list[StandbyFacts] = field(default_factory=list)
    # the server's own synchronous_commit (its configuration, not our login's)
    synchronous_commit: str = "on"
    # False when our login's own setting hides the server's (taken as the default, on)
    synchronous_commit_known: bool = True
    server_version: int = 0

    @property
    def named_sync(self) -> int:
        """Synchronous standbys synchronous_standby_names asks for: none on a replica
        (cascading replication is asynchronous)."""
        if self.in_recovery:
            return 0
        return required_sync_standbys(self.synchronous_standby_names)

    @property
    def commits_wait(self) -> bool:
        """Whether a commit, by the server's default, waits for synchronous standbys."""
        return self.synchronous_commit in WAITING_COMMITS

    @property
    def required_sync(self) -> int:
        """Synchronous standbys commits wait for by default: none with synchronous_commit
        local or off (only a transaction that asks for more waits then)."""
        return self.named_sync if self.commits_wait else 0

    @property
    def capabilities(self) -> ServerCapabilities:
        return ServerCapabilities(self.server_version)


def server_shown_name(name: str, server: ServerCapabilities) -> str:
    """The application_name the server shows for ``name``: non-ASCII bytes become '?'
    (before 16) or ``\\xHH`` (16+), which is what synchronous_standby_names is matched
    against too."""
    if name.isascii():
        return name
    escapes_bytes = server.escapes_non_ascii_names
    out = []
    for char in name:
        if char.isascii():
            out.append(char)
        else:
            raw = char.encode()
            out.append("".join(f"\\x{b:02x}" for b in raw) if escapes_bytes else "?" * len(raw))
    return "".join(out)


def looks_mangled(shown: str, server: ServerCapabilities) -> bool:
    """An application_name the server may have rewritten from non-ASCII characters."""
    return ("\\x" in shown) if server.escapes_non_ascii_names else ("?" in shown)


_SERVER_COLUMNS = (
    "in_recovery",
    "synchronous_standby_names",
    "synchronous_commit",
    "synchronous_commit_source",
    "synchronous_commit_default",
)


def read_standbys(conn: psycopg.Connection[dict[str, Any]]) -> UpstreamFacts:
    rows = query(conn, STANDBYS_SQL)
    first = rows[0]
    synchronous_commit, known = str(first["synchronous_commit"]), True
    if is_login_source(first["synchronous_commit_source"]):
        synchronous_commit, known = str(first["synchronous_commit_default"]), False
    in_recovery = bool(first["in_recovery"])
    names = first["synchronous_standby_names"] or ""
    senders = []
    for row in rows:
        if row["pid"] is None:
            continue
        for column in _SERVER_COLUMNS:
            del row[column]
        senders.append(StandbyFacts(**row))
    return UpstreamFacts(
        in_recovery=in_recovery,
        synchronous_standby_names=names,
        standbys=worst_first([s for s in senders if not s.wal_receiver and not s.logical]),
        wal_receivers=[s for s in senders if s.wal_receiver and not s.logical],
        logical=[s for s in senders if s.logical],
        synchronous_commit=synchronous_commit,
        synchronous_commit_known=known,
        server_version=conn.info.server_version,
    )
