"""contrib/haproxy in a real HAProxy (issue 11, item 6b): clients routed by the daemons.

A real primary and two replicas, each with its own `pg-role-reporter --listen` daemon and
`pg-db-N` service in one real Consul agent, and Debian's haproxy running the shipped
`contrib/haproxy/haproxy.cfg` with only the addresses changed (harness/haproxy.py). The
tests speak PostgreSQL through HAProxy's ports, as a client would, and ask the server they
reached who it is (`inet_server_port()`, `pg_is_in_recovery()`).

One deployment for the module (CI budget): the read-only scenario leaves the cluster as
it found it and runs first; the failover changes the primary and runs last.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import TupleRow

from harness import pgbin
from harness.consul import ConsulAgent
from harness.haproxy import Backend, HAProxy
from harness.ports import free_port
from harness.postgres import SUPERUSER, PgCluster, PgServer
from harness.waiting import wait_until
from tests.integration import test_role_reporter as deployment
from tests.integration.reporter_deployment import never_during
from tests.integration.test_role_reporter import Deployment, deploy, new_cluster

pytestmark = pytest.mark.integration

pg_install_one = deployment.pg_install_one

READ_WRITE = "pg-read-write"
READ_ONLY = "pg-read-only"
# The shipped servers pg1..pg3 stand for pg-db-1 (the first primary) and its two replicas.
SERVER_OF = {"pg-db-1": "pg1", "pg-db-2": "pg2", "pg-db-3": "pg3"}
# The shipped read-only check's lag limit is 16MB; this much WAL is well past it.
WAL_BEYOND_LAG_LIMIT_MB = 48
# The shipped `rise 3` checks at `inter 1s`: how long a server must pass to be put in.
RISE_SECONDS = 3


class Routed:
    """A deployment behind HAProxy: the Consul side (`d`) and the proxy (`proxy`)."""

    def __init__(self, d: Deployment, proxy: HAProxy) -> None:
        self.d = d
        self.proxy = proxy

    def server(self, service_id: str) -> PgServer:
        return self.d.servers[service_id]

    def connect(self, frontend: str) -> psycopg.Connection[TupleRow]:
        """A client session through HAProxy's `frontend` port (autocommit)."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.proxy.port(frontend),
            user=SUPERUSER,
            dbname="postgres",
            connect_timeout=5,
            autocommit=True,
        )


@pytest.fixture(scope="module")
def routed(
    pg_install_one: pgbin.PgInstallation,
    consul_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Routed]:
    base = tmp_path_factory.mktemp("haproxy-deployment")
    agents: list[ConsulAgent] = []

    def agent_factory(*, start: bool = True, **options: object) -> ConsulAgent:
        agent = ConsulAgent(
            base_dir=base / f"consul-{len(agents)}",
            binary=consul_bin,
            node_name="pg-ha-haproxy",
            **options,  # type: ignore[arg-type]
        )
        agents.append(agent)
        if start:
            agent.start()
        return agent

    listen_ports = {service_id: free_port() for service_id in SERVER_OF}
    with new_cluster(pg_install_one) as cluster:
        d = deploy(agent_factory, cluster, base, start_reporters=False)
        try:
            for service_id, port in listen_ports.items():
                d.start_reporter(service_id, extra_args=("--listen", f"127.0.0.1:{port}"))
            backends = {
                SERVER_OF[service_id]: Backend("127.0.0.1", server.port, listen_ports[service_id])
                for service_id, server in d.servers.items()
            }
            with HAProxy(servers=backends, base_dir=base / "haproxy") as proxy:
                yield Routed(d, proxy)
        finally:
            d.stop()
            for agent in agents:
                agent.stop()


def server_port(conn: psycopg.Connection[TupleRow]) -> int:
    row = conn.execute("SELECT inet_server_port()").fetchone()
    assert row is not None
    return int(str(row[0]))


def writes_land_on(r: Routed, service_id: str) -> None:
    """A new session through the read-write port writes, and on `service_id`'s server."""
    with r.connect(READ_WRITE) as conn:
        assert server_port(conn) == r.server(service_id).port
        conn.execute("CREATE TABLE IF NOT EXISTS haproxy_writes (n int)")
        conn.execute("INSERT INTO haproxy_writes VALUES (1)")
    r.server(service_id).wait_until(
        lambda: r.server(service_id).scalar("SELECT count(*) FROM haproxy_writes") >= 1,
        "the write through HAProxy to be on this server",
    )


def reset_by_proxy(conn: psycopg.Connection[TupleRow], *, timeout: float) -> None:
    """Wait until HAProxy closed this idle session's socket, then see the client's error.

    An idle PostgreSQL session receives nothing unprompted, so a readable socket is the
    end of the connection; waiting for that first means a session that was *not* reset
    fails the wait instead of hanging on a frozen server.
    """
    wait_until(
        lambda: select.select([conn.fileno()], [], [], 0)[0],
        what="HAProxy to reset the open session",
        timeout=timeout,
    )
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")


def emit_wal(primary: PgServer, megabytes: int) -> None:
    """Write `megabytes` of WAL on the primary without growing any table."""
    for _ in range(megabytes):
        primary.execute(
            "SELECT pg_logical_emit_message(false, 'haproxy-test', repeat('x', 1048576))"
        )


def sessions_reach(r: Routed, frontend: str, count: int) -> set[int]:
    """Ports of the servers that `count` simultaneous new sessions through `frontend` reach."""
    conns = [r.connect(frontend) for _ in range(count)]
    try:
        return {server_port(conn) for conn in conns}
    finally:
        for conn in conns:
            conn.close()


# -- scenarios --------------------------------------------------------------------------


def test_start_routes_writes_to_the_primary_and_reads_to_both_replicas(routed: Routed) -> None:
    r = routed
    r.proxy.wait_for(READ_WRITE, {"pg1": "UP", "pg2": "DOWN", "pg3": "DOWN"}, timeout=30)
    r.proxy.wait_for(READ_ONLY, {"pg1": "DOWN", "pg2": "UP", "pg3": "UP"}, timeout=30)
    writes_land_on(r, "pg-db-1")
    replicas = {r.server("pg-db-2").port, r.server("pg-db-3").port}
    assert sessions_reach(r, READ_ONLY, 2) == replicas
    with r.connect(READ_ONLY) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_a_replica_paused_beyond_the_lag_limit_leaves_the_read_only_port_and_comes_back(
    routed: Routed,
) -> None:
    r = routed
    paused, other = r.server("pg-db-3"), r.server("pg-db-2")
    r.proxy.wait_for(READ_ONLY, {"pg2": "UP", "pg3": "UP"}, timeout=30)
    # A session held on the replica that falls behind: shutdown-sessions must reset it.
    held = [r.connect(READ_ONLY) for _ in range(2)]
    on_paused = next(conn for conn in held if server_port(conn) == paused.port)

    paused.pause_replay()
    try:
        emit_wal(r.d.cluster.primary, WAL_BEYOND_LAG_LIMIT_MB)
        r.proxy.wait_for(READ_ONLY, {"pg3": "DOWN", "pg2": "UP"}, timeout=30)
        reset_by_proxy(on_paused, timeout=10)
        assert sessions_reach(r, READ_ONLY, 3) == {other.port}
    finally:
        paused.resume_replay()
        for conn in held:
            conn.close()
    r.d.cluster.wait_caught_up()
    r.proxy.wait_for(READ_ONLY, {"pg3": "UP", "pg2": "UP"}, timeout=30)
    assert sessions_reach(r, READ_ONLY, 2) == {paused.port, other.port}


def test_failover_resets_sessions_to_the_old_primary_and_writes_land_on_the_new_one(
    routed: Routed,
) -> None:
    r = routed
    cluster: PgCluster = r.d.cluster
    old, new = r.server("pg-db-1"), r.server("pg-db-2")
    r.proxy.wait_for(READ_WRITE, {"pg1": "UP", "pg2": "DOWN", "pg3": "DOWN"}, timeout=30)
    held = r.connect(READ_WRITE)
    assert server_port(held) == old.port

    # The primary hangs (its host stalls): nothing it runs answers, so only HAProxy can
    # end the client's session.
    old.freeze(children=True)
    try:
        r.proxy.wait_for(READ_WRITE, {"pg1": "DOWN"}, timeout=45)
        reset_by_proxy(held, timeout=10)
        cluster.promote(new)
        r.proxy.wait_for(READ_WRITE, {"pg2": "UP", "pg3": "DOWN"}, timeout=45)
        writes_land_on(r, "pg-db-2")
    finally:
        held.close()
        old.thaw()

    # The old primary back, writable on its old timeline: fenced, it never gets writes.
    old_reporter = r.d.reporters["pg-db-1"]
    never_during(
        lambda: r.proxy.status(READ_WRITE, "pg1") != "DOWN",
        lambda: "fenced" in old_reporter.log(),
        timeout=30,
        what="HAProxy must never send writes to the resurrected old primary",
    )
    # ...nor once it is fenced, for longer than HAProxy's `rise` checks take.
    never_during(
        lambda: r.proxy.status(READ_WRITE, "pg1") != "DOWN",
        lambda: False,
        timeout=RISE_SECONDS + 1,
        what="HAProxy must never send writes to the fenced old primary",
    )
    assert r.proxy.up_servers(READ_WRITE) == {"pg2"}
    writes_land_on(r, "pg-db-2")
