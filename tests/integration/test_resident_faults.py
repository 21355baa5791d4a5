"""pg-role-reporter --listen when PostgreSQL misbehaves: a frozen server, a listener that
never answers, a restart under the daemon (issue 11, item 3).

Each request that asks PostgreSQL ends within its timeout, says so the way the executable
does, and never holds up another endpoint; the daemon answers again once the server is
back. One PostgreSQL major (the behaviour under test is the daemon's), one cluster and
daemon for the module; the silent listener has its own daemon.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import pgbin
from harness.consul import ConsulAgent
from harness.postgres import PgCluster
from tests.integration.resident_daemon import DAEMON_TIMEOUT, ResidentDaemon
from tests.plugin_run import check_postgresql

pytestmark = pytest.mark.integration

# what a request may take beyond its timeout: the HTTP round trip and a busy test host
SLACK_SECONDS = 1.5
CHECK_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    found = pgbin.discover_installations(fetched=True)
    if not found:
        pytest.fail("no PostgreSQL installation found; run ./scripts/bootstrap --test")
    with PgCluster(pgbin.usable_installation(found[-1]), replicas=0) as made:
        yield made


@pytest.fixture(scope="module")
def daemon(
    cluster: PgCluster, consul_agent: ConsulAgent, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ResidentDaemon]:
    made = ResidentDaemon(
        consul_agent, "pg-http-faults", cluster.primary, tmp_path_factory.mktemp("faults")
    )
    try:
        made.wait_status("/primary", 200)
        yield made
    finally:
        made.stop()


def timed(daemon: ResidentDaemon, path: str) -> tuple[int, str, float]:
    started = time.monotonic()
    response = daemon.request(path)
    return response.status_code, response.text, time.monotonic() - started


def test_a_frozen_server_bounds_every_request_and_holds_up_no_other(
    cluster: PgCluster, daemon: ResidentDaemon
) -> None:
    server = cluster.primary
    target = f"{server.host}:{server.port}"
    hung: list[tuple[int, str, float]] = []
    server.freeze(children=True)
    try:
        # a check stuck on the frozen server in one thread...
        waiting = threading.Thread(
            target=lambda: hung.append(timed(daemon, f"/check/alive?t={CHECK_TIMEOUT:g}"))
        )
        waiting.start()
        # ...while the endpoints that need no SQL answer at once, and those that do,
        # within the daemon's -t
        assert daemon.status("/liveness") == 200
        status, text, elapsed = timed(daemon, "/health")
        assert status == 503 and elapsed < DAEMON_TIMEOUT + SLACK_SECONDS, (elapsed, text)
        # (its connection: a new one, the kept one is the hung check's; connect_timeout)
        assert json.loads(text)["state"] == "unreachable"
        assert "no answer" in json.loads(text)["error"]
        waiting.join(timeout=CHECK_TIMEOUT + 10)
        status, text, elapsed = hung[0]
        assert status == 503 and elapsed < CHECK_TIMEOUT + SLACK_SECONDS, (elapsed, text)
        # libpq's connect_timeout is whole seconds, rounded up to 2: at -t 2 the attempt and
        # the deadline end together, and either may say so first, here as in the executable
        frozen = (
            f"PG_ALIVE CRITICAL - timeout: no answer from {target} within {CHECK_TIMEOUT:g}s\n",
            f"PG_ALIVE CRITICAL - cannot connect to {target}: no answer within "
            f"{CHECK_TIMEOUT:g}s\n",
        )
        assert text in frozen
        # what the executable says against the same frozen server
        run = check_postgresql("alive", "-t", f"{CHECK_TIMEOUT:g}", env=server.env())
        assert run.stdout in frozen
    finally:
        server.thaw()
    # the aborted connections are made again
    daemon.wait_status("/health", 200)
    assert daemon.status(f"/check/alive?t={CHECK_TIMEOUT:g}") == 200
    # the loop let the tag and the lock go while the server was frozen: taken again
    daemon.wait_status("/primary", 200)


def test_postgresql_restarted_under_the_daemon(cluster: PgCluster, daemon: ResidentDaemon) -> None:
    # kept connections exist, for the checks and for the health endpoints
    assert daemon.status("/check/alive") == 200 and daemon.status("/health") == 200
    cluster.primary.restart()
    # the first requests after it already answer: a kept connection the restart ended is
    # made again before it is used, not failed on
    assert daemon.status("/health") == 200
    assert daemon.status("/check/alive") == 200
    daemon.wait_status("/primary", 200)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that completes handshakes (the backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def test_a_listener_that_never_answers(
    cluster: PgCluster,
    consul_agent: ConsulAgent,
    silent_listener: int,
    tmp_path: Path,
) -> None:
    daemon = ResidentDaemon(
        consul_agent,
        "pg-http-silent",
        cluster.primary,
        tmp_path,
        extra_env={"PGPORT": str(silent_listener)},
    )
    try:
        daemon.wait_status("/liveness", 200, timeout=30)
        status, text, elapsed = timed(daemon, "/health")
        assert status == 503 and elapsed < DAEMON_TIMEOUT + SLACK_SECONDS, (elapsed, text)
        status, text, elapsed = timed(daemon, "/check/alive?t=1")
        assert status == 503 and elapsed < 1 + SLACK_SECONDS, (elapsed, text)
        env = {**cluster.primary.env(), "PGPORT": str(silent_listener)}
        assert text == check_postgresql("alive", "-t", "1", env=env).stdout
        assert daemon.status("/primary") == 503
        assert daemon.process.alive()
    finally:
        daemon.stop()
