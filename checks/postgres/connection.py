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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.plugin import critical, unknown

if TYPE_CHECKING:
    import psycopg

# libpq refuses a connect_timeout below 2 s (it silently raises it to 2).
MIN_CONNECT_TIMEOUT = 2
# Part of --timeout left for connecting and for the query; the watchdog takes the rest.
BUDGET_SHARE = 0.8
# The oldest major the probes' SQL is written and tested for (wal_status in
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
    timeout: float = 10.0
    application_name: str = "check_postgresql"

    @property
    def connect_timeout(self) -> int:
        return max(MIN_CONNECT_TIMEOUT, int(self.timeout * BUDGET_SHARE))

    def target(self, environ: Mapping[str, str] = os.environ) -> str:
        """``host:port`` as a person would name the server, without asking libpq."""
        if self.dbname and _is_conninfo(self.dbname):
            return _redact(self.dbname)
        host = self.host or environ.get("PGHOST") or "local socket"
        port = self.port or environ.get("PGPORT") or 5432
        return f"{host}:{port}"

    def conninfo(self) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        base = self.dbname if self.dbname and _is_conninfo(self.dbname) else ""
        budget = self.timeout * BUDGET_SHARE
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
            statement_timeout = f"-c statement_timeout={int(budget * 1000)}"
            options = given.get("options") if base else os.environ.get("PGOPTIONS")
            params["options"] = f"{options} {statement_timeout}" if options else statement_timeout
        return make_conninfo(base, **params)


def _is_conninfo(text: str) -> bool:
    return "=" in text or text.startswith(("postgresql://", "postgres://"))


def _redact(conninfo: str) -> str:
    """A conninfo fit for output: no password, whatever form it came in."""
    conninfo = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", conninfo)
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", conninfo)


def connect(
    settings: ConnectionSettings, *, capture_stderr: bool = True
) -> psycopg.Connection[dict[str, Any]]:
    """One autocommit connection with dict rows; failures end the check as CRITICAL,
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
        raise unknown(f"bad connection settings: {exc}") from None
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
            raise unknown(f"bad connection settings: {problem}{also}") from None
        raise critical(describe_connect_error(exc, settings) + also) from None
    # libpq learnt the version at login: checking it costs no query.
    if (version := conn.info.server_version) < OLDEST_SUPPORTED_MAJOR * 10000:
        conn.close()
        raise unknown(
            f"PostgreSQL {major_of(version)} is not supported "
            f"(oldest supported: {OLDEST_SUPPORTED_MAJOR})"
        )
    return conn


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


_SERVER_AT = re.compile(
    r'connection to server at "(?P<host>[^"]*)"(?: \([^)]*\))?, port (?P<port>\d+) failed: '
)
_SERVER_ON_SOCKET = re.compile(r'connection to server on socket "(?P<socket>[^"]*)" failed: ')


def describe_connect_error(exc: BaseException, settings: ConnectionSettings) -> str:
    """``cannot connect to 127.0.0.1:5432: Connection refused`` from libpq's longer text."""
    text = str(exc).strip()
    text = text.removeprefix("connection failed:").strip()
    # libpq lists one attempt per line (several hosts, IPv4 and IPv6); the last one is
    # the attempt that finally failed, the others are usually the same story.
    attempts = [line.strip() for line in text.splitlines() if "failed:" in line]
    line = attempts[-1] if attempts else text.splitlines()[0] if text else type(exc).__name__
    where = settings.target()
    if match := _SERVER_AT.search(line):
        where = f"{match['host']}:{match['port']}"
        line = line[match.end() :]
    elif match := _SERVER_ON_SOCKET.search(line):
        where = match["socket"]
        line = line[match.end() :]
    reason = " ".join(line.replace("FATAL:", "").split()) or "no reason given"
    if "timeout expired" in reason or type(exc).__name__ == "ConnectionTimeout":
        reason = f"no answer within {settings.connect_timeout}s"
    return f"cannot connect to {where}: {reason}"


def query(
    conn: psycopg.Connection[dict[str, Any]],
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run one statement; server errors end the check with the state they deserve."""
    import psycopg
    from psycopg import errors

    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    except errors.InsufficientPrivilege as exc:
        raise unknown(
            f"permission denied ({exc.diag.message_primary}): grant the check's role pg_monitor"
        ) from None
    except errors.QueryCanceled:
        raise critical(
            f"query on {conn.info.host}:{conn.info.port} cancelled by statement_timeout: "
            "server too slow or blocked"
        ) from None
    except psycopg.OperationalError as exc:
        raise critical(f"connection to {conn.info.host}:{conn.info.port} lost: {exc}") from None
    except psycopg.Error as exc:
        raise unknown(f"query failed: {exc.diag.message_primary or exc}") from None


def fetch_row(
    conn: psycopg.Connection[dict[str, Any]],
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    rows = query(conn, sql, params)
    if len(rows) != 1:
        raise unknown(f"internal error: expected one row, got {len(rows)}")
    return rows[0]
