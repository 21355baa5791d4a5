"""The daemon's kept connections to its own PostgreSQL, lent to in-process checks.

A check run in the daemon asks for a connection the way the executable does (through
``connect(settings)``); :class:`KeptConnection` answers with one of a few connections it
keeps open, whatever host, port, user or database the settings name: the daemon checks its
own instance only. Each lease gets the check's statement_timeout (derived from its
``--timeout`` as the executable derives it); a connection that failed, was aborted or was
left inside a transaction is closed and made again on the next lease.

statement_timeout is enforced by the server, so a server that does not run at all
(SIGSTOPped, its host frozen) never cancels anything: :meth:`KeptConnection.abort` shuts
the leased socket down (shutdown(2) wakes a thread blocked reading it), and the worker's
psycopg call raises at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import ConnectionSettings, open_connection, query
from checks.status import critical

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("pg-role-reporter")

# Enough for the health endpoints, a pushed schedule and a few /check requests at once;
# never more, so a flood of requests cannot take PostgreSQL's connection slots.
DEFAULT_SIZE = 4
# Not the reporter loop's own name: consul-role looks for that one in pg_stat_activity to
# tell a running reporter from a stopped one, and these connections sit idle between checks.
APPLICATION_NAME = "pg-role-reporter-checks"


@dataclass(eq=False)
class _Slot:
    conn: psycopg.Connection[dict[str, Any]] | None = None
    statement_timeout_ms: int | None = None
    # thread ident of the worker that leased it; None while free
    owner: int | None = None
    aborted: bool = False


class KeptConnection:
    """A ``ConnectionSource``: at most ``size`` connections to the daemon's instance."""

    def __init__(self, settings: ConnectionSettings, *, size: int = DEFAULT_SIZE) -> None:
        self.settings = replace(settings, application_name=APPLICATION_NAME)
        self._slots = [_Slot() for _ in range(size)]
        self._free = threading.Condition()

    def target(self) -> str:
        """The instance, named as the executable names its server (``host:port``)."""
        return self.settings.target()

    @contextlib.contextmanager
    def connection(self, settings: ConnectionSettings) -> Iterator[psycopg.Connection[Any]]:
        """A kept connection for one check; ``settings`` gives only its time budget."""
        slot = self._lease(settings.timeout)
        try:
            conn = self._open(slot, settings.timeout)
            self._set_statement_timeout(slot, conn, settings)
            yield conn
        finally:
            self._give_back(slot)

    def abort(self, worker: int | None = None) -> None:
        """Shut down the socket leased by thread ``worker`` (every leased one if None)."""
        with self._free:
            for slot in self._slots:
                if slot.owner is not None and worker in (None, slot.owner):
                    slot.aborted = True
                    _shut_down(slot)

    def close(self) -> None:
        with self._free:
            for slot in self._slots:
                if slot.owner is None:
                    _close(slot)
                else:
                    # closed by its worker when it gives it back
                    slot.aborted = True

    # -- the pool ------------------------------------------------------------------

    def _lease(self, timeout: float) -> _Slot:
        deadline = time.monotonic() + timeout
        with self._free:
            while True:
                # a slot with a connection first: a new one costs a login
                free = [s for s in self._slots if s.owner is None]
                if free:
                    slot = next((s for s in free if s.conn is not None), free[0])
                    slot.owner = threading.get_ident()
                    slot.aborted = False
                    return slot
                left = deadline - time.monotonic()
                if left <= 0:
                    raise critical(
                        f"all {len(self._slots)} connections to {self.target()} are busy "
                        f"with other checks for {timeout:g}s"
                    )
                self._free.wait(left)

    def _give_back(self, slot: _Slot) -> None:
        with self._free:
            conn = slot.conn
            if slot.aborted or conn is None or conn.closed or _dirty(conn):
                _close(slot)
            slot.owner = None
            slot.aborted = False
            self._free.notify()

    def _open(self, slot: _Slot, timeout: float) -> psycopg.Connection[dict[str, Any]]:
        if slot.conn is not None and not slot.conn.closed:
            if not _has_unasked_input(slot.conn):
                return slot.conn
            # The server spoke unasked: an idle session hears from it only when it ends
            # (a restart, pg_terminate_backend). Checked here, or the first check after a
            # restart would fail on the dead connection where the executable, with a new
            # one, says OK.
            with self._free:
                _close(slot)
        settings = replace(self.settings, timeout=timeout)
        # capture_stderr=False: other threads log to stderr while libpq might write there
        conn = open_connection(settings, capture_stderr=False)
        with self._free:
            if slot.aborted:
                # the deadline passed while connecting: nobody waits for this one
                conn.close()
                raise critical(f"connection to {self.target()} abandoned at the deadline")
            slot.conn = conn
            slot.statement_timeout_ms = None
        return conn

    def _set_statement_timeout(
        self, slot: _Slot, conn: psycopg.Connection[dict[str, Any]], settings: ConnectionSettings
    ) -> None:
        # the share of the check's -t its executable would give the server
        wanted = int(settings.budget.connection * 1000)
        if slot.statement_timeout_ms != wanted:
            query(conn, "SELECT set_config('statement_timeout', %s, false)", (f"{wanted}ms",))
            slot.statement_timeout_ms = wanted


def _has_unasked_input(conn: psycopg.Connection[Any]) -> bool:
    """Something to read on an idle connection: its end (EOF, or the FATAL before it)."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except Exception:  # closed under us (psycopg raises its own error): as good as ended
        return True
    return bool(readable)


def _dirty(conn: psycopg.Connection[Any]) -> bool:
    """Broken, or left inside a transaction: not fit for the next check."""
    from psycopg import pq

    return bool(conn.broken) or conn.info.transaction_status != pq.TransactionStatus.IDLE


def _shut_down(slot: _Slot) -> None:
    conn = slot.conn
    if conn is None or conn.closed:
        return  # still connecting: connect_timeout bounds that
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception as exc:  # closed meanwhile: nothing is waiting on it
        log.debug("abandoning a kept PostgreSQL connection: %s", exc)


def _close(slot: _Slot) -> None:
    conn, slot.conn, slot.statement_timeout_ms = slot.conn, None, None
    if conn is not None:
        try:
            conn.close()
        except Exception as exc:  # closing a broken connection must not stop anything
            log.debug("closing a kept PostgreSQL connection: %s", exc)
