"""pg-role-reporter's one kept connection to the local PostgreSQL, bounded per turn."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import ConnectionSettings
from checks.reporter.problems import PostgresProblem, problem_of
from checks.roletag.plan import Observed
from checks.status import Cause, CheckFailed, Status

if TYPE_CHECKING:
    import psycopg

    from checks.postgres.readers.reporter import ReporterPositionFacts

log = logging.getLogger("pg-role-reporter")


class RoundTripDeadline:
    """Bounds the queries of one turn on the kept connection to `seconds`.

    statement_timeout is enforced by the server, so a server that does not run at all
    (SIGSTOPped, swapped out, its host frozen, a dead peer behind a TCP connection that
    never resets) never sends the cancel: the query waits for ever, and with it the loop,
    so the leader tag and the lock would stay on a dead primary. When the deadline passes,
    a timer thread shuts the socket down (shutdown(2) wakes a thread blocked reading it);
    psycopg then raises in the loop's own thread, which closes the connection and
    reconnects next turn (connect_timeout bounds the connect).
    """

    def __init__(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        self.conn = conn
        self.seconds = seconds
        self.expired = False
        self._guard = threading.Lock()
        self._done = False
        self._timer: threading.Timer | None = None

    def _expire(self) -> None:
        import socket

        with self._guard:
            if self._done:
                return
            self.expired = True
            try:
                with socket.socket(fileno=os.dup(self.conn.fileno())) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except Exception as exc:  # already closed: nothing is waiting on it
                log.debug("abandoning the PostgreSQL connection: %s", exc)

    def __enter__(self) -> RoundTripDeadline:
        if self.seconds > 0:
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._guard:
            self._done = True
        if self._timer is not None:
            self._timer.cancel()


class PostgresRole:
    """One kept connection to the local PostgreSQL; reconnects after any failure."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    def observe(
        self, *, since_lsn: str | None = None
    ) -> tuple[Observed, ReporterPositionFacts | None, PostgresProblem | None]:
        """The role (and, on a primary, the WAL position), or what is wrong."""
        from checks.postgres.connection import open_connection
        from checks.postgres.readers.reporter import read_position
        from checks.postgres.readers.role import read_role

        deadline: RoundTripDeadline | None = None
        try:
            if self._conn is None or self._conn.closed:
                # a daemon: libpq may warn on stderr (the journal), where other threads log
                self._conn = open_connection(self.settings, capture_stderr=False)
            with RoundTripDeadline(self._conn, self.settings.timeout) as deadline:
                facts = read_role(self._conn)
                position = read_position(self._conn, since=since_lsn)
        except CheckFailed as raised:
            self.close()
            failure = raised
            if deadline is not None and deadline.expired:
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

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception as exc:  # closing a broken connection must not stop the loop
                log.debug("closing the PostgreSQL connection: %s", exc)
            self._conn = None
