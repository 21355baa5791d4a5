"""pg-role-reporter's one kept connection to the local PostgreSQL, bounded per turn."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import ConnectionSettings
from checks.reporter.problems import PostgresProblem, problem_of
from checks.roletag.plan import Observed
from checks.status import Cause, CheckFailed, Status

if TYPE_CHECKING:
    import psycopg

    from checks.postgres.readers.reporter import ReporterPositionFacts

log = logging.getLogger("pg-role-reporter")


@dataclass(eq=False)
class ArmedTurn:
    conn: psycopg.Connection[Any]
    until: float
    # set by the watcher when it shut the socket down
    expired: bool = False


class RoundTripDeadline:
    """Bounds the queries of each turn on the kept connection to `seconds`.

    statement_timeout is enforced by the server, so a server that does not run at all
    (SIGSTOPped, swapped out, its host frozen, a dead peer behind a TCP connection that
    never resets) never sends the cancel: the query waits for ever, and with it the loop,
    so the leader tag and the lock would stay on a dead primary. When the deadline passes,
    a watcher thread shuts the socket down (shutdown(2) wakes a thread blocked reading it);
    psycopg then raises in the loop's own thread, which closes the connection and
    reconnects next turn (connect_timeout bounds the connect).

    One watcher for the daemon's life, armed and disarmed each turn: a thread started per
    turn (threading.Timer) cost a fifth of the loop's CPU at four turns a second. Arming
    wakes the watcher only when it sleeps past the new deadline (or for ever): a turn a
    second is then about one wake-up per `seconds`, not one per turn, and each wake-up
    costs ~0.1 ms of CPU on a small VM (docs/design.md §8).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # the turn being bounded; None between turns
        self._armed: ArmedTurn | None = None
        self._watcher: threading.Thread | None = None
        # when the watcher wakes on its own; None: only when notified
        self._wakes_at: float | None = None

    @contextlib.contextmanager
    def bound(self, conn: psycopg.Connection[Any], seconds: float) -> Iterator[ArmedTurn]:
        """Shut `conn`'s socket down if the block takes more than `seconds`; the turn
        yielded says whether it did."""
        turn = ArmedTurn(conn, time.monotonic() + seconds)
        if seconds <= 0:
            yield turn
            return
        with self._cond:
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch, name="round-trip deadline", daemon=True
                )
                self._watcher.start()
            self._armed = turn
            if self._wakes_at is None or self._wakes_at > turn.until:
                self._cond.notify()
        try:
            yield turn
        finally:
            with self._cond:
                # no notify: the watcher finds nothing armed when it next wakes
                self._armed = None

    def _watch(self) -> None:
        with self._cond:
            while True:
                turn = self._armed
                if turn is None:
                    self._wakes_at = None
                    self._cond.wait()
                    continue
                remaining = turn.until - time.monotonic()
                if remaining > 0:
                    self._wakes_at = turn.until
                    self._cond.wait(remaining)
                    continue
                # under the lock: the loop cannot disarm, close the connection and have
                # its descriptor reused meanwhile
                self._armed = None
                turn.expired = True
                self._shut_down(turn.conn)

    @staticmethod
    def _shut_down(conn: psycopg.Connection[Any]) -> None:
        import socket

        try:
            with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except Exception as exc:  # already closed: nothing is waiting on it
            log.debug("abandoning the PostgreSQL connection: %s", exc)


class PostgresRole:
    """One kept connection to the local PostgreSQL; reconnects after any failure."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        self._deadline = RoundTripDeadline()

    def observe(
        self, *, since_lsn: str | None = None
    ) -> tuple[Observed, ReporterPositionFacts | None, PostgresProblem | None]:
        """The role (and, on a primary, the WAL position), or what is wrong."""
        from checks.postgres.connection import open_connection
        from checks.postgres.readers.reporter import keep_session_open, read_turn

        turn: ArmedTurn | None = None
        kept = self._conn is not None and not self._conn.closed
        try:
            if self._conn is None or self._conn.closed:
                # a daemon: libpq may warn on stderr (the journal), where other threads log
                self._conn = open_connection(self.settings, capture_stderr=False)
            with self._deadline.bound(self._conn, self.settings.timeout) as turn:
                if not kept:
                    keep_session_open(self._conn)
                facts, position = read_turn(self._conn, since=since_lsn)
        except CheckFailed as raised:
            self.close()
            expired = turn is not None and turn.expired
            if kept and not expired and raised.cause is Cause.UNREACHABLE:
                # The kept session ended (a restart, pg_terminate_backend, an idle
                # session timeout): only a new connection says whether the server is
                # down. A server that did not answer in time is not asked twice.
                return self.observe(since_lsn=since_lsn)
            failure = raised
            if turn is not None and turn.expired:
                # the socket we shut down is all psycopg saw: say what happened instead
                failure = CheckFailed(
                    Status.CRITICAL,
                    f"no answer from {self.settings.target()} within "
                    f"{self.settings.timeout:g}s (server stopped or hung?)",
                    cause=Cause.TIMEOUT,
                )
            problem = problem_of(failure)
            return Observed(role="unreachable", error=failure.message), None, problem
        observed = Observed(
            role=facts.role,
            writable=facts.writable,
            timeline=facts.timeline,
            system_identifier=facts.system_identifier,
            server_port=position.port,
        )
        return observed, position, None

    def socket(self) -> int | None:
        """The kept connection's descriptor, for the loop to wait on; None without one."""
        conn = self._conn
        if conn is None or conn.closed:
            return None
        try:
            return conn.fileno()
        except Exception:  # a broken connection: the next turn makes a new one
            return None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception as exc:  # closing a broken connection must not stop the loop
                log.debug("closing the PostgreSQL connection: %s", exc)
            self._conn = None
