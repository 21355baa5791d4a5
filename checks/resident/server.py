"""The daemon's HTTP server: the standard library's, a thread per request (as Patroni's).

Robust against its clients: a slow or half-open one holds only its own thread until the
socket timeout; URLs, headers and concurrent requests are capped, also per client address
(so one client dripping requests cannot starve a load balancer's checks); only GET, HEAD and
OPTIONS are served (405 for any other method). HEAD and OPTIONS answer the status alone,
which is all HAProxy reads. Nothing from the query string is logged: a request is logged as
method, path and status, at debug level.
"""

from __future__ import annotations

import contextlib
import errno
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
from checks.postgres.connection import ConnectionSettings
from checks.postgres.readers.instance import InstanceFacts, read_instance_status
from checks.resident import check_endpoint, health
from checks.resident.checks import run_bounded, within
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
# Requests served at once for one client address: a client dripping its request a byte at
# a time holds a thread as long as it likes, and enough of them starved every other
# client, the load balancer's and Consul's checks among them (bare 503s: the instance
# marked down). A load balancer or agent checks a few paths at once; past this it is one
# client hogging, and its excess gets the bare 503 instead of everybody's.
MAX_PER_CLIENT = 16
ALLOWED = "GET, HEAD, OPTIONS"
# Kept connections for the health endpoints' one query: load balancers and Consul ask a
# few times a second at most, and each answer takes a millisecond.
HEALTH_CONNECTIONS = 2
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
        lock_trust: float,
        stopping: threading.Event | None = None,
    ) -> None:
        # set once the daemon is stopping: it is about to let the lock go, and a load
        # balancer must stop sending writes here before it does
        self.stopping = stopping or threading.Event()
        # the checks' connections (shared with the push), and the health endpoints' own:
        # a burst of slow /check requests never makes a load balancer's /primary wait
        self.source = source
        self.health_source = KeptConnection(source.settings, size=HEALTH_CONNECTIONS)
        self.board = board
        # bound of one health request: the daemon's own -t
        self.timeout = timeout
        self.stale_after = stale_after
        self.lock_trust = lock_trust

    def observe(self, path: str) -> health.Observation:
        facts, error = self.instance_status() if health.needs_postgres(path) else (None, None)
        # read after PostgreSQL answered: the loop's verdict as of the answer
        loop = self.board.latest()
        return health.Observation(
            facts,
            error,
            loop,
            loop_alive=health.loop_alive(loop, self.stale_after),
            lock_current=health.loop_alive(loop, self.lock_trust) and not self.stopping.is_set(),
        )

    def instance_status(self) -> tuple[InstanceFacts | None, str | None]:
        """PostgreSQL's answer, or why there is none, within the daemon's -t."""

        def work() -> tuple[InstanceFacts | None, str | None]:
            try:
                settings = ConnectionSettings(timeout=self.timeout)
                with self.health_source.connection(settings) as conn:
                    return read_instance_status(conn), None
            except CheckFailed as failure:
                return None, failure.message
            except Exception as exc:
                return None, f"internal error: {type(exc).__name__}: {exc}"

        finished, answer = within(work, self.timeout, self.health_source, name="instance status")
        if finished and answer is not None:
            return answer
        return None, f"no answer from {self.health_source.target()} within {self.timeout:g}s"


class Handler(BaseHTTPRequestHandler):
    server: ResidentTCPServer | ResidentUnixServer
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT
    server_version = f"pg-role-reporter/{__version__}"
    sys_version = ""

    def setup(self) -> None:
        # Headers and body are two writes: with Nagle's algorithm the second waits for the
        # client's delayed ACK of the first, ~40 ms a request (measured). Not on a unix socket,
        # which has no such option.
        super().setup()
        if self.request.family != socket.AF_UNIX:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)

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
            # not strict: a bare "?verbose" is a flag, as Patroni's "?lag" style
            query = parse_qsl(url.query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
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
        return _client_key(self.client_address) or "unix"

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
        # only reached through the two above; never with the request's words
        log.debug("http %s", format.split("%")[0].strip())


class CappedThreading(socketserver.ThreadingMixIn):
    """A thread per request, at most MAX_CONCURRENT at once and MAX_PER_CLIENT for one
    client address; the excess gets a bare 503."""

    daemon_threads = True
    # never join request threads at close: one may be waiting on a frozen server
    block_on_close = False
    resident: Resident
    _slots = threading.BoundedSemaphore(MAX_CONCURRENT)
    _per_client: dict[str, int]
    _per_client_lock: threading.Lock

    def process_request(self, request: Any, client_address: Any) -> None:
        client = _client_key(client_address)
        if not self._take(client):
            with contextlib.suppress(OSError):
                request.sendall(OVERLOADED)
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._give_back(_client_key(client_address))

    def _take(self, client: str | None) -> bool:
        if client is not None:
            with self._per_client_lock:
                if self._per_client.get(client, 0) >= MAX_PER_CLIENT:
                    return False
                self._per_client[client] = self._per_client.get(client, 0) + 1
        if self._slots.acquire(blocking=False):
            return True
        self._give_back_client(client)
        return False

    def _give_back(self, client: str | None) -> None:
        self._slots.release()
        self._give_back_client(client)

    def _give_back_client(self, client: str | None) -> None:
        if client is None:
            return
        with self._per_client_lock:
            left = self._per_client.get(client, 1) - 1
            if left > 0:
                self._per_client[client] = left
            else:
                self._per_client.pop(client, None)


def _client_key(client_address: Any) -> str | None:
    """The client's IP address; None on a unix socket, whose clients are all local and
    nameless (the global cap alone holds there)."""
    if isinstance(client_address, tuple) and client_address:
        return str(client_address[0])
    return None


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
        self.server._per_client = {}
        self.server._per_client_lock = threading.Lock()
        self.server.resident = resident
        # Never woken by a timer: stop() wakes the poll by shutting the listening socket
        # down. socketserver's default poll (0.5 s) woke the thread twice a second, and a
        # wake-up costs ~0.1 ms of CPU on a small VM (docs/design.md §8).
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": None},
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
        if self._thread.is_alive():
            # shutdown(2) on a listening socket wakes the poll serve_forever is blocked in
            # (Linux: POLLHUP; the accept that follows fails and is ignored); shutdown()
            # then sees its flag at once instead of after a poll interval.
            with contextlib.suppress(OSError):
                self.server.socket.shutdown(socket.SHUT_RDWR)
            self.server.shutdown()
        self.server.server_close()
        self.server.resident.health_source.close()
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
    """A socket file left by a previous run would make bind fail; anything else stays.

    Only a dead socket is left over: one something still accepts on belongs to a running
    server (a mistyped path onto PostgreSQL's or the agent's socket, a second daemon), and
    removing it took that server's socket over. It is in use, as a bound TCP port is.
    """
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # nobody listens: left over
        except OSError:
            # e.g. a full backlog keeps the connect waiting: a server, only a busy one
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)) from None
        else:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def serve(
    listen: ListenAddress,
    source: KeptConnection,
    board: Board,
    *,
    timeout: float,
    stale_after: float,
    lock_trust: float,
    stopping: threading.Event | None = None,
) -> HttpService:
    """Start answering on ``listen``; raises OSError when the address cannot be bound."""
    service = HttpService(
        listen,
        Resident(
            source,
            board,
            timeout=timeout,
            stale_after=stale_after,
            lock_trust=lock_trust,
            stopping=stopping,
        ),
    )
    service.start()
    log.info("answering HTTP on %s", service.address)
    return service
