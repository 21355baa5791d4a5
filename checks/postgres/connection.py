"""Connecting to PostgreSQL: libpq's own settings, bounded in time, errors in plain words.

Passwords never pass through here: libpq reads PGPASSWORD, ~/.pgpass (PGPASSFILE) and
service files (PGSERVICE) by itself, so the command line never carries one.
psycopg is imported only inside the functions (its import costs ~0.3 s; ``--help`` and
usage errors must not pay it).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, overload

from checks.budget import Budget
from checks.postgres.refusals import connect_cause
from checks.status import Cause, critical, unknown

if TYPE_CHECKING:
    import psycopg

# The oldest major the readers' SQL is written and tested for (wal_status in
# pg_replication_slots, for one, arrived in 13).
OLDEST_SUPPORTED_MAJOR = 13


@dataclass(frozen=True)
class ConnectionSettings:
    """What the user told us about the server; anything unset is left to libpq's defaults."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    # like psql -d: a database name, or a whole conninfo string or URI
    dbname: str | None = None
    # --timeout: the whole run's; the connection takes its share (budget.connection)
    timeout: float = 10.0
    application_name: str = "check_postgresql"

    @property
    def budget(self) -> Budget:
        return Budget(self.timeout)

    @property
    def connect_timeout(self) -> int:
        return self.budget.connect_timeout

    def target(self) -> str:
        """The server or servers libpq will try, as ``host:port`` (``, ``-joined).

        Asked of libpq itself (PQconninfoParse, then PQconndefaults for what the conninfo
        leaves out), so that a service file, a PGHOST list or a ``-d`` conninfo name the
        servers really tried, and the conninfo itself (maybe a password) is never echoed.
        """
        try:
            view = self.libpq_view()
        except Exception:  # a conninfo libpq rejects: connect() will say why
            return "the server given by -d"
        hosts = (view.get("host") or view.get("hostaddr") or "").split(",")
        ports = (view.get("port") or "5432").split(",")
        if len(ports) == 1:
            ports *= len(hosts)
        named = []
        for host, port in zip(hosts, ports, strict=False):
            port = port or "5432"
            if not host:
                named.append(f"local socket:{port}")
            elif host.startswith("/"):
                named.append(f"{host.rstrip('/')}/.s.PGSQL.{port}")
            else:
                named.append(f"{host}:{port}")
        return ", ".join(dict.fromkeys(named))

    def libpq_view(self) -> dict[str, str]:
        """The connection parameters as libpq will use them: the conninfo's own, then a
        service file's (``service=`` in it, or PGSERVICE), then PG* variables and
        libpq's defaults. Only parses and reads files: nothing is connected."""
        from psycopg import pq

        conninfo = self.conninfo()
        given = {
            o.keyword.decode(): o.val.decode()
            for o in pq.Conninfo.parse(conninfo.encode())
            if o.val is not None
        }
        service = given.get("service")
        saved = os.environ.get("PGSERVICE")
        try:
            if service:
                # PQconndefaults reads a service only from PGSERVICE
                os.environ["PGSERVICE"] = service
            defaults = {
                o.keyword.decode(): o.val.decode()
                for o in pq.Conninfo.get_defaults()
                if o.val is not None
            }
        finally:
            if service:
                if saved is None:
                    del os.environ["PGSERVICE"]
                else:
                    os.environ["PGSERVICE"] = saved
        return {**defaults, **given}

    def conninfo(self) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        base = self.dbname if self.dbname and _is_conninfo(self.dbname) else ""
        params: dict[str, Any] = {
            # fallback_: an application_name from the user (PGAPPNAME, conninfo) wins
            "fallback_application_name": self.application_name,
            "connect_timeout": self.connect_timeout,
        }
        for key, value in (("host", self.host), ("port", self.port), ("user", self.user)):
            if value is not None:
                params[key] = value
        if self.dbname and not base:
            params["dbname"] = self.dbname
        given = conninfo_to_dict(base) if base else {}
        # An explicit options parameter would replace a service file's own options (libpq
        # gives explicit parameters precedence), so with a service in play the server's
        # statement_timeout is left alone and the watchdog alone bounds the run.
        if not (given.get("service") or os.environ.get("PGSERVICE")):
            statement_timeout = f"-c statement_timeout={int(self.budget.connection * 1000)}"
            options = given.get("options") if base else os.environ.get("PGOPTIONS")
            params["options"] = f"{options} {statement_timeout}" if options else statement_timeout
        return make_conninfo(base, **params)


def reached(conn: psycopg.Connection[Any]) -> str:
    """The server a connection reached, named as :meth:`ConnectionSettings.target` does."""
    host, port = conn.info.host, conn.info.port
    if host.startswith("/"):
        return f"{host.rstrip('/')}/.s.PGSQL.{port}"
    return f"{host}:{port}"


def _is_conninfo(text: str) -> bool:
    return "=" in text or text.startswith(("postgresql://", "postgres://"))


class ConnectionSource(Protocol):
    """Hands out a connection to the instance a check runs against, instead of a new one.

    The resident daemon keeps one connection to its own instance and lends it to the
    checks it runs in-process; the source ignores host, port, user and dbname (a request
    never chooses the server). The connection it yields is autocommit with dict rows, as
    :func:`open_connection`'s, and stays open after the ``with`` block.
    """

    def connection(
        self, settings: ConnectionSettings
    ) -> AbstractContextManager[psycopg.Connection[Any]]: ...


# Set by checks.runtime.invoke for the check it runs in this thread (a ContextVar, not a
# global: the daemon runs several checks at once, each in its own thread).
connection_source: ContextVar[ConnectionSource | None] = ContextVar(
    "connection_source", default=None
)


def connect(
    settings: ConnectionSettings, *, capture_stderr: bool = True, own_instance: bool = True
) -> AbstractContextManager[psycopg.Connection[dict[str, Any]]]:
    """The connection a check asks its questions on, for a ``with`` block.

    From the :data:`connection_source` when one is set (in-process, the daemon's kept
    connection), else a new one (:func:`open_connection`), closed at the end of the block.
    ``own_instance=False`` is for another server (the primary a replica compares itself
    with): never the source's, and since a source means a multi-threaded daemon, libpq's
    warnings are not captured from the shared file descriptor 2.
    """
    source = connection_source.get()
    if source is not None:
        if own_instance:
            return source.connection(settings)
        capture_stderr = False
    return open_connection(settings, capture_stderr=capture_stderr)


def open_connection(
    settings: ConnectionSettings, *, capture_stderr: bool = True
) -> psycopg.Connection[dict[str, Any]]:
    """One new autocommit connection with dict rows; failures end the check as CRITICAL,
    a server older than OLDEST_SUPPORTED_MAJOR as UNKNOWN.

    ``capture_stderr``: keep libpq's own warnings off file descriptor 2 (a check must print
    nothing there) and add them to the failure message instead. A daemon that logs to
    stderr from other threads passes False.
    """
    import psycopg
    from psycopg.rows import dict_row

    try:
        conninfo = settings.conninfo()
    except psycopg.ProgrammingError as exc:  # the -d conninfo does not parse
        raise unknown(f"bad connection settings: {unquote_given(str(exc), settings)}") from None
    libpq_said: list[str] = []
    try:
        with _stderr_into(libpq_said) if capture_stderr else contextlib.nullcontext():
            conn = psycopg.connect(
                conninfo, autocommit=True, row_factory=dict_row, prepare_threshold=None
            )
    except psycopg.Error as exc:
        # e.g. "password file ... has group or world access": the real reason behind a
        # "no password supplied" that would otherwise mislead
        also = f" (libpq: {'; '.join(libpq_said)})" if libpq_said else ""
        if problem := settings_problem(exc):
            problem = unquote_given(problem, settings)
            raise unknown(f"bad connection settings: {problem}{also}") from None
        summary, details = explain_connect_error(exc, settings)
        timed_out = type(exc).__name__ == "ConnectionTimeout" or "timeout expired" in str(exc)
        cause = connect_cause(summary, timed_out=timed_out)
        raise critical(summary + also, details, cause=cause) from None
    # libpq learnt the version at login: checking it costs no query.
    if (version := conn.info.server_version) < OLDEST_SUPPORTED_MAJOR * 10000:
        conn.close()
        raise unknown(
            f"PostgreSQL {major_of(version)} is not supported "
            f"(oldest supported: {OLDEST_SUPPORTED_MAJOR})"
        )
    return conn


# libpq quotes what it objects to: "…"
_QUOTED = re.compile(r'"([^"]*)"')


def unquote_given(message: str, settings: ConnectionSettings) -> str:
    """libpq's objection to a ``-d`` conninfo without the pieces of it libpq quotes.

    To say what it cannot parse, libpq repeats part of the conninfo: a whole URI
    (``postgresql://user:secret@[::1/db``), a percent-encoded token of it (which may be the
    password), the word before a missing ``=`` (maybe the second word of an unquoted
    password). Any of them may be a secret, and the user has the conninfo at hand, so a
    quoted piece taken from ``-d`` is left out; connection keywords ("port") and bare
    punctuation ("=") are kept.
    """
    given = settings.dbname or ""
    if not given or not _is_conninfo(given):
        return message

    def redact(match: re.Match[str]) -> str:
        piece = match[1]
        if any(c.isalnum() for c in piece) and piece in given and piece not in _conninfo_keywords():
            return "(a piece of -d)"
        return match[0]

    return _QUOTED.sub(redact, message)


def _conninfo_keywords() -> frozenset[str]:
    from psycopg import pq

    return frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults())


def major_of(server_version: int) -> str:
    """libpq's server_version number as a major: 120022 -> '12', 90624 -> '9.6'."""
    if server_version >= 100000:
        return str(server_version // 10000)
    return f"{server_version // 10000}.{server_version // 100 % 100}"


@contextlib.contextmanager
def _stderr_into(lines: list[str]) -> Iterator[None]:
    """libpq writes some warnings straight to fd 2, past Python: catch them in a pipe."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.set_blocking(read_end, False)
        chunks = []
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(read_end, 65536):
                chunks.append(chunk)
        os.close(read_end)
        text = b"".join(chunks).decode(errors="replace")
        lines.extend(
            " ".join(line.replace("WARNING:", "").split())
            for line in text.splitlines()
            if line.strip()
        )


def settings_problem(exc: BaseException) -> str | None:
    """libpq's objection to the settings themselves, made before it tried any server.

    psycopg says "connection is bad" when libpq refuses to start at all (an unknown
    PGSERVICE, an invalid PGSSLMODE or port): a configuration error, UNKNOWN like any usage
    error, not an outage. It says the same when a Unix socket connect fails at once, which
    is an outage, as is a host name that does not resolve (DNS): those stay CRITICAL.
    """
    text = str(exc).strip()
    if not text.startswith("connection is bad:"):
        return None
    # psycopg 3.1 (Debian 12's) keeps only what follows the first colon of libpq's message:
    # 'invalid sslmode value: "bogus"' comes out as '"bogus"', and a failed socket connect
    # loses its 'connection to server on socket' part. The PGconn has the whole message.
    pgconn = getattr(exc, "pgconn", None)
    raw = getattr(pgconn, "error_message", b"") if pgconn is not None else b""
    message = raw.decode(errors="replace").strip() or text.removeprefix("connection is bad:")
    if "connection to server" in message or "host name" in message:
        return None
    return message.strip()


# One attempt of libpq's: 'connection to server at "db1" (10.0.0.5), port 5432 failed: '
_ATTEMPT = re.compile(
    r'connection to server (?:at "(?P<host>[^"]*)"(?: \([^)]*\))?, port (?P<port>\d+)'
    r'|on socket "(?P<socket>[^"]*)") failed: '
)
# psycopg 3.2+ tries each host itself and lists them: "- host: 'db1', port: '5432', ..."
_PSYCOPG_ATTEMPT = re.compile(
    r"^- host: (?:'(?P<host>[^']*)'|None), port: (?:'(?P<port>[^']*)'|None), "
    r"hostaddr: (?:'[^']*'|None): "
)

_PSYCOPG_LIST = "Multiple connection attempts failed. All failures were:"


@dataclass
class _Attempt:
    where: str
    reason: str
    details: list[str]

    def text(self) -> str:
        detail = f" ({' '.join(self.details)})" if self.details else ""
        return f"{self.where}: {self.reason}{detail}"


def connect_attempts(text: str) -> list[_Attempt]:
    """Every server libpq (or psycopg) tried, with its reason and DETAIL lines, in order.

    The same failure reported twice (psycopg repeats the last one; libpq tries each
    address of a host name) is kept once.
    """
    attempts: list[_Attempt] = []
    current: _Attempt | None = None
    # psycopg puts the last failure first, then every one in order
    _, listed, every = text.partition(_PSYCOPG_LIST)
    for raw in (every if listed else text).splitlines():
        line = raw.strip()
        if match := _ATTEMPT.search(line):
            where = match["socket"] or f"{match['host']}:{match['port']}"
            current = _Attempt(where, line[match.end() :], [])
            attempts.append(current)
        elif match := _PSYCOPG_ATTEMPT.match(line):
            # a failure without libpq's own "connection to server" words (a timeout)
            reason = line[match.end() :].removeprefix("connection failed:").strip()
            host = match["host"] or "local socket"
            current = _Attempt(f"{host}:{match['port'] or 5432}", reason, [])
            attempts.append(current)
        elif line.startswith("DETAIL:") and current is not None:
            current.details.append(" ".join(line.removeprefix("DETAIL:").split()))
    unique: dict[str, _Attempt] = {}
    for attempt in attempts:
        attempt.reason = " ".join(attempt.reason.replace("FATAL:", "").split())
        unique.setdefault(attempt.text(), attempt)
    return list(unique.values())


RESERVED_ROLE = "pg_use_reserved_connections"


def describe_connect_error(exc: BaseException, settings: ConnectionSettings) -> str:
    """``cannot connect to 127.0.0.1:5432: Connection refused`` from libpq's longer text;
    every server tried when there were several, each with libpq's DETAIL."""
    return explain_connect_error(exc, settings)[0]


def explain_connect_error(
    exc: BaseException, settings: ConnectionSettings
) -> tuple[str, list[str]]:
    """The one-line message, and with several servers one long-output line for each
    (the first line may be cut at its length limit)."""
    text = str(exc).strip()
    text = text.removeprefix("connection failed:").strip()
    attempts = connect_attempts(text)
    # psycopg 3.1 (Debian 12's) keeps only what follows the first colon of libpq's
    # message, which drops the first server's "connection to server at ..." part: with
    # several hosts, only the later ones would be named. The PGconn has the whole message.
    pgconn = getattr(exc, "pgconn", None)
    raw = getattr(pgconn, "error_message", b"") if pgconn is not None else b""
    if raw and len(whole := connect_attempts(raw.decode(errors="replace"))) > len(attempts):
        attempts = whole
    if not attempts:
        first = text.splitlines()[0] if text else type(exc).__name__
        reason = " ".join(first.replace("FATAL:", "").split())
        attempts = [_Attempt(settings.target(), reason, [])]
    user = None
    for attempt in attempts:
        if not attempt.reason:
            attempt.reason = "no reason given"
        timed_out = type(exc).__name__ == "ConnectionTimeout" and len(attempts) == 1
        if "timeout expired" in attempt.reason or timed_out:
            attempt.reason = f"no answer within {settings.connect_timeout}s"
        if RESERVED_ROLE in attempt.reason:
            # PostgreSQL 16+: only reserved_connections slots are left, for members of
            # pg_use_reserved_connections
            if user is None:
                user = _login_user(settings)
            attempt.details.append(f"GRANT {RESERVED_ROLE} TO {user}")
    if len(attempts) == 1:
        return f"cannot connect to {attempts[0].text()}", []
    summary = f"cannot connect to any of {len(attempts)} servers: " + ", ".join(
        a.text() for a in attempts
    )
    return summary, [f"cannot connect to {a.text()}" for a in attempts]


def _login_user(settings: ConnectionSettings) -> str:
    try:
        return settings.libpq_view().get("user") or "the check's role"
    except Exception:
        return settings.user or "the check's role"


Params: TypeAlias = "Sequence[Any] | Mapping[str, Any] | None"
Row = TypeVar("Row")


@overload
def query(
    conn: psycopg.Connection[dict[str, Any]], sql: str, params: Params = None
) -> list[dict[str, Any]]: ...
@overload
def query(
    conn: psycopg.Connection[dict[str, Any]],
    sql: str,
    params: Params = None,
    *,
    row_class: type[Row],
) -> list[Row]: ...
def query(
    conn: psycopg.Connection[dict[str, Any]],
    sql: str,
    params: Params = None,
    *,
    row_class: type[Any] | None = None,
) -> list[Any]:
    """Run one statement; server errors end the check with the state they deserve.

    ``row_class``: each row built as that class from its named columns (psycopg's
    class_row), else a dict.
    """
    import psycopg
    from psycopg import errors
    from psycopg.rows import class_row

    try:
        cursor = conn.cursor(row_factory=class_row(row_class)) if row_class else conn.cursor()
        with cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    except errors.InsufficientPrivilege as exc:
        raise unknown(
            f"permission denied ({exc.diag.message_primary}): grant the check's role pg_monitor",
            cause=Cause.PRIVILEGE,
        ) from None
    except errors.QueryCanceled:
        raise critical(
            f"query on {reached(conn)} cancelled by statement_timeout: server too slow or blocked",
            cause=Cause.TIMEOUT,
        ) from None
    except psycopg.OperationalError as exc:
        raise critical(
            f"connection to {reached(conn)} lost: {exc}", cause=Cause.UNREACHABLE
        ) from None
    except psycopg.Error as exc:
        raise unknown(f"query failed: {exc.diag.message_primary or exc}") from None


@overload
def fetch_row(
    conn: psycopg.Connection[dict[str, Any]], sql: str, params: Params = None
) -> dict[str, Any]: ...
@overload
def fetch_row(
    conn: psycopg.Connection[dict[str, Any]],
    sql: str,
    params: Params = None,
    *,
    row_class: type[Row],
) -> Row: ...
def fetch_row(
    conn: psycopg.Connection[dict[str, Any]],
    sql: str,
    params: Params = None,
    *,
    row_class: type[Any] | None = None,
) -> Any:
    rows: list[Any] = (
        query(conn, sql, params)
        if row_class is None
        else query(conn, sql, params, row_class=row_class)
    )
    if len(rows) != 1:
        raise unknown(f"internal error: expected one row, got {len(rows)}")
    return rows[0]
