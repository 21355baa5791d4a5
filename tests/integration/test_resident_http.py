"""pg-role-reporter --listen: the Patroni-compatible endpoints and /check/..., as a load
balancer, Consul and a DBA with curl see them (issue 11, items 1-3).

A real primary and replica, a real Consul agent and one real daemon per instance, shared
by the module; what the tests change (a paused replay, a third daemon) they undo.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest

from harness.consul import ConsulAgent, wait_until
from harness.postgres import PgCluster, PgServer
from tests.integration.resident_daemon import ResidentDaemon
from tests.plugin_run import PluginRun, executable, run_plugin

pytestmark = pytest.mark.integration

HEALTH_PATHS = (
    "/",
    "/primary",
    "/read-write",
    "/replica",
    "/replica?lag=16MB",
    "/read-only",
    "/health",
    "/liveness",
    "/readiness",
    "/synchronous",
    "/asynchronous",
)
ON_PRIMARY = dict.fromkeys(HEALTH_PATHS, 503) | {
    "/": 200,
    "/primary": 200,
    "/read-write": 200,
    "/read-only": 200,
    "/health": 200,
    "/liveness": 200,
    "/readiness": 200,
}
ON_REPLICA = dict.fromkeys(HEALTH_PATHS, 200) | {
    "/": 503,
    "/primary": 503,
    "/read-write": 503,
    "/synchronous": 503,
}


@dataclass
class Pair:
    cluster: PgCluster
    agent: ConsulAgent
    primary: ResidentDaemon
    replica: ResidentDaemon
    log_dir: Path


@pytest.fixture(scope="module")
def pair(
    pg_install: object,
    make_pg_cluster: object,
    consul_agent: ConsulAgent,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pair]:
    cluster = make_pg_cluster(replicas=1)  # type: ignore[operator]
    log_dir = tmp_path_factory.mktemp("resident")
    daemons: list[ResidentDaemon] = []
    try:
        daemons.append(ResidentDaemon(consul_agent, "pg-http-1", cluster.primary, log_dir))
        daemons.append(ResidentDaemon(consul_agent, "pg-http-2", cluster.replicas[0], log_dir))
        daemons[0].wait_status("/primary", 200)
        daemons[1].wait_status("/replica", 200)
        yield Pair(cluster, consul_agent, daemons[0], daemons[1], log_dir)
    finally:
        for daemon in daemons:
            daemon.stop()
        cluster.close()


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_every_endpoint_on_the_primary_and_the_replica(pair: Pair, method: str) -> None:
    for daemon, expected in ((pair.primary, ON_PRIMARY), (pair.replica, ON_REPLICA)):
        seen = {path: daemon.request(path, method) for path in HEALTH_PATHS}
        assert {p: r.status_code for p, r in seen.items()} == expected, daemon.service_id
        for response in seen.values():
            if method == "GET":
                assert response.headers["content-type"] == "application/json"
            else:
                # HAProxy reads the status alone
                assert response.content == b""


def test_the_body_names_role_timeline_positions_and_identity(pair: Pair) -> None:
    primary = pair.primary.request("/primary").json()
    replica = pair.replica.request("/replica").json()
    identifier = pair.cluster.primary.scalar(
        "SELECT system_identifier::text FROM pg_control_system()"
    )
    assert primary["role"] == "primary" and replica["role"] == "replica"
    assert primary["database_system_identifier"] == replica["database_system_identifier"]
    assert primary["database_system_identifier"] == identifier
    assert primary["timeline"] == replica["timeline"] == 1
    assert primary["server_version"] == int(pair.cluster.primary.scalar("SHOW server_version_num"))
    assert primary["xlog"]["location"] > 0
    assert replica["xlog"]["replayed_location"] > 0 and replica["replication_state"] == "streaming"
    assert (primary["leader_lock"], primary["tag"], primary["fenced_reason"]) == (
        True,
        "leader",
        None,
    )
    assert (replica["leader_lock"], replica["tag"]) == (False, "follower")


def test_a_paused_replica_leaves_replica_under_a_lag_limit_and_comes_back(pair: Pair) -> None:
    replica = pair.cluster.replicas[0]
    replica.pause_replay()
    try:
        pair.cluster.primary.execute("CREATE TABLE IF NOT EXISTS resident_lag (x text)")
        pair.cluster.primary.execute(
            "INSERT INTO resident_lag SELECT repeat('x', 1000) FROM generate_series(1, 200)"
        )
        response = pair.replica.wait_status("/replica?lag=64kB", 503)
        assert response.json()["xlog"]["paused"] is True
        assert response.json()["lag"] > 65536
        assert pair.replica.status("/replica") == 200
        assert pair.replica.status("/read-only?lag=64kB") == 503
    finally:
        replica.resume_replay()
    pair.replica.wait_status("/replica?lag=64kB", 200)


def test_a_fenced_primary_is_not_primary(pair: Pair) -> None:
    """A second service on the same primary: its reporter finds the lock held by the
    first one's and is fenced; only the lock holder answers /primary."""
    fenced = ResidentDaemon(pair.agent, "pg-http-3", pair.cluster.primary, pair.log_dir)
    try:
        fenced.wait_status("/liveness", 200)
        document = wait_until(
            lambda: (body := fenced.request("/primary").json())["fenced_reason"] and body,
            timeout=15,
            what="the second reporter to be fenced",
        )
        assert fenced.status("/primary") == 503
        assert fenced.status("/health") == 200
        assert document["leader_lock"] is False and document["role"] == "primary"
        assert pair.primary.status("/primary") == 200
    finally:
        fenced.stop()


# -- /check/...: the same answer as the executable ---------------------------------------

# Values that change from one run to the next: timings, counts of connections (the daemon
# keeps its own; lists ordered by count), memory figures, ages (of transactions, of the
# reporter's last query). Compared as structure.
VARYING = {
    "alive",
    "connections",
    "mem",
    "transactions",
    "lag",
    "standbys",
    "wraparound",
    "consul-role",
}
NUMBER = re.compile(r"\d+(?:\.\d+)?")

PRIMARY_CASES: list[tuple[str, list[tuple[str, str]]]] = [
    ("alive", []),
    ("alive", [("w", "2s"), ("c", "5s"), ("verbose", "")]),
    ("role", []),
    ("role", [("expect", "replica")]),
    ("lag", [("warning", "16MB"), ("warning", "30s")]),
    ("standbys", []),
    ("slots", []),
    ("connections", []),
    ("archiver", []),
    ("wraparound", []),
    ("transactions", []),
    ("consul-role", [("service-id", "pg-http-1")]),
    ("mem", []),
    ("mem", [("w", "99"), ("c", "100")]),
    ("lag", [("nosuch", "1")]),  # a usage error: 400, and the executable's text
]
REPLICA_CASES: list[tuple[str, list[tuple[str, str]]]] = [
    ("alive", []),
    ("role", []),
    ("lag", [("warning", "16MB"), ("critical", "1min")]),
    ("consul-role", [("service-id", "pg-http-2")]),
]


def argv(query: list[tuple[str, str]]) -> list[str]:
    args = []
    for key, value in query:
        args.append(f"-{key}" if len(key) == 1 else f"--{key}")
        if value:
            args.append(value)
    return args


def masked(text: str) -> list[str]:
    """Numbers masked; items of a line listed by count ("idle 2, active 1") in any order."""
    lines = []
    for line in NUMBER.sub("N", text).split("\n"):
        head, colon, items = line.rpartition(": ")
        lines.append(head + colon + ", ".join(sorted(items.split(", "))))
    return lines


def run_executable(
    server: PgServer, agent: ConsulAgent, subcommand: str, args: list[str]
) -> PluginRun:
    env = {**server.env(), **agent.env()}
    if subcommand == "mem":
        command = [*executable("mem_check", "checks.mem_check"), *args]
    else:
        command = [*executable("check_postgresql", "checks.check_postgresql"), subcommand, *args]
    run = run_plugin(command, env=env)
    run.assert_contract()
    return run


@pytest.mark.parametrize("where", ["primary", "replica"])
def test_every_check_over_http_says_what_the_executable_says(pair: Pair, where: str) -> None:
    daemon = pair.primary if where == "primary" else pair.replica
    cases = PRIMARY_CASES if where == "primary" else REPLICA_CASES
    for subcommand, query in cases:
        url = f"/check/{subcommand}" + (f"?{urlencode(query)}" if query else "")
        run = run_executable(daemon.server, pair.agent, subcommand, argv(query))
        response = daemon.request(url)
        expected_status = (
            400
            if subcommand == "lag" and query[0][0] == "nosuch"
            else ({0: 200, 1: 429, 2: 503, 3: 500}[run.code])
        )
        what = (
            f"{url}: executable said {run.stdout!r}, HTTP {response.status_code} {response.text!r}"
        )
        assert response.status_code == expected_status, what
        assert response.headers["content-type"].startswith("text/plain"), what
        if subcommand in VARYING:
            assert masked(response.text) == masked(run.stdout), what
        else:
            assert response.text == run.stdout, what


def test_head_runs_the_check_and_answers_its_status_alone(pair: Pair) -> None:
    response = pair.replica.request("/check/role?expect=primary", "HEAD")
    assert (response.status_code, response.content) == (503, b"")
