"""The daemon's HTTP server: the standard library's, a thread per request (as Patroni's).

Robust against its clients: a slow or half-open one holds only its own thread until the
socket timeout; URLs, headers and concurrent requests are capped; only GET, HEAD and
OPTIONS are served (405 for any other method). HEAD and OPTIONS answer the status alone,
which is all HAProxy reads. Nothing from the query string is logged: a request is logged as
method, path and status, at debug level.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import stat
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from checks import __version__
from checks.output import Report
from checks.resident import check_endpoint, health
from checks.resident.checks import run_bounded
from checks.resident.connections import KeptConnection
from checks.resident.listen import ListenAddress
from checks.status import CheckFailed

log = logging.getLogger("pg-role-reporter")

# Longest request target served; Patroni's configurations use a few dozen characters.
MAX_URL = 2048
MAX_QUERY_FIELDS = 32
# Seconds a client may take to send its request (and between requests on a kept-alive
# connection): a silent one then costs a thread only that long.
CLIENT_TIMEOUT = 5.0
# Requests served at once; past it the connection gets a bare 503 (each one is a thread,
# and the checks among them share DEFAULT_SIZE connections anyway).
MAX_CONCURRENT = 64
ALLOWED = "GET, HEAD, OPTIONS"
# Consul calls a turn of the reporter loop may make one after another (service, session,
# lock, register), each bounded by its own timeouts
CONSUL_CALLS_PER_TURN = 3
OVERLOADED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Board(Protocol):
    """The reporter loop's verdicts (``checks.reporter.board.RoleBoard``)."""

    def latest(self) -> health.RoleView | None: ...


class Resident:
    """What the endpoints answer from: the kept connections and the loop's board."""

    def __init__(
        self,
        source: KeptConnection,
        board: Board,
        *,
        timeout: float,
        stale_after: float,
    ) -> None:
        self.source = source
        self.board = board
        # bound of one health request: the daemon's own -t
        self.timeout = timeout
        self.stale_after = stale_after

    def observe(self, path: str) -> health.Observation:
        loop = self.board.latest()
        alive = health.loop_alive(loop, self.stale_after)
        if not health.needs_postgres(path):
            return health.Observation(None, None, loop, alive)
        facts, error = self.instance_status()
        return health.Observation(facts, error, loop, alive)

    def instance_status(self) -> tuple[Any, str | None]:
        from checks.postgres.connection import ConnectionSettings
        from checks.postgres.probes.instance import read_instance_status

        answer: list[tuple[Any, str | None]] = []
        done = threading.Event()

        def work() -> None:
            try:
                with self.source.connection(ConnectionSettings(timeout=self.timeout)) as conn:
                    answer.append((read_instance_status(conn), None))
            except CheckFailed as failure:
                answer.append((None, failure.message))
            except Exception as exc:
                answer.append((None, f"internal error: {type(exc).__name__}: {exc}"))
            finally:
                done.set()

        worker = threading.Thread(target=work, name="instance status", daemon=True)
        worker.start()
        if done.wait(self.timeout):
            return answer[0]
        self.source.abort(worker.ident)
        return None, f"no answer from {self.source.target()} within {self.timeout:g}s"


class Handler(BaseHTTPRequestHandler):
    server: ResidentTCPServer | ResidentUnixServer
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT
    server_version = f"pg-role-reporter/{__version__}"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_OPTIONS(self) -> None:
        self._serve(body=False)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # any other method (POST, PUT, FOO): 405, where the stdlib would say 501
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._send(405, b"method not allowed\n", headers={"Allow": ALLOWED}, close=True)

    # -- routing -----------------------------------------------------------------------

    def _serve(self, *, body: bool) -> None:
        if len(self.path) > MAX_URL:
            self._send(414, b"URI too long\n", close=True)
            return
        url = urlsplit(self.path)
        try:
            query = parse_qsl(
                url.query,
                keep_blank_values=True,
                strict_parsing=bool(url.query),
                max_num_fields=MAX_QUERY_FIELDS,
            )
        except ValueError:
            self._send(400, b"bad query string\n")
            return
        path = url.path
        if path in health.PATHS:
            self._health(path, dict(query), body=body)
        elif path.startswith(check_endpoint.CHECK_PREFIX):
            self._check(path[len(check_endpoint.CHECK_PREFIX) :], query, body=body)
        else:
            self._send(404, b"not found\n")

    def _health(self, path: str, query: dict[str, str], *, body: bool) -> None:
        resident = self.server.resident
        try:
            health.parse_lag(query)
        except health.BadQuery as exc:
            self._send(400, f"{exc}\n".encode())
            return
        seen = resident.observe(path)
        status = health.status_for(path, query, seen)
        document = json.dumps(
            health.body(seen, asked_postgres=health.needs_postgres(path)), separators=(",", ":")
        ).encode()
        self._send(
            status, document if body else b"", content_type="application/json", length=len(document)
        )

    def _check(self, subcommand: str, query: list[tuple[str, str]], *, body: bool) -> None:
        try:
            request = check_endpoint.prepare(subcommand, query)
        except check_endpoint.Refused as refusal:
            self._send_report(refusal.status, refusal.report, body=body)
            return
        if request is None:
            self._send(404, b"no such check\n")
            return
        resident = self.server.resident
        report = run_bounded(
            request.command,
            request.args,
            request.name,
            request.timeout,
            resident.source if request.uses_postgres else None,
            target=None if request.uses_postgres else check_endpoint.MEM_TARGET,
        )
        self._send_report(check_endpoint.HTTP_STATUS[report.status], report, body=body)

    # -- writing -----------------------------------------------------------------------

    def _send_report(self, status: int, report: Report, *, body: bool) -> None:
        text = report.render().encode()
        self._send(status, text if body else b"", length=len(text))

    def _send(
        self,
        status: int,
        payload: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
        length: int | None = None,
        close: bool = False,
    ) -> None:
        if self.command == "OPTIONS":
            payload, length, headers = b"", 0, {"Allow": ALLOWED, **(headers or {})}
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload) if length is None else length))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def address_string(self) -> str:
        client = self.client_address
        return str(client[0]) if isinstance(client, tuple) and client else "unix"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # the path without its query: a query is a command line, logged nowhere
        path = urlsplit(self.path).path if hasattr(self, "path") else "-"
        log.debug("http %s %s %s", getattr(self, "command", "-"), path[:MAX_URL], code)

    def log_error(self, format: str, *args: Any) -> None:
        # the stdlib's messages quote the request line (a query is a command line): only
        # the status, or the kind of trouble
        code = args[0] if args and isinstance(args[0], int) else None
        log.debug("http client error: %s", code or format.split(":")[0].split("%")[0].strip())

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)


class CappedThreading(socketserver.ThreadingMixIn):
    """A thread per request, at most MAX_CONCURRENT at once; the excess gets a bare 503."""

    daemon_threads = True
    # never join request threads at close: one may be waiting on a frozen server
    block_on_close = False
    resident: Resident
    _slots = threading.BoundedSemaphore(MAX_CONCURRENT)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(OVERLOADED)
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class ResidentTCPServer(CappedThreading, HTTPServer):
    pass


class ResidentTCP6Server(ResidentTCPServer):
    address_family = socket.AF_INET6


class ResidentUnixServer(CappedThreading, socketserver.UnixStreamServer):
    pass


class HttpService:
    """The server and the thread that runs it; ``stop()`` closes the listening socket."""

    def __init__(self, listen: ListenAddress, resident: Resident) -> None:
        self.listen = listen
        self.server = _make_server(listen)
        self.server._slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self.server.resident = resident
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="http",
            daemon=True,
        )

    @property
    def address(self) -> str:
        if self.listen.family == socket.AF_UNIX:
            return str(self.listen)
        host, port = self.listen.host, self.server.server_port  # type: ignore[union-attr]
        return str(ListenAddress(self.listen.family, host=host, port=port))

    def start(self) -> None:
        self._thread.start()

    def __enter__(self) -> HttpService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.listen.family == socket.AF_UNIX:
            _remove_socket(self.listen.path)


def _make_server(listen: ListenAddress) -> ResidentTCPServer | ResidentUnixServer:
    if listen.family == socket.AF_UNIX:
        _remove_socket(listen.path)
        return ResidentUnixServer(listen.path, Handler)
    if listen.family == socket.AF_INET6:
        return ResidentTCP6Server((listen.host, listen.port), Handler)
    return ResidentTCPServer((listen.host, listen.port), Handler)


def _remove_socket(path: str) -> None:
    """A socket file left by a previous run would make bind fail; anything else stays."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def liveness_limit(*, interval: float, timeout: float) -> float:
    """Seconds since the loop's last turn after which /liveness says 503.

    A turn waits up to an interval, then PostgreSQL up to -t and a few Consul calls up to
    their connect and read timeouts each: only a loop stuck well past that is hung. (A
    hung daemon as a whole answers nothing, which a health check sees as failing anyway.)
    """
    from checks.consul import CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS

    return (
        interval
        + timeout
        + CONSUL_CALLS_PER_TURN * (CONNECT_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS)
    )


def serve(
    listen: ListenAddress,
    source: KeptConnection,
    board: Board,
    *,
    timeout: float,
    stale_after: float,
) -> HttpService:
    """Start answering on ``listen``; raises OSError when the address cannot be bound."""
    service = HttpService(listen, Resident(source, board, timeout=timeout, stale_after=stale_after))
    service.start()
    log.info("answering HTTP on %s", service.address)
    return service
