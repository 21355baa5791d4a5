"""pg-role-reporter --listen attacked as a hostile client would (issue 11, item 3): requests
that try to reach another server or read files, and clients that try to starve the load
balancer's health checks.

One real primary, a real Consul agent and one real daemon, shared by the module; the
daemon logs in with the monitor role's password from its passfile, which no request may
make it send anywhere.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from harness.consul import ConsulAgent
from harness.postgres import PgCluster
from harness.waiting import wait_until
from tests.integration.reporter_deployment import ReporterProcess
from tests.integration.resident_daemon import ResidentDaemon

pytestmark = [pytest.mark.integration, pytest.mark.pg(">= 16")]


@dataclass
class Target:
    cluster: PgCluster
    daemon: ResidentDaemon


@pytest.fixture(scope="module")
def target(
    pg_install: object,
    make_pg_cluster: object,
    consul_agent: ConsulAgent,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Target]:
    cluster = make_pg_cluster(replicas=1)  # type: ignore[operator]
    log_dir = tmp_path_factory.mktemp("resident-attack")
    daemon = ResidentDaemon(
        consul_agent,
        "pg-http-attack",
        cluster.replicas[0],
        log_dir,
        extra_args=("-v",),
    )
    try:
        daemon.wait_status("/replica", 200)
        yield Target(cluster, daemon)
    finally:
        daemon.stop()
        cluster.close()


@dataclass
class FakePostgres:
    """A listener that speaks just enough of PostgreSQL's protocol to ask for a cleartext
    password, and keeps whatever a client sends it."""

    sock: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    received: list[bytes] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def serve(self) -> None:
        self.sock.settimeout(0.5)
        while True:
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with client:
                client.settimeout(5)
                try:
                    data = client.recv(65536)
                    self.received.append(data)
                    if data[4:8] == struct.pack("!i", 80877103):  # SSLRequest: no
                        client.sendall(b"N")
                        self.received.append(client.recv(65536))
                    # AuthenticationCleartextPassword
                    client.sendall(b"R" + struct.pack("!ii", 8, 3))
                    self.received.append(client.recv(65536))
                except OSError:
                    pass


def test_a_request_cannot_point_a_check_at_another_server(target: Target) -> None:
    """``lag --primary CONNINFO`` connects to a server of the request's choosing, with the
    daemon's environment: its PGPASSWORD went to whoever listened there."""
    fake = FakePostgres()
    server = threading.Thread(target=fake.serve, daemon=True)
    server.start()
    try:
        # the daemon's passfile has a line for any port of 127.0.0.1
        conninfo = f"host=127.0.0.1 port={fake.port} user=monitor dbname=x sslmode=disable"
        response = target.daemon.client.get("/check/lag", params={"primary": conninfo})
    finally:
        fake.sock.close()
        server.join(5)
    assert response.status_code == 400, response.text
    assert "connection options are not taken from a request" in response.text
    assert fake.received == []


def test_a_request_cannot_choose_which_files_mem_reads(target: Target) -> None:
    """mem's hidden ``--root`` (for tests) reads /proc and /sys under any directory."""
    response = target.daemon.request("/check/mem?root=/tmp")
    assert response.status_code == 400, response.text
    assert target.daemon.status("/check/mem") in (200, 429, 503)


def _drip(stack: ExitStack, port: int, source: str, count: int) -> list[socket.socket]:
    """``count`` connections from ``source`` that each send a request one byte at a time."""
    socks = []
    for _ in range(count):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), 5, (source, 0)))
        sock.sendall(b"G")
        socks.append(sock)
        # the listen backlog is small: let the server accept each one
        time.sleep(0.02)
    return socks


def test_slow_clients_from_one_address_never_starve_the_load_balancers_checks(
    target: Target,
) -> None:
    """Slowloris: a client dripping a byte every few seconds holds a request thread for as
    long as it likes; enough of them took every slot, and HAProxy's ``/replica`` from
    another address got the daemon's bare 503 (the replica marked down)."""
    daemon = target.daemon
    with ExitStack() as stack:
        # 127.0.0.2 is this host too: another client than the checker at 127.0.0.1
        socks = _drip(stack, daemon.port, "127.0.0.2", 80)
        statuses: list[int] = []
        held = 0
        deadline = time.monotonic() + 8  # past the server's per-read socket timeout
        while time.monotonic() < deadline:
            held = 0
            for sock in socks:
                try:
                    sock.sendall(b"E")
                    held += 1
                except OSError:  # the server closed it
                    pass
            # a new connection per check, as HAProxy's httpchk makes
            statuses.append(httpx.get(f"{daemon.url}/replica", timeout=10).status_code)
            time.sleep(0.5)  # the attacker's pace, not a wait for a condition
    assert set(statuses) == {200}, (statuses, f"{held} slow connections held")
    assert daemon.process.alive()


def _start_with_push(
    target: Target, consul_agent: ConsulAgent, tmp_path: Path, push: str
) -> ReporterProcess:
    return ReporterProcess(
        target.daemon.service_id,
        target.daemon.server,
        tmp_path / "push.log",
        consul_env=consul_agent.env(),
        extra_args=("--dry-run", "--push", push),
    )


def test_a_push_to_a_check_the_agent_does_not_have_ends_the_start(
    target: Target, consul_agent: ConsulAgent, tmp_path: Path
) -> None:
    """A typo in a --push id cost one WARNING line and a push retried every second for
    ever, while the TTL check it was meant for stayed critical: now one line and exit 2,
    as for an unknown --service-id."""
    daemon = _start_with_push(target, consul_agent, tmp_path, "pg-http-attack-nosuch=5s:alive")
    try:
        assert daemon.process.wait(timeout=30) == 2
    finally:
        daemon.stop()
    assert daemon.log().strip().splitlines()[-1] == (
        "pg-role-reporter: --push pg-http-attack-nosuch: no check pg-http-attack-nosuch on "
        f"the Consul agent at http://{consul_agent.http_addr} (that this token may read): "
        "wrong check id, or its TTL check is not in conf.d?"
    )


def test_a_push_to_a_check_that_is_not_a_ttl_check_ends_the_start(
    target: Target, consul_agent: ConsulAgent, tmp_path: Path
) -> None:
    check_id = "pg-http-attack-http"
    consul_agent.api(
        "PUT",
        "/v1/agent/check/register",
        json_body={
            "ID": check_id,
            "Name": check_id,
            "ServiceID": target.daemon.service_id,
            "HTTP": f"{target.daemon.url}/liveness",
            "Interval": "60s",
        },
    )
    try:
        daemon = _start_with_push(target, consul_agent, tmp_path, f"{check_id}=5s:alive")
        try:
            assert daemon.process.wait(timeout=30) == 2
        finally:
            daemon.stop()
    finally:
        consul_agent.api("PUT", f"/v1/agent/check/deregister/{check_id}")
    assert daemon.log().strip().splitlines()[-1] == (
        f"pg-role-reporter: --push {check_id}: check {check_id} on the Consul agent at "
        f"http://{consul_agent.http_addr} is a http check, not a TTL check: a pushed "
        "verdict needs a TTL check"
    )


def test_kept_connections_ended_by_the_server_change_no_answer(target: Target) -> None:
    """A role's idle_session_timeout (PG 14+) and pg_terminate_backend end the daemon's
    kept connections between requests: every answer must be what a fresh connection
    gives, never a failure of the dead one (the client session is not the server)."""
    primary, replica = target.cluster.primary, target.cluster.replicas[0]
    primary.execute("ALTER ROLE monitor SET idle_session_timeout = '1s'")
    try:
        target.cluster.wait_caught_up()
        replica.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'pg-role-reporter-checks'"
        )
        kept = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'pg-role-reporter-checks'"
        )
        answers = []
        for _ in range(4):
            answers.append((target.daemon.status("/replica"), target.daemon.status("/check/alive")))
            # idle past idle_session_timeout: the server ends the kept sessions
            wait_until(lambda: replica.scalar(kept) == 0, timeout=10, what="kept sessions ended")
        assert set(answers) == {(200, 200)}, answers
    finally:
        primary.execute("ALTER ROLE monitor RESET idle_session_timeout")


def _timed(daemon: ResidentDaemon, path: str) -> tuple[int, float]:
    started = time.monotonic()
    status = httpx.get(f"{daemon.url}{path}", timeout=60).status_code
    return status, time.monotonic() - started


def test_hung_checks_on_a_frozen_server_exhaust_nothing_that_lasts(target: Target) -> None:
    """More slow checks than kept connections against a SIGSTOPped server: the health
    endpoints, the loop and a short check still answer within their own bounds, and
    everything is back once the server runs again."""
    daemon, replica = target.daemon, target.cluster.replicas[0]
    results: list[str] = []
    replica.freeze(children=True)
    try:
        hung = [
            threading.Thread(
                target=lambda: results.append(daemon.request("/check/alive?t=20").text), daemon=True
            )
            for _ in range(8)
        ]
        for thread in hung:
            thread.start()
        time.sleep(0.5)  # let them take every connection (nothing to wait on: they hang)
        status, took = _timed(daemon, "/replica")
        assert status == 503 and took < 3.0 + 1.5, (status, took)  # the daemon's -t
        status, took = _timed(daemon, "/check/alive?t=2")
        assert status == 503 and took < 2.0 + 1.5, (status, took)
        assert daemon.status("/liveness") == 200
    finally:
        replica.thaw()
    for thread in hung:
        thread.join(30)
    # each answered with its own verdict (a connect time past -c: the server was frozen),
    # none was left hanging or cut short by another's deadline
    assert len(results) == 8 and all(r.startswith("PG_ALIVE ") for r in results), results
    assert not any("timeout" in r for r in results), results
    assert _timed(daemon, "/check/alive")[0] == 200
    daemon.wait_status("/replica", 200)


def _raw(port: int, data: bytes) -> bytes:
    """What the daemon answers to ``data`` on one connection, until it closes it."""
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_odd_requests_get_plain_answers(target: Target) -> None:
    daemon = target.daemon
    for path, status in (
        ("/check/../replica", 404),
        ("/check/alive/x", 404),
        ("/%72eplica", 404),  # paths are not decoded: one spelling per endpoint
        ("/replica?lag=1e400", 400),
        ("/replica?lag=-1", 400),
        ("/check/alive?t=0", 400),
        ("/check/alive?t=1e400", 400),
        ("/check/alive?-H=x", 400),
        ("/check/alive?%48=elsewhere", 400),  # ?H= percent-encoded
        ("/check/alive?v=Helsewhere", 400),  # -vHelsewhere: -v then -H, glued
        ("/check/alive?hos=elsewhere", 400),  # click takes no abbreviations
    ):
        # raw: an HTTP client would tidy "/check/../replica" away before sending it
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answer = _raw(daemon.port, request.encode())
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (path, answer[:200])
    # HTTP/1.0 without a Host header, and two pipelined requests on one connection
    assert _raw(daemon.port, b"GET /replica HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    two = _raw(
        daemon.port,
        b"GET /replica HTTP/1.1\r\nHost: x\r\n\r\nHEAD /liveness HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert two.count(b"HTTP/1.1 200 ") == 2, two
    many_headers = b"".join(b"X-%d: y\r\n" % n for n in range(200))
    answer = _raw(daemon.port, b"GET /replica HTTP/1.1\r\n" + many_headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert daemon.process.alive()


def test_no_password_in_any_log_line(target: Target) -> None:
    """Last: after every attack above, the monitor role's password is nowhere in the log."""
    passwords = [
        line.rsplit(":", 1)[1]
        for line in target.cluster.passfile.read_text().splitlines()
        if line.count(":") >= 4
    ]
    assert passwords and not any(pw in target.daemon.process.log() for pw in passwords)


def test_a_unix_socket_another_server_listens_on_is_not_taken_over(
    target: Target, consul_agent: ConsulAgent, tmp_path: Path
) -> None:
    """--listen unix://PATH removed whatever socket was at PATH to bind its own: a path
    mistyped onto a live server's socket (PostgreSQL's .s.PGSQL.5432, the agent's) took it
    over. A socket something still accepts on is in use, as a TCP port is."""
    path = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen(1)
        daemon = ResidentDaemon(
            consul_agent,
            "pg-http-attack-sock",
            target.daemon.server,
            tmp_path,
            listen=f"unix://{path}",
        )
        try:
            assert daemon.process.process.wait(timeout=30) == 2
        finally:
            daemon.stop()
        assert f"cannot listen on unix://{path}" in daemon.process.log()
        # still the live server's
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
            accepted, _ = live.accept()
            accepted.close()
